//! `cargo xtask bench NAME`: benchmarks that report ratios against a baseline taken in the
//! same run. `fork` runs on the host (its tier) and in a Debian 6.12 VM (full tier).

use std::time::Duration;

use anyhow::{bail, Result};

use crate::{build_binaries, root, run_cmd, setup, vm};

#[derive(clap::Args)]
pub struct Args {
    /// Which benchmark: fork.
    name: String,
    /// Rounds per state (with and without programs).
    #[arg(long, default_value_t = 20)]
    rounds: u32,
    /// Forks per round.
    #[arg(long, default_value_t = 2000)]
    forks: u32,
}

pub fn run(args: Args) -> Result<()> {
    if args.name != "fork" {
        bail!("unknown benchmark '{}'; available: fork", args.name);
    }
    setup::run()?;
    let bins = build_binaries()?;
    let (rounds, forks) = (args.rounds.to_string(), args.forks.to_string());
    println!("== host");
    run_cmd(std::process::Command::new(bins.join("tally-itest")).args(["bench", "fork", &rounds, &forks]))?;

    let cache = root().join("target/tally-vm");
    let kernels = vm::ensure_kernels(&cache)?;
    let kernel = kernels.iter().find(|k| k.name == "debian-6.12").unwrap_or(&kernels[0]);
    println!(
        "== VM {} (software emulation: absolute times are slow, the ratio is what counts)",
        kernel.name
    );
    let payload = vm::Payload {
        files: vec![(bins.join("tally-itest"), "/tally/bin/tally-itest".into())],
        modules: vec![],
        command: format!("cd /tmp; /tally/bin/tally-itest bench fork {rounds} {forks}"),
    };
    let initramfs = cache.join(format!("{}-tally-bench.cpio.gz", kernel.name));
    vm::build_initramfs(kernel, &payload, &initramfs)?;
    let b = vm::boot(
        kernel,
        &initramfs,
        2048,
        Duration::from_secs(1800),
        &cache.join("bench-console.log"),
    )?;
    print!("{}", b.output);
    if b.exit_code != Some(0) {
        bail!("the VM benchmark failed (exit {:?})", b.exit_code);
    }
    Ok(())
}
