//! Exactness: after a randomized workload of 10,000 operations, every row the tier counts holds
//! exactly what the kernel's own views say the container has (read from /proc, kcmp and the
//! sockets themselves), and everything returns to zero when the workload is gone.

use std::{collections::BTreeMap, os::fd::RawFd};

use anyhow::{bail, Context, Result};
use tally::ubc::Resource;

use crate::{
    check,
    drive::Driven,
    env::Env,
    harness::{Outcome, Test},
    try_or_fail,
};

pub fn tests() -> Vec<Test> {
    vec![
        Test {
            name: "held_equals_the_ground_truth_from_proc_after_10000_random_operations",
            run: exact,
        },
        Test {
            name: "held_equals_the_ground_truth_when_every_charge_record_overflows_to_the_hash_map",
            run: exact_with_a_full_charge_table,
        },
    ]
}

const CT: &str = "401";
const OPS: &str = "10000";

#[derive(serde::Deserialize)]
struct Paused {
    pid: i32,
}

fn exact(env: &mut Env) -> Outcome {
    exact_after(env, |_| Ok(()), |_| Ok(()))
}

/// The same with every free slot of the charge table taken before the workload (by keys of
/// no row): every record the programs make goes to the `charges` hash map, so each free path
/// (tasks, files with their three rows, sockets, locks) is checked through it; afterwards it
/// must hold nothing.
fn exact_with_a_full_charge_table(env: &mut Env) -> Outcome {
    match exact_after(env, crate::numproc::fill_charge_table, records_in_the_hash_map) {
        Outcome::Pass => {}
        other => return other,
    }
    let pins = env.instance.pins();
    let left = try_or_fail!(crate::numproc::charges_in_hash(&pins), "reading charges_in_hash");
    check!(
        left == 0,
        "every record should be gone with the workload: {left} left in the hash map"
    );
    Outcome::Pass
}

/// While the workload holds its objects, their records must be in the hash map.
fn records_in_the_hash_map(env: &Env) -> Result<()> {
    let n = crate::numproc::charges_in_hash(&env.instance.pins())?;
    if n == 0 {
        bail!("the workload's records should be in the hash map, which holds none");
    }
    Ok(())
}

/// The exactness check, with `prepare` run once tallyd is up and before the container's
/// limits are set, and `holding` while the workload holds what it made.
fn exact_after(env: &mut Env, prepare: fn(&Env) -> Result<()>, holding: fn(&Env) -> Result<()>) -> Outcome {
    let ready = try_or_fail!(env.start_tallyd(), "starting tallyd");
    try_or_fail!(prepare(env), "preparing the maps");
    let full = ready.contains("tier=full");
    let limits = [
        "--numproc",
        "1000",
        "--numfile",
        "10000",
        "--numflock",
        "1000",
        "--numpty",
        "100",
    ];
    let socks = ["--numtcpsock", "1000", "--numothersock", "1000"];
    let out = try_or_fail!(env.set(CT, &[&limits[..], &socks].concat()), "tally set");
    check!(
        out.status.success(),
        "tally set: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let seed = crate::harness::seed();
    let cmd = env.workload_in(CT, &["random", OPS, &seed.to_string()]);
    let mut w = try_or_fail!(Driven::start(cmd), "starting the workload");
    let paused: Paused = try_or_fail!(w.read(), "the workload");
    let truth = try_or_fail!(
        ground_truth(env, paused.pid, full),
        "reading the ground truth from /proc"
    );
    try_or_fail!(holding(env), "while the workload holds its objects");
    let mut mismatches = Vec::new();
    for (row, expected) in &truth {
        // Frees that the kernel defers (sockets after an RCU grace period) settle in ms.
        if let Err(e) = env.wait_row(CT, *row, &format!("held {expected}"), |r| r.held == *expected) {
            mismatches.push(format!("{e:#}"));
        }
    }
    try_or_fail!(w.finish(), "ending the workload");
    check!(mismatches.is_empty(), "seed {seed}: {}", mismatches.join("; "));
    for row in truth.keys() {
        try_or_fail!(env.wait_row(CT, *row, "held 0", |r| r.held == 0), "after the workload");
    }
    Outcome::Pass
}

/// What the container holds of each row the tier counts, by the kernel's own accounts.
fn ground_truth(env: &Env, pid: i32, full: bool) -> Result<BTreeMap<Resource, u64>> {
    let mut truth = BTreeMap::new();
    truth.insert(Resource::NumProc, env.cgroup(CT)?.pids()?.len() as u64);

    let (mut paths, mut ptys, mut sockets) = (Vec::new(), Vec::new(), Vec::new());
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let entry = entry?;
        let fd: RawFd = entry.file_name().to_string_lossy().parse()?;
        // stdin, stdout and stderr come from the test harness, opened outside the container
        // (in the VM stderr is /dev/console): never charged to it.
        if fd <= 2 {
            continue;
        }
        let target = std::fs::read_link(entry.path())?.to_string_lossy().into_owned();
        if target.starts_with("socket:") {
            sockets.push(fd);
        } else if target == "/dev/ptmx" || target == "/dev/pts/ptmx" {
            ptys.push(fd);
            paths.push(fd);
        } else if target.starts_with('/') {
            paths.push(fd);
        }
    }
    let (mut tcp, mut inet_other, mut other) = (0, 0, 0);
    let pidfd = pidfd_open(pid)?;
    for fd in sockets {
        let (domain, ty, proto) = socket_kind(pidfd, fd)?;
        let inet = domain == libc::AF_INET || domain == libc::AF_INET6;
        if inet && ty == libc::SOCK_STREAM && (proto == 0 || proto == libc::IPPROTO_TCP) {
            tcp += 1;
        } else if inet {
            inet_other += 1;
        } else {
            other += 1;
        }
    }
    // SAFETY: closing the pidfd this function opened.
    unsafe { libc::close(pidfd) };
    truth.insert(Resource::NumTcpSock, tcp);
    // The fallback tier's cgroup sock programs see inet sockets only.
    truth.insert(
        Resource::NumOtherSock,
        if full { inet_other + other } else { inet_other },
    );
    if full {
        let mapped = mapped_files(pid)?;
        truth.insert(Resource::NumFile, distinct_files(pid, &paths)? + mapped);
        truth.insert(Resource::NumPty, distinct_files(pid, &ptys)?);
        let locks = std::fs::read_to_string("/proc/locks")?;
        let flocks = locks
            .lines()
            .filter(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.get(1) == Some(&"FLOCK") && f.get(4) == Some(&pid.to_string().as_str())
            })
            .count();
        truth.insert(Resource::NumFlock, flocks as u64);
    }
    Ok(truth)
}

