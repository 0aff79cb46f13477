//! Builds the eBPF object (ebpf/tally-ebpf) so that a plain `cargo build` builds everything.
//!
//! A nested cargo build rather than aya-build: the programs need `-C target-cpu=v3` (atomic
//! fetch-add and cmpxchg), which aya-build 0.2.0 cannot pass. Stable rustc builds `core` for
//! the bpf target with RUSTC_BOOTSTRAP=1, set for this nested build only.
use std::{env, path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir.join("../..").canonicalize()?;
    let ebpf_dir = root.join("ebpf/tally-ebpf");
    for watched in [
        "ebpf/tally-ebpf/src",
        "ebpf/tally-ebpf/Cargo.toml",
        "ebpf/tally-common/src",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    if Command::new("bpf-linker").arg("--version").output().is_err() {
        bail!("bpf-linker is not installed; run `cargo xtask setup` (installs bpf-linker 0.10.3 and rust-src)");
    }
    // Outside OUT_DIR so that debug and release builds share one eBPF build.
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("ebpf");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&ebpf_dir)
        .args([
            "build",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's compiler settings must not leak into the bpf target.
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("RUSTC_BOOTSTRAP", "1").env(
        "CARGO_ENCODED_RUSTFLAGS",
        ["-Ctarget-cpu=v3", "-Cdebuginfo=2", "-Clink-arg=--btf"].join("\x1f"),
    );
    let status = cmd.status().context("running the nested eBPF cargo build")?;
    if !status.success() {
        bail!("building the eBPF programs failed ({status}); if rust-src is missing run `cargo xtask setup`");
    }
    let object = target_dir.join("bpfel-unknown-none/release/tally");
    let out = PathBuf::from(env::var("OUT_DIR")?).join("tally.bpf.o");
    std::fs::copy(&object, &out).with_context(|| format!("copying {}", object.display()))?;
    Ok(())
}
