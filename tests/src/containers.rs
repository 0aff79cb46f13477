//! Containers end to end through tallyd and the CLI: the vzctl lifecycle of a busybox
//! container, what it sees from inside (its own PID 1, processes, hostname, files), its
//! routed address answering the host, two containers apart from each other, live `set`,
//! errors that change nothing, and a shell on the container's own pty.
//!
//! Addresses are 10.77.T.N with T per test; before any traffic the test checks that the host
//! routes the address through the container's own veth.

use std::{io::Write, net::Ipv4Addr, time::Duration};

use anyhow::{bail, Context, Result};
use tally::{
    ct::{net, rootfs::Rootfs, CtId},
    ubc::Resource,
};

use crate::{
    check,
    env::Env,
    harness::{container_http_get, ok, status, Outcome, Test},
    try_or_fail,
};

pub fn tests() -> Vec<Test> {
    vec![
        Test {
            name: "container_lifecycle_pid1_hostname_and_httpd",
            run: lifecycle,
        },
        Test {
            name: "two_containers_see_neither_processes_nor_files",
            run: two_apart,
        },
        Test {
            name: "set_on_a_running_container_applies_at_once_and_save_persists",
            run: set_live,
        },
        Test {
            name: "container_errors_have_codes_and_leave_nothing",
            run: errors_leave_nothing,
        },
        Test {
            name: "enter_gives_a_shell_on_the_containers_own_pty",
            run: enter_shell,
        },
    ]
}

fn lifecycle(env: &mut Env) -> Outcome {
    const CT: &str = "101";
    let addr = Ipv4Addr::new(10, 77, 11, 2);
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    try_or_fail!(
        ok(env, &["create", CT, "--hostname", "web1", "--ipadd", &addr.to_string()]),
        "create"
    );
    let s = try_or_fail!(status(env, CT), "status");
    check!(s == "CTID 101 exist unmounted down", "after create: {s}");
    try_or_fail!(ok(env, &["mount", CT]), "mount");
    let s = try_or_fail!(status(env, CT), "status");
    check!(s == "CTID 101 exist mounted down", "after mount: {s}");
    let root = Rootfs::new(&env.instance.root, &CtId::parse(CT).unwrap());
    check!(
        root.root.join("bin/busybox").is_file(),
        "the template is visible in VE_ROOT"
    );
    try_or_fail!(ok(env, &["umount", CT]), "umount");
    try_or_fail!(ok(env, &["start", CT, "--wait"]), "start");
    let s = try_or_fail!(status(env, CT), "status");
    check!(s == "CTID 101 exist mounted running", "after start: {s}");

    // Inside: its own PID 1 (busybox init), only its own processes, its own hostname.
    let comm = try_or_fail!(ok(env, &["exec", CT, "--", "cat", "/proc/1/comm"]), "exec");
    check!(comm.trim() == "init", "PID 1 in the container is {comm:?}, not init");
    let me = try_or_fail!(ok(env, &["exec", CT, "--", "sh", "-c", "echo $$"]), "exec");
    check!(
        me.trim().parse::<u32>().is_ok_and(|p| p > 1 && p < 100),
        "exec'd pid {me:?}"
    );
    let ps = try_or_fail!(ok(env, &["exec", CT, "--", "ps", "-o", "pid,comm"]), "exec ps");
    let comms: Vec<&str> = ps.lines().skip(1).filter_map(|l| l.split_whitespace().nth(1)).collect();
    check!(
        comms.iter().all(|c| ["init", "ps"].contains(c)),
        "the container sees processes that are not its own: {ps}"
    );
    let hostname = try_or_fail!(ok(env, &["exec", CT, "--", "hostname"]), "exec hostname");
    check!(hostname.trim() == "web1", "hostname inside is {hostname:?}");
    let code = try_or_fail!(env.tally(&["exec", CT, "--", "sh", "-c", "exit 7"]), "exec");
    check!(
        code.status.code() == Some(7),
        "exec returns the command's code: {:?}",
        code.status
    );
    let missing = try_or_fail!(env.tally(&["exec", CT, "--", "no-such-command"]), "exec");
    check!(
        missing.status.code() == Some(127),
        "missing command: {:?}",
        missing.status
    );

    // A busybox httpd in it answers the host on the container's address.
    try_or_fail!(
        ok(env, &["exec", CT, "--", "httpd", "-p", "8080", "-h", "/var/www"]),
        "httpd"
    );
    let page = try_or_fail!(
        container_http_get(env, CT, addr, 8080, "/index.html"),
        "GET from the host"
    );
    check!(
        page.starts_with("HTTP/1.") && page.contains("tally busybox container"),
        "httpd answered {page:?}"
    );
    let list = try_or_fail!(ok(env, &["list"]), "list");
    check!(
        list.lines().next() == Some("CTID NPROC STATUS  IP_ADDR    HOSTNAME")
            && list.lines().nth(1).is_some_and(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() == 5 && f[0] == CT && f[1] == "2" && f[2] == "running" && f[3] == "10.77.11.2" && f[4] == "web1"
            }),
        "tally list:\n{list}"
    );

    // Stop: the init powers off, the root is unmounted, the veth and route are gone.
    try_or_fail!(ok(env, &["stop", CT]), "stop");
    let s = try_or_fail!(status(env, CT), "status");
    check!(s == "CTID 101 exist unmounted down", "after stop: {s}");
    let via = try_or_fail!(net::route_interface(addr), "route");
    let veth = net::host_interface(&env.instance.name, &CtId::parse(CT).unwrap());
    check!(via.as_deref() != Some(veth.as_str()), "the veth outlived the container");
    let list = try_or_fail!(ok(env, &["list", "-H"]), "list");
    check!(
        list.trim().is_empty(),
        "a stopped container is listed without -a: {list}"
    );
    let all = try_or_fail!(ok(env, &["list", "-a", "-H", "-o", "ctid,status"]), "list -a");
    check!(
        all.split_whitespace().collect::<Vec<_>>() == [CT, "stopped"],
        "list -a: {all}"
    );

    // Again, stopped the fast way; then destroyed.
    try_or_fail!(ok(env, &["restart", CT]), "restart (from stopped)");
    let s = try_or_fail!(status(env, CT), "status");
    check!(s == "CTID 101 exist mounted running", "after restart: {s}");
    try_or_fail!(ok(env, &["stop", CT, "--fast"]), "stop --fast");
    try_or_fail!(ok(env, &["destroy", CT]), "destroy");
    let s = try_or_fail!(status(env, CT), "status");
    check!(s == "CTID 101 deleted unmounted down", "after destroy: {s}");
    check!(
        !root.private.exists() && !root.root.exists(),
        "destroy left the private area or root"
    );
    check!(
        !try_or_fail!(env.cgroup(CT), "cgroup").unified.exists(),
        "destroy left the cgroup"
    );
    Outcome::Pass
}

