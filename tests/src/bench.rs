//! `tally-itest bench fork`: fork+exit+wait in a limited container cgroup, with tally's
//! programs attached against none attached, interleaved (A B B A ...) in one run so that the
//! machine's drift hits both alike. Prints `bench:` lines with the ratio of medians.

use anyhow::{bail, Context, Result};
use tally::{
    ct::{CtConfig, CtId, Host},
    kernel::{probe, programs, Tier},
    ubc::Resource,
};

use crate::env::Env;

const TARGET: f64 = 1.02;

pub fn main(args: &[String]) -> i32 {
    match args {
        [what, rest @ ..] if what == "fork" => match fork(rest) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("bench fork: {e:#}");
                1
            }
        },
        _ => {
            eprintln!("usage: tally-itest bench fork [ROUNDS] [FORKS_PER_ROUND]");
            2
        }
    }
}

fn fork(args: &[String]) -> Result<()> {
    let rounds: usize = args.first().map(|s| s.parse()).transpose()?.unwrap_or(20);
    let per_round: u64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(2000);
    let tier = match std::env::var("TALLY_ITEST_TIER").as_deref() {
        Ok("fallback") => Tier::Fallback,
        _ => probe::probe().tier.context("tally cannot run here")?,
    };
    let mut env = Env::new("bench-fork")?;
    let result = measure(&env, tier, rounds, per_round);
    let cleanup = env.teardown();
    let (with, without) = result?;
    cleanup?;
    let ratio = median(&with) / median(&without);
    let status = if ratio <= TARGET { "met" } else { "missed" };
    println!(
        "fork+exit+wait, {tier} tier, median of {rounds} rounds x {per_round}: {:.0} ns with tally's programs, {:.0} ns without",
        median(&with),
        median(&without)
    );
    println!("bench: fork_exit_wait_{tier}_ratio = {ratio:.3} x (target <= {TARGET}: {status})");
    Ok(())
}

/// Per-fork nanoseconds for each round, with and without programs.
fn measure(env: &Env, tier: Tier, rounds: usize, per_round: u64) -> Result<(Vec<f64>, Vec<f64>)> {
    let ct = CtId::parse("bench")?;
    let mut config = CtConfig::default();
    config.set_limit(Resource::NumProc, 1000, 1000);
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for round in 0..rounds * 2 {
        // A B B A A B B A ...: each state is first as often as second.
        let attached = matches!(round % 4, 0 | 3);
        let pins = env.instance.pins();
        if attached {
            programs::ensure_bpffs()?;
            let layout = tally::cgroup::Layout::detect()?;
            programs::ensure_attached(&pins, tier, &env.instance.cgroup_parent(&layout)?)?;
            Host::open(env.instance.clone(), tier)?.apply(&ct, &config)?;
        } else {
            // Returns once the kernel has released the links.
            programs::unpin_all(&pins)?;
        }
        // Loading parses the kernel's BTF and creates maps: one discarded warm-up round per
        // round keeps that disturbance out of the figures.
        forkloop(env, per_round / 4)?;
        let ns = forkloop(env, per_round)? as f64 / per_round as f64;
        if attached {
            with.push(ns);
        } else {
            without.push(ns);
        }
    }
    Ok((with, without))
}

fn forkloop(env: &Env, n: u64) -> Result<u128> {
    let out = env.workload_joining("bench", &["forkloop", &n.to_string()])?.output()?;
    if !out.status.success() {
        bail!("forkloop: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
