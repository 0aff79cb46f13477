//! Escape probes: things a container's root must not be able to do to the host, each tried
//! for real from inside a running busybox container (`tally-itest escape NAME ARGS` is copied
//! into the container with its shared libraries and run through `tally exec`). A probe exits
//! 0 when it was refused (and says how), 1 when it got through.
//!
//! A probe that could change the host if it got through writes back what is already there
//! (the clock, a sysctl), so even a failure of the suite changes nothing.

use std::{
    net::Ipv4Addr,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use tally::ct::{rootfs::Rootfs, CtId};

use crate::{
    check,
    env::Env,
    harness::ok,
    harness::{Outcome, Test},
    try_or_fail,
};

pub fn tests() -> Vec<Test> {
    vec![Test {
        name: "escape_probes_are_all_refused",
        run: escape_suite,
    }]
}

/// (name, what it tries).
const PROBES: &[(&str, &str)] = &[
    ("mount_host_disk", "mount devtmpfs and a host block device"),
    ("mknod_block", "mknod a block device"),
    (
        "open_host_device",
        "open /dev/mem, /dev/kmsg, a tty through devtmpfs or mknod",
    ),
    (
        "write_proc_sys_kernel",
        "write /proc/sys/kernel/* (after trying to remount it rw)",
    ),
    ("load_module", "init_module/finit_module"),
    ("ptrace_host", "ptrace tallyd, a host process"),
    ("see_host_pids", "see host processes in /proc"),
    ("setns_host", "reach a host namespace through /proc"),
    ("sniff_other", "sniff another container's traffic with a packet socket"),
    ("host_hostname", "change the host's hostname"),
    ("set_clock", "set the host's clock"),
    ("bpf", "bpf(BPF_MAP_CREATE)"),
    ("perf_event_open", "perf_event_open on itself"),
    ("reboot", "reboot the host"),
    ("write_sys", "write /sys (after trying to remount it rw)"),
    ("chroot_escape", "leave the root with chroot tricks"),
    ("open_by_handle_at", "open a host file by handle"),
    ("kexec", "kexec_load"),
];

/// `tally-itest escape NAME ARGS...` (inside the container).
pub fn main(args: &[String]) -> i32 {
    let Some(name) = args.first() else {
        eprintln!("usage: tally-itest escape NAME [ARGS]");
        return 2;
    };
    let rest = &args[1..];
    match probe(name, rest) {
        Ok(how) => {
            println!("refused: {how}");
            0
        }
        Err(e) => {
            println!("ESCAPED: {e:#}");
            1
        }
    }
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Ok(how it was refused) or Err(what got through).
fn probe(name: &str, args: &[String]) -> Result<String> {
    match name {
        "mount_host_disk" => {
            std::fs::create_dir_all("/tmp/tally-devs")?;
            if let Err(e) = nix::mount::mount(
                Some("none"),
                "/tmp/tally-devs",
                Some("devtmpfs"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            ) {
                return Ok(format!("mount devtmpfs: {e}"));
            }
            for dev in std::fs::read_dir("/sys/class/block")?.flatten() {
                let path = Path::new("/tmp/tally-devs").join(dev.file_name());
                if std::fs::File::open(&path).is_ok() {
                    bail!("opened block device {}", path.display());
                }
            }
            Ok("devtmpfs mounted, but every block device refused".into())
        }
        "mknod_block" => {
            let r = nix::sys::stat::mknod(
                "/tmp/tally-sda",
                nix::sys::stat::SFlag::S_IFBLK,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
                nix::sys::stat::makedev(8, 0),
            );
            match r {
                Ok(()) => bail!("made a block device node"),
                Err(e) => Ok(format!("mknod: {e}")),
            }
        }
        "open_host_device" => {
            for (path, major, minor) in [
                ("/tmp/tally-mem", 1, 1),
                ("/tmp/tally-kmsg", 1, 11),
                ("/tmp/tally-tty1", 4, 1),
            ] {
                let _ = nix::sys::stat::mknod(
                    path,
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::from_bits_truncate(0o600),
                    nix::sys::stat::makedev(major, minor),
                );
                if Path::new(path).exists() && std::fs::File::open(path).is_ok() {
                    bail!("opened {major}:{minor}");
                }
            }
            Ok("no host device node could be made or opened".into())
        }
        "write_proc_sys_kernel" => {
            let _ = nix::mount::mount(
                None::<&str>,
                "/proc/sys",
                None::<&str>,
                nix::mount::MsFlags::MS_REMOUNT | nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            );
            let path = "/proc/sys/kernel/printk_ratelimit";
            let current = std::fs::read_to_string(path)?;
            match std::fs::write(path, current.trim()) {
                Ok(()) => bail!("wrote {path}"),
                Err(e) => Ok(format!("{path}: {e}")),
            }
        }
        "load_module" => {
            // SAFETY: init_module with an empty image; refused before the kernel reads it.
            let r = unsafe { libc::syscall(libc::SYS_init_module, std::ptr::null::<u8>(), 0usize, c"".as_ptr()) };
            let e1 = errno();
            let null = std::fs::File::open("/dev/null")?;
            // SAFETY: finit_module on /dev/null (not a module): refused or rejected.
            let r2 = unsafe {
                libc::syscall(
                    libc::SYS_finit_module,
                    std::os::fd::AsRawFd::as_raw_fd(&null),
                    c"".as_ptr(),
                    0,
                )
            };
            let e2 = errno();
            if r == 0 || r2 == 0 || e1.raw_os_error() != Some(libc::EPERM) || e2.raw_os_error() != Some(libc::EPERM) {
                bail!("module calls were not refused with EPERM: {e1}, {e2}");
            }
            Ok(format!("init_module: {e1}; finit_module: {e2}"))
        }
        "ptrace_host" => {
            let pid: i32 = args.first().context("host pid")?.parse()?;
            // SAFETY: PTRACE_ATTACH on a pid number; fails unless such a process is visible.
            let r = unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) };
            if r == 0 {
                bail!("attached to pid {pid}");
            }
            Ok(format!("ptrace({pid}): {}", errno()))
        }
        "see_host_pids" => {
            let host_pid = args.first().context("host pid")?;
            let pids: Vec<String> = std::fs::read_dir("/proc")?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.chars().all(|c| c.is_ascii_digit()))
                .collect();
            let init = std::fs::read_to_string("/proc/1/comm")?;
            if pids.contains(host_pid) || pids.len() > 50 || init.trim() != "init" {
                bail!(
                    "sees {} pids (host pid {host_pid}: {}), PID 1 is {init:?}",
                    pids.len(),
                    pids.contains(host_pid)
                );
            }
            Ok(format!("only {} pids of its own are visible", pids.len()))
        }
        "setns_host" => {
            let own: Vec<u64> = ns_inodes("/proc/self")?;
            for entry in std::fs::read_dir("/proc")?.flatten() {
                let p = entry.path();
                if p.file_name()
                    .is_some_and(|n| n.as_bytes().iter().all(u8::is_ascii_digit))
                {
                    if let Ok(inodes) = ns_inodes(&p.display().to_string()) {
                        if inodes != own {
                            bail!("{} is in other namespaces", p.display());
                        }
                    }
                }
            }
            let f = std::fs::File::open("/proc/1/ns/mnt")?;
            match nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNS) {
                Ok(()) => {
                    Ok("every visible process is in the container's own namespaces (setns to its own worked)".into())
                }
                Err(e) => Ok(format!("only its own namespaces are visible; setns: {e}")),
            }
        }
        "sniff_other" => {
            let other: Ipv4Addr = args.first().context("other address")?.parse()?;
            // SAFETY: socket(2); the descriptor is closed when this probe exits.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, (libc::ETH_P_ALL as u16).to_be() as i32) };
            if fd < 0 {
                return Ok(format!("packet socket: {}", errno()));
            }
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 200_000,
            };
            // SAFETY: setsockopt on our socket with a timeval.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                )
            };
            let deadline = Instant::now() + Duration::from_secs(3);
            let mut seen = 0;
            let mut buf = [0u8; 2048];
            let octets = other.octets();
            while Instant::now() < deadline {
                // SAFETY: recv into our buffer.
                let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n <= 0 {
                    continue;
                }
                seen += 1;
                if buf[..n as usize].windows(4).any(|w| w == octets) {
                    bail!("saw a packet carrying {other}");
                }
            }
            Ok(format!("{seen} packets seen in 3 s, none of {other}'s"))
        }
        "host_hostname" => {
            // Its own UTS namespace, and no CAP_SYS_ADMIN: the runner checks the host's name.
            match nix::unistd::sethostname("tally-escaped") {
                Ok(()) => Ok("set the container's own hostname only (the runner checks the host's)".into()),
                Err(e) => Ok(format!("sethostname: {e}")),
            }
        }
        "set_clock" => {
            let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME)?;
            match nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, now) {
                Ok(()) => bail!("set the clock"),
                Err(e) => Ok(format!("clock_settime: {e}")),
            }
        }
        "bpf" => {
            // union bpf_attr for BPF_MAP_CREATE: map_type 2 (array), key 4, value 4, 1 entry.
            let mut attr = [0u32; 32];
            attr[..4].copy_from_slice(&[2, 4, 4, 1]);
            // SAFETY: bpf(2) with a zeroed attr of its size.
            let r = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_mut_ptr(), 128usize) };
            if r >= 0 {
                bail!("created a BPF map");
            }
            Ok(format!("bpf: {}", errno()))
        }
        "perf_event_open" => {
            // struct perf_event_attr: type PERF_TYPE_SOFTWARE (1), size, config CPU_CLOCK (0).
            let mut attr = [0u64; 16];
            attr[0] = 1 | (128u64 << 32);
            // SAFETY: perf_event_open(2) on this process, any CPU, no group.
            let r = unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_mut_ptr(), 0, -1, -1, 0) };
            if r >= 0 {
                bail!("opened a perf event");
            }
            Ok(format!("perf_event_open: {}", errno()))
        }
        "reboot" => {
            // Ctrl-Alt-Del off: harmless for a host, and outside a PID namespace's reach.
            // SAFETY: reboot(2) with a command that only flips a flag.
            let r = unsafe { libc::reboot(libc::RB_DISABLE_CAD) };
            if r == 0 {
                bail!("reboot(2) accepted a host-wide command");
            }
            Ok(format!("reboot: {}", errno()))
        }
        "write_sys" => {
            let _ = nix::mount::mount(
                None::<&str>,
                "/sys",
                None::<&str>,
                nix::mount::MsFlags::MS_REMOUNT,
                None::<&str>,
            );
            // The first that this kernel has: the host runs what uevent_helper names.
            let path = [
                "/sys/kernel/uevent_helper",
                "/sys/kernel/mm/transparent_hugepage/enabled",
                "/sys/kernel/mm/ksm/run",
                "/sys/power/state",
            ]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .context("none of the probed /sys files exists")?;
            match std::fs::OpenOptions::new().write(true).open(path) {
                Ok(_) => bail!("opened {path} for writing"),
                Err(e) => Ok(format!("{path}: {e}")),
            }
        }
        "chroot_escape" => {
            let marker = PathBuf::from(args.first().context("host marker path")?);
            std::fs::create_dir_all("/tmp/tally-jail")?;
            let _ = nix::unistd::chroot("/tmp/tally-jail");
            for _ in 0..64 {
                let _ = nix::unistd::chdir("..");
            }
            let _ = nix::unistd::chroot(".");
            if marker.exists() {
                bail!("{} (a host path) is reachable", marker.display());
            }
            Ok(format!("{} stays out of reach", marker.display()))
        }
        "open_by_handle_at" => {
            // struct file_handle with a root-inode-like handle (the "shocker" probe).
            let mut handle = [0u8; 8 + 8];
            handle[..4].copy_from_slice(&8u32.to_ne_bytes());
            handle[4..8].copy_from_slice(&1i32.to_ne_bytes());
            handle[8..12].copy_from_slice(&2u32.to_ne_bytes());
            let root = std::fs::File::open("/")?;
            // SAFETY: open_by_handle_at(2) with a handle buffer we own.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_open_by_handle_at,
                    std::os::fd::AsRawFd::as_raw_fd(&root),
                    handle.as_mut_ptr(),
                    libc::O_RDONLY,
                )
            };
            if r >= 0 {
                bail!("opened a file by handle");
            }
            let e = errno();
            if e.raw_os_error() != Some(libc::EPERM) {
                bail!("open_by_handle_at was not refused outright: {e}");
            }
            Ok(format!("open_by_handle_at: {e}"))
        }
        "kexec" => {
            // SAFETY: kexec_load with no segments; refused before anything is read.
            let r = unsafe { libc::syscall(libc::SYS_kexec_load, 0usize, 0usize, std::ptr::null::<u8>(), 0usize) };
            if r == 0 {
                bail!("kexec_load accepted");
            }
            Ok(format!("kexec_load: {}", errno()))
        }
        other => bail!("no probe {other}"),
    }
}

