//! `tally-itest bench start [RUNS]`: how long a busybox container takes to come up, to run
//! `/bin/true` in, and to go away, with tally (CLI + tallyd) against runc and crun on the same
//! busybox tree with the same namespaces (pid, mount, uts, ipc, net, cgroup; a fresh netns
//! with only lo: tally's containers here have no --ipadd). runc's and crun's containers have
//! no user namespace, so the compared tally containers are `--privileged` ones; tally's default
//! (a user namespace and idmapped layers) is measured alongside, for information.
//!
//! Phases, the same for all three (two commands to come up, two to go away):
//! - create+start: `tally create` + `tally start --wait` / `RT create` + `RT start`;
//! - exec: `tally exec CT -- /bin/true` / `RT exec ID /bin/true`;
//! - stop: `tally stop --fast` + `tally destroy` / `RT kill ID KILL`, the init gone, `RT delete`.
//!
//! Rounds interleave the runtimes (the order rotates every round) so that the machine's drift
//! hits all three alike; round 0 is a discarded warm-up. The figure is the ratio of the
//! medians of start+exec+stop, tally over crun.
//!
//! crun cannot run on a hybrid cgroup host whose cgroup2 lists controllers: it runs in a
//! private mount namespace (made here with unshare + mount) where an empty file covers
//! /sys/fs/cgroup/unified/cgroup.controllers. Everything runc and crun make is named tally-*:
//! their state (--root) and the bundle under a temporary directory, their cgroups under
//! /tally-bench-oci-PID in every hierarchy; all of it is removed at the end, even on failure.

use std::{
    ffi::{CStr, CString},
    fs::File,
    os::{
        fd::{AsFd, OwnedFd},
        unix::{ffi::OsStrExt, process::CommandExt},
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use nix::{
    mount::{mount, MsFlags},
    sched::{setns, unshare, CloneFlags},
};
use serde_json::json;

use crate::{bench::median, env::Env, harness::ok};

/// The file crun must not read on a hybrid host.
const CONTROLLERS: &str = "/sys/fs/cgroup/unified/cgroup.controllers";
const PHASES: [&str; 3] = ["create+start", "exec", "stop"];
const TARGET: f64 = 1.0;

pub fn main(args: &[String]) -> i32 {
    with_count(args, "start [RUNS]", 30, 10_000, bench)
}

/// `tally-itest bench NAME [COUNT]`: `bench(COUNT)` (COUNT in 1..=max, `default` when not
/// given); exits 0, 1 after an error (printed) or 2 on a bad COUNT.
pub(crate) fn with_count(
    args: &[String],
    usage: &str,
    default: usize,
    max: usize,
    bench: impl FnOnce(usize) -> Result<()>,
) -> i32 {
    let count = match args.first().map(|s| s.parse::<usize>()).transpose() {
        Ok(n) => n.unwrap_or(default),
        Err(e) => {
            eprintln!("usage: tally-itest bench {usage}: {e}");
            return 2;
        }
    };
    if !(1..=max).contains(&count) {
        eprintln!("usage: tally-itest bench {usage}: from 1 to {max}");
        return 2;
    }
    match bench(count) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("bench: {e:#}");
            1
        }
    }
}

/// Per runtime, per phase: milliseconds of each run.
type Times = Vec<[Vec<f64>; 3]>;
/// tally's commands one by one (create, start, stop --fast, destroy): milliseconds of each run.
type Steps = [Vec<f64>; 4];

