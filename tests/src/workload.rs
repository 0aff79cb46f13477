//! Workloads run inside a container, as this binary's `workload` subcommand (single-threaded,
//! so that every task is one the kernel counts exactly once).
//!
//! `workload [--join CGROUP_PROCS]... forks N`: optionally join cgroups (what tallyd would do,
//! for runs while tallyd is down), fork N children that block on a pipe, print
//! `{"forked":F,"eagain":E,"other":O}`, wait for a line on stdin, release the children,
//! reap them, exit 0.
//!
//! `workload [--join ...] hold KIND N`: make N objects of KIND (files, flocks, ptys,
//! tcpsocks, udpsocks, unixsocks), print `{"made":M,"refused":R,"errno":E,"mixed":B}` (E: the
//! errno of the refusals, B: whether they differed), wait for a line, close them all, exit 0.
//!
//! `workload hog MB`: allocates and touches MB mebibytes, prints `{"touched":MB}`, waits for a
//! line, exits (unless the memory controller kills it first).
//!
//! `workload random OPS SEED`: OPS randomly chosen operations (fork, kill+reap, open, close,
//! dup, tcp/udp/unix socket, close, flock, unlock, ptmx open, close) from a seeded generator;
//! prints `{"ops":OPS,"pid":PID}` with everything still open, waits for a line, exits.
//!
//! `workload spin SECS`: CPU-bound work for SECS seconds; prints `{"iterations":N}`.
//!
//! `workload abuse SECS`: one abusive tenant: a memory hog (a child touching 1 GiB), a flock
//! flood, a socket flood and an fd flood (each until refused 50 times), then a fork bomb for
//! SECS seconds (every process forks in a loop, retrying when refused; its root is the
//! subreaper and reaps everything); prints `{"flocks":F,"socks":S,"files":N}` with all of it
//! going, waits for a line, lets go of everything.
//!
//! `workload sendsock NAME` / `recvsock NAME`: a UDP socket made by the sender crosses to the
//! receiver over SCM_RIGHTS on the abstract unix address NAME (see rows.rs).
//!
//! `workload [--join ...] loop KIND N`: N times one operation (forkexit: fork, _exit, waitpid;
//! openclose; socketclose; flock: lock and unlock; read4k: pread 4 KiB); prints the nanoseconds
//! the loop took (the hooks benchmark).

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
        [cmd, kind, n] if cmd == "loop" => match n.parse() {
            Ok(n) => op_loop(kind, n),
            Err(_) => 2,
        },
        [cmd, kind, n] if cmd == "hold" => match (Kind::parse(kind), n.parse()) {
            (Some(kind), Ok(n)) => hold(kind, n),
            _ => 2,
        },
        [cmd, mb] if cmd == "hog" => match mb.parse() {
            Ok(mb) => hog(mb),
            Err(_) => 2,
        },
        [cmd, ops, seed] if cmd == "random" => match (ops.parse(), seed.parse()) {
            (Ok(ops), Ok(seed)) => random(ops, seed),
            _ => 2,
        },
        [cmd, secs] if cmd == "spin" => match secs.parse() {
            Ok(secs) => spin(secs),
            Err(_) => 2,
        },
        [cmd, secs] if cmd == "abuse" => match secs.parse() {
            Ok(secs) => abuse(secs),
            Err(_) => 2,
        },
        [cmd] if cmd == "sockbufs" => sockbufs(),
        [cmd, n] if cmd == "accepts" => match n.parse() {
            Ok(n) => accepts(n),
            Err(_) => 2,
        },
        [cmd, name] if cmd == "sendsock" => sendsock(name),
        [cmd, name] if cmd == "recvsock" => recvsock(name),
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

