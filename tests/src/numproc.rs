//! The numproc slice end to end, in whichever tier tallyd runs: OpenVZ's semantics with
//! barrier = limit = 20, enforcement that outlives tallyd, and counters a new tallyd adopts.

use anyhow::{bail, Result};
use tally::ubc::Resource;
use tally_common::{
    map_name::{CHARGES_IN_HASH, CHARGE_TABLE},
    ChargeBucket, CHARGE_BUCKETS, CHARGE_SLOTS,
};

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
            name: "numproc_20_holds_20_tasks_refuses_forks_with_eagain_and_counts_each_refusal",
            run: limit_is_enforced,
        },
        Test {
            name: "numproc_stays_enforced_after_tallyd_exits_and_a_new_tallyd_sees_the_same_counters",
            run: survives_tallyd,
        },
        Test {
            name: "numproc_refusals_come_from_the_bpf_lsm_program_in_the_full_tier",
            run: lsm_refuses,
        },
        Test {
            name: "a_tallyd_of_another_tier_replaces_the_pinned_programs",
            run: tier_change_replaces_programs,
        },
        Test {
            name: "a_tallyd_of_another_build_replaces_the_pinned_programs_and_keeps_the_counters",
            run: build_change_replaces_programs,
        },
        Test {
            name: "a_pinned_map_of_another_layout_makes_tallyd_refuse_naming_the_map_and_both_layouts",
            run: pinned_map_of_another_layout,
        },
        Test {
            name: "charges_whose_records_find_the_table_and_the_hash_map_full_rise_in_tally_bpf_errors_total",
            run: full_record_store_counted,
        },
        Test {
            name: "records_of_full_table_buckets_are_given_back_from_the_hash_map_by_a_tallyd_of_another_build",
            run: records_in_the_hash_across_builds,
        },
        Test {
            name: "bad_container_ids_and_limits_are_refused_and_change_nothing",
            run: bad_input_changes_nothing,
        },
    ]
}

const CT: &str = "101";
const LIMIT: u64 = 20;
const ATTEMPTS: u64 = 30;

#[derive(serde::Deserialize, Debug)]
pub(crate) struct Storm {
    pub forked: u64,
    pub eagain: u64,
    pub other: u64,
}

/// A fork storm whose children stay alive until `release`.
pub(crate) struct Running {
    driven: Driven,
    storm: Storm,
}

impl Running {
    pub(crate) fn start(cmd: std::process::Command) -> Result<Running> {
        let mut driven = Driven::start(cmd)?;
        let storm = driven.read()?;
        Ok(Running { driven, storm })
    }

    /// Lets the children exit and reaps the workload; returns what the storm counted.
    pub(crate) fn release(self) -> Result<Storm> {
        self.driven.finish()?;
        Ok(self.storm)
    }
}

fn storm_through_tally_exec(env: &Env) -> Result<Running> {
    let cmd = env.workload_in(CT, &["forks", &ATTEMPTS.to_string()]);
    Running::start(cmd)
}

/// The same storm while tallyd is down: the workload joins the container's cgroups itself.
fn storm_joining_directly(env: &Env) -> Result<Running> {
    Running::start(env.workload_joining(CT, &["forks", &ATTEMPTS.to_string()])?)
}

/// tallyd running, and container CT with numproc 20:20; returns tallyd's ready line.
fn container_with_limit(env: &mut Env) -> Result<String> {
    let ready = env.start_tallyd()?;
    container_with_limit_on_running(env)?;
    Ok(ready)
}

/// What every storm in a fresh 20:20 container must show: the workload itself plus 19
/// children are 20 tasks; the other 11 forks fail with EAGAIN.
fn check_storm(storm: &Storm) -> Result<()> {
    let expected = (LIMIT - 1, ATTEMPTS - (LIMIT - 1), 0);
    if (storm.forked, storm.eagain, storm.other) != expected {
        bail!("expected forked/eagain/other = {expected:?}, got {storm:?}");
    }
    Ok(())
}