fn ns_inodes(proc_dir: &str) -> Result<Vec<u64>> {
    use std::os::unix::fs::MetadataExt;
    ["mnt", "net", "pid", "uts", "ipc", "cgroup"]
        .iter()
        .map(|n| Ok(std::fs::metadata(format!("{proc_dir}/ns/{n}"))?.ino()))
        .collect()
}

/// Copies this binary and the shared libraries it has mapped into the container's root, at
/// /tally-probe (libraries in /tally-probe/lib, the loader where the binary expects it).
pub(crate) fn install_into(root: &Path) -> Result<()> {
    let dir = root.join("tally-probe");
    std::fs::create_dir_all(dir.join("lib"))?;
    // The running image itself: the file on disk may have been rebuilt (or removed) meanwhile.
    std::fs::copy("/proc/self/exe", dir.join("tally-itest"))?;
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let mut libs: Vec<&str> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.contains(".so"))
        .collect();
    libs.sort();
    libs.dedup();
    for lib in libs {
        let name = Path::new(lib).file_name().context("library name")?;
        std::fs::copy(lib, dir.join("lib").join(name))?;
        if name.to_string_lossy().starts_with("ld-linux") {
            std::fs::create_dir_all(root.join("lib64"))?;
            std::fs::copy(lib, root.join("lib64").join(name))?;
        }
    }
    Ok(())
}

