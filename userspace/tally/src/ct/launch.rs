//! Starting a container's init, in two steps, the way runc's `init` works:
//!
//! 1. tallyd ([`spawn`]) forks a launcher. Between fork and exec the child joins the
//!    container's network namespace and its cgroups (so everything after is charged to the
//!    container), then execs tallyd's own binary in launcher mode ([`LAUNCHER_ARG`]).
//! 2. The launcher ([`launcher_main`]) unshares the mount, UTS, IPC, PID and cgroup
//!    namespaces, sets the hostname, builds /dev and /sys in the container's root, and forks
//!    the init: PID 1 of the new PID namespace. It prints the init's host pid and exits, so the
//!    init is reparented to tallyd (a child subreaper) or, when tallyd is gone, to the host's
//!    init: containers do not depend on tallyd running.
//!    The init mounts /proc, pivots into the root, bounds its capabilities and execs the
//!    template's init.
//!
//! With a user namespace (the default; [`super::userns`]), the launcher first makes, as host
//! root, what the namespace could not (device nodes, the sysfs of a network namespace it does
//! not own, the console log), then joins the container's user namespace as its root and makes
//! the other namespaces there, owned by it: the container's root then administers its own
//! hostname, IPC, mounts and processes, and nothing of the host's.
//!
//! Errors before the final exec travel back on a close-on-exec pipe: tallyd reads it to its
//! end, and an empty read means the init is running.

use std::{
    ffi::CString,
    fs::{self, File, OpenOptions},
    io::{BufRead, BufReader, Read, Write},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::fs::symlink,
    },
    path::{Path, PathBuf},
};

use nix::{
    mount::{mount, umount2, MntFlags, MsFlags},
    sched::{unshare, CloneFlags},
    sys::stat::{makedev, mknod, Mode, SFlag},
    unistd::{chdir, chroot, dup2, execve, fork, pivot_root, sethostname, setsid, ForkResult},
};

/// argv[1] that puts tallyd's binary in launcher mode.
pub const LAUNCHER_ARG: &str = "__tally-launch";
/// The fd number the launcher finds the error pipe on.
const STATUS_FD: RawFd = 3;
/// The fd number the launcher finds the container's user namespace on.
const USERNS_FD: RawFd = 4;

/// What the launcher needs to know (argv[2], JSON).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct LaunchSpec {
    /// The mounted root (VE_ROOT).
    pub root: PathBuf,
    pub hostname: String,
    /// The init's command line.
    pub init: Vec<String>,
    /// Host file that the init's stdout and stderr go to.
    pub console: PathBuf,
    /// The host id of the container's root when it has a user namespace (passed as a
    /// descriptor to [`spawn`]).
    #[serde(default)]
    pub userns_base: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{0}")]
    Init(String),
    #[error("{what}: {source}")]
    Sys { what: String, source: std::io::Error },
}