fn limit_is_enforced(env: &mut Env) -> Outcome {
    try_or_fail!(container_with_limit(env), "setting up");
    let idle = try_or_fail!(env.ubc_row(CT, Resource::NumProc), "reading numproc");
    check!(
        idle.held == 0 && idle.barrier == LIMIT && idle.limit == LIMIT,
        "fresh container row: {idle:?}"
    );

    let running = try_or_fail!(storm_through_tally_exec(env), "fork storm");
    let during = try_or_fail!(env.ubc_row(CT, Resource::NumProc), "reading numproc during the storm");
    let tasks = try_or_fail!(
        env.cgroup(CT).and_then(|c| Ok(c.pids()?)),
        "listing the container's tasks"
    )
    .len() as u64;
    let storm = try_or_fail!(running.release(), "ending the storm");
    try_or_fail!(check_storm(&storm), "fork storm");
    check!(tasks == LIMIT, "the container holds {tasks} tasks, expected {LIMIT}");
    check!(during.held == LIMIT, "held during the storm: {during:?}");

    let after = try_or_fail!(
        env.wait_row(CT, Resource::NumProc, "held 0", |r| r.held == 0),
        "after the storm"
    );
    check!(after.maxheld == LIMIT, "maxheld should be the peak {LIMIT}: {after:?}");
    check!(
        after.failcnt == storm.eagain,
        "failcnt {} != refused forks {}",
        after.failcnt,
        storm.eagain
    );
    Outcome::Pass
}

fn survives_tallyd(env: &mut Env) -> Outcome {
    try_or_fail!(container_with_limit(env), "setting up");
    let first = try_or_fail!(storm_through_tally_exec(env), "first storm");
    let first = try_or_fail!(first.release(), "ending the first storm");
    try_or_fail!(check_storm(&first), "first storm");
    let first_refused = first.eagain;
    try_or_fail!(
        env.wait_row(CT, Resource::NumProc, "held 0", |r| r.held == 0),
        "after the first storm"
    );

    try_or_fail!(env.stop_tallyd(), "stopping tallyd");
    check!(
        env.instance.pins().link("cgroup_attach_task").exists(),
        "pins gone after tallyd exited"
    );
    let second = try_or_fail!(storm_joining_directly(env), "storm with tallyd down");
    let pinned = try_or_fail!(
        env.pinned_row(CT, Resource::NumProc),
        "pinned counters with tallyd down"
    );
    let second = try_or_fail!(second.release(), "ending the second storm");
    try_or_fail!(check_storm(&second), "with tallyd down the limit must still hold");
    let second_refused = second.eagain;
    check!(pinned.held == LIMIT, "held while tallyd was down: {pinned:?}");

    let ready = try_or_fail!(env.start_tallyd(), "restarting tallyd");
    check!(
        ready.contains("programs=adopted"),
        "the new tallyd should adopt the pinned programs: {ready}"
    );
    let after = try_or_fail!(
        env.wait_row(CT, Resource::NumProc, "held 0", |r| r.held == 0),
        "after restart"
    );
    check!(after.maxheld == LIMIT, "maxheld after restart: {after:?}");
    check!(
        after.failcnt == first_refused + second_refused,
        "failcnt {} should count both storms' refusals {} + {}",
        after.failcnt,
        first_refused,
        second_refused
    );
    check!(
        after.barrier == LIMIT && after.limit == LIMIT,
        "limits after restart: {after:?}"
    );
    Outcome::Pass
}

/// In the full tier no cgroup controller limits the container: the EAGAINs must come from
/// lsm/task_alloc, which counts them in the BPF row itself.
fn lsm_refuses(env: &mut Env) -> Outcome {
    let ready = try_or_fail!(container_with_limit(env), "setting up");
    if !ready.contains("tier=full") {
        return Outcome::Skip(format!("needs the full tier (BPF LSM); tallyd says: {ready}"));
    }
    let cg = try_or_fail!(env.cgroup(CT), "cgroup");
    let pids_max = std::fs::read_to_string(cg.unified.join("pids.max")).unwrap_or_else(|_| "absent".into());
    check!(
        matches!(pids_max.trim(), "max" | "absent"),
        "pids.max is {pids_max:?}: the pids controller would share the refusals"
    );
    let storm = try_or_fail!(storm_through_tally_exec(env).and_then(Running::release), "fork storm");
    try_or_fail!(check_storm(&storm), "fork storm");
    let pinned = try_or_fail!(env.pinned_row(CT, Resource::NumProc), "pinned counters");
    check!(
        pinned.failcnt == storm.eagain,
        "BPF failcnt {} != EAGAINs {}",
        pinned.failcnt,
        storm.eagain
    );
    Outcome::Pass
}