/// Open file descriptions behind `fds` of `pid` (dup'd fds share one), by kcmp(KCMP_FILE).
fn distinct_files(pid: i32, fds: &[RawFd]) -> Result<u64> {
    let mut reps: Vec<RawFd> = Vec::new();
    for &fd in fds {
        let mut seen = false;
        for &r in &reps {
            // SAFETY: kcmp(2) compares two fds of a process we may inspect (root).
            let same = unsafe {
                libc::syscall(libc::SYS_kcmp, pid, pid, 0 /* KCMP_FILE */, fd, r)
            };
            if same < 0 {
                bail!("kcmp: {}", std::io::Error::last_os_error());
            }
            if same == 0 {
                seen = true;
                break;
            }
        }
        if !seen {
            reps.push(fd);
        }
    }
    Ok(reps.len() as u64)
}

/// Files the process maps (its executable, the loader, libraries): each was opened once and
/// stays referenced by the mappings after its fd is closed.
fn mapped_files(pid: i32) -> Result<u64> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let mut files: Vec<(String, String)> = maps
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 6 && f[5].starts_with('/') && f[4] != "0").then(|| (f[3].to_string(), f[4].to_string()))
        })
        .collect();
    files.sort();
    files.dedup();
    Ok(files.len() as u64)
}

fn pidfd_open(pid: i32) -> Result<RawFd> {
    // SAFETY: pidfd_open(2) with no flags.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        bail!("pidfd_open: {}", std::io::Error::last_os_error());
    }
    Ok(fd as RawFd)
}

/// The socket's own (domain, type, protocol): its fd is borrowed with pidfd_getfd.
fn socket_kind(pidfd: RawFd, fd: RawFd) -> Result<(i32, i32, i32)> {
    // SAFETY: pidfd_getfd(2) duplicates the target's fd into this process.
    let mine = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) };
    if mine < 0 {
        bail!("pidfd_getfd: {}", std::io::Error::last_os_error());
    }
    let mine = mine as RawFd;
    let opt = |name| -> Result<i32> {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt(2) into a c_int we own, with its length.
        let r = unsafe {
            libc::getsockopt(
                mine,
                libc::SOL_SOCKET,
                name,
                &mut v as *mut _ as *mut libc::c_void,
                &mut len,
            )
        };
        if r < 0 {
            bail!("getsockopt: {}", std::io::Error::last_os_error());
        }
        Ok(v)
    };
    let kind = (opt(libc::SO_DOMAIN), opt(libc::SO_TYPE), opt(libc::SO_PROTOCOL));
    // SAFETY: closing the duplicate made above.
    unsafe { libc::close(mine) };
    Ok((kind.0?, kind.1?, kind.2.context("SO_PROTOCOL")?))
}