fn op_loop(kind: &str, n: u64) -> i32 {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let file = std::fs::File::open("/proc/self/exe").expect("open own executable");
    let fd = file.as_raw_fd();
    let mut buf = [0u8; 4096];
    let start = std::time::Instant::now();
    for _ in 0..n {
        let ok = match kind {
            // SAFETY: single-threaded; the child only calls _exit.
            "forkexit" => match unsafe { fork() } {
                Ok(ForkResult::Child) => unsafe { libc::_exit(0) },
                Ok(ForkResult::Parent { child }) => waitpid(child, None).is_ok(),
                Err(_) => false,
            },
            "openclose" => std::fs::File::open("/dev/null").is_ok(),
            "socketclose" => socket(AddressFamily::Inet, SockType::Datagram, SockFlag::empty(), None).is_ok(),
            // SAFETY: flock(2) and pread(2) on a file this process holds open.
            "flock" => unsafe { libc::flock(fd, libc::LOCK_EX) == 0 && libc::flock(fd, libc::LOCK_UN) == 0 },
            "read4k" => unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) == 4096 },
            _ => {
                eprintln!("workload: unknown loop {kind}");
                return 2;
            }
        };
        if !ok {
            eprintln!("workload: {kind} failed: {}", std::io::Error::last_os_error());
            return 1;
        }
    }
    println!("{}", start.elapsed().as_nanos());
    0
}

#[derive(Clone, Copy)]
enum Kind {
    Files,
    Flocks,
    Ptys,
    TcpSocks,
    UdpSocks,
    UnixSocks,
    /// Real-time signals queued to itself while blocked: each one a siginfo the kernel keeps
    /// until the signal is taken or the process exits.
    SigInfos,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "files" => Kind::Files,
            "flocks" => Kind::Flocks,
            "ptys" => Kind::Ptys,
            "tcpsocks" => Kind::TcpSocks,
            "udpsocks" => Kind::UdpSocks,
            "unixsocks" => Kind::UnixSocks,
            "siginfos" => Kind::SigInfos,
            _ => return None,
        })
    }

    /// The real-time signal `siginfos` queues (blocked first, so that it stays queued).
    fn rt_signal() -> i32 {
        libc::SIGRTMIN() + 1
    }

    /// Makes one object; its fd (None for objects without one), or the errno that refused it.
    fn make(self, i: usize) -> Result<Option<std::os::fd::OwnedFd>, Errno> {
        if let Kind::SigInfos = self {
            let value = libc::sigval {
                sival_ptr: std::ptr::null_mut(),
            };
            // SAFETY: sigqueue(3) to this process with a plain value.
            return Errno::result(unsafe { libc::sigqueue(libc::getpid(), Kind::rt_signal(), value) }).map(|_| None);
        }
        self.make_fd(i).map(Some)
    }

    fn make_fd(self, i: usize) -> Result<std::os::fd::OwnedFd, Errno> {
        use nix::{
            fcntl::{open, OFlag},
            sys::{
                socket::{socket, AddressFamily, SockFlag, SockType},
                stat::Mode,
            },
        };
        use std::os::fd::FromRawFd;
        // SAFETY: `open` returned a fresh fd that nothing else owns.
        let owned = |fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        match self {
            Kind::Files => open("/dev/null", OFlag::O_RDONLY, Mode::empty()).map(owned),
            Kind::Ptys => open("/dev/ptmx", OFlag::O_RDWR | OFlag::O_NOCTTY, Mode::empty()).map(owned),
            Kind::Flocks => {
                let path = format!("/tmp/tally-flock-{}-{i}", std::process::id());
                let fd = owned(open(
                    path.as_str(),
                    OFlag::O_RDWR | OFlag::O_CREAT,
                    Mode::from_bits_truncate(0o600),
                )?);
                let _ = std::fs::remove_file(&path);
                // SAFETY: flock(2) on an fd this process owns.
                Errno::result(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) })?;
                Ok(fd)
            }
            Kind::TcpSocks => socket(AddressFamily::Inet, SockType::Stream, SockFlag::empty(), None),
            Kind::UdpSocks => socket(AddressFamily::Inet, SockType::Datagram, SockFlag::empty(), None),
            Kind::UnixSocks => socket(AddressFamily::Unix, SockType::Datagram, SockFlag::empty(), None),
            Kind::SigInfos => Err(Errno::EINVAL),
        }
    }
}

fn hold(kind: Kind, n: usize) -> i32 {
    if let Kind::SigInfos = kind {
        // SAFETY: a zeroed sigset_t is a valid value for sigemptyset to initialise; then one
        // signal is blocked in this single-threaded process.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, Kind::rt_signal());
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
    }
    let mut held = Vec::new();
    let (mut refused, mut errno, mut mixed) = (0, 0, false);
    for i in 0..n {
        match kind.make(i) {
            Ok(fd) => held.push(fd),
            Err(e) => {
                refused += 1;
                mixed |= errno != 0 && errno != e as i32;
                errno = e as i32;
            }
        }
    }
    println!(
        "{{\"made\":{},\"refused\":{refused},\"errno\":{errno},\"mixed\":{mixed}}}",
        held.len()
    );
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    drop(held);
    0
}