fn bench(runs: usize) -> Result<()> {
    for rt in ["runc", "crun"] {
        Command::new(rt)
            .arg("--version")
            .output()
            .with_context(|| format!("{rt} is not installed (cargo xtask setup installs it)"))?;
    }
    let mut env = Env::new("bench-start")?;
    let oci = match Oci::new() {
        Ok(oci) => oci,
        Err(e) => {
            let _ = env.teardown();
            return Err(e);
        }
    };
    let result = measure(&mut env, &oci, runs);
    let oci_cleanup = oci.cleanup();
    let cleanup = env.teardown();
    let (times, steps) = result?;
    oci_cleanup?;
    cleanup?;

    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    println!(
        "start: median of {runs} runs per runtime, rounds interleaved, tally {profile} build (CLI + tallyd), {} and {}",
        version("runc"),
        version("crun")
    );
    let mut totals = Vec::new();
    for (name, phases) in RUNTIMES.iter().zip(&times) {
        let total: Vec<f64> = (0..runs).map(|i| phases.iter().map(|p| p[i]).sum()).collect();
        println!(
            "start: {name:12} {} = {:.1} ms, {} = {:.1} ms, {} = {:.1} ms, start+exec+stop = {:.1} ms",
            PHASES[0],
            median(&phases[0]),
            PHASES[1],
            median(&phases[1]),
            PHASES[2],
            median(&phases[2]),
            median(&total)
        );
        totals.push(median(&total));
    }
    println!(
        "start: tally's commands: create {:.1} ms, start {:.1} ms, stop --fast {:.1} ms, destroy {:.1} ms",
        median(&steps[0]),
        median(&steps[1]),
        median(&steps[2]),
        median(&steps[3])
    );
    println!(
        "start: tally / runc start+exec+stop = {:.2} x; tally with its default user namespace / crun = {:.2} x (informational)",
        totals[0] / totals[1],
        totals[3] / totals[2]
    );
    let ratio = totals[0] / totals[2];
    let status = if ratio <= TARGET { "met" } else { "missed" };
    println!("bench: start_exec_stop_tally_vs_crun = {ratio:.2} x (target <= {TARGET:.1}: {status})");
    Ok(())
}

const RUNTIMES: [&str; 4] = ["tally", "runc", "crun", "tally+userns"];

fn version(rt: &str) -> String {
    Command::new(rt)
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or(rt)
                .to_string()
        })
        .unwrap_or_else(|_| rt.to_string())
}

fn measure(env: &mut Env, oci: &Oci, runs: usize) -> Result<(Times, Steps)> {
    env.start_tallyd()?;
    // tallyd makes its busybox template on first use; runc and crun get a copy of that tree.
    ok(env, &["template", "list"])?;
    copy_tree(&env.instance.root.join("template/busybox"), &oci.rootfs)?;
    let mut times: Times = RUNTIMES.iter().map(|_| Default::default()).collect();
    let mut steps = Steps::default();
    for round in 0..=runs {
        for k in 0..RUNTIMES.len() {
            let which = (round + k) % RUNTIMES.len();
            let t = match which {
                0 => {
                    let (t, s) = tally_run(env, round, true)?;
                    if round > 0 {
                        for (step, ms) in steps.iter_mut().zip(s) {
                            step.push(ms);
                        }
                    }
                    t
                }
                1 => oci.run(Runtime::Runc, round)?,
                2 => oci.run(Runtime::Crun, round)?,
                _ => tally_run(env, round, false)?.0,
            };
            // Round 0 warms the page cache and tallyd up.
            if round > 0 {
                for (phase, ms) in times[which].iter_mut().zip(t) {
                    phase.push(ms);
                }
            }
        }
    }
    Ok((times, steps))
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// The phases, and the four commands of create+start and stop one by one; `privileged`: no
/// user namespace, as runc's and crun's containers here.
fn tally_run(env: &Env, round: usize, privileged: bool) -> Result<([f64; 3], [f64; 4])> {
    let ct = (if privileged { 1000 } else { 5000 } + round).to_string();
    let timed = |args: &[&str]| -> Result<f64> {
        let t = Instant::now();
        ok(env, args)?;
        Ok(ms(t))
    };
    let create_args = ["create", ct.as_str(), "--privileged"];
    let create = timed(&create_args[..if privileged { 3 } else { 2 }])?;
    let start = timed(&["start", &ct, "--wait"])?;
    let exec = timed(&["exec", &ct, "--", "/bin/true"])?;
    let stop = timed(&["stop", &ct, "--fast"])?;
    let destroy = timed(&["destroy", &ct])?;
    Ok(([create + start, exec, stop + destroy], [create, start, stop, destroy]))
}

#[derive(Clone, Copy, PartialEq)]
enum Runtime {
    Runc,
    Crun,
}

impl Runtime {
    fn name(self) -> &'static str {
        match self {
            Runtime::Runc => "runc",
            Runtime::Crun => "crun",
        }
    }
}

/// runc's and crun's world: a temporary directory (bundles, shared rootfs, state, logs), the
/// private mount namespace crun runs in, and the cgroup parent their containers go under.
struct Oci {
    dir: PathBuf,
    rootfs: PathBuf,
    log: File,
    /// The mount namespace crun joins (kept alive by this descriptor alone).
    crun_ns: OwnedFd,
    /// Under every hierarchy's root.
    cgroup_parent: String,
}