fn sys(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LaunchError {
    let what = what.into();
    move |source| LaunchError::Sys { what, source }
}

/// Starts the init of a container (tallyd's side). `netns` is the container's network
/// namespace, `v1_tasks` the `tasks` files of its v1 cgroups and `unified` its cgroup2
/// directory. Returns the init's host pid once the init has exec'd the template's init.
///
/// The launcher is created straight into the container's cgroup2 directory (clone3 with
/// CLONE_INTO_CGROUP): moving a process there afterwards takes the thread-group lock, whose
/// first taking after a quiet spell waits an RCU grace period (some 10 ms). It joins the v1
/// hierarchies through their `tasks` files, which move one thread without that lock (the
/// launcher is single-threaded).
pub fn spawn(
    spec: &LaunchSpec,
    netns: &OwnedFd,
    userns: Option<&OwnedFd>,
    v1_tasks: &[PathBuf],
    unified: &Path,
) -> Result<u32, LaunchError> {
    if spec.userns_base.is_some() != userns.is_some() {
        return Err(LaunchError::Init(
            "a user namespace base needs the namespace, and back".into(),
        ));
    }
    let tasks: Vec<File> = v1_tasks
        .iter()
        .map(|p| {
            OpenOptions::new()
                .write(true)
                .open(p)
                .map_err(sys(format!("opening {}", p.display())))
        })
        .collect::<Result<_, _>>()?;
    let cgroup_dir = File::open(unified).map_err(sys(format!("opening {}", unified.display())))?;
    let procs_path = unified.join("cgroup.procs");
    let procs = OpenOptions::new()
        .write(true)
        .open(&procs_path)
        .map_err(sys(format!("opening {}", procs_path.display())))?;
    let json = serde_json::to_string(spec).expect("spec serializes");
    let arg = CString::new(LAUNCHER_ARG).expect("no NUL");
    let json = CString::new(json).map_err(|_| LaunchError::Init("launch spec with a NUL byte".into()))?;
    // The running image, not a path: an upgrade may have replaced the file since tallyd
    // started, and this tallyd's launcher must match it.
    let exe = c"/proc/self/exe";
    let argv: [*const libc::c_char; 4] = [exe.as_ptr(), arg.as_ptr(), json.as_ptr(), std::ptr::null()];
    let task_fds: Vec<RawFd> = tasks.iter().map(|f| f.as_raw_fd()).collect();
    let joining = Joining {
        netns: netns.as_raw_fd(),
        userns: userns.map(|u| u.as_raw_fd()),
        v1_tasks: &task_fds,
        exe,
        argv: &argv,
    };
    let mut run = joining.run(Some(cgroup_dir.as_raw_fd()))?;
    // A kernel with cgroup.kill's kill_seq SIGKILLs a child created into a cgroup that was
    // once killed that way (cgroup::ContainerCgroup::kill_all avoids it, but cannot undo it):
    // then the slow way, a move through cgroup.procs.
    if run.killed_at_birth() {
        log::debug!(
            "launcher killed on its way into {}: joining through cgroup.procs",
            unified.display()
        );
        run = joining.run_joining(procs.as_raw_fd())?;
    }
    let Run {
        line,
        stderr,
        status,
        report,
    } = run;
    let pid: Option<u32> = line.trim().parse().ok();
    let exited_ok = matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0));
    let failure = if !report.is_empty() {
        Some(report)
    } else if !exited_ok || pid.is_none() {
        Some(format!("launcher failed ({status:?}): {}", stderr.trim()))
    } else {
        None
    };
    match (failure, pid) {
        (None, Some(pid)) => Ok(pid),
        (Some(message), pid) => {
            if let Some(pid) = pid {
                // SAFETY: kill(2) on the init we just forked (our child, not yet reaped).
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
            }
            Err(LaunchError::Init(message))
        }
        (None, None) => unreachable!("no pid is a failure"),
    }
}

/// What the launcher's child needs to join the container and exec.
struct Joining<'a> {
    netns: RawFd,
    userns: Option<RawFd>,
    v1_tasks: &'a [RawFd],
    exe: &'a std::ffi::CStr,
    argv: &'a [*const libc::c_char; 4],
}

/// One launcher run: its first stdout line, its stderr, how it ended, the error report.
struct Run {
    line: String,
    stderr: String,
    status: nix::sys::wait::WaitStatus,
    report: String,
}

impl Run {
    /// SIGKILLed before it said or wrote anything.
    fn killed_at_birth(&self) -> bool {
        matches!(
            self.status,
            nix::sys::wait::WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _)
        ) && self.line.is_empty()
            && self.stderr.is_empty()
            && self.report.is_empty()
    }
}

