//! Every enforced beancounter row, in whichever tier tallyd runs: a workload in a container
//! crosses the barrier; the syscall fails with the errno a Linux program expects, failcnt
//! rises by exactly the number of refusals, held never passes the limit, maxheld is the peak,
//! and held returns to its idle value once the workload is gone. Plus: an object made in
//! container A and freed by a process of container B is given back to A.

use anyhow::Result;
use tally::ubc::{Beancounter, Resource};

use crate::{
    check,
    drive::Driven,
    env::Env,
    harness::{Outcome, Test},
    try_or_fail,
};

/// One row's crossing: `limit` for barrier and limit, `attempts` objects of `kind`, and the
/// errno each tier refuses with (None: the tier does not enforce the row).
struct Case {
    row: Resource,
    kind: &'static str,
    limit: u64,
    attempts: u64,
    full: i32,
    fallback: Option<i32>,
}

const ENFILE: i32 = libc::ENFILE;
const CASES: &[(&str, Case)] = &[
    (
        "numfile_over_the_barrier_fails_with_enfile",
        Case {
            row: Resource::NumFile,
            kind: "files",
            limit: 40,
            attempts: 60,
            full: ENFILE,
            fallback: None,
        },
    ),
    (
        "numflock_over_the_barrier_fails_with_enolck",
        Case {
            row: Resource::NumFlock,
            kind: "flocks",
            limit: 10,
            attempts: 20,
            full: libc::ENOLCK,
            fallback: None,
        },
    ),
    (
        "numpty_over_the_barrier_fails_with_enospc",
        Case {
            row: Resource::NumPty,
            kind: "ptys",
            limit: 4,
            attempts: 10,
            full: libc::ENOSPC,
            fallback: None,
        },
    ),
    (
        "numtcpsock_over_the_barrier_fails_with_enobufs_or_eperm",
        Case {
            row: Resource::NumTcpSock,
            kind: "tcpsocks",
            limit: 10,
            attempts: 20,
            full: libc::ENOBUFS,
            fallback: Some(libc::EPERM),
        },
    ),
    (
        "numothersock_udp_over_the_barrier_fails_with_enobufs_or_eperm",
        Case {
            row: Resource::NumOtherSock,
            kind: "udpsocks",
            limit: 10,
            attempts: 20,
            full: libc::ENOBUFS,
            fallback: Some(libc::EPERM),
        },
    ),
    (
        "numothersock_unix_over_the_barrier_fails_with_enobufs",
        Case {
            row: Resource::NumOtherSock,
            kind: "unixsocks",
            limit: 10,
            attempts: 20,
            full: libc::ENOBUFS,
            fallback: None,
        },
    ),
];

pub fn tests() -> Vec<Test> {
    let mut v: Vec<Test> = CASES.iter().map(|(name, _)| Test { name, run: run_case }).collect();
    v.push(Test {
        name: "a_socket_made_in_a_and_closed_in_b_is_given_back_to_a",
        run: crosses_containers,
    });
    v.push(Test {
        name: "ram_limit_counts_physpages_and_stops_a_memory_hog",
        run: ram_limit,
    });
    v.push(Test {
        name: "rows_behave_as_tally_check_says_on_this_host",
        run: as_check_says,
    });
    v.push(Test {
        name: "privvmpages_and_kmemsize_count_and_guarantees_reach_the_memory_controller",
        run: privvm_kmem_and_guarantees,
    });
    v.push(Test {
        name: "socket_buffer_rows_count_unread_data_in_a_containers_own_netns",
        run: socket_buffers,
    });
    v.push(Test {
        name: "numiptent_counts_the_netfilter_rules_of_a_containers_own_netns",
        run: netfilter_entries,
    });
    v.push(Test {
        name: "accepted_connections_are_soft_charges_refused_past_the_limit_not_the_barrier",
        run: soft_accepts,
    });
    v.push(Test {
        name: "swap_limit_holds_swappages_within_it_and_counts_the_hits",
        run: swap_limit,
    });
    v.push(Test {
        name: "numsiginfo_counts_signals_queued_in_a_user_namespace_container",
        run: queued_signals,
    });
    v
}

