//! `tally-itest bench density [N]`: N busybox containers (default 200) through one tallyd,
//! each running its init and a busybox httpd on its own routed address (10.77.200.2 on),
//! all answering an HTTP GET from the host. Reports the memory a container costs the host
//! (MemAvailable's drop over N) and tallyd's resident set with N containers.
//!
//! MemAvailable moves with everything else the machine does. The drop is read twice, when
//! the containers come up (before minus with) and when they go (after minus with), and the
//! figure is the mean of the two: a steady drift of the rest of the machine adds to one and
//! subtracts from the other. What the containers' memory cgroups were charged is reported
//! beside it (blind to the rest of the machine, and to what is not charged to a cgroup).
//!
//! Nothing is sent before the host's route to the address is checked to go through that
//! container's own veth. The test Env's teardown removes whatever is left, even on failure.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use tally::ct::{net, CtId};

use crate::{bench::median, env::Env, harness::ok};

/// The target for tallyd's resident set at 200 containers.
const TALLYD_RSS_MB: f64 = 50.0;
/// And for what those containers add to it over its idle figure (what tallyd keeps per
/// container: no thread, no buffer, a few map entries).
const TALLYD_GROWTH_MB: f64 = 2.0;
/// Ours for a busybox container with init and httpd (its overlay upper layer, veth, netns,
/// cgroups, processes).
const PER_CT_MIB: f64 = 16.0;
/// The first container's CTID; addresses are 10.77.(200 + i / 200).(2 + i % 200).
const FIRST_CT: usize = 5000;
const PORT: u16 = 8080;

pub fn main(args: &[String]) -> i32 {
    // 200 addresses per /24 from 10.77.200.0 to 10.77.254.0.
    crate::bench_start::with_count(args, "density [N]", 200, 200 * 55, bench)
}

fn bench(n: usize) -> Result<()> {
    let mut env = Env::new("bench-density")?;
    let result = measure(&mut env, n);
    let cleanup = env.teardown();
    let figures = result?;
    cleanup?;
    report(n, &figures);
    Ok(())
}

fn address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, (200 + i / 200) as u8, (2 + i % 200) as u8)
}

struct Figures {
    avail_before_kb: u64,
    avail_with_kb: u64,
    avail_after_kb: u64,
    charged_bytes: u64,
    rss_before_kb: u64,
    rss_after_kb: u64,
    anon_kb: u64,
    file_kb: u64,
    hwm_kb: u64,
    up_secs: f64,
    down_secs: f64,
}

fn measure(env: &mut Env, n: usize) -> Result<Figures> {
    env.start_tallyd()?;
    ok(env, &["template", "list"])?;
    let tallyd = env.tallyd_pid().context("tallyd is not running")?;
    std::thread::sleep(Duration::from_secs(1));
    let avail_before_kb = mem_available_kb()?;
    let rss_before_kb = proc_status(tallyd, "VmRSS")?;

    let t = Instant::now();
    for i in 0..n {
        let ct = (FIRST_CT + i).to_string();
        ok(env, &["create", &ct, "--ipadd", &address(i).to_string()])?;
        ok(env, &["start", &ct, "--wait"])?;
        ok(
            env,
            &["exec", &ct, "--", "httpd", "-p", &PORT.to_string(), "-h", "/var/www"],
        )?;
        if (i + 1) % 50 == 0 && i + 1 < n {
            println!("density: {} containers up ({:.0} s)", i + 1, t.elapsed().as_secs_f64());
        }
    }
    let up_secs = t.elapsed().as_secs_f64();
    for i in 0..n {
        let ct = CtId::parse(&(FIRST_CT + i).to_string())?;
        let page = get(env, &ct, address(i))?;
        if !(page.starts_with("HTTP/1.") && page.contains("tally busybox container")) {
            bail!("CT {ct} at {} answered {page:?}", address(i));
        }
    }
    println!("density: all {n} httpds answered an HTTP GET from the host");
    // Let the kernel's deferred frees (RCU, per-cpu caches) settle before reading.
    std::thread::sleep(Duration::from_secs(2));
    let avail_with_kb = mem_available_kb()?;
    let rss_after_kb = proc_status(tallyd, "VmRSS")?;
    let hwm_kb = proc_status(tallyd, "VmHWM")?;
    let anon_kb = proc_status(tallyd, "RssAnon")?;
    let file_kb = proc_status(tallyd, "RssFile")?;
    let mut charged_bytes = 0;
    for i in 0..n {
        charged_bytes += env.cgroup(&(FIRST_CT + i).to_string())?.memory_usage()?.current;
    }

    let t = Instant::now();
    for i in 0..n {
        ok(env, &["destroy", &(FIRST_CT + i).to_string()])?;
    }
    let down_secs = t.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    Ok(Figures {
        avail_before_kb,
        avail_with_kb,
        avail_after_kb: mem_available_kb()?,
        charged_bytes,
        rss_before_kb,
        rss_after_kb,
        anon_kb,
        file_kb,
        hwm_kb,
        up_secs,
        down_secs,
    })
}

