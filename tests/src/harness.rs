//! A small test runner: each test returns pass, fail or skip-with-reason; panics are
//! failures; every test gets a fresh environment that is torn down whatever happens.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, TcpStream},
    panic::AssertUnwindSafe,
    time::{Duration, Instant},
};

use tally::ct::{net, CtId};

use anyhow::{bail, Context, Result};

use crate::env::Env;

/// `tally ARGS`, failing with its stderr unless it exits 0; returns stdout.
pub fn ok(env: &Env, args: &[&str]) -> Result<String> {
    let out = env.tally(args)?;
    if !out.status.success() {
        bail!(
            "tally {} exited {:?}: {}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `GET path` from 127.0.0.1:port over HTTP/1.0: the body of a 200 answer.
pub fn http_get(port: u16, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        bail!("GET {path}: {status}: {}", body.trim());
    }
    Ok(body.to_string())
}

pub enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
    /// What the test shows is shown in another tier (which has what it needs): reported as a
    /// skip, but not turned into a failure where every test must run.
    Elsewhere(String),
}

pub type TestFn = fn(&mut Env) -> Outcome;

/// Whether the CPUs are emulated (the VM tier under TCG; xtask sets TALLY_ITEST_EMULATED):
/// timing-based checks and waits scale with it.
pub fn emulated() -> bool {
    std::env::var_os("TALLY_ITEST_EMULATED").is_some()
}

/// For a test whose subject does not change with tally's enforcement tier (`why` says what it
/// depends on instead): in an emulated VM's run with the fallback tier forced, the same
/// kernel's full-tier run (same cgroup v2 layout) and the host's fallback run have shown it
/// already, and emulated minutes are what CI's hour is short of. Some(outcome) to return then.
pub fn shown_by_the_full_tier_run(why: &str) -> Option<Outcome> {
    let emulated = emulated();
    let forced_fallback = std::env::var("TALLY_ITEST_TIER").as_deref() == Ok("fallback");
    (emulated && forced_fallback).then(|| {
        Outcome::Elsewhere(format!(
            "{why}: this kernel's full-tier run and the host's fallback-tier run show it"
        ))
    })
}

pub struct Test {
    pub name: &'static str,
    pub run: TestFn,
}

/// `check!(cond, "message {}", x)` fails the test with the message.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return $crate::harness::Outcome::Fail(format!($($fmt)+));
        }
    };
}

/// Unwraps a Result, failing the test with context on error.
#[macro_export]
macro_rules! try_or_fail {
    ($e:expr, $what:expr) => {
        match $e {
            Ok(v) => v,
            Err(err) => return $crate::harness::Outcome::Fail(format!("{}: {:#}", $what, err)),
        }
    };
}

pub fn run(tests: Vec<Test>, filter: &str) -> i32 {
    let tier = std::env::var("TALLY_ITEST_TIER").unwrap_or_else(|_| "auto".into());
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    println!("tally-itest: kernel {kernel}, tallyd --tier {tier}");
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for t in tests.iter().filter(|t| t.name.contains(filter)) {
        let start = Instant::now();
        let outcome = match Env::new(t.name) {
            Ok(mut env) => {
                let r = std::panic::catch_unwind(AssertUnwindSafe(|| (t.run)(&mut env)))
                    .unwrap_or_else(|p| Outcome::Fail(format!("panicked: {}", panic_message(&p))));
                match (r, env.teardown()) {
                    (Outcome::Pass, Err(e)) => Outcome::Fail(format!("teardown: {e:#}")),
                    (r, _) => r,
                }
            }
            Err(e) => Outcome::Fail(format!("setting up: {e:#}")),
        };
        // Where every test must run (the full tier in the VMs), a skip is a failure.
        let outcome = match outcome {
            Outcome::Skip(why) if std::env::var_os("TALLY_ITEST_NO_SKIP").is_some_and(|v| !v.is_empty()) => {
                Outcome::Fail(format!("skipped where every test must run: {why}"))
            }
            Outcome::Elsewhere(why) => Outcome::Skip(why),
            other => other,
        };
        let secs = start.elapsed().as_secs_f32();
        match outcome {
            Outcome::Pass => {
                passed += 1;
                println!("test {} ... ok ({secs:.1}s)", t.name);
            }
            Outcome::Fail(m) => {
                failed += 1;
                println!("test {} ... FAILED ({secs:.1}s): {m}", t.name);
            }
            Outcome::Skip(why) | Outcome::Elsewhere(why) => {
                skipped += 1;
                println!("test {} ... skipped: {why}", t.name);
            }
        }
    }
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        1
    } else {
        0
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// A random seed for randomized tests, or TALLY_ITEST_SEED's to repeat a run (tests print it).
pub fn seed() -> u64 {
    std::env::var("TALLY_ITEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

/// Fetches `path` from `addr:port` over HTTP/1.0, after checking the host routes `addr`
/// through container `ct`'s veth (and so nowhere else).
pub fn container_http_get(env: &Env, ct: &str, addr: Ipv4Addr, port: u16, path: &str) -> Result<String> {
    // httpd was just started in the background: give it a moment to listen.
    let mut s = connect_to(env, ct, addr, port, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

/// A TCP connection to `addr:port`, retried for up to `wait` while the service comes up,
/// after checking the host routes `addr` through container `ct`'s veth (and so nowhere else).
pub fn connect_to(env: &Env, ct: &str, addr: Ipv4Addr, port: u16, wait: Duration) -> Result<TcpStream> {
    connect_via(
        &net::host_interface(&env.instance.name, &CtId::parse(ct)?),
        addr,
        port,
        wait,
    )
}

/// [`connect`] where the host's route to `addr` must go through interface `via_if`.
pub fn connect_via(via_if: &str, addr: Ipv4Addr, port: u16, wait: Duration) -> Result<TcpStream> {
    let via = net::route_interface(addr)?;
    if via.as_deref() != Some(via_if) {
        bail!("refusing to send: the host routes {addr} via {via:?}, not {via_if}");
    }
    let deadline = std::time::Instant::now() + wait;
    loop {
        match TcpStream::connect_timeout(&(addr, port).into(), Duration::from_secs(2)) {
            Ok(s) => return Ok(s),
            Err(e) if std::time::Instant::now() >= deadline => return Err(e.into()),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The names in a directory, sorted (none when it is missing).
pub fn dir_names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The host pid of container `ct`'s init: the process of its cgroup that is PID 1 inside.
pub fn init_pid(env: &Env, ct: &str) -> Result<u32> {
    for pid in env.cgroup(ct)?.pids()? {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap_or_default();
        if nspid.split_whitespace().last() == Some("1") {
            return Ok(pid);
        }
    }
    bail!("no PID 1 in {ct}'s cgroup")
}

/// `tally status CT`, its line.
pub fn status(env: &Env, ct: &str) -> Result<String> {
    Ok(ok(env, &["status", ct])?.trim().to_string())
}