/// Leaves data unread in every kind of socket buffer, over loopback and a unix pair: 64 UDP
/// datagrams of 1000 bytes unread (dgramrcvbuf), a TCP connection written until it blocks with
/// nothing read (tcpsndbuf and tcprcvbuf), 16 unix datagrams of 1000 bytes unread (charged to
/// the sender: othersockbuf). Prints what it wrote, waits for a line, closes everything.
fn sockbufs() -> i32 {
    let run = || -> std::io::Result<(usize, usize, usize)> {
        let udp_rx = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let udp_tx = std::net::UdpSocket::bind("127.0.0.1:0")?;
        for _ in 0..64 {
            udp_tx.send_to(&[7u8; 1000], udp_rx.local_addr()?)?;
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let mut client = std::net::TcpStream::connect(listener.local_addr()?)?;
        let (server, _) = listener.accept()?;
        client.set_nonblocking(true)?;
        let mut tcp = 0;
        let chunk = [1u8; 16 * 1024];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        // Until the peer's receive window and our send buffer are both full.
        while std::time::Instant::now() < deadline {
            match client.write(&chunk) {
                Ok(n) => tcp += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    if client.write(&chunk).map(|n| tcp += n).is_err() {
                        break;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let (a, b) = std::os::unix::net::UnixDatagram::pair()?;
        for _ in 0..16 {
            a.send(&[3u8; 1000])?;
        }
        std::mem::forget((udp_rx, udp_tx, listener, client, server, a, b));
        Ok((64 * 1000, tcp, 16 * 1000))
    };
    match run() {
        Ok((udp, tcp, unix)) => {
            println!("{{\"udp\":{udp},\"tcp\":{tcp},\"unix\":{unix}}}");
            let _ = std::io::stdout().flush();
            wait_line();
            0
        }
        Err(e) => {
            eprintln!("sockbufs: {e}");
            1
        }
    }
}

fn abstract_addr(name: &str) -> nix::sys::socket::UnixAddr {
    nix::sys::socket::UnixAddr::new_abstract(name.as_bytes()).expect("abstract address")
}

/// A TCP listener on loopback: says its port, waits for a line (the peers have connected by
/// then), tries `n` accepts, says how many were accepted and refused (with the errno), and
/// holds the accepted sockets until stdin closes.
fn accepts(n: usize) -> i32 {
    use std::os::fd::AsRawFd;
    let Ok(listener) = std::net::TcpListener::bind("127.0.0.1:0") else {
        return 1;
    };
    let Ok(addr) = listener.local_addr() else {
        return 1;
    };
    println!("{{\"port\":{}}}", addr.port());
    let _ = std::io::stdout().flush();
    wait_line();
    let (mut held, mut refused, mut errno) = (Vec::new(), 0, 0);
    for _ in 0..n {
        // SAFETY: accept4(2) on our listener, without an address buffer.
        let fd = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd >= 0 {
            // SAFETY: a fresh descriptor accept4 handed to us alone.
            held.push(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
        } else {
            refused += 1;
            errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        }
    }
    println!(
        "{{\"made\":{},\"refused\":{refused},\"errno\":{errno},\"mixed\":false}}",
        held.len()
    );
    let _ = std::io::stdout().flush();
    wait_line();
    0
}

fn wait_line() {
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
}

/// Makes a UDP socket here, hands it to `recvsock NAME`, waits for a line, exits.
fn sendsock(name: &str) -> i32 {
    use nix::sys::socket::{sendmsg, socket, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType};
    let run = || -> nix::Result<()> {
        let udp = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::empty(), None)?;
        let unix = socket(AddressFamily::Unix, SockType::Datagram, SockFlag::empty(), None)?;
        let fds = [udp.as_raw_fd()];
        let iov = [std::io::IoSlice::new(b"x")];
        sendmsg(
            unix.as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            Some(&abstract_addr(name)),
        )?;
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("sendsock: {e}");
        return 1;
    }
    println!("{{\"sent\":1}}");
    let _ = std::io::stdout().flush();
    wait_line();
    0
}

/// Receives the socket of `sendsock NAME`, says so, closes it at the first line, exits at the
/// second.
fn recvsock(name: &str) -> i32 {
    use nix::sys::socket::{bind, recvmsg, socket, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType};
    let unix = match socket(AddressFamily::Unix, SockType::Datagram, SockFlag::empty(), None)
        .and_then(|s| bind(s.as_raw_fd(), &abstract_addr(name)).map(|()| s))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("recvsock: {e}");
            return 1;
        }
    };
    println!("{{\"ready\":1}}");
    let _ = std::io::stdout().flush();
    let mut buf = [0u8; 8];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let received = match recvmsg::<()>(unix.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty()) {
        Ok(msg) => msg.cmsgs().ok().into_iter().flatten().find_map(|c| match c {
            ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
            _ => None,
        }),
        Err(e) => {
            eprintln!("recvsock: {e}");
            return 1;
        }
    };
    let Some(fd) = received else {
        eprintln!("recvsock: no fd arrived");
        return 1;
    };
    println!("{{\"received\":1}}");
    let _ = std::io::stdout().flush();
    wait_line();
    // SAFETY: the fd arrived in this process through SCM_RIGHTS; nothing else owns it.
    drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
    println!("{{\"closed\":1}}");
    let _ = std::io::stdout().flush();
    wait_line();
    0
}

fn hog(mb: usize) -> i32 {
    let mut chunks: Vec<Vec<u8>> = Vec::with_capacity(mb);
    for _ in 0..mb {
        // Touch every page: only resident memory is charged.
        chunks.push(vec![0x5a; 1 << 20]);
    }
    println!("{{\"touched\":{}}}", chunks.len());
    let _ = std::io::stdout().flush();
    wait_line();
    drop(chunks);
    0
}

/// xorshift64*: a seeded, dependency-free generator, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

fn random(ops: usize, seed: u64) -> i32 {
    use nix::sys::signal::{kill, Signal};
    use std::os::fd::OwnedFd;
    let mut rng = Rng(seed | 1);
    let (mut files, mut socks, mut ptys): (Vec<OwnedFd>, Vec<OwnedFd>, Vec<OwnedFd>) = (vec![], vec![], vec![]);
    let mut locked: Vec<(OwnedFd, bool)> = vec![];
    let mut children = vec![];
    let (wake_r, wake_w) = nix::unistd::pipe().expect("pipe");
    for i in 0..ops {
        let take = |v: &mut Vec<OwnedFd>, rng: &mut Rng| {
            if !v.is_empty() {
                let k = rng.below(v.len());
                drop(v.swap_remove(k));
            }
        };
        match rng.below(14) {
            0 if children.len() < 30 => {
                // SAFETY: single-threaded; the child closes every inherited fd but its pipe and
                // waits on it, so only the parent's fds are the container's open files.
                match unsafe { fork() } {
                    Ok(ForkResult::Child) => {
                        let keep = wake_r.as_raw_fd();
                        for fd in 0..1024 {
                            if fd != keep {
                                // SAFETY: closing this child's copies only.
                                unsafe { libc::close(fd) };
                            }
                        }
                        let mut b = [0u8; 1];
                        let _ = nix::unistd::read(keep, &mut b);
                        // SAFETY: leaves the child at once.
                        unsafe { libc::_exit(0) };
                    }
                    Ok(ForkResult::Parent { child }) => children.push(child),
                    Err(_) => {}
                }
            }
            1 if !children.is_empty() => {
                let child = children.swap_remove(rng.below(children.len()));
                let _ = kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
            }
            2 | 3 if files.len() < 60 => {
                if let Ok(fd) = Kind::Files.make_fd(i) {
                    files.push(fd);
                }
            }
            4 => take(&mut files, &mut rng),
            5 if !files.is_empty() && files.len() < 80 => {
                let k = rng.below(files.len());
                if let Ok(fd) = files[k].try_clone() {
                    files.push(fd);
                }
            }
            6 | 7 if socks.len() < 40 => {
                let kind = [Kind::TcpSocks, Kind::UdpSocks, Kind::UnixSocks][rng.below(3)];
                if let Ok(fd) = kind.make_fd(i) {
                    socks.push(fd);
                }
            }
            8 => take(&mut socks, &mut rng),
            9 if locked.len() < 20 => {
                if let Ok(fd) = Kind::Flocks.make_fd(i) {
                    locked.push((fd, true));
                }
            }
            10 if !locked.is_empty() => {
                // Unlock, or lock again, a file that stays open.
                let k = rng.below(locked.len());
                let (fd, is_locked) = &mut locked[k];
                let op = if *is_locked {
                    libc::LOCK_UN
                } else {
                    libc::LOCK_EX | libc::LOCK_NB
                };
                // SAFETY: flock(2) on an fd this process owns.
                if unsafe { libc::flock(fd.as_raw_fd(), op) } == 0 {
                    *is_locked = !*is_locked;
                }
            }
            11 if !locked.is_empty() => {
                let k = rng.below(locked.len());
                locked.swap_remove(k);
            }
            12 if ptys.len() < 8 => {
                if let Ok(fd) = Kind::Ptys.make_fd(i) {
                    ptys.push(fd);
                }
            }
            13 => take(&mut ptys, &mut rng),
            _ => {}
        }
    }
    println!("{{\"ops\":{ops},\"pid\":{}}}", std::process::id());
    let _ = std::io::stdout().flush();
    wait_line();
    drop(wake_w);
    for c in children {
        let _ = waitpid(c, None);
    }
    0
}

fn spin(secs: u64) -> i32 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let (mut x, mut n) = (1u64, 0u64);
    while std::time::Instant::now() < deadline {
        for _ in 0..10_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        }
        n += 1;
    }
    println!("{{\"iterations\":{n},\"x\":{}}}", x % 2);
    0
}