impl Joining<'_> {
    /// Creates the launcher straight into cgroup2 directory `cgroup` and waits for it.
    fn run(&self, cgroup: Option<RawFd>) -> Result<Run, LaunchError> {
        self.run_inner(cgroup, None)
    }

    /// The same, the child moving itself in through cgroup.procs (`procs`).
    fn run_joining(&self, procs: RawFd) -> Result<Run, LaunchError> {
        self.run_inner(None, Some(procs))
    }

    fn run_inner(&self, cgroup: Option<RawFd>, procs: Option<RawFd>) -> Result<Run, LaunchError> {
        let devnull = File::open("/dev/null").map_err(sys("opening /dev/null"))?;
        let pipe = || {
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| LaunchError::Sys {
                what: "pipe".into(),
                source: e.into(),
            })
        };
        let (status_r, status_w) = pipe()?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        // What the child puts at 0, 1, 2, 3 (and 4), from copies above them all, so that no
        // dup2 in the child overwrites a descriptor it still has to copy.
        let mut sources: Vec<OwnedFd> = Vec::new();
        for fd in [
            devnull.as_raw_fd(),
            out_w.as_raw_fd(),
            err_w.as_raw_fd(),
            status_w.as_raw_fd(),
        ]
        .into_iter()
        .chain(self.userns)
        {
            let high =
                nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(100)).map_err(|e| LaunchError::Sys {
                    what: "dup".into(),
                    source: e.into(),
                })?;
            // SAFETY: a fresh descriptor nobody else owns.
            sources.push(unsafe { OwnedFd::from_raw_fd(high) });
        }
        let targets: Vec<(RawFd, RawFd)> = sources
            .iter()
            .zip([0, 1, 2, STATUS_FD, USERNS_FD])
            .map(|(s, t)| (s.as_raw_fd(), t))
            .collect();
        let pid = clone_into_cgroup(cgroup)?;
        if pid == 0 {
            // SAFETY: the child of a multi-threaded process: only async-signal-safe system
            // calls on descriptors prepared above, then execve or _exit.
            unsafe { launcher_child(self.netns, self.v1_tasks, procs, &targets, self.exe.as_ptr(), self.argv) }
        }
        drop((status_w, out_w, err_w, sources, devnull));
        let mut line = String::new();
        let _ = BufReader::new(File::from(out_r)).read_line(&mut line);
        let mut stderr = String::new();
        let _ = File::from(err_r).read_to_string(&mut stderr);
        let status = loop {
            match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None) {
                Err(nix::Error::EINTR) => continue,
                other => {
                    break other.map_err(|e| LaunchError::Sys {
                        what: "waiting for the launcher".into(),
                        source: e.into(),
                    })?
                }
            }
        };
        let mut report = String::new();
        let _ = File::from(status_r).read_to_string(&mut report);
        Ok(Run {
            line,
            stderr,
            status,
            report,
        })
    }
}

/// clone3(2) with CLONE_INTO_CGROUP into the cgroup2 directory `cgroup_fd` (opened for
/// reading, not O_PATH), like fork otherwise: 0 in the child, its pid in the parent. Only
/// from a single-threaded process, or with only async-signal-safe code in the child.
pub fn clone_into_cgroup(cgroup_fd: Option<RawFd>) -> Result<i32, LaunchError> {
    #[repr(C)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let args = CloneArgs {
        flags: if cgroup_fd.is_some() { CLONE_INTO_CGROUP } else { 0 },
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup_fd.unwrap_or(0) as u64,
    };
    // SAFETY: clone3 without CLONE_VM: the child gets a copy of this process, as with fork;
    // the caller makes it exec or exit at once.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r < 0 {
        return Err(LaunchError::Sys {
            what: "clone3 into the container's cgroup".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(r as i32)
}

/// The launcher's child side before exec: the container's network namespace, its v1 cgroups,
/// its descriptors, then tallyd's own image in launcher mode.
///
/// # Safety
/// Only in the child of [`clone_into_cgroup`]; every pointer stays valid (the child has a copy
/// of the parent's memory).
unsafe fn launcher_child(
    netns: RawFd,
    tasks: &[RawFd],
    unified_procs: Option<RawFd>,
    targets: &[(RawFd, RawFd)],
    exe: *const libc::c_char,
    argv: &[*const libc::c_char; 4],
) -> ! {
    extern "C" {
        static environ: *const *const libc::c_char;
    }
    let fail = |what: &[u8]| -> ! {
        // The status pipe is at STATUS_FD once the copies are made; before, it is not, and the
        // launcher's silent death says enough (tallyd reports its exit status).
        libc::write(STATUS_FD, what.as_ptr().cast(), what.len());
        libc::_exit(127)
    };
    for (from, to) in targets {
        if libc::dup2(*from, *to) < 0 {
            libc::_exit(126);
        }
    }
    if libc::setns(netns, libc::CLONE_NEWNET) != 0 {
        fail(b"launcher: joining the container's network namespace failed");
    }
    for fd in tasks {
        // "0" moves the writing thread, which is the whole (single-threaded) process.
        if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
            fail(b"launcher: joining the container's v1 cgroups failed");
        }
    }
    if let Some(fd) = unified_procs {
        if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
            fail(b"launcher: joining the container's cgroup failed");
        }
    }
    libc::execve(exe, argv.as_ptr(), environ);
    fail(b"launcher: exec of tallyd's image failed")
}