/// A tallyd of another tier than the pinned programs' replaces them all: the two tiers'
/// programs side by side would count every fork twice. The same tier adopts them.
fn tier_change_replaces_programs(env: &mut Env) -> Outcome {
    try_or_fail!(env.start_tallyd_in("fallback"), "starting tallyd in the fallback tier");
    try_or_fail!(env.stop_tallyd(), "stopping tallyd");
    let ready = try_or_fail!(env.start_tallyd_in("auto"), "starting tallyd in its own tier");
    let links: Vec<String> = std::fs::read_dir(env.instance.pins().root.join("links"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    if ready.contains("tier=full") {
        check!(
            ready.contains("programs=fresh"),
            "the full tier must attach its own programs: {ready}"
        );
        check!(
            links.iter().any(|l| l == "task_alloc"),
            "full-tier links missing: {links:?}"
        );
        check!(
            !links.iter().any(|l| l == "sched_process_fork"),
            "fallback links left beside the full tier's: {links:?}"
        );
    } else {
        check!(
            ready.contains("programs=adopted"),
            "the same tier adopts the pinned programs: {ready}"
        );
    }
    try_or_fail!(container_with_limit_on_running(env), "setting a limit");
    let storm = try_or_fail!(storm_through_tally_exec(env).and_then(Running::release), "fork storm");
    try_or_fail!(check_storm(&storm), "fork storm after the tier change");
    let row = try_or_fail!(
        env.wait_row(CT, Resource::NumProc, "held 0", |r| r.held == 0),
        "after the storm"
    );
    check!(row.maxheld == LIMIT, "counted once, peak at the limit: {row:?}");
    Outcome::Pass
}

/// An upgrade: the pinned programs carry their object's digest (a directory `object-DIGEST`
/// beside the links); a tallyd whose object differs attaches its own programs instead of
/// adopting them, and keeps the maps: what the old programs charged, the new ones give back.
fn build_change_replaces_programs(env: &mut Env) -> Outcome {
    let (running, held) = try_or_fail!(
        storm_held_by_a_stopped_tallyd(env, |_| Ok(())),
        "a storm held while tallyd is down"
    );
    let root = env.instance.pins().root;
    let ours = object_stamps(&root);
    try_or_fail!(make_pins_another_builds(&root), "making the pins another build's");
    let ready = try_or_fail!(env.start_tallyd(), "starting tallyd again");
    check!(
        ready.contains("programs=fresh"),
        "another build's programs must be replaced: {ready}"
    );
    let now = object_stamps(&root);
    check!(
        now == ours,
        "the stamp should be this build's again: {now:?}, was {ours:?}"
    );
    let during = try_or_fail!(env.ubc_row(CT, Resource::NumProc), "numproc");
    check!(
        during.held == held,
        "the counters must survive the replacement: {during:?}, was {held}"
    );
    try_or_fail!(
        storm_given_back(env, running),
        "what the old programs charged should be given back by the new ones"
    );
    Outcome::Pass
}

/// Container CT with numproc 20:20 (then `before_storm`) and a fork storm holding it full, then
/// tallyd stopped (the programs stay attached); returns the storm and numproc's held.
fn storm_held_by_a_stopped_tallyd(env: &mut Env, before_storm: fn(&Env) -> Result<()>) -> Result<(Running, u64)> {
    env.start_tallyd()?;
    container_with_limit_on_running(env)?;
    before_storm(env)?;
    let running = storm_through_tally_exec(env)?;
    let held = env.ubc_row(CT, Resource::NumProc)?.held;
    if held < LIMIT - 1 {
        bail!("the storm's tasks should be held: {held}");
    }
    env.stop_tallyd()?;
    Ok((running, held))
}

/// Ends the storm (it must have hit the limit as it should) and waits for numproc's held to
/// come back to 0, its peak having been the limit.
fn storm_given_back(env: &Env, running: Running) -> Result<()> {
    let storm = running.release()?;
    check_storm(&storm)?;
    let row = env.wait_row(CT, Resource::NumProc, "held 0", |r| r.held == 0)?;
    if row.maxheld != LIMIT {
        bail!("peak at the limit expected: {row:?}");
    }
    Ok(())
}

/// The object stamps in a pin directory (one: the build whose programs are attached).
fn object_stamps(root: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(root)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("object-"))
                .collect()
        })
        .unwrap_or_default()
}

/// Renames the pins' object stamp to one no build has: the next tallyd replaces the programs.
fn make_pins_another_builds(root: &std::path::Path) -> Result<()> {
    let ours = object_stamps(root);
    if ours.len() != 1 {
        bail!("one object stamp expected in {}: {ours:?}", root.display());
    }
    std::fs::rename(root.join(&ours[0]), root.join("object-0000000000000000"))?;
    Ok(())
}