/// Makes objects of `kind` until 50 of them were refused (or `cap` were tried).
fn flood(kind: Kind, cap: usize) -> Vec<std::os::fd::OwnedFd> {
    let (mut held, mut refused) = (Vec::new(), 0);
    for i in 0..cap {
        match kind.make_fd(i) {
            Ok(fd) => held.push(fd),
            Err(_) => refused += 1,
        }
        if refused == 50 {
            break;
        }
    }
    held
}

fn abuse(secs: u64) -> i32 {
    // SAFETY: single-threaded; the child only touches memory until the OOM killer stops it.
    let hog = match unsafe { fork() } {
        Ok(ForkResult::Child) => unsafe { libc::_exit(hog_quietly()) },
        Ok(ForkResult::Parent { child }) => Some(child),
        Err(_) => None,
    };
    // Flocks first: once the fd flood has filled numfile, no file could be opened to lock.
    // Caps well above the test's limits, so that where a row is not kept (the fallback tier)
    // the flood ends without refusals but without exhausting the host either.
    let flocks = flood(Kind::Flocks, 200);
    let socks = flood(Kind::TcpSocks, 1000);
    let files = flood(Kind::Files, 2000);
    // SAFETY: as above; the bomb's root runs the bomb and exits.
    let bomb = match unsafe { fork() } {
        Ok(ForkResult::Child) => unsafe { libc::_exit(bomb(secs)) },
        Ok(ForkResult::Parent { child }) => Some(child),
        Err(_) => None,
    };
    println!(
        "{{\"flocks\":{},\"socks\":{},\"files\":{}}}",
        flocks.len(),
        socks.len(),
        files.len()
    );
    let _ = std::io::stdout().flush();
    wait_line();
    drop((flocks, socks, files));
    for child in [bomb, hog].into_iter().flatten() {
        let _ = waitpid(child, None);
    }
    0
}

fn hog_quietly() -> i32 {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    for _ in 0..1024 {
        chunks.push(vec![0x5a; 1 << 20]);
    }
    0
}

/// Every process forks in a loop until the deadline; the root is the subreaper.
fn bomb(secs: u64) -> i32 {
    use nix::sys::wait::WaitPidFlag;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    // SAFETY: prctl(2) on this process; orphans of the bomb come back here to be reaped.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let root = std::process::id();
    while std::time::Instant::now() < deadline {
        // SAFETY: single-threaded; every child runs this same loop.
        if unsafe { fork() }.is_err() {
            let _ = waitpid(None, Some(WaitPidFlag::WNOHANG));
        }
    }
    if std::process::id() != root {
        // SAFETY: a bomb child leaves at once.
        unsafe { libc::_exit(0) };
    }
    while waitpid(None, None).is_ok() {}
    0
}
