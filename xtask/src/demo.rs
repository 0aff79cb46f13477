//! `cargo xtask demo`: tally's main job on the built-in default. For now: a container with a
//! numproc limit, a fork storm inside it, and its beancounters before and after. Runs its own
//! instance (tally-demo) and removes everything it made, also when a step fails.

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

fn show(bins: &Path, socket: &Path) -> Result<()> {
    tally(bins, socket, &["check"])?;
    tally(bins, socket, &["set", "101", "--numproc", "20:20"])?;
    tally(bins, socket, &["ubc", "101"])?;
    // The storm: 40 background sleeps; the shell dies at the first refused fork, so three
    // storms in a row show failcnt climbing while held never passes the limit.
    let storm = "for i in $(seq 40); do (sleep 3 &); done 2>/dev/null; wait";
    for _ in 0..3 {
        println!("\n$ tally exec 101 -- sh -c '{storm}'");
        let _ = Command::new(bins.join("tally"))
            .args(["exec", "101", "--", "/bin/sh", "-c", storm])
            .env("TALLY_SOCKET", socket)
            .status()?;
    }
    println!("\n(the storms' sleeps still run and are held; maxheld shows the peak stopped at the limit; failcnt counts every refused fork)");
    tally(bins, socket, &["ubc", "101"])?;
    std::thread::sleep(Duration::from_secs(4));
    println!("\n(4 s later, everything has exited: held is back to 0, maxheld keeps the peak)");
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
    let destroyed = Command::new(bins.join("tally"))
        .args(["destroy", "101"])
        .env("TALLY_SOCKET", socket)
        .status();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(tallyd.id() as i32, libc::SIGTERM) };
    tallyd.wait()?;
    let unloaded = Command::new(bins.join("tallyd"))
        .args(["--unload", "--instance", INSTANCE])
        .status()?;
    if !destroyed?.success() || !unloaded.success() {
        bail!("cleaning up the demo failed");
    }
    println!("\n(demo container destroyed, programs detached, pins removed)");
    Ok(())
}
