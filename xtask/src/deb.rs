//! `cargo xtask deb`: the Debian package, built with dpkg-deb from a staged tree. tallyd and
//! tally in /usr/sbin, the systemd unit, man pages and bash and zsh completions made from the
//! binaries' own clap definitions, the sample configs, and the Grafana and Prometheus files
//! under /usr/share/tally. Removing the package leaves the containers' data (/var/lib/tally);
//! purging removes it, with the instance's pins and empty cgroups.

use std::{
    fs,
    io::Write,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{root, run_cmd};

#[derive(clap::Args)]
pub struct Args {
    /// Package the debug build (what `cargo xtask test` has built already) instead of release.
    #[arg(long)]
    debug: bool,
}

pub fn run(args: Args) -> Result<()> {
    let deb = build(!args.debug)?;
    println!("deb: {}", deb.display());
    Ok(())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// Builds the binaries (release or debug) and the package; returns the .deb's path.
pub fn build(release: bool) -> Result<PathBuf> {
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .current_dir(root())
        .args(["build", "--bins", "-p", "tally-cli", "-p", "tallyd"]);
    if release {
        cargo.arg("--release");
    }
    run_cmd(&mut cargo)?;
    let bins = target_dir().join(if release { "release" } else { "debug" });
    let out = target_dir().join("tally-deb");
    let stage = out.join("root");
    let _ = fs::remove_dir_all(&stage);
    fs::create_dir_all(&stage)?;

    for bin in ["tally", "tallyd"] {
        install(&bins.join(bin), &stage.join("usr/sbin").join(bin), 0o755)?;
    }
    install(
        &root().join("userspace/tallyd/tallyd.service"),
        &stage.join("lib/systemd/system/tallyd.service"),
        0o644,
    )?;
    let manual = out.join("manual");
    let _ = fs::remove_dir_all(&manual);
    for (bin, flag) in [("tally", "generate-manual"), ("tallyd", "--generate-manual")] {
        run_cmd(Command::new(bins.join(bin)).arg(flag).arg(&manual))?;
    }
    for page in fs::read_dir(manual.join("man8"))?.flatten() {
        let name = page.file_name().to_string_lossy().into_owned();
        if name == "tally-help.8" {
            continue;
        }
        gzip(
            &page.path(),
            &stage.join("usr/share/man/man8").join(format!("{name}.gz")),
        )?;
    }
    for bin in ["tally", "tallyd"] {
        let completions = manual.join("completions");
        install(
            &completions.join(format!("{bin}.bash")),
            &stage.join("usr/share/bash-completion/completions").join(bin),
            0o644,
        )?;
        install(
            &completions.join(format!("_{bin}")),
            &stage.join("usr/share/zsh/vendor-completions").join(format!("_{bin}")),
            0o644,
        )?;
    }
    for sample in fs::read_dir(root().join("userspace/tally/samples"))?.flatten() {
        install(
            &sample.path(),
            &stage.join("usr/share/tally/samples").join(sample.file_name()),
            0o644,
        )?;
    }
    copy_tree(&root().join("grafana"), &stage.join("usr/share/tally/grafana"))?;
    for file in ["prometheus.yml", "alerts.yml"] {
        install(
            &root().join("grafana").join(file),
            &stage.join("usr/share/tally/prometheus").join(file),
            0o644,
        )?;
    }
    write(
        &stage.join("usr/share/doc/tally/copyright"),
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: tally\n\nFiles: *\nLicense: GPL-2.0-only\n",
        0o644,
    )?;

    let version = env!("CARGO_PKG_VERSION");
    let installed_kb = du_kb(&stage);
    write(
        &stage.join("DEBIAN/control"),
        &format!(
            "Package: tally\nVersion: {version}\nArchitecture: amd64\nMaintainer: tally developers <tally@localhost>\n\
             Installed-Size: {installed_kb}\nDepends: libc6, busybox-static\nRecommends: prometheus\nSection: admin\n\
             Priority: optional\nDescription: OpenVZ-style containers with user beancounters, on mainline Linux\n \
             tallyd supervises system containers whose beancounters (processes, files, sockets,\n memory...) are \
             enforced in the kernel with eBPF; tally is its vzctl-style command line.\n"
        ),
        0o644,
    )?;
    write(&stage.join("DEBIAN/postinst"), POSTINST, 0o755)?;
    write(&stage.join("DEBIAN/prerm"), PRERM, 0o755)?;
    write(&stage.join("DEBIAN/postrm"), POSTRM, 0o755)?;

    let deb = out.join(format!("tally_{version}_amd64.deb"));
    let mut dpkg_deb = Command::new("dpkg-deb");
    dpkg_deb.arg("--root-owner-group");
    if !release {
        // Debug binaries are some 260 MB: xz would take minutes of every test run.
        dpkg_deb.arg("-Znone");
    }
    run_cmd(dpkg_deb.arg("--build").arg(&stage).arg(&deb)).context("dpkg-deb (Debian's dpkg)")?;
    Ok(deb)
}

/// systemd, where it runs, learns the unit and starts tallyd (as Debian starts a service it
/// installs); elsewhere nothing runs it until someone does.
const POSTINST: &str = r#"#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
    systemctl enable tallyd.service || true
    systemctl restart tallyd.service || true
fi
"#;

/// tallyd stops; containers go on (KillMode=process), their limits pinned.
const PRERM: &str = r#"#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl stop tallyd.service || true
fi
"#;

/// Removal keeps /var/lib/tally (the containers' configs and private areas). Purge removes it,
/// with tally's pins (which detaches its programs) and the default instance's empty cgroups;
/// running containers keep theirs and are said.
const POSTRM: &str = r#"#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
if [ "$1" = purge ]; then
    running=""
    for d in /sys/fs/cgroup/tally/*/ /sys/fs/cgroup/*/tally/*/; do
        [ -f "$d/cgroup.procs" ] || continue
        if [ -s "$d/cgroup.procs" ]; then running="$running $d"; else rmdir "$d" 2>/dev/null || true; fi
    done
    rmdir /sys/fs/cgroup/tally /sys/fs/cgroup/*/tally 2>/dev/null || true
    if [ -n "$running" ]; then
        echo "tally: containers still run in$running: their data stays in /var/lib/tally" >&2
    else
        for m in $(awk '$2 ~ "^/var/lib/tally/" { print $2 }' /proc/self/mounts | sort -r); do umount -l "$m" || true; done
        rm -rf /var/lib/tally
    fi
    rm -rf /sys/fs/bpf/tally /run/tally
fi
"#;

fn install(from: &Path, to: &Path, mode: u32) -> Result<()> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::copy(from, to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn write(to: &Path, text: &str, mode: u32) -> Result<()> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(to, text)?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn gzip(from: &Path, to: &Path) -> Result<()> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut gz = flate2::write::GzEncoder::new(fs::File::create(to)?, flate2::Compression::best());
    gz.write_all(&fs::read(from)?)?;
    gz.finish()?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o644))?;
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    for e in fs::read_dir(from)
        .with_context(|| format!("reading {}", from.display()))?
        .flatten()
    {
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &target)?;
        } else if e.file_type()?.is_file() {
            install(&e.path(), &target, 0o644)?;
        } else {
            bail!("{}: not a file or directory", e.path().display());
        }
    }
    Ok(())
}

fn du_kb(dir: &Path) -> u64 {
    fn walk(d: &Path) -> u64 {
        fs::read_dir(d)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => walk(&e.path()),
                _ => e.metadata().map(|m| m.len()).unwrap_or(0),
            })
            .sum()
    }
    walk(dir).div_ceil(1024)
}
