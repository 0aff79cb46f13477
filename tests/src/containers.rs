//! Containers end to end through tallyd and the CLI: the vzctl lifecycle of a busybox
//! container, what it sees from inside (its own PID 1, processes, hostname, files), its
//! routed address answering the host, two containers apart from each other, live `set`, and
//! errors that change nothing.
//!
//! Addresses are 10.77.T.N with T per test; before any traffic the test checks that the host
//! routes the address through the container's own veth.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, TcpStream},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use tally::{
    ct::{net, rootfs::Rootfs, CtId},
    ubc::Resource,
};

use crate::{
    check,
    env::Env,
    harness::{ok, Outcome, Test},
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
            name: "cpuunits_200_100_100_50_share_cpu_44_22_22_11",
            run: cpu_fairness,
        },
        Test {
            name: "import_openvz_takes_an_openvz_config_as_it_is",
            run: import_openvz,
        },
        Test {
            name: "template_import_makes_a_template_from_a_tarball",
            run: template_import,
        },
        Test {
            name: "debian_12_template_from_debootstrap_runs_its_sshd_for_the_host",
            run: debian_service,
        },
        Test {
            name: "bridged_veth_joins_tallys_bridge_and_reaches_the_host_both_ways",
            run: bridged,
        },
        Test {
            name: "user_namespaces_map_each_containers_root_to_its_own_host_range",
            run: user_namespaces,
        },
        Test {
            name: "a_state_directory_others_cannot_search_is_named_at_startup_and_by_each_start",
            run: untraversable_root,
        },
        Test {
            name: "enter_gives_a_shell_on_the_containers_own_pty",
            run: enter_shell,
        },
        Test {
            name: "cpulimit_50_caps_a_busy_container_at_half_a_cpu",
            run: cpulimit,
        },
    ]
}

fn status(env: &Env, ct: &str) -> Result<String> {
    Ok(ok(env, &["status", ct])?.trim().to_string())
}