/// A record whose table bucket is full goes to the `charges` hash map. Here every free slot of
/// the table is taken (by keys of no row) before a fork storm, so that the storm's records all
/// go to the hash map; then the pins are made another build's, as after an upgrade. The new
/// tallyd's programs keep the maps, `charges_in_hash` included, and give back what the hash
/// map says when the tasks go.
fn records_in_the_hash_across_builds(env: &mut Env) -> Outcome {
    let (running, held) = try_or_fail!(
        storm_held_by_a_stopped_tallyd(env, fill_charge_table),
        "a storm held while tallyd is down"
    );
    let pins = env.instance.pins();
    let in_hash = try_or_fail!(charges_in_hash(&pins), "reading charges_in_hash");
    check!(
        in_hash >= held,
        "with the table full, every held task's record should be in the hash map: {in_hash} there, {held} held"
    );
    try_or_fail!(make_pins_another_builds(&pins.root), "making the pins another build's");
    let ready = try_or_fail!(env.start_tallyd(), "starting tallyd again");
    check!(
        ready.contains("programs=fresh"),
        "the other build's programs must be replaced: {ready}"
    );
    let counted = try_or_fail!(charges_in_hash(&pins), "reading charges_in_hash");
    check!(
        counted == in_hash,
        "charges_in_hash should still count the {in_hash} records: {counted}"
    );
    try_or_fail!(
        storm_given_back(env, running),
        "what the other build charged should be given back from the hash map"
    );
    let left = try_or_fail!(charges_in_hash(&pins), "reading charges_in_hash");
    check!(
        left == 0,
        "every record should be gone with its task: {left} of {in_hash} left"
    );
    Outcome::Pass
}

/// Takes every free slot of the instance's charge table with a key of no row (low bits 63), so
/// that the next records go to the hash map. Nothing runs in a container meanwhile.
pub(crate) fn fill_charge_table(env: &Env) -> Result<()> {
    use aya::maps::{Array, Map, MapData};
    let pins = env.instance.pins();
    let mut table: Array<MapData, ChargeBucket> =
        Array::try_from(Map::Array(MapData::from_pin(pins.map(CHARGE_TABLE))?))?;
    for i in 0..CHARGE_BUCKETS {
        let mut bucket = table.get(&i, 0)?;
        for (n, slot) in bucket.slots.iter_mut().enumerate().filter(|(_, s)| s.key == 0) {
            slot.key = ((u64::from(i) * CHARGE_SLOTS as u64 + n as u64) << 6) | 63;
        }
        table.set(i, bucket, 0)?;
    }
    Ok(())
}

pub(crate) fn charges_in_hash(pins: &tally::kernel::pins::PinLayout) -> Result<u64> {
    use aya::maps::{Array, Map, MapData};
    let count: Array<MapData, u64> = Array::try_from(Map::Array(MapData::from_pin(pins.map(CHARGES_IN_HASH))?))?;
    Ok(count.get(&0, 0)?)
}

