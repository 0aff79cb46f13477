//! `tally exec CTID -- CMD...`: runs CMD inside the running container (its namespaces,
//! cgroups and root, with the container's bounded capabilities) and exits with CMD's code.
//!
//! The CLI asks tallyd for the container's join plan (tallyd refuses at the numproc barrier),
//! joins the container's PID namespace for its children only (tally::ct::join holds what
//! joining takes, shared with whatever else joins a container), and forks the child straight
//! into the container's cgroup2 directory (clone3's CLONE_INTO_CGROUP); the child writes
//! itself into the v1 hierarchies' `tasks` files, enters the other namespaces and execs CMD.
//! Neither move takes the thread-group lock that a cgroup.procs write takes (its first taking
//! after a quiet spell waits an RCU grace period: 4 to 16 ms). The CLI stays on the host and
//! waits.
//!
//! `--cgroup-only` runs CMD on the host (host namespaces and files), charged to the container,
//! like `lxc-attach` with no namespaces; the container need not be running.

use std::{
    ffi::{CString, OsString},
    io::{Read, Write},
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
};

use nix::{
    sys::wait::{waitpid, WaitStatus},
    unistd::{fork, ForkResult},
};
use tally::{
    api::{Attach, Client, ExitCode, JoinPlan},
    ct::{join, launch::clone_into_cgroup},
};

use crate::{block_on, Failure};

#[derive(clap::Args, Debug)]
pub struct Args {
    ctid: String,
    /// Run on the host, only charged to the container's cgroups and beancounters.
    #[arg(long)]
    cgroup_only: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<OsString>,
}

const CONTAINER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn run(client: &Client, args: Args) -> Result<i32, Failure> {
    let ct = crate::ctid(&args.ctid)?;
    let argv: Vec<CString> = args
        .command
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| Failure::new(ExitCode::BadArgument, "a command argument contains a NUL byte"))?;
    let threads = std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0);
    if threads != 1 {
        return Err(Failure::new(
            ExitCode::SystemError,
            format!("exec must run single-threaded, found {threads} threads"),
        ));
    }
    if args.cgroup_only {
        let pid = std::process::id();
        let _: serde_json::Value = block_on(client.post(&format!("/v1/containers/{ct}/attach"), &Attach { pid }))?;
        return Ok(exec(&argv));
    }

    run_inside(client, &ct, &argv, false)
}

/// Runs `argv` inside running container `ct` (see the module doc); with `tty`, on a pty
/// made inside the container (its own devpts) that this process relays to its terminal.
pub fn run_inside(client: &Client, ct: &tally::ct::CtId, argv: &[CString], tty: bool) -> Result<i32, Failure> {
    // One request: the init, the cgroups, and tallyd's numproc check.
    let plan: JoinPlan = block_on(client.get(&format!("/v1/containers/{ct}/join")))?;
    let handles = join::Handles::open(&plan).map_err(|e| joining(ct, e))?;
    handles.enter_pid_namespace().map_err(|e| joining(ct, e))?;
    let (pidfd, userns) = (&handles.pidfd, handles.userns);
    let (pty_parent, pty_child) = crate::pty::socket_pair().map_err(sys("socketpair"))?;
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
    // Born in the container's cgroup2 directory; the child joins the v1 hierarchies itself.
    let pid = clone_into_cgroup(Some(handles.cgroup_dir.as_raw_fd()))
        .map_err(|e| Failure::new(ExitCode::SystemError, e.to_string()))?;
    if pid == 0 {
        // Rust code in the child is fine: this process is single-threaded (checked by the
        // callers), so the child is a whole copy of it.
        drop(ready_r);
        drop(pty_parent);
        if let Err(e) = handles.join_v1() {
            eprintln!("tally: {e}");
            std::process::exit(ExitCode::SystemError.number());
        }
        let _ = std::fs::File::from(ready_w).write_all(b"r");
        std::process::exit(enter_and_exec(pidfd, userns, argv, tty.then_some(&pty_child)));
    }
    let child = nix::unistd::Pid::from_raw(pid);
    drop(ready_w);
    drop(pty_child);
    let mut ready = [0u8; 1];
    if std::fs::File::from(ready_r).read(&mut ready).ok() != Some(1) {
        return match waitpid(child, None) {
            // A kernel with cgroup.kill's kill_seq SIGKILLs a child forked into a cgroup that
            // was once killed that way: then the slow way, a move through cgroup.procs.
            Ok(WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _)) => {
                run_attached(client, ct, pidfd, userns, argv, tty)
            }
            Ok(WaitStatus::Exited(_, code)) => Ok(code),
            other => Err(Failure::new(
                ExitCode::SystemError,
                format!("the command's process ended before it joined the container: {other:?}"),
            )),
        };
    }
    finish(child, tty.then_some(&pty_parent))
}

