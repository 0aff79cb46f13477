//! `cargo xtask bench NAME`: benchmarks that report ratios against a baseline taken in the
//! same run, on the host (its tier) and in a Debian 6.12 VM (full tier). `hooks`: fork/exit,
//! open/close, socket/close, flock/unlock and 4 KiB read loops; `fork`: the first of them.
//! Host only: `start` (create+start, exec and stop against runc and crun) and `density` (N
//! containers with an httpd each: memory per container, tallyd's RSS) and `scrape` (one
//! exporter scrape with 1000 containers' counters: duration, size, tallyd's CPU) and `dedup`
//! (page cache and start times of 20 and 50 containers with and without the file cache), all of
//! the release build.

use anyhow::{bail, Result};

use crate::{boot_with_tally, build_binaries, root, run_cmd, setup, vm};

#[derive(clap::Args)]
pub struct Args {
    /// Which benchmark: hooks (fork, open, socket, flock and read loops), fork (fork only),
    /// start (tally against runc and crun, host only) or density (N containers, host only).
    name: String,
    /// Rounds per state (with the programs, with them as the floor, without).
    #[arg(long, default_value_t = 20)]
    rounds: u32,
    /// Operations per loop and round.
    #[arg(long, default_value_t = 2000)]
    ops: u32,
    /// start: runs per runtime (the median is taken over them).
    #[arg(long, default_value_t = 30)]
    runs: u32,
    /// density: how many containers.
    #[arg(long, default_value_t = 200)]
    n: u32,
    /// scrape: how many containers' counters one scrape reads.
    #[arg(long, default_value_t = 1000)]
    containers: u32,
    /// dedup: MiB of files each container holds a copy of.
    #[arg(long, default_value_t = 32)]
    size_mib: u32,
}

pub fn run(args: Args) -> Result<()> {
    if !["hooks", "fork", "start", "density", "scrape", "dedup"].contains(&args.name.as_str()) {
        bail!(
            "unknown benchmark '{}'; available: hooks, fork, start, density, scrape, dedup",
            args.name
        );
    }
    setup::run()?;
    let host_only = match args.name.as_str() {
        "start" => Some(args.runs.to_string()),
        "density" => Some(args.n.to_string()),
        "scrape" => Some(args.containers.to_string()),
        "dedup" => Some(args.size_mib.to_string()),
        _ => None,
    };
    if let Some(count) = host_only {
        // Latency and resident memory are measured on what users run: the release build.
        let bins = build_release()?;
        println!("== host (release build)");
        return run_cmd(std::process::Command::new(bins.join("tally-itest")).args(["bench", &args.name, &count]));
    }
    let bins = build_binaries()?;
    let (rounds, forks) = (args.rounds.to_string(), args.ops.to_string());
    println!("== host");
    run_cmd(std::process::Command::new(bins.join("tally-itest")).args(["bench", &args.name, &rounds, &forks]))?;

    let cache = root().join("target/tally-vm");
    let kernels = vm::ensure_kernels(&cache)?;
    let kernel = kernels.iter().find(|k| k.name == "debian-6.12").unwrap_or(&kernels[0]);
    println!(
        "== VM {} (software emulation: absolute times are slow, the ratio is what counts)",
        kernel.name
    );
    let b = boot_with_tally(
        kernel,
        &bins,
        &format!("tally-itest bench {} {rounds} {forks}", args.name),
        "bench",
    )?;
    print!("{}", b.output);
    if b.exit_code != Some(0) {
        bail!("the VM benchmark failed (exit {:?})", b.exit_code);
    }
    Ok(())
}

/// tally, tallyd and tally-itest in the release profile; returns their directory.
fn build_release() -> Result<std::path::PathBuf> {
    let mut cargo = std::process::Command::new(env!("CARGO"));
    cargo.current_dir(root()).args(["build", "--release", "--bins"]);
    run_cmd(cargo.args(["-p", "tally-cli", "-p", "tallyd", "-p", "tally-tests"]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), Into::into);
    Ok(target.join("release"))
}
