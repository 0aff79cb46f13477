//! Installs, idempotently, what a fresh machine of this kind lacks. Each step checks first, so
//! a second run takes a second or two; every failure says what to do.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{root, run_cmd, vm};

/// Debian packages the tests, the demo and the VM tier need.
const APT_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "iproute2",
    "xz-utils",
    "zstd",
    "nftables",
    "debootstrap",
    "runc",
    "crun",
    "prometheus",
];
const BPF_LINKER_VERSION: &str = "0.10.3";

pub fn run() -> Result<()> {
    rust_src()?;
    bpf_linker()?;
    apt_packages()?;
    debian_debs()?;
    let kernels = vm::ensure_kernels(&root().join("target/tally-vm"))?;
    for k in &kernels {
        check_kernel_config(k)?;
        println!("setup: VM kernel {} ({})", k.name, k.release);
    }
    println!("setup: done");
    Ok(())
}

fn output(cmd: &mut Command) -> Option<String> {
    cmd.output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The eBPF crate builds `core` for the bpf target from source.
fn rust_src() -> Result<()> {
    let installed = output(Command::new("rustup").args(["component", "list", "--installed"]))
        .context("rustup is needed (the Rust toolchain of this machine)")?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    println!("setup: rustup component add rust-src");
    run_cmd(Command::new("rustup").args(["component", "add", "rust-src"]))
        .context("rust-src could not be installed (it comes from the Rust download server, not crates.io)")
}

/// 0.10.3 exactly: it uses the LLVM shipped with rustc; 0.11+ wants a system LLVM 23.
fn bpf_linker() -> Result<()> {
    if output(Command::new("bpf-linker").arg("--version")).is_some_and(|v| v.contains(BPF_LINKER_VERSION)) {
        return Ok(());
    }
    println!("setup: cargo install bpf-linker@{BPF_LINKER_VERSION} --locked (about 80 s)");
    run_cmd(Command::new(env!("CARGO")).args([
        "install",
        &format!("bpf-linker@{BPF_LINKER_VERSION}"),
        "--locked",
        "--force",
    ]))
}

fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_some_and(|s| s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("missing Debian packages {missing:?}; run `cargo xtask setup` as root");
    }
    println!("setup: apt-get install {}", missing.join(" "));
    run_cmd(
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// The VM tier is only worth running on kernels that can give the full tier.
fn check_kernel_config(k: &vm::Kernel) -> Result<()> {
    let config = std::fs::read_to_string(&k.config).with_context(|| format!("reading {}", k.config.display()))?;
    for option in [
        "CONFIG_BPF_LSM=y",
        "CONFIG_DEBUG_INFO_BTF=y",
        "CONFIG_CGROUP_BPF=y",
        "CONFIG_BPF_SYSCALL=y",
    ] {
        if !config.lines().any(|l| l == option) {
            bail!("{} lacks {option}: it cannot run tally's full tier", k.name);
        }
    }
    Ok(())
}

/// Where setup keeps debian-12's packages for `tally template create debian-12 --debs`: the
/// tests make that template offline from it.
pub fn debian_debs_path() -> std::path::PathBuf {
    root().join("target/tally-templates/debian-12-debs.tgz")
}

/// Downloads debian-12's minbase plus tally's package list (the one file tally's own
/// debootstrap reads) as a `debootstrap --make-tarball` tarball, once.
fn debian_debs() -> Result<()> {
    let out = debian_debs_path();
    if out.is_file() {
        return Ok(());
    }
    let list = root().join("userspace/tally/src/ct/debian-packages.txt");
    let packages: Vec<String> = std::fs::read_to_string(&list)
        .with_context(|| format!("reading {}", list.display()))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    let dir = out.parent().expect("has a parent");
    let work = dir.join(".debootstrap-work");
    let tmp = dir.join("debian-12-debs.tgz.tmp");
    std::fs::create_dir_all(dir)?;
    let _ = std::fs::remove_dir_all(&work);
    println!("setup: debootstrap --make-tarball for debian-12 (about 50 MB)");
    run_cmd(
        Command::new("debootstrap")
            .arg("--variant=minbase")
            .arg(format!("--include={}", packages.join(",")))
            .arg(format!("--make-tarball={}", tmp.display()))
            .args(["bookworm"])
            .arg(&work)
            .arg("http://deb.debian.org/debian"),
    )
    .context("downloading debian-12's packages (deb.debian.org, as apt does)")?;
    let _ = std::fs::remove_dir_all(&work);
    std::fs::rename(&tmp, &out)?;
    Ok(())
}