fn two_apart(env: &mut Env) -> Outcome {
    if let Some(o) = crate::harness::shown_by_the_full_tier_run("namespaces and roots do not depend on the tier") {
        return o;
    }
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    for (ct, ip) in [("201", "10.77.12.2"), ("202", "10.77.12.3")] {
        try_or_fail!(ok(env, &["create", ct, "--ipadd", ip]), "create");
        try_or_fail!(ok(env, &["start", ct]), "start");
    }
    try_or_fail!(
        ok(
            env,
            &[
                "exec",
                "201",
                "--",
                "sh",
                "-c",
                "echo mine > /root/secret; sleep 1000 >/dev/null 2>&1 &"
            ]
        ),
        "exec in 201"
    );
    let seen = try_or_fail!(env.tally(&["exec", "202", "--", "test", "-e", "/root/secret"]), "exec");
    check!(seen.status.code() == Some(1), "202 sees 201's file: {:?}", seen.status);
    let ps = try_or_fail!(ok(env, &["exec", "202", "--", "ps", "-o", "comm"]), "ps in 202");
    check!(!ps.contains("sleep"), "202 sees 201's processes: {ps}");
    let ps = try_or_fail!(ok(env, &["exec", "201", "--", "ps", "-o", "comm"]), "ps in 201");
    check!(ps.contains("sleep"), "201 does not see its own sleep: {ps}");
    // Each sees only its own address.
    for (ct, mine, other) in [("201", "10.77.12.2", "10.77.12.3"), ("202", "10.77.12.3", "10.77.12.2")] {
        let a = try_or_fail!(ok(env, &["exec", ct, "--", "ip", "-4", "addr"]), "ip addr");
        check!(a.contains(mine) && !a.contains(other), "{ct}'s addresses: {a}");
    }
    // A file made on the host side of one container's root is not in the other's.
    let r201 = Rootfs::new(&env.instance.root, &CtId::parse("201").unwrap());
    check!(
        r201.private.join("upper/root/secret").is_file(),
        "201's file is in its own upper layer"
    );
    for ct in ["201", "202"] {
        try_or_fail!(ok(env, &["destroy", ct]), "destroy");
    }
    Outcome::Pass
}

