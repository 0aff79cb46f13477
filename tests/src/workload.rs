//! Workloads run inside a container, as this binary's `workload` subcommand (single-threaded,
//! so that every task is one the kernel counts exactly once).
//!
//! `workload [--join CGROUP_PROCS]... forks N`: optionally join cgroups (what tallyd would do,
//! for runs while tallyd is down), fork N children that block on a pipe, print
//! `{"forked":F,"eagain":E,"other":O}`, wait for a line on stdin, release the children,
//! reap them, exit 0.
//!
//! `workload [--join ...] forkloop N`: N times fork, _exit in the child, waitpid; prints the
//! nanoseconds the loop took (the fork benchmark).

use std::{
    io::{BufRead, Write},
    os::fd::AsRawFd,
};

use nix::{
    errno::Errno,
    sys::wait::waitpid,
    unistd::{fork, ForkResult},
};

pub fn main(args: &[String]) -> i32 {
    let mut rest = args;
    while let [flag, path, tail @ ..] = rest {
        if flag != "--join" {
            break;
        }
        if let Err(e) = std::fs::write(path, std::process::id().to_string()) {
            eprintln!("workload: joining {path}: {e}");
            return 2;
        }
        rest = tail;
    }
    match rest {
        [cmd, n] if cmd == "forks" => match n.parse() {
            Ok(n) => forks(n),
            Err(_) => 2,
        },
        [cmd, n] if cmd == "forkloop" => match n.parse() {
            Ok(n) => forkloop(n),
            Err(_) => 2,
        },
        _ => {
            eprintln!("workload: unknown arguments {rest:?}");
            2
        }
    }
}

fn forks(n: usize) -> i32 {
    let (read_end, write_end) = nix::unistd::pipe().expect("pipe");
    let (mut forked, mut eagain, mut other) = (0, 0, 0);
    let mut children = Vec::new();
    for _ in 0..n {
        // SAFETY: this process is single-threaded (checked by the caller's design: the
        // workload starts no threads), so the child may run arbitrary code until _exit.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                drop(write_end);
                let mut b = [0u8; 1];
                let _ = nix::unistd::read(read_end.as_raw_fd(), &mut b);
                // SAFETY: leaves the child at once without running the parent's destructors.
                unsafe { libc::_exit(0) };
            }
            Ok(ForkResult::Parent { child }) => {
                forked += 1;
                children.push(child);
            }
            Err(Errno::EAGAIN) => eagain += 1,
            Err(_) => other += 1,
        }
    }
    println!("{{\"forked\":{forked},\"eagain\":{eagain},\"other\":{other}}}");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    drop(write_end);
    for c in children {
        let _ = waitpid(c, None);
    }
    0
}

fn forkloop(n: u64) -> i32 {
    let start = std::time::Instant::now();
    for _ in 0..n {
        // SAFETY: single-threaded process; the child only calls _exit.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => unsafe { libc::_exit(0) },
            Ok(ForkResult::Parent { child }) => {
                let _ = waitpid(child, None);
            }
            Err(e) => {
                eprintln!("workload: fork: {e}");
                return 1;
            }
        }
    }
    println!("{}", start.elapsed().as_nanos());
    0
}
