//! `tally-itest bench dedup [SIZE_MIB]`: what the dedup file cache saves, host only (the VMs
//! keep their files on tmpfs, where there is no page cache to share). For N = 20 and 50
//! containers, each with a private copy of the same SIZE_MIB (default 32) of files, read in
//! all of them: the page cache they fill (summed over their memory cgroups, which are charged
//! for what they bring in) without the cache and, after promotion and a restart, with it; and
//! the start time of a container without a cache layer (the baseline), at its first start
//! after promotion (cold: the links are made, each object checked) and at a later one (warm).

use std::time::Instant;

use anyhow::{ensure, Result};

use crate::{
    bench::median,
    cache::{drop_page_cache, file_bytes, give_copies, make_files, on_tmpfs, read_all},
    env::Env,
    harness::ok,
};

const FILE_MIB: usize = 4;

pub fn main(args: &[String]) -> i32 {
    crate::bench_start::with_count(args, "dedup [SIZE_MIB]", 32, 1024, bench)
}

fn bench(size_mib: usize) -> Result<()> {
    for n in [20, 50] {
        let mut env = Env::new("bench-dedup")?;
        let result = measure(&mut env, n, size_mib);
        let cleanup = env.teardown();
        result?;
        cleanup?;
    }
    Ok(())
}

fn status(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "missed"
    }
}

fn measure(env: &mut Env, n: usize, size_mib: usize) -> Result<()> {
    ensure!(
        !on_tmpfs(&env.instance.root),
        "the instance is on tmpfs: no page cache to measure"
    );
    env.start_tallyd()?;
    std::fs::write(
        env.instance.root.join("pfcache.conf"),
        "PFCACHE_INCLUDES=\"/srv\"\nPFCACHE_INTERVAL=\"0\"\n",
    )?;
    let files = make_files(
        &env.instance.root.join("tally-bench-data"),
        size_mib / FILE_MIB,
        FILE_MIB << 20,
        1,
    )?;
    let total = (files.len() * (FILE_MIB << 20)) as u64;
    let cts: Vec<String> = (0..n).map(|i| format!("{}", 20_000 + i)).collect();
    // The baseline container: same files, no cache layer, ever.
    let base = "19999".to_string();
    for ct in cts.iter().chain([&base]) {
        ok(env, &["create", ct])?;
        give_copies(env, ct, &files)?;
        ok(env, &["start", ct])?;
    }
    drop_page_cache()?;
    let b0 = file_bytes(env, &cts)?;
    read_all(env, &cts)?;
    let without = file_bytes(env, &cts)?.saturating_sub(b0);

    // The baseline container is not read: its copy is not promoted.
    ok(env, &["cache", "promote"])?;
    let timed = |args: &[&str]| -> Result<f64> {
        let t = Instant::now();
        ok(env, args)?;
        Ok(t.elapsed().as_secs_f64() * 1000.0)
    };
    let mut cold = Vec::new();
    for ct in &cts {
        ok(env, &["stop", ct, "--fast"])?;
        drop_page_cache()?;
        cold.push(timed(&["start", ct])?);
    }
    drop_page_cache()?;
    let b1 = file_bytes(env, &cts)?;
    read_all(env, &cts)?;
    let with = file_bytes(env, &cts)?.saturating_sub(b1);

    let (mut warm, mut baseline) = (Vec::new(), Vec::new());
    for ct in cts.iter().take(10) {
        for (who, times) in [(ct, &mut warm), (&base, &mut baseline)] {
            ok(env, &["stop", who, "--fast"])?;
            drop_page_cache()?;
            times.push(timed(&["start", who])?);
        }
    }
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    println!(
        "dedup, {n} containers x {} MiB: page cache {:.0} MiB without the cache, {:.0} MiB with it",
        total >> 20,
        mib(without),
        mib(with)
    );
    println!(
        "dedup, {n} containers: start {:.1} ms without a cache layer, {:.1} ms cold (links made), {:.1} ms warm",
        median(&baseline),
        median(&cold),
        median(&warm)
    );
    println!(
        "dedup, {n} containers: with the cache / without = {:.3} x (one copy of N is {:.3} x)",
        with as f64 / without.max(1) as f64,
        1.0 / n as f64
    );
    let limit = 1.2 * mib(total);
    println!(
        "bench: dedup_page_cache_{n} = {:.1} MiB (target <= {limit:.1}: {})",
        mib(with),
        status(mib(with) <= limit)
    );
    let warm_ratio = median(&warm) / median(&baseline);
    println!(
        "bench: dedup_warm_start_ratio_{n} = {warm_ratio:.2} x (target <= 1.2: {})",
        status(warm_ratio <= 1.2)
    );
    println!(
        "bench: dedup_cold_start_ratio_{n} = {:.2} x (target <= 3: {})",
        median(&cold) / median(&baseline),
        status(median(&cold) / median(&baseline) <= 3.0)
    );
    Ok(())
}