/// Container CT with numproc 20:20 on an already running tallyd.
fn container_with_limit_on_running(env: &Env) -> Result<()> {
    let out = env.set(CT, &["--numproc", "20:20"])?;
    if !out.status.success() {
        bail!("tally set failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn bad_input_changes_nothing(env: &mut Env) -> Outcome {
    if let Some(o) = crate::harness::shown_by_the_full_tier_run("input checks come before any tier") {
        return o;
    }
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    let conf_dir = env.instance.config_dir();
    let unified_parent = try_or_fail!(env.cgroup(CT), "cgroup")
        .unified
        .parent()
        .map(|p| p.to_path_buf());
    let listing = || -> Vec<String> {
        let mut v: Vec<String> = [Some(conf_dir.clone()), unified_parent.clone()]
            .into_iter()
            .flatten()
            .flat_map(|d| {
                std::fs::read_dir(d)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path().display().to_string())
            })
            .collect();
        v.sort();
        v
    };
    let before = listing();
    for (args, code) in [
        (vec!["set", "../x", "--numproc", "1"], 21),
        (vec!["set", "", "--numproc", "1"], 21),
        (vec!["set", CT, "--numproc", "30:20"], 21),
        (vec!["set", CT, "--numproc", "5M"], 21),
        (vec!["set", CT, "--numproc=-1"], 21),
        (vec!["set", CT, "--numproc", "-1"], 20),
        (vec!["set", CT, "--no-such-row", "1"], 20),
        (vec!["set", CT, "--numproc", "99999999999999999999"], 21),
        (vec!["ubc", "999"], 14),
        (vec!["destroy", "999"], 14),
    ] {
        let out = try_or_fail!(env.tally(&args), "running tally");
        let stderr = String::from_utf8_lossy(&out.stderr);
        check!(
            out.status.code() == Some(code),
            "tally {args:?} exited {:?}, expected {code}: {stderr}",
            out.status.code()
        );
        check!(
            stderr.starts_with("tally: ") || stderr.starts_with("error: "),
            "tally {args:?} gave no clear message: {stderr:?}"
        );
        check!(stderr.len() > 20, "tally {args:?} gave no clear message: {stderr:?}");
    }
    check!(
        listing() == before,
        "refused requests changed state: {:?} -> {:?}",
        before,
        listing()
    );

    // A bad value for an existing container leaves its limits as they were.
    let ok = try_or_fail!(env.set(CT, &["--numproc", "20:20"]), "tally set");
    check!(ok.status.success(), "tally set failed");
    let bad = try_or_fail!(env.tally(&["set", CT, "--numproc", "10:5", "--save"]), "tally set");
    check!(bad.status.code() == Some(21), "bad set exited {:?}", bad.status.code());
    let row = try_or_fail!(env.ubc_row(CT, Resource::NumProc), "reading numproc");
    check!(
        row.barrier == 20 && row.limit == 20,
        "limits changed by a refused set: {row:?}"
    );
    let conf = try_or_fail!(
        std::fs::read_to_string(env.instance.config_path(&tally::ct::CtId::parse(CT).unwrap())),
        "config"
    );
    check!(
        conf.contains("NUMPROC=\"20:20\""),
        "config changed by a refused set: {conf}"
    );
    Outcome::Pass
}

/// A `counters` map pinned under the instance with another value size (as a build with a
/// longer row list would leave): tallyd refuses it, naming the map and both layouts, attaches
/// nothing, and leaves the pin as it was.
fn pinned_map_of_another_layout(env: &mut Env) -> Outcome {
    use tally::kernel::pins::MapLayout;
    if let Some(o) = crate::harness::shown_by_the_full_tier_run("the pins' layout check does not depend on the tier") {
        return o;
    }
    let pins = env.instance.pins();
    try_or_fail!(tally::kernel::programs::ensure_bpffs(), "bpffs");
    try_or_fail!(
        std::fs::create_dir_all(pins.root.join("maps")),
        "making the maps directory"
    );
    let theirs = MapLayout {
        map_type: 1, // BPF_MAP_TYPE_HASH
        key_size: 8,
        value_size: 16,
        max_entries: 64,
    };
    let path = pins.map(tally_common::map_name::COUNTERS);
    try_or_fail!(pin_new_map(&path, theirs), "pinning a map of another layout");
    let started = env.start_tallyd();
    check!(
        started.is_err(),
        "tallyd got ready with a counters map of another layout: {started:?}"
    );
    let ours = format!("value {} B", std::mem::size_of::<tally_common::Counters>());
    let log = env.tallyd_log();
    check!(
        log.iter()
            .any(|l| l.contains("counters") && l.contains(&theirs.to_string()) && l.contains(&ours)),
        "tallyd should name the map and both layouts ({theirs}; ours with {ours}): {log:#?}"
    );
    let info = try_or_fail!(aya::maps::MapInfo::from_pin(&path), "the pin afterwards");
    check!(
        info.value_size() == 16 && info.max_entries() == 64,
        "the refused pin was replaced: value {} B, {} entries",
        info.value_size(),
        info.max_entries()
    );
    let links = std::fs::read_dir(pins.root.join("links"))
        .map(|d| d.count())
        .unwrap_or(0);
    check!(links == 0, "tallyd attached {links} program(s) before refusing");
    Outcome::Pass
}

/// Creates a BPF map of `layout` (named tally_itest) and pins it at `path`.
fn pin_new_map(path: &std::path::Path, layout: tally::kernel::pins::MapLayout) -> Result<()> {
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_OBJ_PIN: libc::c_long = 6;
    let mut create = [0u8; 128];
    for (at, v) in [
        (0, layout.map_type),
        (4, layout.key_size),
        (8, layout.value_size),
        (12, layout.max_entries),
    ] {
        create[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }
    // map_name, at offset 28 of union bpf_attr.
    create[28..39].copy_from_slice(b"tally_itest");
    // SAFETY: bpf(BPF_MAP_CREATE) reads `create`, which outlives the call; it returns a new fd.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_CREATE, create.as_ptr(), create.len()) };
    if fd < 0 {
        bail!("BPF_MAP_CREATE: {}", std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just gave us; the OwnedFd closes it.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    let mut pin = [0u8; 128];
    pin[0..8].copy_from_slice(&(c_path.as_ptr() as u64).to_ne_bytes());
    pin[8..12].copy_from_slice(&(std::os::fd::AsRawFd::as_raw_fd(&fd) as u32).to_ne_bytes());
    // SAFETY: bpf(BPF_OBJ_PIN) reads `pin` and the path it points to, both alive here.
    let r = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_PIN, pin.as_ptr(), pin.len()) };
    if r < 0 {
        bail!("BPF_OBJ_PIN {}: {}", path.display(), std::io::Error::last_os_error());
    }
    Ok(())
}

/// With every free slot of the charge table taken and the `charges` hash map filled to its
/// capacity (keys of no row), a workload's charges (its move into the container, its forks,
/// in the full tier its opens) find nowhere to record who pays: each is undone (refused where
/// the hook can refuse) and counted against its program, which the exporter reports as
/// tally_bpf_errors_total{program,kind="charge_map_full"}.
fn full_record_store_counted(env: &mut Env) -> Outcome {
    let port = try_or_fail!(crate::harness::free_port(), "a port for the exporter");
    try_or_fail!(
        env.start_tallyd_with(&["--metrics", &format!("127.0.0.1:{port}")]),
        "starting tallyd"
    );
    try_or_fail!(container_with_limit_on_running(env), "the container");
    let full = |text: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with("tally_bpf_errors_total{") && l.contains("kind=\"charge_map_full\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let before = try_or_fail!(crate::harness::http_get(port, "/metrics"), "scraping");
    check!(
        full(&before) == 0,
        "charge_map_full before anything filled: {}",
        full(&before)
    );
    try_or_fail!(fill_charge_table(env), "filling the charge table");
    let filled = try_or_fail!(fill_charges_hash(env), "filling the charges hash map");
    println!("    {filled} records of no row in the charges hash map");
    let _ = env.workload_in(CT, &["forks", "5"]).output();
    let after = try_or_fail!(crate::harness::http_get(port, "/metrics"), "scraping");
    let counted: Vec<&str> = after
        .lines()
        .filter(|l| l.starts_with("tally_bpf_errors_total{") && l.contains("charge_map_full") && !l.ends_with(" 0"))
        .collect();
    println!("    {counted:?}");
    check!(
        full(&after) > 0,
        "forks with nowhere to record their charge were not counted in tally_bpf_errors_total"
    );
    // Whichever charge of the workload found no room (its move into the container, its forks,
    // in the full tier its opens too) is counted against the program that made it.
    check!(
        counted.iter().all(|l| tally_common::program::NAMES
            .iter()
            .any(|p| l.contains(&format!("program=\"{p}\"")))),
        "charge_map_full counted against no charging program: {counted:?}"
    );
    let held = try_or_fail!(env.ubc_row(CT, Resource::NumProc), "numproc").held;
    check!(
        held == 0,
        "charges that could not be recorded must be undone: numproc held {held}"
    );
    Outcome::Pass
}

/// Fills the `charges` hash map to its capacity with keys of no row (res 63); returns how many.
fn fill_charges_hash(env: &Env) -> Result<u32> {
    use aya::maps::{HashMap, Map, MapData};
    let pins = env.instance.pins();
    let mut charges: HashMap<MapData, tally_common::ChargeKey, u64> = HashMap::try_from(Map::HashMap(
        MapData::from_pin(pins.map(tally_common::map_name::CHARGES))?,
    ))?;
    let mut n = 0;
    for i in 0..tally_common::MAX_CHARGED_OBJECTS {
        let key = tally_common::ChargeKey {
            object: u64::MAX - u64::from(i),
            resource: 63,
            _pad: 0,
        };
        match charges.insert(key, 0, 0) {
            Ok(()) => n += 1,
            // Full: the programs' own records took the rest.
            Err(_) => break,
        }
    }
    Ok(n)
}
