//! cargo xtask: the heavy jobs. `setup` installs what a fresh machine lacks, `test` runs every
//! tier, `demo` shows the main job, `bench` measures. The others call `setup` first; it is
//! quick when everything is present.

mod bench;
mod deb;
mod demo;
mod expect;
mod setup;
mod test;
mod vm;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "tally's build, test, demo and benchmark tasks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what this machine lacks (rust-src, bpf-linker, Debian packages, VM kernels).
    Setup,
    /// Unit tests, then the host tier, then the VM tier (Debian 6.1 and 6.12 kernels).
    Test(test::Args),
    /// A container with a numproc limit, a fork storm in it, its beancounters before and after.
    Demo,
    /// Benchmarks (ratios against a baseline taken in the same run).
    Bench(bench::Args),
    /// The Debian package (target/tally-deb/tally_VERSION_amd64.deb).
    Deb(deb::Args),
    /// Boot a VM kernel with tally's binaries in /tally/bin and run a shell command (development).
    VmRun(test::VmRunArgs),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Setup => setup::run(),
        Cmd::Test(a) => test::run(a),
        Cmd::Demo => demo::run(),
        Cmd::Bench(a) => bench::run(a),
        Cmd::VmRun(a) => test::vm_run(a),
        Cmd::Deb(a) => deb::run(a),
    }
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Runs a command, streaming its output, failing on a non-zero exit.
pub fn run_cmd(cmd: &mut std::process::Command) -> Result<()> {
    let status = cmd.status().map_err(|e| anyhow::anyhow!("running {cmd:?}: {e}"))?;
    anyhow::ensure!(status.success(), "{cmd:?} failed: {status}");
    Ok(())
}

/// Builds the binaries the tiers run (debug profile; the eBPF object is always optimised).
pub fn build_binaries() -> Result<PathBuf> {
    run_cmd(std::process::Command::new(env!("CARGO")).current_dir(root()).args([
        "build",
        "--bins",
        "-p",
        "tally-cli",
        "-p",
        "tallyd",
        "-p",
        "tally-tests",
    ]))?;
    Ok(std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join("debug"))
}

/// Boots `kernel` with tally's binaries in /tally/bin (on PATH) and runs `command` in /tmp;
/// `tag` names the initramfs and console log under target/tally-vm.
pub fn boot_with_tally(
    kernel: &vm::Kernel,
    bins: &std::path::Path,
    command: &str,
    tag: &str,
) -> Result<vm::BootResult> {
    let cache = root().join("target/tally-vm");
    let payload = vm::Payload {
        files: ["tally-itest", "tally", "tallyd"]
            .iter()
            .map(|b| (bins.join(b), format!("/tally/bin/{b}")))
            // nft (from nftables, which setup installs): the numiptent test makes rules with it.
            .chain([(std::path::PathBuf::from("/usr/sbin/nft"), "/usr/sbin/nft".to_string())])
            .collect(),
        // Containers and tallyd need these (sock_diag for the socket-buffer rows; a real host
        // loads them on demand), and zram gives the swappages test a swap device in a VM
        // without a disk; Debian's cloud kernels build them as modules.
        modules: [
            "veth",
            "bridge",
            "overlay",
            "nf_tables",
            "inet_diag",
            "tcp_diag",
            "udp_diag",
            "unix_diag",
            "zram",
            "lzo-rle",
        ]
        .iter()
        .map(|m| m.to_string())
        .collect(),
        // TALLY_ITEST_EMULATED: timing-based checks know the CPUs are emulated.
        command: format!("cd /tmp; export PATH=/tally/bin:$PATH TALLY_ITEST_EMULATED=1; {command}"),
    };
    let initramfs = cache.join(format!("{}-{tag}.cpio.gz", kernel.name));
    vm::build_initramfs(kernel, &payload, &initramfs)?;
    let log = cache.join(format!("{}-{tag}-console.log", kernel.name));
    vm::boot(kernel, &initramfs, 2048, std::time::Duration::from_secs(1800), &log)
}