fn joining(ct: &tally::ct::CtId, e: join::JoinError) -> Failure {
    let code = match e {
        join::JoinError::NotRunning(_) => ExitCode::NotRunning,
        _ => ExitCode::SystemError,
    };
    Failure::new(code, format!("container {ct}: {e}"))
}

fn sys(what: &str) -> impl FnOnce(nix::Error) -> Failure {
    let what = what.to_string();
    move |e: nix::Error| Failure::new(ExitCode::SystemError, format!("{what}: {e}"))
}

/// The slow way in (this process already in the container's PID namespace): fork, have
/// tallyd move the child through cgroup.procs, then let it go on.
fn run_attached(
    client: &Client,
    ct: &tally::ct::CtId,
    pidfd: &OwnedFd,
    userns: bool,
    argv: &[CString],
    tty: bool,
) -> Result<i32, Failure> {
    let (go_r, go_w) = nix::unistd::pipe().map_err(sys("pipe"))?;
    let (pty_parent, pty_child) = crate::pty::socket_pair().map_err(sys("socketpair"))?;
    // SAFETY: this process is single-threaded (checked by the callers), so the child may run
    // Rust code.
    match unsafe { fork() }.map_err(sys("fork"))? {
        ForkResult::Child => {
            drop(go_w);
            let mut go = [0u8; 1];
            let mut r = std::fs::File::from(go_r);
            if r.read(&mut go).ok() != Some(1) {
                std::process::exit(ExitCode::ResourceShortage.number());
            }
            drop(pty_parent);
            std::process::exit(enter_and_exec(pidfd, userns, argv, tty.then_some(&pty_child)))
        }
        ForkResult::Parent { child } => {
            drop(go_r);
            drop(pty_child);
            let attached: Result<serde_json::Value, _> = block_on(client.post(
                &format!("/v1/containers/{ct}/attach"),
                &Attach {
                    pid: child.as_raw() as u32,
                },
            ));
            let mut go_w = std::fs::File::from(go_w);
            if let Err(e) = attached {
                drop(go_w);
                let _ = waitpid(child, None);
                return Err(e.into());
            }
            let _ = go_w.write_all(b"g");
            drop(go_w);
            finish(child, tty.then_some(&pty_parent))
        }
    }
}

/// Relays the pty (with `tty`) and returns the command's exit code, as a shell would.
fn finish(child: nix::unistd::Pid, pty_parent: Option<&OwnedFd>) -> Result<i32, Failure> {
    if let Some(sock) = pty_parent {
        if let Some(master) = crate::pty::receive_fd(sock) {
            crate::pty::relay(master);
        }
    }
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) | Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(sys("waitpid")(e)),
        }
    }
}

/// The child: the container's namespaces and root, its bounds (tally::ct::join), then CMD.
fn enter_and_exec(pidfd: &OwnedFd, userns: bool, argv: &[CString], pty: Option<&OwnedFd>) -> i32 {
    if let Err(e) = join::enter(pidfd, userns) {
        eprintln!("tally: {e}");
        return ExitCode::SystemError.number();
    }
    // The container's environment, not the host's.
    for (k, _) in std::env::vars_os() {
        if k != "TERM" {
            std::env::remove_var(k);
        }
    }
    std::env::set_var("PATH", CONTAINER_PATH);
    std::env::set_var("HOME", "/root");
    if let Some(sock) = pty {
        if let Err(e) = crate::pty::take_pty(sock) {
            eprintln!("tally: a terminal inside the container: {e}");
            return ExitCode::SystemError.number();
        }
    }
    exec(argv)
}

/// execvp, or the shell's 127/126 when that fails.
fn exec(argv: &[CString]) -> i32 {
    let err = nix::unistd::execvp(&argv[0], argv).unwrap_err();
    eprintln!("tally: exec {}: {err}", argv[0].to_string_lossy());
    if err == nix::errno::Errno::ENOENT {
        127
    } else {
        126
    }
}