fn report(n: usize, f: &Figures) {
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    let mb = |kb: u64| kb as f64 * 1024.0 / 1e6;
    let mib = |kb: f64| kb / 1024.0;
    let with = f.avail_with_kb as f64;
    let (up, down) = (f.avail_before_kb as f64 - with, f.avail_after_kb as f64 - with);
    let per_ct = mib((up + down) / 2.0) / n as f64;
    println!(
        "density: {n} containers (busybox init + httpd each), tally {profile} build: up in {:.1} s ({:.0} ms each: create, start, exec httpd), destroyed in {:.1} s",
        f.up_secs,
        f.up_secs * 1e3 / n as f64,
        f.down_secs
    );
    println!(
        "density: MemAvailable {:.0} MiB before, {:.0} MiB with {n} containers, {:.0} MiB after: {:.2} MiB per container coming up, {:.2} going",
        mib(f.avail_before_kb as f64),
        mib(with),
        mib(f.avail_after_kb as f64),
        mib(up) / n as f64,
        mib(down) / n as f64
    );
    println!(
        "density: charged to the containers' memory cgroups: {:.2} MiB per container",
        f.charged_bytes as f64 / (1 << 20) as f64 / n as f64
    );
    println!(
        "density: tallyd VmRSS {:.1} MB before the containers, {:.1} MB with {n} ({:.1} MB anonymous, {:.1} MB file-backed; VmHWM {:.1} MB; MB = 10^6 bytes)",
        mb(f.rss_before_kb),
        mb(f.rss_after_kb),
        mb(f.anon_kb),
        mb(f.file_kb),
        mb(f.hwm_kb)
    );
    let rss = mb(f.rss_after_kb);
    let met = |ok: bool| if ok { "met" } else { "missed" };
    println!(
        "bench: tallyd_rss_{n}_containers = {rss:.1} MB (target <= {TALLYD_RSS_MB:.0}: {})",
        met(rss <= TALLYD_RSS_MB)
    );
    let growth = mb(f.rss_after_kb) - mb(f.rss_before_kb);
    println!(
        "bench: tallyd_rss_growth_{n}_containers = {growth:.1} MB (target <= {TALLYD_GROWTH_MB:.0}: {})",
        met(growth <= TALLYD_GROWTH_MB)
    );
    println!(
        "bench: memory_per_container = {per_ct:.2} MiB (target <= {PER_CT_MIB:.0}: {})",
        met(per_ct <= PER_CT_MIB)
    );
}

/// GET / from container `ct`'s httpd, once the host's route to `addr` is its own veth.
fn get(env: &Env, ct: &CtId, addr: Ipv4Addr) -> Result<String> {
    let veth = net::host_interface(&env.instance.name, ct);
    let via = net::route_interface(addr)?;
    if !veth.starts_with("tally") || via.as_deref() != Some(veth.as_str()) {
        bail!("not sending to {addr}: the host routes it via {via:?}, not CT {ct}'s {veth}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match TcpStream::connect_timeout(&(addr, PORT).into(), Duration::from_secs(2)) {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => {
                return Err(e).with_context(|| format!("connecting to {addr}:{PORT}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("GET /index.html HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut page = String::new();
    stream.read_to_string(&mut page)?;
    Ok(page)
}

/// MemAvailable in kB: the median of 9 readings 200 ms apart (other jobs make it jitter).
fn mem_available_kb() -> Result<u64> {
    let mut v = Vec::new();
    for i in 0..9 {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(200));
        }
        let text = std::fs::read_to_string("/proc/meminfo")?;
        v.push(kb_field(&text, "MemAvailable").context("no MemAvailable in /proc/meminfo")? as f64);
    }
    Ok(median(&v) as u64)
}

/// A /proc/PID/status field, in kB.
fn proc_status(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    kb_field(&std::fs::read_to_string(&path)?, field).with_context(|| path)
}

fn kb_field(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}