/// The launcher process (tallyd's binary with [`LAUNCHER_ARG`]). Never returns.
pub fn launcher_main(spec_json: &str) -> ! {
    // SAFETY: fd 3 was put there by `spawn`'s pre_exec for this process alone; it is owned here.
    let mut status = unsafe { File::from_raw_fd(STATUS_FD) };
    let _ = nix::fcntl::fcntl(
        status.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    let result = serde_json::from_str::<LaunchSpec>(spec_json)
        .map_err(|e| LaunchError::Init(format!("bad launch spec: {e}")))
        .and_then(|spec| launch(&spec, &status).map(|()| spec));
    if let Err(e) = result {
        let _ = write!(status, "{e}");
        std::process::exit(1);
    }
    std::process::exit(0)
}

fn nix_err(what: impl Into<String>) -> impl FnOnce(nix::Error) -> LaunchError {
    let what = what.into();
    move |e| LaunchError::Sys { what, source: e.into() }
}

fn launch(spec: &LaunchSpec, status: &File) -> Result<(), LaunchError> {
    let others =
        CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWCGROUP;
    let userns = match spec.userns_base {
        // SAFETY: fd 4 was put there by `spawn`'s pre_exec for this process alone.
        Some(_) => Some(unsafe { OwnedFd::from_raw_fd(USERNS_FD) }),
        None => None,
    };
    unshare(if userns.is_some() {
        CloneFlags::CLONE_NEWNS
    } else {
        CloneFlags::CLONE_NEWNS | others
    })
    .map_err(nix_err("unshare"))?;
    // Nothing done in here propagates back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(nix_err("making / private"))?;
    build_dev_and_sys(&spec.root, spec.userns_base)?;
    let console = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.console)
        .map_err(sys("opening the console log"))?;
    let devnull = File::open(spec.root.join("dev/null")).map_err(sys("opening /dev/null"))?;
    if let Some(userns) = userns {
        nix::sched::setns(&userns, CloneFlags::CLONE_NEWUSER).map_err(nix_err("joining the user namespace"))?;
        drop(userns);
        super::userns::become_root().map_err(sys("becoming root of the user namespace"))?;
        // Owned by the container's user namespace; the mounts above come along, locked.
        unshare(CloneFlags::CLONE_NEWNS | others).map_err(nix_err("unshare in the user namespace"))?;
        // pivot_root refuses a locked new root: a bind of it made here is not locked.
        let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
        mount(Some(&spec.root), &spec.root, None::<&str>, bind, None::<&str>)
            .map_err(nix_err("binding the root in the user namespace"))?;
    }
    sethostname(&spec.hostname).map_err(nix_err("sethostname"))?;
    // SAFETY: the launcher is single-threaded (a fresh exec), so the child may do anything.
    match unsafe { fork() }.map_err(nix_err("fork"))? {
        ForkResult::Parent { child } => {
            println!("{child}");
            Ok(())
        }
        ForkResult::Child => {
            let e = become_init(spec, console, devnull).unwrap_err();
            let mut status = status;
            let _ = write!(status, "{e}");
            std::process::exit(1)
        }
    }
}

