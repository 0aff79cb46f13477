//! `cargo xtask demo`: tally's main job on the built-in default: three busybox containers
//! with different limits (routed addresses from 10.77.0.0/16), an httpd in one, a fork storm
//! that hits numproc in it, then `tally list` and `tally ubc`. Runs its own instance
//! (tally-demo, state in target/tally-demo) and removes everything it made, also when a step
//! fails.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::{build_binaries, root, setup};

const INSTANCE: &str = "tally-demo";

pub fn run() -> Result<()> {
    setup::run()?;
    let bins = build_binaries()?;
    let state = root().join("target/tally-demo");
    std::fs::create_dir_all(&state)?;
    let socket = state.join("tally.sock");
    let mut tallyd = start_tallyd(&bins, &state, &socket)?;
    let shown = show(&bins, &socket);
    let cleaned = cleanup(&bins, &socket, &mut tallyd);
    shown.and(cleaned)
}

fn tally(bins: &Path, socket: &Path, args: &[&str]) -> Result<()> {
    println!("\n$ tally {}", args.join(" "));
    let status = Command::new(bins.join("tally"))
        .args(args)
        .env("TALLY_SOCKET", socket)
        .status()?;
    if !status.success() {
        bail!("tally {} failed: {status}", args.join(" "));
    }
    Ok(())
}

/// The containers: (CTID, address, extra `tally create` flags, `tally set` flags).
const CONTAINERS: &[(&str, &str, &[&str], &[&str])] = &[
    (
        "101",
        "10.77.0.101",
        &["--hostname", "web"],
        &["--numproc", "20:20", "--numfile", "500:500"],
    ),
    ("102", "10.77.0.102", &["--hostname", "db", "--config", "basic"], &[]),
    (
        "103",
        "10.77.0.103",
        &["--hostname", "batch"],
        &["--ram", "64M", "--swap", "0", "--cpuunits", "250"],
    ),
];

fn show(bins: &Path, socket: &Path) -> Result<()> {
    tally(bins, socket, &["check"])?;
    tally(bins, socket, &["template", "list"])?;
    for (ct, addr, create, set) in CONTAINERS {
        tally(bins, socket, &[&["create", ct, "--ipadd", addr][..], create].concat())?;
        if !set.is_empty() {
            tally(bins, socket, &[&["set", ct][..], set, &["--save"]].concat())?;
        }
        tally(bins, socket, &["start", ct])?;
    }
    tally(
        bins,
        socket,
        &["exec", "101", "--", "httpd", "-p", "80", "-h", "/var/www"],
    )?;
    tally(bins, socket, &["exec", "101", "--", "ps"])?;
    tally(bins, socket, &["exec", "102", "--", "hostname"])?;
    tally(bins, socket, &["list"])?;
    // The storm: 40 background sleeps in 101, whose numproc is 20; the shell dies at the first
    // refused fork, so three storms in a row show failcnt climbing while held stays at the limit.
    let storm = "for i in $(seq 40); do (sleep 3 &); done 2>/dev/null; wait";
    for _ in 0..3 {
        println!("\n$ tally exec 101 -- sh -c '{storm}'");
        let _ = Command::new(bins.join("tally"))
            .args(["exec", "101", "--", "/bin/sh", "-c", storm])
            .env("TALLY_SOCKET", socket)
            .status()?;
    }
    println!("\n(101's sleeps still run and are held: numproc sits at its limit, failcnt counts every refused fork)");
    tally(
        bins,
        socket,
        &[
            "list",
            "-o",
            "ctid,nproc,status,ip,hostname,numproc,numproc.m,numproc.l,numproc.f",
        ],
    )?;
    tally(bins, socket, &["ubc"])?;
    std::thread::sleep(Duration::from_secs(4));
    println!("\n(4 s later the sleeps have exited: held is back down, maxheld keeps the peak)");
    tally(bins, socket, &["ubc", "101"])
}

fn start_tallyd(bins: &Path, state: &Path, socket: &Path) -> Result<Child> {
    println!(
        "$ tallyd --root {} --instance {INSTANCE} --socket {}",
        state.display(),
        socket.display()
    );
    let mut child = Command::new(bins.join("tallyd"))
        .arg("--root")
        .arg(state)
        .args(["--instance", INSTANCE])
        .arg("--socket")
        .arg(socket)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting tallyd")?;
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    match lines.next() {
        Some(Ok(line)) if line.starts_with("tallyd: ready") => {
            println!("{line}");
            Ok(child)
        }
        other => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("tallyd did not start: {other:?}")
        }
    }
}

fn cleanup(bins: &Path, socket: &Path, tallyd: &mut Child) -> Result<()> {
    let mut destroyed = Ok(());
    for (ct, ..) in CONTAINERS {
        let status = Command::new(bins.join("tally"))
            .args(["destroy", ct])
            .env("TALLY_SOCKET", socket)
            .stderr(Stdio::null())
            .status()?;
        // 14: never created (an earlier step failed).
        if !status.success() && status.code() != Some(14) {
            destroyed = Err(anyhow::anyhow!("tally destroy {ct}: {status}"));
        }
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(tallyd.id() as i32, libc::SIGTERM) };
    tallyd.wait()?;
    let unloaded = Command::new(bins.join("tallyd"))
        .args(["--unload", "--instance", INSTANCE])
        .status()?;
    destroyed?;
    if !unloaded.success() {
        bail!("cleaning up the demo failed");
    }
    println!("\n(demo containers destroyed, programs detached, pins removed)");
    Ok(())
}