const CT: &str = "201";

#[derive(serde::Deserialize, Debug)]
struct Held {
    made: u64,
    refused: u64,
    errno: i32,
    mixed: bool,
}

fn run_case(env: &mut Env) -> Outcome {
    let case = &CASES.iter().find(|(n, _)| *n == env.test).expect("a case per test").1;
    let ready = try_or_fail!(env.start_tallyd(), "starting tallyd");
    let errno = if ready.contains("tier=full") {
        Some(case.full)
    } else {
        case.fallback
    };
    let Some(errno) = errno else {
        return Outcome::Skip(format!(
            "{} ({}) is enforced only in the full tier (BPF LSM)",
            case.row, case.kind
        ));
    };
    let flag = format!("--{}", case.row.name());
    let value = format!("{0}:{0}", case.limit);
    let out = try_or_fail!(env.set(CT, &[&flag, &value]), "tally set");
    check!(
        out.status.success(),
        "tally set: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let idle = try_or_fail!(env.ubc_row(CT, case.row), "reading the row");

    let cmd = env.workload_in(CT, &["hold", case.kind, &case.attempts.to_string()]);
    let mut w = try_or_fail!(Driven::start(cmd), "starting the workload");
    let held: Held = try_or_fail!(w.read(), "the workload's count");
    let during = try_or_fail!(env.ubc_row(CT, case.row), "reading the row during the workload");
    try_or_fail!(w.finish(), "ending the workload");

    check!(
        held.refused > 0 && held.made > 0,
        "the workload should both make and be refused objects: {held:?}"
    );
    check!(
        !held.mixed && held.errno == errno,
        "refusals should all be errno {errno}: {held:?}"
    );
    check!(
        during.held == case.limit,
        "held during the workload should sit at the limit: {during:?}"
    );
    let after = try_or_fail!(
        env.wait_row(CT, case.row, "its idle value", |r| r.held == idle.held),
        "after the workload"
    );
    check!(
        after.maxheld == case.limit,
        "maxheld should be the peak (the limit): {after:?}"
    );
    check!(
        after.failcnt == idle.failcnt + held.refused,
        "failcnt {} != {} refusals",
        after.failcnt,
        held.refused
    );

    // Each refusal passed through tally's programs: tallyd reported the shortage.
    let events = try_or_fail!(env.tally(&["events", "--json", CT]), "tally events");
    let events: Vec<tally::api::EventView> = String::from_utf8_lossy(&events.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|e: &tally::api::EventView| e.resource == case.row.name())
        .collect();
    check!(!events.is_empty(), "no limit-hit event for {} in CT {CT}", case.row);
    check!(
        events.iter().all(|e| e.failcnt >= 1 && e.failcnt <= after.failcnt),
        "event failcnts: {events:?}"
    );
    Outcome::Pass
}

/// A UDP socket (numothersock, counted in both tiers) made by a process of container A
/// crosses to a process of container B over SCM_RIGHTS; A's process exits, B closes it: the
/// socket is freed in B's context and must be given back to A, and never charged to B.
fn crosses_containers(env: &mut Env) -> Outcome {
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    for ct in ["301", "302"] {
        let out = try_or_fail!(env.set(ct, &["--numothersock", "100"]), "tally set");
        check!(
            out.status.success(),
            "tally set: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let row = |ct: &str| env.ubc_row(ct, Resource::NumOtherSock);
    let name = format!("{}-xfer", env.instance.name);
    let workload = |ct: &str, what: &str| env.workload_in(ct, &[what, &name]);
    let mut b = try_or_fail!(Driven::start(workload("302", "recvsock")), "starting B");
    try_or_fail!(b.read::<serde_json::Value>(), "B getting ready");
    let b_idle = try_or_fail!(row("302"), "B's row");
    let mut a = try_or_fail!(Driven::start(workload("301", "sendsock")), "starting A");
    try_or_fail!(a.read::<serde_json::Value>(), "A sending");
    try_or_fail!(b.read::<serde_json::Value>(), "B receiving");
    try_or_fail!(a.finish(), "A exiting");

    // A's process is gone; B holds the socket, which A paid for.
    let a_row = try_or_fail!(row("301"), "A's row");
    check!(a_row.held == 1, "A made the socket and still pays for it: {a_row:?}");
    try_or_fail!(b.go_on(), "B closing");
    try_or_fail!(b.read::<serde_json::Value>(), "B closed");
    // Once B closes it, the socket is freed in B's context and given back to A.
    try_or_fail!(
        env.wait_row("301", Resource::NumOtherSock, "held 0", |r| r.held == 0),
        "A after"
    );
    let b_after: Result<Beancounter> = row("302");
    let b_after = try_or_fail!(b_after, "B's row");
    check!(
        b_after.held == b_idle.held && b_after.maxheld == b_idle.maxheld,
        "B was charged: {b_idle:?} -> {b_after:?}"
    );
    try_or_fail!(b.finish(), "B exiting");
    Outcome::Pass
}

/// VSwap's --ram: physpages counts what the container touches, and a hog past the limit is
/// stopped by the memory controller (OOM-killed, as Linux does at a memory cgroup limit),
/// never holding more than the limit; failcnt counts the limit hits.
fn ram_limit(env: &mut Env) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    let out = try_or_fail!(env.set(CT, &["--ram", "32M", "--swap", "0"]), "tally set");
    check!(
        out.status.success(),
        "tally set: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let limit_pages = 32 * 256;
    let row = try_or_fail!(env.ubc_row(CT, Resource::PhysPages), "physpages");
    check!(
        row.barrier == 0 && row.limit == limit_pages,
        "--ram 32M should be physpages 0:{limit_pages}: {row:?}"
    );

    let hog = |mb: &str| env.workload_in(CT, &["hog", mb]);
    let mut small = try_or_fail!(Driven::start(hog("8")), "starting an 8 MiB workload");
    try_or_fail!(small.read::<serde_json::Value>(), "the 8 MiB workload");
    let during = try_or_fail!(env.ubc_row(CT, Resource::PhysPages), "physpages");
    try_or_fail!(small.finish(), "ending the 8 MiB workload");
    check!(
        during.held >= 8 * 256 && during.held <= limit_pages,
        "8 MiB touched should be held: {during:?}"
    );

    let status = try_or_fail!(hog("128").output(), "running a 128 MiB hog").status;
    check!(
        status.signal() == Some(libc::SIGKILL),
        "the hog should be OOM-killed at the limit, got {status:?}"
    );
    let after = try_or_fail!(env.ubc_row(CT, Resource::PhysPages), "physpages");
    check!(after.failcnt > 0, "limit hits should be counted: {after:?}");
    check!(
        after.maxheld <= limit_pages,
        "the peak must stay within the limit: {after:?}"
    );
    check!(after.held <= limit_pages, "held past the limit: {after:?}");
    Outcome::Pass
}

/// Soft charges (OpenVZ's UB_SOFT, checked against the limit): an accepted connection exists
/// already, so the accept gate lets numtcpsock run up to its limit where socket() stops at the
/// barrier. numtcpsock 4:8, a listener (1) and 10 connections waiting: 7 accepts pass, the
/// other 3 fail with ENOBUFS and are failcnt; held never passes the limit.
fn soft_accepts(env: &mut Env) -> Outcome {
    const BARRIER: u64 = 4;
    const LIMIT: u64 = 8;
    const PEERS: u64 = 10;
    let ready = try_or_fail!(env.start_tallyd(), "starting tallyd");
    if !ready.contains("tier=full") {
        return Outcome::Skip(
            "accepted sockets are counted only in the full tier (BPF LSM socket_accept), as tally check says".into(),
        );
    }
    let out = try_or_fail!(
        env.set(CT, &["--numtcpsock", &format!("{BARRIER}:{LIMIT}")]),
        "tally set"
    );
    check!(
        out.status.success(),
        "tally set: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut w = try_or_fail!(
        Driven::start(env.workload_in(CT, &["accepts", &PEERS.to_string()])),
        "the listener"
    );
    #[derive(serde::Deserialize)]
    struct Port {
        port: u16,
    }
    let Port { port } = try_or_fail!(w.read(), "the listener's port");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    // The peers are the test's own (host) sockets, on loopback.
    let peers: Vec<std::net::TcpStream> = try_or_fail!(
        (0..PEERS)
            .map(|_| std::net::TcpStream::connect(addr))
            .collect::<std::io::Result<_>>(),
        "connecting the peers"
    );
    try_or_fail!(w.go_on(), "starting the accepts");
    let held: Held = try_or_fail!(w.read(), "the accepts");
    let during = try_or_fail!(env.ubc_row(CT, Resource::NumTcpSock), "numtcpsock");
    try_or_fail!(w.finish(), "ending the listener");
    drop(peers);
    check!(
        held.made == LIMIT - 1 && held.refused == PEERS - (LIMIT - 1) && held.errno == libc::ENOBUFS,
        "accepts should pass up to the limit ({LIMIT}, the listener included), not the barrier ({BARRIER}): {held:?}"
    );
    check!(
        during.held == LIMIT && during.maxheld == LIMIT && during.failcnt == held.refused,
        "held at the limit, failcnt = refusals: {during:?}"
    );
    try_or_fail!(
        env.wait_row(CT, Resource::NumTcpSock, "held 0", |r| r.held == 0),
        "after the listener"
    );
    Outcome::Pass
}

/// VSwap's --swap: with RAM 32M and swap 16M, a workload touching 40 MiB holds the rest in
/// swap (swappages held, within the limit); a hog past RAM + swap is stopped (OOM-killed),
/// the swap limit's hits are swappages' failcnt, and held goes back once the workload is gone
/// (but for the freed slots the kernel keeps in per-CPU caches a while).
fn swap_limit(env: &mut Env) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    let swap = match crate::swap::Swap::enable() {
        Ok(s) => s,
        Err(e) => return Outcome::Skip(format!("no swap device here: {e:#}")),
    };
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    let out = try_or_fail!(env.set(CT, &["--ram", "32M", "--swap", "16M"]), "tally set");
    check!(
        out.status.success(),
        "tally set: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let limit_pages = 16 * 256;
    let row = try_or_fail!(env.ubc_row(CT, Resource::SwapPages), "swappages");
    check!(
        row.limit == limit_pages,
        "--swap 16M should be swappages limit {limit_pages}: {row:?}"
    );

    let mut w = try_or_fail!(Driven::start(env.workload_in(CT, &["hog", "40"])), "a 40 MiB workload");
    try_or_fail!(w.read::<serde_json::Value>(), "the 40 MiB workload");
    let during = try_or_fail!(env.ubc_row(CT, Resource::SwapPages), "swappages");
    let ram = try_or_fail!(env.ubc_row(CT, Resource::PhysPages), "physpages");
    try_or_fail!(w.finish(), "ending the 40 MiB workload");
    // 40 MiB touched, at most 32 MiB of it resident: the rest (a few MiB) is in swap.
    check!(
        during.held >= 4 * 256 && during.held <= limit_pages && during.maxheld >= during.held,
        "some 8 MiB should be swapped, within the limit: {during:?} (physpages {ram:?})"
    );

    let status = try_or_fail!(env.workload_in(CT, &["hog", "128"]).output(), "running a 128 MiB hog").status;
    check!(
        status.signal() == Some(libc::SIGKILL),
        "the hog should be OOM-killed past RAM + swap, got {status:?}"
    );
    // Freed swap slots wait in per-CPU caches (64 slots each) before the kernel uncharges them.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let after = try_or_fail!(
        env.wait_row(CT, Resource::SwapPages, "held back to (nearly) 0", |r| r.held
            <= 64 * cpus),
        "after the hog"
    );
    check!(
        after.held <= limit_pages && after.maxheld <= limit_pages,
        "held past the limit: {after:?}"
    );
    // Where the kernel tells the swap's peak (v1's memsw, v2's memory.swap.peak from 6.5), the
    // OOM kill of a container whose swap was full is swappages' failcnt; before, only
    // physpages' failcnt (the OOM kill) shows it.
    let cgroup = try_or_fail!(env.cgroup(CT), "cgroup");
    let peak_known = match cgroup.controllers.get(&tally::cgroup::Controller::Memory) {
        Some((dir, tally::cgroup::Flavor::V2)) => dir.join("memory.swap.peak").exists(),
        Some((_, tally::cgroup::Flavor::V1)) => true,
        None => false,
    };
    if peak_known {
        check!(after.failcnt > 0, "the swap limit's hits should be counted: {after:?}");
    } else {
        let ram = try_or_fail!(env.ubc_row(CT, Resource::PhysPages), "physpages");
        println!("    (no memory.swap.peak on this kernel: the hit shows as physpages' OOM kill: {ram:?})");
        check!(ram.failcnt > 0, "the OOM kill should be counted: {ram:?}");
    }
    drop(swap);
    Outcome::Pass
}

/// privvmpages counts the private memory of the container's processes; vmguarpages' and
/// oomguarpages' barriers become memory.low and memory.min where cgroup v2 has them.
fn privvm_kmem_and_guarantees(env: &mut Env) -> Outcome {
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    let out = try_or_fail!(
        env.set(
            CT,
            &["--vmguarpages", "1000:unlimited", "--oomguarpages", "500:unlimited"]
        ),
        "tally set"
    );
    check!(
        out.status.success(),
        "tally set: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cmd = env.workload_in(CT, &["hog", "8"]);
    let mut hog = try_or_fail!(Driven::start(cmd), "starting an 8 MiB workload");
    try_or_fail!(hog.read::<serde_json::Value>(), "the 8 MiB workload");
    let during = try_or_fail!(env.ubc_row(CT, Resource::PrivVmPages), "privvmpages");
    // Processes cost kernel memory (stacks, page tables, slab): kmemsize must see it, on v1
    // (memory.kmem.*) as on v2 (memory.stat's kernel).
    let kmem = try_or_fail!(env.ubc_row(CT, Resource::KmemSize), "kmemsize");
    try_or_fail!(hog.finish(), "ending the workload");
    check!(
        kmem.held > 16 * 1024 && kmem.maxheld >= kmem.held,
        "kmemsize should count the running container's kernel memory: {kmem:?}"
    );
    check!(
        during.held >= 8 * 256,
        "8 MiB of private data should be held: {during:?}"
    );
    try_or_fail!(
        env.wait_row(CT, Resource::PrivVmPages, "held 0", |r| r.held == 0),
        "after the workload"
    );

    let layout = try_or_fail!(tally::cgroup::Layout::detect(), "cgroup layout");
    match layout.controllers.get(&tally::cgroup::Controller::Memory) {
        Some((mount, tally::cgroup::Flavor::V2)) => {
            let dir = mount.join(&env.instance.name).join(CT);
            let read = |f: &str| {
                std::fs::read_to_string(dir.join(f))
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            };
            let page = tally::ubc::page_size();
            check!(
                read("memory.low") == (1000 * page).to_string(),
                "memory.low is {}",
                read("memory.low")
            );
            check!(
                read("memory.min") == (500 * page).to_string(),
                "memory.min is {}",
                read("memory.min")
            );
        }
        _ => println!("    (the memory controller is v1 here: no guarantees to check, as tally check says)"),
    }
    Outcome::Pass
}

/// `tally check`'s row table, taken at its word: a row it calls "not kept" is neither counted nor
/// refused here, and every row it calls "enforced" has a crossing test above in this tier.
fn as_check_says(env: &mut Env) -> Outcome {
    let ready = try_or_fail!(env.start_tallyd(), "starting tallyd");
    let full = ready.contains("tier=full");
    // The rows of the tier tallyd runs (it can be forced below the one the host gets).
    let tier = if full { "full" } else { "fallback" };
    let out = try_or_fail!(env.tally(&["check", "--json", "--tier", tier]), "tally check");
    let report: serde_json::Value = try_or_fail!(serde_json::from_slice(&out.stdout), "tally check --json");
    let status = |row: &str| {
        report["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["resource"] == row)
            .and_then(|r| r["status"].as_str())
            .unwrap_or("")
            .to_string()
    };
    // Rows with a crossing test in this tier (CASES, plus numproc, physpages and swappages elsewhere).
    let mut crossed: Vec<&str> = CASES
        .iter()
        .filter(|(_, c)| if full { true } else { c.fallback.is_some() })
        .map(|(_, c)| c.row.name())
        .collect();
    crossed.extend(["numproc", "physpages", "swappages"]);
    for row in report["rows"].as_array().into_iter().flatten() {
        let (name, st) = (
            row["resource"].as_str().unwrap_or(""),
            row["status"].as_str().unwrap_or(""),
        );
        if st == "enforced" {
            check!(
                crossed.contains(&name),
                "{name} is called enforced but no test crosses it in this tier"
            );
        }
    }
    // Each "not kept" row this suite has a workload for: no refusal past a tiny barrier, held 0.
    let kinds = [
        ("numfile", "files"),
        ("numflock", "flocks"),
        ("numpty", "ptys"),
        ("numothersock", "unixsocks"),
        ("numsiginfo", "siginfos"),
    ];
    let mut looked = 0;
    for (row, kind) in kinds {
        let kept = status(row);
        let unix_not_kept = row == "numothersock" && !full;
        if kept != "not kept" && !unix_not_kept {
            continue;
        }
        looked += 1;
        let r = Resource::from_name(row).expect("a row");
        let out = try_or_fail!(env.set(CT, &[&format!("--{row}"), "2"]), "tally set");
        check!(
            out.status.success(),
            "tally set: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut w = try_or_fail!(
            Driven::start(env.workload_in(CT, &["hold", kind, "10"])),
            "the workload"
        );
        let held: Held = try_or_fail!(w.read(), "the workload's count");
        let during = try_or_fail!(env.ubc_row(CT, r), "the row");
        try_or_fail!(w.finish(), "ending the workload");
        check!(
            held.refused == 0 && held.made == 10,
            "{row} ({kind}) is 'not kept' yet something refused: {held:?}"
        );
        check!(
            during.held == 0 && during.failcnt == 0,
            "{row} ({kind}) is 'not kept' yet counted: {during:?}"
        );
    }
    check!(
        full || looked > 0,
        "the fallback tier should have rows that are not kept"
    );
    Outcome::Pass
}

/// The four socket-buffer rows, read by tallyd through sock_diag in the container's own
/// network namespace: data left unread over the container's loopback and a unix pair shows in
/// tcpsndbuf/tcprcvbuf, dgramrcvbuf and othersockbuf, and is gone when the workload exits.
fn socket_buffers(env: &mut Env) -> Outcome {
    use crate::harness::ok;
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    let ct = "211";
    try_or_fail!(ok(env, &["create", ct, "--ipadd", "10.77.15.2"]), "create");
    try_or_fail!(ok(env, &["start", ct]), "start");
    let id = tally::ct::CtId::parse(ct).expect("a valid id");
    let root = tally::ct::rootfs::Rootfs::new(&env.instance.root, &id).root;
    try_or_fail!(crate::escape::install_into(&root), "installing the workload binary");
    let mut cmd = env.tally_command();
    cmd.args([
        "exec",
        ct,
        "--",
        "env",
        "LD_LIBRARY_PATH=/tally-probe/lib",
        "/tally-probe/tally-itest",
        "workload",
        "sockbufs",
    ]);
    let mut w = try_or_fail!(Driven::start(cmd), "starting the workload");
    let sent: serde_json::Value = try_or_fail!(w.read(), "the workload's report");
    let row = |r| env.ubc_row(ct, r);
    let tcp_snd = try_or_fail!(row(Resource::TcpSndBuf), "tcpsndbuf");
    let tcp_rcv = try_or_fail!(row(Resource::TcpRcvBuf), "tcprcvbuf");
    let other = try_or_fail!(row(Resource::OtherSockBuf), "othersockbuf");
    let dgram = try_or_fail!(row(Resource::DgramRcvBuf), "dgramrcvbuf");
    try_or_fail!(w.finish(), "ending the workload");
    println!(
        "    wrote {sent}; held: tcpsndbuf {} tcprcvbuf {} othersockbuf {} dgramrcvbuf {}",
        tcp_snd.held, tcp_rcv.held, other.held, dgram.held
    );
    let n = |k: &str| sent[k].as_u64().unwrap_or(u64::MAX);
    // The kernel charges each buffer's true size, at least the bytes in it.
    check!(
        tcp_snd.held + tcp_rcv.held >= n("tcp") && tcp_snd.held > 0 && tcp_rcv.held > 0,
        "unread TCP data: {tcp_snd:?} {tcp_rcv:?}"
    );
    check!(dgram.held >= n("udp"), "unread UDP datagrams: {dgram:?}");
    check!(other.held >= n("unix"), "unread unix datagrams: {other:?}");
    for r in [
        Resource::TcpSndBuf,
        Resource::TcpRcvBuf,
        Resource::OtherSockBuf,
        Resource::DgramRcvBuf,
    ] {
        let after = try_or_fail!(env.wait_row(ct, r, "held 0", |r| r.held == 0), "after the workload");
        check!(after.maxheld > 0, "{r:?}: maxheld forgot the peak: {after:?}");
    }
    try_or_fail!(ok(env, &["destroy", ct]), "destroy");
    Outcome::Pass
}

/// numiptent: nftables rules made in the container's network namespace are counted there and
/// only there, and leave with their table.
fn netfilter_entries(env: &mut Env) -> Outcome {
    use crate::harness::ok;
    use std::os::unix::process::CommandExt;
    let Some(nft) = ["/usr/sbin/nft", "/sbin/nft"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        return Outcome::Skip("nft is not installed (cargo xtask setup installs nftables)".into());
    };
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    let ct = "213";
    try_or_fail!(ok(env, &["create", ct, "--ipadd", "10.77.15.3"]), "create");
    try_or_fail!(ok(env, &["start", ct]), "start");
    let pid = try_or_fail!(
        env.cgroup(ct)
            .and_then(|c| Ok(c.pids()?))
            .and_then(|p| p.first().copied().ok_or_else(|| anyhow::anyhow!("no process"))),
        "the container's init"
    );
    let nft_in_container = |script: String| -> Result<()> {
        let netns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
        let mut cmd = std::process::Command::new(nft);
        cmd.args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        // SAFETY: setns(2) only, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
            });
        }
        let mut child = cmd.spawn()?;
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), script.as_bytes())?;
        let out = child.wait_with_output()?;
        anyhow::ensure!(
            out.status.success(),
            "nft: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    };
    let idle = try_or_fail!(env.ubc_row(ct, Resource::NumIptEnt), "numiptent");
    let again = try_or_fail!(env.ubc_row(ct, Resource::NumIptEnt), "numiptent");
    let mut script = String::from(
        "add table inet tally_itest\nadd chain inet tally_itest input { type filter hook input priority 0; }\n",
    );
    for port in 1..=5 {
        script.push_str(&format!("add rule inet tally_itest input tcp dport {port} drop\n"));
    }
    try_or_fail!(nft_in_container(script), "adding 5 rules in the container's netns");
    let with = try_or_fail!(env.ubc_row(ct, Resource::NumIptEnt), "numiptent");
    try_or_fail!(
        nft_in_container("delete table inet tally_itest\n".into()),
        "deleting the table"
    );
    let after = try_or_fail!(
        env.wait_row(ct, Resource::NumIptEnt, "back to idle", |r| r.held == idle.held),
        "after the table went"
    );
    println!(
        "    numiptent idle {}, with 5 rules {}, after {}",
        idle.held, with.held, after.held
    );
    check!(idle == again, "reading twice changed the row: {idle:?} {again:?}");
    check!(with.held == idle.held + 5, "5 rules: {with:?} (idle {})", idle.held);
    check!(after.maxheld >= idle.held + 5, "maxheld forgot the peak: {after:?}");
    try_or_fail!(ok(env, &["destroy", ct]), "destroy");
    Outcome::Pass
}

/// numsiginfo in a container with its own user namespace: signals queued to its processes and
/// not yet taken are held (the kernel's per-user counts of the container's namespace), and given
/// back when they are taken or their process goes; a privileged container (the host's counts)
/// shows held 0.
fn queued_signals(env: &mut Env) -> Outcome {
    use std::os::unix::fs::MetadataExt;
    use tally::ct::{rootfs::Rootfs, CtId};
    const SIG_CT: &str = "203";
    const QUEUED: u64 = 25;
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    for args in [&["create", SIG_CT][..], &["start", SIG_CT]] {
        let out = try_or_fail!(env.tally(args), "tally {args:?}");
        check!(
            out.status.success(),
            "tally {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let pids = try_or_fail!(try_or_fail!(env.cgroup(SIG_CT), "cgroup").pids(), "pids");
    let userns = |pid: &str| std::fs::metadata(format!("/proc/{pid}/ns/user")).map(|m| m.ino()).ok();
    let init = pids.first().copied().unwrap_or(0);
    if userns(&init.to_string()).is_none() || userns(&init.to_string()) == userns("self") {
        let row = try_or_fail!(env.ubc_row(SIG_CT, Resource::NumSigInfo), "numsiginfo");
        check!(
            row.held == 0,
            "a container without a user namespace should show held 0: {row:?}"
        );
        return Outcome::Elsewhere(
            "containers here run without a user namespace (the template's filesystem cannot be \
             idmapped): numsiginfo is not kept for them, as tally check says"
                .into(),
        );
    }
    let root = Rootfs::new(&env.instance.root, &CtId::parse(SIG_CT).unwrap()).root;
    try_or_fail!(
        crate::escape::install_into(&root),
        "installing the workload in the container"
    );
    let idle = try_or_fail!(env.ubc_row(SIG_CT, Resource::NumSigInfo), "numsiginfo").held;
    let mut cmd = env.tally_command();
    cmd.args([
        "exec",
        SIG_CT,
        "--",
        "env",
        "LD_LIBRARY_PATH=/tally-probe/lib",
        "/tally-probe/tally-itest",
    ])
    .args(["workload", "hold", "siginfos", &QUEUED.to_string()]);
    let mut w = try_or_fail!(Driven::start(cmd), "the workload");
    let held: Held = try_or_fail!(w.read(), "the workload's count");
    check!(held.made == QUEUED && held.refused == 0, "the workload queued {held:?}");
    let during = try_or_fail!(env.ubc_row(SIG_CT, Resource::NumSigInfo), "numsiginfo");
    try_or_fail!(w.finish(), "ending the workload");
    check!(
        during.held == idle + QUEUED && during.maxheld >= during.held && during.failcnt == 0,
        "{QUEUED} queued signals over an idle {idle} should be held: {during:?}"
    );
    let after = try_or_fail!(
        env.wait_row(SIG_CT, Resource::NumSigInfo, "its idle value", |r| r.held == idle),
        "after the workload"
    );
    check!(
        after.maxheld >= idle + QUEUED,
        "maxheld should keep the peak: {after:?}"
    );
    Outcome::Pass
}