/// Fetches `path` from `addr:port` over HTTP/1.0, after checking the host routes `addr`
/// through container `ct`'s veth (and so nowhere else).
fn http_get(env: &Env, ct: &str, addr: Ipv4Addr, port: u16, path: &str) -> Result<String> {
    // httpd was just started in the background: give it a moment to listen.
    let mut s = connect(env, ct, addr, port, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

/// A TCP connection to `addr:port`, retried for up to `wait` while the service comes up,
/// after checking the host routes `addr` through container `ct`'s veth (and so nowhere else).
fn connect(env: &Env, ct: &str, addr: Ipv4Addr, port: u16, wait: Duration) -> Result<TcpStream> {
    connect_via(
        &net::host_interface(&env.instance.name, &CtId::parse(ct)?),
        addr,
        port,
        wait,
    )
}

/// [`connect`] where the host's route to `addr` must go through interface `via_if`.
fn connect_via(via_if: &str, addr: Ipv4Addr, port: u16, wait: Duration) -> Result<TcpStream> {
    let via = net::route_interface(addr)?;
    if via.as_deref() != Some(via_if) {
        bail!("refusing to send: the host routes {addr} via {via:?}, not {via_if}");
    }
    let deadline = std::time::Instant::now() + wait;
    loop {
        match TcpStream::connect_timeout(&(addr, port).into(), Duration::from_secs(2)) {
            Ok(s) => return Ok(s),
            Err(e) if std::time::Instant::now() >= deadline => return Err(e.into()),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
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
    let page = try_or_fail!(http_get(env, CT, addr, 8080, "/index.html"), "GET from the host");
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

/// Two busy loops in container `ct`: enough to load both CPUs of this machine.
fn cpu_load(env: &Env, ct: &str) -> std::io::Result<std::process::Child> {
    env.tally_command()
        .args([
            "exec",
            ct,
            "--",
            "sh",
            "-c",
            "while :; do :; done & while :; do :; done",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
}

/// Four containers, each loading both CPUs, with CPUUNITS 200/100/100/50: over 20 s each gets
/// its share of the CPU time they used together (from cgroup CPU accounting), within 3 points.
fn cpu_fairness(env: &mut Env) -> Outcome {
    if let Some(o) = crate::harness::shown_by_the_full_tier_run("CPU shares come from the cpu controller alone") {
        return o;
    }
    const CTS: [(&str, u64); 4] = [("601", 200), ("602", 100), ("603", 100), ("604", 50)];
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    let mut loads = Vec::new();
    for (ct, units) in CTS {
        try_or_fail!(ok(env, &["create", ct]), "create");
        try_or_fail!(ok(env, &["set", ct, "--cpuunits", &units.to_string(), "--save"]), "set");
        try_or_fail!(ok(env, &["start", ct]), "start");
        loads.push(try_or_fail!(cpu_load(env, ct), "starting a CPU load"));
    }
    let usage =
        |env: &Env| -> Result<Vec<u64>> { CTS.iter().map(|(ct, _)| Ok(env.cgroup(ct)?.cpu_usage_us()?)).collect() };
    std::thread::sleep(Duration::from_secs(2));
    let before = try_or_fail!(usage(env), "cpu usage");
    std::thread::sleep(Duration::from_secs(20));
    let after = try_or_fail!(usage(env), "cpu usage");
    for (ct, _) in CTS {
        try_or_fail!(ok(env, &["stop", ct, "--fast"]), "stop");
    }
    for mut l in loads {
        let _ = l.kill();
        let _ = l.wait();
    }
    let used: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let total: u64 = used.iter().sum();
    let units: u64 = CTS.iter().map(|(_, u)| u).sum();
    let shares: Vec<String> = used
        .iter()
        .map(|u| format!("{:.1}%", *u as f64 * 100.0 / total as f64))
        .collect();
    println!(
        "    CPU shares over 20 s: {shares:?} of {:.1} CPU-seconds",
        total as f64 / 1e6
    );
    check!(total > 0, "no CPU time was used");
    for ((ct, u), used) in CTS.iter().zip(&used) {
        let want = *u as f64 * 100.0 / units as f64;
        let got = *used as f64 * 100.0 / total as f64;
        check!(
            (got - want).abs() <= 3.0,
            "CT {ct} (CPUUNITS {u}) got {got:.1}% of the CPU time, expected {want:.1}% +-3: {shares:?}"
        );
    }
    Outcome::Pass
}

/// An OpenVZ 101.conf as vzctl writes it (LONG_MAX for unlimited, $VEID in paths, a template
/// tally does not have).
const OPENVZ_CONF: &str = r#"# Copyright (C) 2000-2011, Parallels, Inc. All rights reserved.
ONBOOT="yes"
PHYSPAGES="0:262144"
SWAPPAGES="0:524288"
KMEMSIZE="14372700:14790164"
NUMPROC="240:240"
NUMFILE="9312:9312"
NUMTCPSOCK="unlimited"
PRIVVMPAGES="9223372036854775807:9223372036854775807"
CPUUNITS="1000"
VE_ROOT="/vz/root/$VEID"
VE_PRIVATE="/vz/private/$VEID"
OSTEMPLATE="centos-6-x86_64"
ORIGIN_SAMPLE="vswap-256m"
HOSTNAME="ct801.example.com"
IP_ADDRESS="10.77.15.2"
NAMESERVER="192.0.2.53"
"#;

/// The template directory's entries (templates and their metadata).
fn templates_state(env: &Env) -> Vec<String> {
    dir_names(&env.instance.root.join("template"))
}

/// The names in a directory, sorted (none when it is missing).
pub(crate) fn dir_names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `tally template import`: a gzipped tarball of a root tree (here: the busybox template
/// plus a marker file) becomes a template containers start from; bad names, missing files
/// and a name taken are refused with their exit codes and leave the store as it was.
fn template_import(env: &mut Env) -> Outcome {
    if let Some(o) = crate::harness::shown_by_the_full_tier_run("templates are files, whatever the tier") {
        return o;
    }
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    try_or_fail!(ok(env, &["template", "list"]), "template list (makes busybox)");
    let archive = try_or_fail!(
        env.busybox_archive(&[("etc/tally-import-marker", b"imported\n")]),
        "making the archive"
    );
    let path = archive.display().to_string();
    let before = templates_state(env);
    for (args, code, what) in [
        (
            vec!["template", "import", "../x", path.as_str()],
            47,
            "a name with a path in it",
        ),
        (
            vec!["template", "import", "imp", "/nonexistent/tally.tar"],
            21,
            "a missing archive",
        ),
        (
            vec!["template", "import", "busybox", path.as_str()],
            44,
            "the built-in name",
        ),
    ] {
        let out = try_or_fail!(env.tally(&args), "template import");
        check!(
            out.status.code() == Some(code),
            "{what}: exit {:?} (want {code}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        check!(templates_state(env) == before, "{what} changed the template store");
    }
    try_or_fail!(ok(env, &["template", "import", "imp", &path]), "template import");
    let list = try_or_fail!(ok(env, &["template", "list"]), "template list");
    check!(
        list.lines().any(|l| l.starts_with("imp ") && l.contains("SIGUSR2")),
        "imported template listed with busybox init's halt signal: {list}"
    );
    let out = try_or_fail!(env.tally(&["template", "import", "imp", &path]), "import again");
    check!(
        out.status.code() == Some(44),
        "a taken name: exit {:?}",
        out.status.code()
    );
    try_or_fail!(
        ok(env, &["create", "811", "--ostemplate", "imp", "--ipadd", "10.77.16.2"]),
        "create from the imported template"
    );
    try_or_fail!(ok(env, &["start", "811"]), "start");
    let marker = try_or_fail!(
        ok(env, &["exec", "811", "--", "cat", "/etc/tally-import-marker"]),
        "exec"
    );
    check!(
        marker.trim() == "imported",
        "the marker file in the container: {marker:?}"
    );
    try_or_fail!(ok(env, &["destroy", "811"]), "destroy");
    Outcome::Pass
}

fn import_openvz(env: &mut Env) -> Outcome {
    if let Some(o) = crate::harness::shown_by_the_full_tier_run("a config import does not depend on the tier") {
        return o;
    }
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    let dir = env.instance.root.join("openvz");
    try_or_fail!(std::fs::create_dir_all(&dir), "mkdir");
    let file = dir.join("801.conf");
    try_or_fail!(std::fs::write(&file, OPENVZ_CONF), "writing the config");
    let path = file.display().to_string();
    let before = env.state();
    // Its template is not here: refused, nothing made.
    let out = try_or_fail!(env.tally(&["import-openvz", &path]), "import");
    check!(
        out.status.code() == Some(47),
        "missing template: exit {:?}",
        out.status.code()
    );
    let bad = dir.join("802.conf");
    try_or_fail!(std::fs::write(&bad, "NUMPROC=\"20:10\"\n"), "writing the config");
    let out = try_or_fail!(env.tally(&["import-openvz", &bad.display().to_string()]), "import");
    check!(
        out.status.code() == Some(21),
        "barrier above limit: exit {:?}",
        out.status.code()
    );
    check!(env.state() == before, "refused imports changed state");

    try_or_fail!(ok(env, &["import-openvz", &path, "--ostemplate", "busybox"]), "import");
    let conf = try_or_fail!(
        std::fs::read_to_string(env.instance.config_path(&CtId::parse("801").unwrap())),
        "config"
    );
    check!(
        conf.contains("NAMESERVER=\"192.0.2.53\"") && conf.contains("ONBOOT=\"yes\"") && !conf.contains("VE_ROOT"),
        "imported config: {conf}"
    );
    let numproc = try_or_fail!(env.ubc_row("801", Resource::NumProc), "numproc");
    check!(numproc.barrier == 240 && numproc.limit == 240, "numproc {numproc:?}");
    let ram = try_or_fail!(env.ubc_row("801", Resource::PhysPages), "physpages");
    check!(ram.limit == 262_144, "physpages {ram:?}");
    let privvm = try_or_fail!(env.ubc_row("801", Resource::PrivVmPages), "privvmpages");
    check!(
        privvm.limit == tally::ubc::UNLIMITED,
        "LONG_MAX is unlimited: {privvm:?}"
    );
    try_or_fail!(ok(env, &["start", "801"]), "start");
    let hostname = try_or_fail!(ok(env, &["exec", "801", "--", "hostname"]), "hostname");
    check!(hostname.trim() == "ct801.example.com", "hostname {hostname:?}");
    let list = try_or_fail!(ok(env, &["list", "-H", "-o", "ctid,ip"]), "list");
    check!(
        list.split_whitespace().collect::<Vec<_>>() == ["801", "10.77.15.2"],
        "list: {list}"
    );
    try_or_fail!(ok(env, &["destroy", "801"]), "destroy");
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

/// CPULIMIT 50 (half of one CPU) on a container loading both CPUs: over 6 s it gets 0.5 CPU
/// (+-20%); CPUS 1 then lets it have one CPU, not two.
fn cpulimit(env: &mut Env) -> Outcome {
    if let Some(o) = crate::harness::shown_by_the_full_tier_run("CPULIMIT is the cpu controller's quota alone") {
        return o;
    }
    const CT: &str = "951";
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    try_or_fail!(ok(env, &["create", CT]), "create");
    try_or_fail!(ok(env, &["start", CT]), "start");
    let mut load = try_or_fail!(cpu_load(env, CT), "starting a CPU load");
    let measure = |env: &Env| -> Result<f64> {
        let cg = env.cgroup(CT)?;
        std::thread::sleep(Duration::from_secs(1));
        let (u0, t0) = (cg.cpu_usage_us()?, std::time::Instant::now());
        std::thread::sleep(Duration::from_secs(6));
        Ok((cg.cpu_usage_us()? - u0) as f64 / t0.elapsed().as_micros() as f64)
    };
    let result = (|| -> Result<(f64, f64)> {
        ok(env, &["set", CT, "--cpulimit", "50"])?;
        let half = measure(env)?;
        ok(env, &["set", CT, "--cpulimit", "0", "--cpus", "1"])?;
        let one = measure(env)?;
        Ok((half, one))
    })();
    let _ = ok(env, &["stop", CT, "--fast"]);
    let _ = load.kill();
    let _ = load.wait();
    let (half, one) = try_or_fail!(result, "measuring");
    println!("    CPU used: {half:.2} CPUs at CPULIMIT 50, {one:.2} at CPUS 1");
    check!((0.4..=0.6).contains(&half), "CPULIMIT 50 gave {half:.2} CPUs");
    check!((0.8..=1.2).contains(&one), "CPUS 1 gave {one:.2} CPUs");
    Outcome::Pass
}

/// `tally template create debian-12` (debootstrap, offline from the packages `cargo xtask
/// setup` downloaded), a container from it whose own init (sysvinit) starts Debian's OpenSSH
/// server, reachable from the host on the container's address; `stop` powers it off through
/// the template's halt signal.
fn debian_service(env: &mut Env) -> Outcome {
    const CT: &str = "112";
    let Some(debs) = std::env::var_os("TALLY_ITEST_DEBIAN_DEBS")
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_file())
    else {
        return Outcome::Elsewhere(
            "needs debian-12's packages (TALLY_ITEST_DEBIAN_DEBS: cargo xtask setup downloads them; the host tier runs this)".into(),
        );
    };
    let addr = Ipv4Addr::new(10, 77, 12, 2);
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    let before = templates_state(env);
    let bad = try_or_fail!(env.tally(&["template", "create", "debian-99"]), "template create");
    check!(
        bad.status.code() == Some(47) && templates_state(env) == before,
        "an unknown distribution: exit {:?} ({}), templates {before:?} -> {:?}",
        bad.status.code(),
        String::from_utf8_lossy(&bad.stderr).trim(),
        templates_state(env)
    );
    let debs = debs.display().to_string();
    try_or_fail!(
        ok(env, &["template", "create", "debian-12", "--debs", &debs]),
        "template create debian-12"
    );
    let list = try_or_fail!(ok(env, &["template", "list"]), "template list");
    check!(
        list.lines()
            .any(|l| l.split_whitespace().take(2).eq(["debian-12", "SIGPWR"])),
        "template list: {list}"
    );
    let again = try_or_fail!(
        env.tally(&["template", "create", "debian-12", "--debs", &debs]),
        "template create"
    );
    check!(
        again.status.code() == Some(44),
        "a second debian-12: exit {:?}",
        again.status.code()
    );

    try_or_fail!(
        ok(
            env,
            &[
                "create",
                CT,
                "--ostemplate",
                "debian-12",
                "--hostname",
                "deb1",
                "--ipadd",
                &addr.to_string()
            ]
        ),
        "create"
    );
    try_or_fail!(ok(env, &["start", CT, "--wait"]), "start");
    let version = try_or_fail!(ok(env, &["exec", CT, "--", "cat", "/etc/debian_version"]), "exec");
    check!(version.starts_with("12."), "/etc/debian_version: {version:?}");
    let init = try_or_fail!(ok(env, &["exec", CT, "--", "readlink", "/proc/1/exe"]), "exec");
    check!(
        init.trim() == "/usr/sbin/init" || init.trim() == "/sbin/init",
        "PID 1 runs {init:?}"
    );
    // Debian's own init scripts start sshd (runlevel 2); it greets whoever connects.
    let banner = (|| -> Result<String> {
        let mut s = connect(env, CT, addr, 22, Duration::from_secs(90))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(&mut s), &mut line)?;
        Ok(line)
    })();
    let banner = try_or_fail!(banner, "connecting to sshd from the host");
    check!(
        banner.starts_with("SSH-2.0-OpenSSH_") && banner.contains("Debian"),
        "sshd's banner: {banner:?}"
    );
    let ps = try_or_fail!(ok(env, &["exec", CT, "--", "ps", "-e", "-o", "comm="]), "ps");
    check!(ps.lines().any(|l| l.trim() == "sshd"), "no sshd among {ps}");
    // Its host keys are its own: made at its first boot, in its private area, not shared
    // through the template.
    let key = "etc/ssh/ssh_host_ed25519_key";
    let private = Rootfs::new(&env.instance.root, &CtId::parse(CT).unwrap()).private;
    check!(
        !env.instance.root.join("template/debian-12").join(key).exists() && private.join("upper").join(key).is_file(),
        "ssh host keys: in the template {}, in the container's private area {}",
        env.instance.root.join("template/debian-12").join(key).exists(),
        private.join("upper").join(key).exists()
    );

    // stop asks sysvinit to power off (SIGPWR -> runlevel 0 -> halt), well before the
    // timeout after which it would kill.
    let started = std::time::Instant::now();
    try_or_fail!(ok(env, &["stop", CT]), "stop");
    let took = started.elapsed();
    let s = try_or_fail!(status(env, CT), "status");
    check!(s == format!("CTID {CT} exist unmounted down"), "after stop: {s}");
    check!(
        took < tally::ct::STOP_TIMEOUT,
        "stop took {took:?}: the init did not power off on its halt signal"
    );
    try_or_fail!(ok(env, &["destroy", CT]), "destroy");
    Outcome::Pass
}

/// `create --bridge`: eth0's host end is a port of tally's bridge (made on first use with the
/// gateway on it), the address sits on the bridge's subnet, host and container reach each
/// other both ways; the bridge goes with its last port. Bad bridges and addresses change
/// nothing.
fn bridged(env: &mut Env) -> Outcome {
    if let Some(o) = crate::harness::shown_by_the_full_tier_run("networking (netlink) does not depend on the tier") {
        return o;
    }
    const CT: &str = "120";
    let br = net::DEFAULT_BRIDGE;
    let addr = Ipv4Addr::new(10, 77, 20, 2);
    let sys = std::path::Path::new("/sys/class/net").join(br);
    if sys.exists() {
        return Outcome::Fail(format!("{br} exists before the test: another tally uses it"));
    }
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    let before = env.state();
    for (args, what) in [
        (
            vec!["create", CT, "--ipadd", "10.77.20.2", "--bridge", "nosuch-br0"],
            "a bridge that is not there",
        ),
        (
            vec!["create", CT, "--ipadd", "10.77.20.2", "--bridge", "lo"],
            "an interface that is no bridge",
        ),
        (
            vec!["create", CT, "--ipadd", "10.77.20.2", "--bridge", "tally/x"],
            "a bad bridge name",
        ),
        (
            vec!["create", CT, "--ipadd", "192.0.2.7", "--bridge"],
            "an address off tally's bridge",
        ),
    ] {
        let out = try_or_fail!(env.tally(&args), "create");
        check!(
            out.status.code() == Some(21) && env.state() == before && !sys.exists(),
            "{what}: exit {:?} ({}); state {before:?} -> {:?}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim(),
            env.state()
        );
    }
    try_or_fail!(
        ok(env, &["create", CT, "--ipadd", &addr.to_string(), "--bridge"]),
        "create --bridge"
    );
    let conf = try_or_fail!(
        std::fs::read_to_string(env.instance.config_path(&CtId::parse(CT).unwrap())),
        "reading the config"
    );
    check!(conf.contains("NETIF=\"ifname=eth0,bridge=tallybr0\""), "config: {conf}");
    try_or_fail!(ok(env, &["start", CT, "--wait"]), "start");
    let veth = net::host_interface(&env.instance.name, &CtId::parse(CT).unwrap());
    let master = std::fs::read_link(format!("/sys/class/net/{veth}/master")).unwrap_or_default();
    check!(
        master.file_name().is_some_and(|m| m == br),
        "{veth}'s master is {master:?}, not {br}"
    );
    let inside = try_or_fail!(
        ok(env, &["exec", CT, "--", "ip", "-4", "addr", "show", "eth0"]),
        "ip addr"
    );
    check!(inside.contains("10.77.20.2/16"), "eth0 in the container: {inside}");

    // Host -> container: a busybox httpd on its address, through the bridge.
    try_or_fail!(
        ok(env, &["exec", CT, "--", "httpd", "-p", "8080", "-h", "/var/www"]),
        "httpd"
    );
    let page = (|| -> Result<String> {
        let mut s = connect_via(br, addr, 8080, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET /index.html HTTP/1.0\r\n\r\n")?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(body)
    })();
    let page = try_or_fail!(page, "GET from the host");
    check!(page.contains("tally busybox container"), "httpd answered {page:?}");

    // Container -> host: the gateway address on the bridge, where the test listens.
    let listener = try_or_fail!(
        std::net::TcpListener::bind((net::GATEWAY, 0)),
        "listening on the gateway"
    );
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || -> Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = [0u8; 512];
        let _ = s.read(&mut buf)?;
        s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 12\r\n\r\nhello bridge")?;
        Ok(())
    });
    // timeout(1), not wget's -T: busybox 1.35's wget crashes with it.
    let got = try_or_fail!(
        ok(
            env,
            &[
                "exec",
                CT,
                "--",
                "timeout",
                "10",
                "wget",
                "-q",
                "-O",
                "-",
                &format!("http://{}:{port}/", net::GATEWAY)
            ]
        ),
        "wget from the container to the host"
    );
    check!(got == "hello bridge", "the host answered {got:?}");
    try_or_fail!(
        server
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("server panicked"))),
        "serving"
    );

    try_or_fail!(ok(env, &["stop", CT]), "stop");
    check!(!sys.exists(), "{br} outlived its last port");
    try_or_fail!(ok(env, &["destroy", CT]), "destroy");
    Outcome::Pass
}

/// The first line of /proc/PID/uid_map, as numbers.
fn uid_map(pid: u32) -> Result<Vec<u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/uid_map"))?;
    Ok(text
        .split_whitespace()
        .take(3)
        .map(str::parse)
        .collect::<Result<_, _>>()?)
}

/// The host pid of container `ct`'s init: the process of its cgroup that is PID 1 inside.
pub(crate) fn init_pid(env: &Env, ct: &str) -> Result<u32> {
    for pid in env.cgroup(ct)?.pids()? {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap_or_default();
        if nspid.split_whitespace().last() == Some("1") {
            return Ok(pid);
        }
    }
    bail!("no PID 1 in {ct}'s cgroup")
}

/// By default a container's root is its own unprivileged range of host ids (where the host can
/// idmap the template: the template stays shared and owned by host root); two containers get
/// two ranges; what the root makes is owned by its range on the host; it binds ports below
/// 1024 in its own network namespace. `--privileged` keeps host ids.
fn user_namespaces(env: &mut Env) -> Outcome {
    if let Some(o) = crate::harness::shown_by_the_full_tier_run("user namespaces and idmapped layers do not depend on the tier") {
        return o;
    }
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    try_or_fail!(ok(env, &["template", "list"]), "template list (makes busybox)");
    let template = env.instance.root.join("template/busybox");
    if let Err(why) = tally::ct::userns::supported(&template) {
        // tallyd made the default containers privileged then; the check below shows it.
        try_or_fail!(ok(env, &["create", "150"]), "create");
        let conf = try_or_fail!(
            std::fs::read_to_string(env.instance.config_path(&CtId::parse("150").unwrap())),
            "config"
        );
        check!(
            conf.contains("PRIVILEGED=\"yes\"") && !conf.contains("USERNS_BASE"),
            "config without idmap support: {conf}"
        );
        return Outcome::Elsewhere(format!("no user namespaces on this host: {why}"));
    }
    let cts = [("150", "10.77.15.2"), ("151", "10.77.15.3")];
    for (ct, ip) in cts {
        try_or_fail!(ok(env, &["create", ct, "--ipadd", ip]), "create");
        try_or_fail!(ok(env, &["start", ct]), "start");
    }
    try_or_fail!(ok(env, &["create", "152", "--privileged"]), "create --privileged");
    try_or_fail!(ok(env, &["start", "152"]), "start");
    let mut bases = Vec::new();
    for (ct, _) in cts {
        let pid = try_or_fail!(init_pid(env, ct), "init pid");
        let map = try_or_fail!(uid_map(pid), "uid_map");
        check!(
            map.len() == 3 && map[0] == 0 && map[1] >= tally::ct::userns::FIRST_BASE as u64 && map[2] == 65536,
            "{ct}'s init has uid_map {map:?}"
        );
        let status = try_or_fail!(std::fs::read_to_string(format!("/proc/{pid}/status")), "status");
        let uid_line = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .unwrap_or_default()
            .to_string();
        check!(
            uid_line.split_whitespace().nth(1) == Some(map[1].to_string().as_str()),
            "{ct}'s init runs as host {uid_line:?}, not {}",
            map[1]
        );
        bases.push(map[1]);
        // Root inside; the template's files are root's; what root makes is the range's.
        let id = try_or_fail!(ok(env, &["exec", ct, "--", "id", "-u"]), "id");
        check!(id.trim() == "0", "{ct}: id -u says {id:?}");
        let owner = try_or_fail!(
            ok(env, &["exec", ct, "--", "stat", "-c", "%u:%g", "/bin/busybox"]),
            "stat"
        );
        check!(
            owner.trim() == "0:0",
            "{ct}: the template's busybox is owned by {owner:?} inside"
        );
        try_or_fail!(
            ok(env, &["exec", ct, "--", "sh", "-c", "echo x > /root/made-inside"]),
            "write"
        );
        let upper = Rootfs::new(&env.instance.root, &CtId::parse(ct).unwrap())
            .private
            .join("upper/root/made-inside");
        let meta = try_or_fail!(std::fs::metadata(&upper), "the file in the private area");
        check!(
            std::os::unix::fs::MetadataExt::uid(&meta) as u64 == map[1],
            "{ct}: a file root made is owned by host uid {} (range base {})",
            std::os::unix::fs::MetadataExt::uid(&meta),
            map[1]
        );
        let tpl_meta = try_or_fail!(std::fs::metadata(template.join("bin/busybox")), "template");
        check!(
            std::os::unix::fs::MetadataExt::uid(&tpl_meta) == 0,
            "the shared template changed owner"
        );
    }
    check!(bases[0] != bases[1], "two containers share the range {}", bases[0]);
    // Its network namespace is its own: its root binds port 80 and the host gets the page.
    let (ct, ip) = cts[0];
    try_or_fail!(
        ok(env, &["exec", ct, "--", "httpd", "-p", "80", "-h", "/var/www"]),
        "httpd on port 80"
    );
    let page = try_or_fail!(
        http_get(env, ct, ip.parse().unwrap(), 80, "/index.html"),
        "GET :80 from the host"
    );
    check!(
        page.contains("tally busybox container"),
        "httpd on port 80 answered {page:?}"
    );
    // Privileged: host ids.
    let pid = try_or_fail!(init_pid(env, "152"), "init pid");
    let map = try_or_fail!(uid_map(pid), "uid_map");
    check!(
        map == [0, 0, 4294967295],
        "the privileged container has uid_map {map:?}"
    );
    for ct in ["150", "151", "152"] {
        try_or_fail!(ok(env, &["destroy", ct]), "destroy");
    }
    Outcome::Pass
}

/// tallyd's state directory under a directory that others may not search (as anything under
/// /root is): user-namespaced containers cannot reach their roots there. tallyd says so when it
/// starts and refuses each such start with the directory and the fix; privileged containers
/// are not affected, and once the directory may be searched the same container starts.
fn untraversable_root(env: &mut Env) -> Outcome {
    use std::os::unix::fs::PermissionsExt;
    if let Some(o) = crate::harness::shown_by_the_full_tier_run("the state directory's modes do not depend on the tier")
    {
        return o;
    }
    let root = env.instance.root.clone();
    let mode = |m: u32| std::fs::set_permissions(&root, std::fs::Permissions::from_mode(m));
    try_or_fail!(mode(0o700), "chmod 0700 the state directory");
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    try_or_fail!(ok(env, &["template", "list"]), "template list (makes busybox)");
    if let Err(why) = tally::ct::userns::supported(&root.join("template/busybox")) {
        return Outcome::Elsewhere(format!("no user namespaces on this host: {why}"));
    }
    let dir = root.display().to_string();
    let said = |text: &str| text.contains(&dir) && text.contains(&format!("chmod o+x {dir}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !env.tallyd_log().iter().any(|l| said(l)) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    check!(
        env.tallyd_log().iter().any(|l| said(l)),
        "tallyd did not name {dir} and the fix at startup: {:#?}",
        env.tallyd_log()
    );
    try_or_fail!(ok(env, &["create", "160", "--ipadd", "10.77.17.2"]), "create");
    let out = try_or_fail!(env.tally(&["start", "160"]), "start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    check!(
        out.status.code() == Some(7) && said(&stderr),
        "start under a 0700 directory: exit {:?}, {stderr}",
        out.status.code()
    );
    let status = try_or_fail!(ok(env, &["status", "160"]), "status");
    check!(
        status.contains("down") && status.contains("unmounted"),
        "the refused start left {status}"
    );
    try_or_fail!(ok(env, &["create", "161", "--privileged"]), "create --privileged");
    try_or_fail!(ok(env, &["start", "161"]), "a privileged container starts");
    try_or_fail!(mode(0o755), "chmod 0755 the state directory");
    try_or_fail!(ok(env, &["start", "160"]), "start once others may search the directory");
    for ct in ["160", "161"] {
        try_or_fail!(ok(env, &["destroy", ct]), "destroy");
    }
    Outcome::Pass
}