impl Oci {
    fn new() -> Result<Oci> {
        let dir = std::env::temp_dir().join(format!("tally-bench-oci-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let made = (|| -> Result<Oci> {
            for sub in ["runc", "crun", "state-runc", "state-crun"] {
                std::fs::create_dir_all(dir.join(sub))?;
            }
            let log = File::options().create(true).append(true).open(dir.join("log"))?;
            let crun_ns = crun_namespace(&dir)?;
            Ok(Oci {
                rootfs: dir.join("rootfs"),
                log,
                crun_ns,
                cgroup_parent: format!("tally-bench-oci-{}", std::process::id()),
                dir: dir.clone(),
            })
        })();
        if made.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        made
    }

    /// `RT --root STATE ARGS` (crun inside its mount namespace), stdio to the log: a created
    /// container's init inherits it, so no pipe may be left open on it.
    fn command(&self, rt: Runtime, args: &[&str]) -> Result<Command> {
        let mut cmd = Command::new(rt.name());
        cmd.arg("--root")
            .arg(self.dir.join(format!("state-{}", rt.name())))
            .args(args)
            .stdin(Stdio::null())
            .stdout(self.log.try_clone()?)
            .stderr(self.log.try_clone()?);
        if rt == Runtime::Crun {
            let ns = self.crun_ns.try_clone()?;
            // SAFETY: setns(2) alone between fork and exec, on a descriptor opened before.
            unsafe {
                cmd.pre_exec(move || setns(ns.as_fd(), CloneFlags::CLONE_NEWNS).map_err(std::io::Error::from));
            }
        }
        Ok(cmd)
    }

    fn call(&self, rt: Runtime, args: &[&str]) -> Result<()> {
        let status = self.command(rt, args)?.status()?;
        if !status.success() {
            let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            bail!(
                "{} {} failed ({status}): {}",
                rt.name(),
                args.join(" "),
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            );
        }
        Ok(())
    }

    /// One container's create+start, exec and stop, in milliseconds.
    fn run(&self, rt: Runtime, round: usize) -> Result<[f64; 3]> {
        let id = format!("tally-bench-{}-{round}", rt.name());
        let bundle = self.dir.join(rt.name());
        let config = oci_config(&self.rootfs, &format!("/{}/{}-{round}", self.cgroup_parent, rt.name()));
        std::fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
        let bundle = bundle.to_string_lossy().into_owned();

        let t = Instant::now();
        self.call(rt, &["create", "--bundle", &bundle, &id])?;
        self.call(rt, &["start", &id])?;
        let start = ms(t);
        let pid = self.init_pid(rt, &id)?;
        let t = Instant::now();
        self.call(rt, &["exec", &id, "/bin/true"])?;
        let exec = ms(t);
        let t = Instant::now();
        self.call(rt, &["kill", &id, "KILL"])?;
        wait_dead(pid)?;
        self.call(rt, &["delete", &id])?;
        Ok([start, exec, ms(t)])
    }

    fn init_pid(&self, rt: Runtime, id: &str) -> Result<u32> {
        let out = self.command(rt, &["state", id])?.stdout(Stdio::piped()).output()?;
        ensure!(out.status.success(), "{} state {id} failed", rt.name());
        let state: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        state["pid"]
            .as_u64()
            .map(|p| p as u32)
            .with_context(|| format!("no pid in {} state {id}", rt.name()))
    }

    /// Every container left in our state directories, our cgroups, the directory.
    fn cleanup(&self) -> Result<()> {
        for rt in [Runtime::Runc, Runtime::Crun] {
            let listed = self.command(rt, &["list", "-q"])?.stdout(Stdio::piped()).output()?;
            for id in String::from_utf8_lossy(&listed.stdout).split_whitespace() {
                let _ = self.call(rt, &["delete", "--force", id]);
            }
        }
        remove_cgroups(&self.cgroup_parent)?;
        std::fs::remove_dir_all(&self.dir).with_context(|| format!("removing {}", self.dir.display()))
    }
}