/// A tmpfs /dev with the safe nodes, a private devpts and /dev/shm, and sysfs read-only.
/// With a user namespace (`userns_base`), /dev and the ptys' tty group belong to the
/// container's root and group 5 as the container sees them.
fn build_dev_and_sys(root: &Path, userns_base: Option<u32>) -> Result<(), LaunchError> {
    let base = userns_base.unwrap_or(0);
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let sys_dir = root.join("sys");
    fs::create_dir_all(&sys_dir).map_err(sys("creating /sys"))?;
    mount(
        Some("tally-sysfs"),
        &sys_dir,
        Some("sysfs"),
        nosuid | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(nix_err("mounting sysfs"))?;
    let dev = root.join("dev");
    fs::create_dir_all(&dev).map_err(sys("creating /dev"))?;
    mount(
        Some("tally-dev"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(format!("mode=755,size=1m,uid={base},gid={base}").as_str()),
    )
    .map_err(nix_err("mounting /dev"))?;
    for (name, major, minor) in tally_common::devices::NODES {
        let path = dev.join(name);
        mknod(
            &path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major.into(), minor.into()),
        )
        .map_err(nix_err(format!("mknod /dev/{name}")))?;
        // mknod is subject to the umask.
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .map_err(sys("chmod /dev node"))?;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        symlink(to, dev.join(link)).map_err(sys(format!("/dev/{link}")))?;
    }
    for d in ["pts", "shm"] {
        fs::create_dir(dev.join(d)).map_err(sys(format!("/dev/{d}")))?;
    }
    mount(
        Some("tally-devpts"),
        &dev.join("pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(format!("newinstance,ptmxmode=0666,mode=0620,gid={}", base + 5).as_str()),
    )
    .map_err(nix_err("mounting devpts"))?;
    mount(
        Some("tally-shm"),
        &dev.join("shm"),
        Some("tmpfs"),
        nosuid,
        Some("mode=1777"),
    )
    .map_err(nix_err("mounting /dev/shm"))?;
    Ok(())
}

/// PID 1's side: /proc, the pivot, stdio, capabilities, then the template's init.
fn become_init(spec: &LaunchSpec, console: File, devnull: File) -> Result<std::convert::Infallible, LaunchError> {
    let root = &spec.root;
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let proc_dir = root.join("proc");
    fs::create_dir_all(&proc_dir).map_err(sys("creating /proc"))?;
    mount(Some("tally-proc"), &proc_dir, Some("proc"), nosuid, None::<&str>).map_err(nix_err("mounting /proc"))?;
    // Like LXC's proc:mixed: /proc/sys read-only but its namespaced net/ part, and no SysRq.
    for (path, writable) in [("sys", false), ("sys/net", true), ("sysrq-trigger", false)] {
        let p = proc_dir.join(path);
        if !p.exists() {
            continue;
        }
        let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
        mount(Some(&p), &p, None::<&str>, bind, None::<&str>).map_err(nix_err(format!("binding /proc/{path}")))?;
        let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | nosuid;
        if !writable {
            flags |= MsFlags::MS_RDONLY;
        }
        mount(None::<&str>, &p, None::<&str>, flags, None::<&str>)
            .map_err(nix_err(format!("remounting /proc/{path}")))?;
    }
    enter_root(root)?;
    dup2(devnull.as_raw_fd(), 0).map_err(nix_err("dup2"))?;
    dup2(console.as_raw_fd(), 1).map_err(nix_err("dup2"))?;
    dup2(console.as_raw_fd(), 2).map_err(nix_err("dup2"))?;
    drop((console, devnull));
    setsid().map_err(nix_err("setsid"))?;
    confine()?;
    let argv: Vec<CString> = spec
        .init
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<_, _>>()
        .map_err(|_| LaunchError::Init("init argument with a NUL byte".into()))?;
    let env = [
        c"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        c"container=tally",
        c"TERM=linux",
        c"HOME=/root",
    ];
    let first = argv
        .first()
        .ok_or_else(|| LaunchError::Init("empty init command".into()))?;
    execve(first, &argv, &env).map_err(nix_err(format!("exec {}", spec.init[0])))
}

/// Makes `root` the root: pivot_root, or, where the host itself runs on the initramfs
/// (pivot_root refuses to move rootfs), move the mount over / and chroot into it.
fn enter_root(root: &Path) -> Result<(), LaunchError> {
    chdir(root).map_err(nix_err("chdir to the root"))?;
    match pivot_root(".", ".") {
        Ok(()) => {
            // The old root is stacked under the new one at "/": detach it.
            umount2(".", MntFlags::MNT_DETACH).map_err(nix_err("detaching the old root"))?;
        }
        Err(nix::Error::EINVAL) => {
            mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
                .map_err(nix_err("moving the root over /"))?;
            chroot(".").map_err(nix_err("chroot"))?;
        }
        Err(e) => return Err(nix_err("pivot_root")(e)),
    }
    chdir("/").map_err(nix_err("chdir /"))
}

/// Capabilities a container never gets: loading modules, raw I/O, the clock, kernel
/// auditing, MAC policy, BPF and perf, the kernel log, making device nodes (its /dev is made
/// for it), file handles and system administration (mounts).
const DROPPED: &[caps::Capability] = &[
    caps::Capability::CAP_SYS_MODULE,
    caps::Capability::CAP_SYS_RAWIO,
    caps::Capability::CAP_SYS_TIME,
    caps::Capability::CAP_WAKE_ALARM,
    caps::Capability::CAP_AUDIT_CONTROL,
    caps::Capability::CAP_AUDIT_READ,
    caps::Capability::CAP_MAC_ADMIN,
    caps::Capability::CAP_MAC_OVERRIDE,
    caps::Capability::CAP_BPF,
    caps::Capability::CAP_PERFMON,
    caps::Capability::CAP_SYSLOG,
    caps::Capability::CAP_SYS_PACCT,
    caps::Capability::CAP_BLOCK_SUSPEND,
    caps::Capability::CAP_MKNOD,
    // open_by_handle_at reaches files outside any mount the container has.
    caps::Capability::CAP_DAC_READ_SEARCH,
    // Without a user namespace, CAP_SYS_ADMIN could mount a fresh read-write sysfs or proc
    // (uevent_helper, core_pattern: the host runs what they name), remount /sys, or mount
    // devtmpfs. Containers run without it; their hostname is set from the host.
    caps::Capability::CAP_SYS_ADMIN,
];

/// System calls no container may make, refused with EPERM whatever capabilities it holds
/// (CAP_SYS_ADMIN alone would allow several): BPF and perf, kernel modules and kexec, file
/// handles, swap, process accounting, the kernel keyring and log, port I/O, the clock.
const REFUSED_SYSCALLS: &[libc::c_long] = &[
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_open_by_handle_at,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_keyctl,
    libc::SYS_syslog,
    libc::SYS_iopl,
    libc::SYS_ioperm,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_lookup_dcookie,
    libc::SYS_quotactl,
    libc::SYS_uselib,
];

/// What every process of a container runs under: the capability bound and the syscall
/// filter. Used for the init and for `tally exec`.
pub fn confine() -> Result<(), LaunchError> {
    bound_capabilities()?;
    refuse_syscalls()
}

/// Installs a seccomp filter refusing [`REFUSED_SYSCALLS`]. Without no_new_privs (root holds
/// CAP_SYS_ADMIN here), so set-uid programs in the container keep working.
fn refuse_syscalls() -> Result<(), LaunchError> {
    use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
    let err = |e: String| LaunchError::Init(format!("seccomp filter: {e}"));
    let rules = REFUSED_SYSCALLS.iter().map(|nr| (*nr as i64, vec![])).collect();
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| err(e.to_string()))?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| err(e.to_string()))?;
    let program: BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| err(e.to_string()))?;
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: PR_SET_SECCOMP with a filter program that lives until the call returns (the
    // kernel copies it).
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &fprog as *const libc::sock_fprog,
        )
    };
    if r != 0 {
        return Err(err(std::io::Error::last_os_error().to_string()));
    }
    Ok(())
}

/// A pidfd for `pid` (pidfd_open(2)): signals and setns aimed at it cannot hit a recycled pid.
pub fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) returns a new descriptor or -1; ownership is taken below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Drops [`DROPPED`] from the bounding, inheritable and ambient sets: whatever this process
/// execs (as root) never gets them. Used for the init and for `tally exec`.
pub fn bound_capabilities() -> Result<(), LaunchError> {
    let err = |e: caps::errors::CapsError| LaunchError::Init(format!("dropping capabilities: {e}"));
    for cap in DROPPED {
        if caps::has_cap(None, caps::CapSet::Bounding, *cap).unwrap_or(false) {
            caps::drop(None, caps::CapSet::Bounding, *cap).map_err(err)?;
        }
        caps::drop(None, caps::CapSet::Inheritable, *cap).map_err(err)?;
    }
    caps::clear(None, caps::CapSet::Ambient).map_err(err)?;
    Ok(())
}