fn set_live(env: &mut Env) -> Outcome {
    const CT: &str = "301";
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    try_or_fail!(ok(env, &["create", CT]), "create");
    try_or_fail!(ok(env, &["start", CT]), "start");
    // Three background sleeps need numproc init + sh + 3.
    let forks = ["exec", CT, "--", "sh", "-c", "sleep 1 & sleep 1 & sleep 1 & wait"];
    let plenty = try_or_fail!(env.tally(&forks), "exec");
    check!(
        plenty.status.success(),
        "unlimited: {}",
        String::from_utf8_lossy(&plenty.stderr)
    );

    // Live, not saved: numproc 3 and RAM 64M apply at once.
    try_or_fail!(ok(env, &["set", CT, "--numproc", "3:3", "--ram", "64M"]), "set");
    let before = try_or_fail!(env.ubc_row(CT, Resource::NumProc), "numproc");
    let tight = try_or_fail!(env.tally(&forks), "exec");
    let stderr = String::from_utf8_lossy(&tight.stderr);
    check!(
        stderr.contains("can't fork"),
        "numproc 3 let sh fork 3 sleeps: {stderr}"
    );
    let after = try_or_fail!(env.ubc_row(CT, Resource::NumProc), "numproc");
    check!(
        after.failcnt > before.failcnt,
        "no refusal counted: {before:?} -> {after:?}"
    );
    let ram = try_or_fail!(env.ubc_row(CT, Resource::PhysPages), "physpages");
    let pages = 64 * 1024 * 1024 / tally::ubc::page_size();
    check!(ram.limit == pages, "physpages limit {} != {pages}", ram.limit);
    let cg = try_or_fail!(env.cgroup(CT), "cgroup");
    let memory_max = try_or_fail!(memory_limit(&cg), "memory limit");
    check!(
        memory_max == 64 * 1024 * 1024,
        "the memory cgroup's limit is {memory_max}"
    );
    let conf_path = env.instance.config_path(&CtId::parse(CT).unwrap());
    let conf = try_or_fail!(std::fs::read_to_string(&conf_path), "config");
    check!(!conf.contains("NUMPROC"), "set without --save wrote the config: {conf}");

    // A restart applies the saved config: no numproc limit any more.
    try_or_fail!(ok(env, &["restart", CT]), "restart");
    let row = try_or_fail!(env.ubc_row(CT, Resource::NumProc), "numproc");
    check!(
        row.barrier == tally::ubc::UNLIMITED,
        "unsaved limit survived a restart: {row:?}"
    );
    let again = try_or_fail!(env.tally(&forks), "exec");
    check!(
        again.status.success(),
        "after restart: {}",
        String::from_utf8_lossy(&again.stderr)
    );

    // --save persists, and the next start applies it.
    try_or_fail!(ok(env, &["set", CT, "--numproc", "3:3", "--save"]), "set --save");
    let conf = try_or_fail!(std::fs::read_to_string(&conf_path), "config");
    check!(
        conf.contains("NUMPROC=\"3:3\""),
        "--save did not write the config: {conf}"
    );
    try_or_fail!(ok(env, &["restart", CT]), "restart");
    let row = try_or_fail!(env.ubc_row(CT, Resource::NumProc), "numproc");
    check!(
        row.barrier == 3 && row.limit == 3,
        "saved limit not applied at start: {row:?}"
    );
    let tight = try_or_fail!(env.tally(&forks), "exec");
    check!(
        String::from_utf8_lossy(&tight.stderr).contains("can't fork"),
        "saved numproc not enforced after restart"
    );
    try_or_fail!(ok(env, &["destroy", CT]), "destroy");
    Outcome::Pass
}