/// Waits until process `pid` is a zombie or gone (runc and crun delete only a stopped
/// container; they see a zombie init as stopped).
fn wait_dead(pid: u32) -> Result<()> {
    let stat = format!("/proc/{pid}/stat");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match std::fs::read_to_string(&stat) {
            Err(_) => return Ok(()),
            Ok(s)
                if s.rsplit(')')
                    .next()
                    .is_some_and(|rest| rest.trim_start().starts_with(['Z', 'X'])) =>
            {
                return Ok(());
            }
            Ok(_) if Instant::now() > deadline => bail!("pid {pid} outlived SIGKILL for 10 s"),
            Ok(_) => std::thread::sleep(Duration::from_micros(200)),
        }
    }
}

/// A mount namespace of crun's own: a private copy of ours with an empty file over the
/// cgroup2 controller list (when the host has one). A short-lived child makes it; the
/// returned descriptor keeps it.
fn crun_namespace(dir: &Path) -> Result<OwnedFd> {
    let empty = dir.join("empty-cgroup.controllers");
    File::create(&empty)?;
    let empty = CString::new(empty.as_os_str().as_bytes())?;
    let target = CString::new(CONTROLLERS)?;
    let cover = Path::new(CONTROLLERS).exists();
    let mut holder = Command::new("sleep");
    holder.arg("60").stdin(Stdio::null());
    // SAFETY: between fork and exec only syscalls on strings made before the fork.
    unsafe {
        holder.pre_exec(move || {
            unshare(CloneFlags::CLONE_NEWNS)?;
            // Private, so that nothing mounted here reaches the host's namespace.
            mount(
                None::<&CStr>,
                c"/",
                None::<&CStr>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&CStr>,
            )?;
            if cover {
                mount(
                    Some(empty.as_c_str()),
                    target.as_c_str(),
                    None::<&CStr>,
                    MsFlags::MS_BIND,
                    None::<&CStr>,
                )?;
            }
            Ok(())
        });
    }
    let mut child = holder.spawn().context("making crun's mount namespace")?;
    let ns = File::open(format!("/proc/{}/ns/mnt", child.id()));
    let _ = child.kill();
    let _ = child.wait();
    Ok(ns.context("opening crun's mount namespace")?.into())
}

/// runc's `spec` defaults for a busybox init (no terminal, the root writable as tally's
/// overlay is) plus a cgroup namespace and the cgroup path.
fn oci_config(rootfs: &Path, cgroups_path: &str) -> serde_json::Value {
    let caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
    let ns: Vec<_> = ["pid", "mount", "uts", "ipc", "network", "cgroup"]
        .iter()
        .map(|t| json!({ "type": t }))
        .collect();
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": ["/sbin/init"],
            "env": ["PATH=/bin:/sbin:/usr/bin:/usr/sbin"],
            "cwd": "/",
            "capabilities": { "bounding": caps, "effective": caps, "permitted": caps },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true
        },
        "root": { "path": rootfs, "readonly": false },
        "hostname": "tally-bench",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
              "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }
        ],
        "linux": {
            "cgroupsPath": cgroups_path,
            "resources": { "devices": [{ "allow": false, "access": "rwm" }] },
            "namespaces": ns,
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

/// Removes cgroup `parent` (only ours: its name has our pid) and its children from every
/// hierarchy, killing what is left in them first.
fn remove_cgroups(parent: &str) -> Result<()> {
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![root.join(parent)];
    for h in std::fs::read_dir(root)?.flatten() {
        dirs.push(h.path().join(parent));
    }
    for dir in dirs.into_iter().filter(|d| d.is_dir()) {
        for child in std::fs::read_dir(&dir)?.flatten().filter(|e| e.path().is_dir()) {
            rmdir_cgroup(&child.path())?;
        }
        rmdir_cgroup(&dir)?;
    }
    Ok(())
}

fn rmdir_cgroup(dir: &Path) -> Result<()> {
    for _ in 0..200 {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: kill(2) on a process in one of this benchmark's own cgroups.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => std::thread::sleep(Duration::from_millis(25)),
            Err(e) => return Err(e).with_context(|| format!("removing cgroup {}", dir.display())),
        }
    }
    std::fs::remove_dir(dir).with_context(|| format!("removing cgroup {}", dir.display()))
}

/// `cp -a` of a template tree: directories, files (with their modes) and symlinks.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::{symlink, PermissionsExt};
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            symlink(std::fs::read_link(&src)?, &dst)?;
        } else if kind.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst)?;
        }
        if !kind.is_symlink() {
            let mode = entry.metadata()?.permissions().mode();
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
}