/// Every probe, in containers made the default way (a user namespace where the host can
/// idmap templates) and in privileged ones.
fn escape_suite(env: &mut Env) -> Outcome {
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    for privileged in [false, true] {
        println!("  {} containers:", if privileged { "privileged" } else { "default" });
        if let Outcome::Fail(why) = escape_suite_as(env, privileged) {
            return Outcome::Fail(format!(
                "{} containers: {why}",
                if privileged { "privileged" } else { "default" }
            ));
        }
    }
    Outcome::Pass
}

fn escape_suite_as(env: &mut Env, privileged: bool) -> Outcome {
    let (probe_ct, other_ct, probe_ip, other_ip) = if privileged {
        ("711", "712", "10.77.14.12", Ipv4Addr::new(10, 77, 14, 13))
    } else {
        ("701", "702", "10.77.14.2", Ipv4Addr::new(10, 77, 14, 3))
    };
    let other_ip_text = other_ip.to_string();
    for (ct, ip) in [(probe_ct, probe_ip), (other_ct, other_ip_text.as_str())] {
        let mut args = vec!["create", ct, "--ipadd", ip];
        if privileged {
            args.push("--privileged");
        }
        try_or_fail!(ok(env, &args), "create");
        try_or_fail!(ok(env, &["start", ct]), "start");
    }
    try_or_fail!(
        ok(env, &["exec", other_ct, "--", "httpd", "-p", "8080", "-h", "/var/www"]),
        "httpd"
    );
    let root = Rootfs::new(&env.instance.root, &CtId::parse(probe_ct).unwrap()).root;
    try_or_fail!(install_into(&root), "installing the probe binary in the container");
    let host_hostname = nix::unistd::gethostname().ok();
    let tallyd_pid = try_or_fail!(env.tallyd_pid().context("tallyd pid"), "tallyd");
    let marker = env.socket.display().to_string();

    // Traffic between the host and the other container while the sniffer listens; each answer
    // counted, so that the sniffer's "nothing seen" is shown to be about traffic that flowed.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answers = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let veth = tally::ct::net::host_interface(&env.instance.name, &CtId::parse(other_ct).unwrap());
    let via = try_or_fail!(
        tally::ct::net::route_interface(other_ip),
        "the host's route to the other container"
    );
    check!(
        via.as_deref() == Some(veth.as_str()),
        "the host routes {other_ip} via {via:?}, not {veth}: no traffic is sent"
    );
    let traffic = {
        let (stop, answers) = (stop.clone(), answers.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Only while the host still routes the address through that container's veth.
                if tally::ct::net::route_interface(other_ip).ok().flatten().as_deref() != Some(veth.as_str()) {
                    break;
                }
                if let Ok(mut s) =
                    std::net::TcpStream::connect_timeout(&(other_ip, 8080).into(), Duration::from_secs(1))
                {
                    use std::io::{Read, Write};
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut page = Vec::new();
                    if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok()
                        && s.read_to_end(&mut page).is_ok()
                        && page.starts_with(b"HTTP/1.")
                    {
                        answers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    // However the test ends, the traffic stops with it.
    struct StopOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let _stop_traffic = StopOnDrop(stop.clone());
    let mut escaped = Vec::new();
    for (name, what) in PROBES {
        let arg = match *name {
            "ptrace_host" | "see_host_pids" => tallyd_pid.to_string(),
            "sniff_other" => other_ip.to_string(),
            "chroot_escape" => marker.clone(),
            _ => String::new(),
        };
        let mut args = vec![
            "exec",
            probe_ct,
            "--",
            "env",
            "LD_LIBRARY_PATH=/tally-probe/lib",
            "/tally-probe/tally-itest",
            "escape",
            name,
        ];
        if !arg.is_empty() {
            args.push(&arg);
        }
        let answered_before = answers.load(std::sync::atomic::Ordering::Relaxed);
        let out = try_or_fail!(env.tally(&args), "running a probe");
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        println!("    {name} ({what}): {text}");
        if *name == "sniff_other" {
            let answered = answers.load(std::sync::atomic::Ordering::Relaxed) - answered_before;
            println!("    ({answered} HTTP exchanges with {other_ip} while the sniffer listened)");
            check!(
                answered > 0,
                "no traffic with {other_ip} flowed while the sniffer listened: its result proves nothing"
            );
        }
        if out.status.code() != Some(0) || !text.starts_with("refused:") {
            escaped.push(format!(
                "{name}: exit {:?}: {text} {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = traffic.join();
    check!(
        nix::unistd::gethostname().ok() == host_hostname,
        "the host's hostname changed to {:?}",
        nix::unistd::gethostname()
    );
    for ct in [probe_ct, other_ct] {
        try_or_fail!(ok(env, &["destroy", ct]), "destroy");
    }
    check!(escaped.is_empty(), "probes got through:\n{}", escaped.join("\n"));
    Outcome::Pass
}
