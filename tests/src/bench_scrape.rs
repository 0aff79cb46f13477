//! `tally-itest bench scrape [N]`: one Prometheus scrape of tallyd's exporter with N
//! containers' counters (default 1000: real containers with real cgroups and beancounters,
//! stopped: no workload is needed for their counters to be read). Reports the median scrape
//! duration, its size, and tallyd's CPU time per scrape as a share of one core at a 15 s
//! scrape interval; the same with no container is the baseline taken in the same run.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};

use crate::{bench::median, env::Env, harness::ok};

const SCRAPES: usize = 20;
const INTERVAL_S: f64 = 15.0;
const TARGET_MS: f64 = 100.0;
const TARGET_CPU_PCT: f64 = 1.0;

pub fn main(args: &[String]) -> i32 {
    crate::bench_start::with_count(args, "scrape [N]", 1000, 5000, bench)
}

fn bench(n: usize) -> Result<()> {
    let mut env = Env::new("bench-scrape")?;
    let result = measure(&mut env, n);
    let cleanup = env.teardown();
    let (empty, full) = result?;
    cleanup?;
    println!(
        "no container: {:.2} ms, {} bytes, {:.2} ms CPU per scrape",
        empty.ms, empty.bytes, empty.cpu_ms
    );
    println!(
        "{n} containers: {:.2} ms, {} bytes ({} series), {:.2} ms CPU per scrape; {:.1} x the empty scrape",
        full.ms,
        full.bytes,
        full.series,
        full.cpu_ms,
        full.ms / empty.ms.max(0.001)
    );
    let status = |ok: bool| if ok { "met" } else { "missed" };
    println!(
        "bench: scrape_{n}_duration = {:.1} ms (target < {TARGET_MS}: {})",
        full.ms,
        status(full.ms < TARGET_MS)
    );
    let share = full.cpu_ms / (INTERVAL_S * 1000.0) * 100.0;
    println!(
        "bench: scrape_{n}_cpu_at_15s = {share:.3} % (target < {TARGET_CPU_PCT}: {})",
        status(share < TARGET_CPU_PCT)
    );
    Ok(())
}

struct Scrape {
    ms: f64,
    bytes: usize,
    series: usize,
    cpu_ms: f64,
}

fn measure(env: &mut Env, n: usize) -> Result<(Scrape, Scrape)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = format!("127.0.0.1:{port}");
    env.start_tallyd_with(&["--metrics", &addr])?;
    let pid = env.tallyd_pid().context("tallyd's pid")?;
    let empty = scrapes(&addr, pid)?;
    let started = Instant::now();
    for i in 0..n {
        ok(env, &["create", &format!("{}", 10_000 + i)])?;
    }
    println!("{n} containers created in {:.1} s", started.elapsed().as_secs_f64());
    let full = scrapes(&addr, pid)?;
    let ctids = full_text(&addr)?
        .lines()
        .filter(|l| l.starts_with("tally_ubc_held{"))
        .filter_map(|l| l.split("ctid=\"").nth(1)?.split('"').next().map(str::to_string))
        .collect::<std::collections::BTreeSet<_>>();
    ensure!(ctids.len() == n, "the scrape shows {} containers, not {n}", ctids.len());
    Ok((empty, full))
}

/// tallyd's CPU time so far (user + system), in ms.
fn cpu_ms(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces), 1-based 14 and 15 overall.
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((f[0] + f[1]) as f64 * 1000.0 / hz)
}

fn full_text(addr: &str) -> Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    ensure!(
        text.starts_with("HTTP/1.") && text.contains(" 200 "),
        "the exporter answered {:?}",
        &text[..text.len().min(200)]
    );
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

/// SCRAPES scrapes after one warm-up: the median duration, the body's size and series, and
/// tallyd's CPU time per scrape.
fn scrapes(addr: &str, pid: u32) -> Result<Scrape> {
    full_text(addr)?;
    let cpu_before = cpu_ms(pid)?;
    let mut times = Vec::new();
    let mut body = String::new();
    for _ in 0..SCRAPES {
        let t = Instant::now();
        body = full_text(addr)?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let cpu = (cpu_ms(pid)? - cpu_before) / SCRAPES as f64;
    Ok(Scrape {
        ms: median(&times),
        bytes: body.len(),
        series: body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count(),
        cpu_ms: cpu,
    })
}
