//! `cargo xtask bench NAME`: benchmarks that report ratios against a baseline taken in the
//! same run. `fork` runs on the host (its tier) and in a Debian 6.12 VM (full tier).

use anyhow::{bail, Result};

use crate::{boot_with_tally, build_binaries, root, run_cmd, setup, vm};

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
    let b = boot_with_tally(
        kernel,
        &bins,
        &format!("tally-itest bench fork {rounds} {forks}"),
        "bench",
    )?;
    print!("{}", b.output);
    if b.exit_code != Some(0) {
        bail!("the VM benchmark failed (exit {:?})", b.exit_code);
    }
    Ok(())
}