fn errors_leave_nothing(env: &mut Env) -> Outcome {
    if let Some(o) = crate::harness::shown_by_the_full_tier_run("exit codes and refusals come before any tier") {
        return o;
    }
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    try_or_fail!(ok(env, &["create", "401", "--ipadd", "10.77.13.2"]), "create");
    try_or_fail!(ok(env, &["create", "402"]), "create");
    try_or_fail!(ok(env, &["start", "401"]), "start");
    let before = env.state();
    let long = "x".repeat(65);
    for (args, code) in [
        (vec!["create", "../x"], 21),
        (vec!["create", ""], 21),
        (vec!["create", long.as_str()], 21),
        (vec!["create", "401"], 44),
        (vec!["create", "403", "--ostemplate", "no-such-template"], 47),
        (vec!["create", "403", "--ostemplate", "../../etc"], 47),
        (vec!["create", "403", "--ipadd", "10.77.13"], 21),
        (vec!["create", "403", "--ipadd", "10.77.13.2"], 34),
        (vec!["create", "403", "--hostname", "bad name"], 21),
        (vec!["create", "403", "--config", "no-such-sample"], 21),
        (vec!["start", "401"], 32),
        (vec!["start", "404"], 14),
        (vec!["stop", "402"], 31),
        (vec!["exec", "402", "--", "true"], 31),
        (vec!["umount", "401"], 32),
        (vec!["set", "404", "--numproc", "5"], 14),
        (vec!["list", "-o", "nosuchfield"], 20),
    ] {
        let out = try_or_fail!(env.tally(&args), "running tally");
        let stderr = String::from_utf8_lossy(&out.stderr);
        check!(
            out.status.code() == Some(code),
            "tally {args:?} exited {:?}, expected {code}: {stderr}",
            out.status.code()
        );
        check!(
            stderr.starts_with("tally: ") && stderr.len() > 20,
            "tally {args:?}: unclear message {stderr:?}"
        );
    }
    let after = env.state();
    check!(
        after == before,
        "refused requests changed state:\n{before:#?}\n->\n{after:#?}"
    );
    for ct in ["401", "402"] {
        try_or_fail!(ok(env, &["destroy", ct]), "destroy");
    }
    let left = env.state();
    let veth = net::host_interface(&env.instance.name, &CtId::parse("401").unwrap());
    check!(
        left.iter().all(|l| !l.contains("/40") && *l != veth),
        "destroy left: {left:#?}"
    );
    Outcome::Pass
}

/// `tally enter` on a terminal: commands typed reach a login shell inside the container,
/// whose terminal is a pty of the container's own devpts, and the shell's exit code comes back.
fn enter_shell(env: &mut Env) -> Outcome {
    if let Some(o) = crate::harness::shown_by_the_full_tier_run("the container's pty does not depend on the tier") {
        return o;
    }
    use std::os::fd::AsRawFd;
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    try_or_fail!(ok(env, &["create", "901", "--hostname", "entered"]), "create");
    try_or_fail!(ok(env, &["start", "901"]), "start");
    let pty = try_or_fail!(nix::pty::openpty(None, None), "openpty");
    let slave = std::fs::File::from(pty.slave);
    let mut cmd = env.tally_command();
    cmd.args(["enter", "901"])
        .stdin(try_or_fail!(slave.try_clone(), "dup"))
        .stdout(try_or_fail!(slave.try_clone(), "dup"))
        .stderr(slave);
    let mut child = try_or_fail!(cmd.spawn(), "tally enter");
    let mut master = std::fs::File::from(pty.master);
    try_or_fail!(
        master.write_all(b"echo in-$(hostname) on $(tty); ls /dev/pts | wc -l; exit 3\n"),
        "typing"
    );
    // Read until the session ends (EIO on the master once every slave is closed).
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match nix::unistd::read(master.as_raw_fd(), &mut buf) {
                Ok(n) if n > 0 => all.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = try_or_fail!(child.try_wait(), "waiting") {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            return Outcome::Fail("tally enter did not end within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(cmd);
    let text = reader.join().unwrap_or_default();
    try_or_fail!(ok(env, &["destroy", "901"]), "destroy");
    check!(
        status.code() == Some(3),
        "the shell's exit code: {status:?}; output {text:?}"
    );
    check!(text.contains("in-entered on /dev/pts/0"), "output: {text:?}");
    Outcome::Pass
}

/// memory.max (v2) or memory.limit_in_bytes (v1), in bytes.
fn memory_limit(cg: &tally::cgroup::ContainerCgroup) -> Result<u64> {
    let (dir, _) = cg
        .controllers
        .get(&tally::cgroup::Controller::Memory)
        .context("no memory controller")?;
    for file in ["memory.max", "memory.limit_in_bytes"] {
        if let Ok(text) = std::fs::read_to_string(dir.join(file)) {
            return text.trim().parse().context("memory limit");
        }
    }
    bail!("no memory limit file in {}", dir.display())
}
