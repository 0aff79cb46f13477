//! Loading tally's programs for a tier, attaching them, and pinning links and maps under
//! /sys/fs/bpf/<instance> so that enforcement and counters outlive tallyd. A tallyd that
//! finds the pins adopts them instead of attaching twice (which would double-charge).

use std::{
    fs,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        loaded_links, BtfTracePoint, CgroupAttachMode, CgroupDevice, CgroupSkb, CgroupSock, CgroupSysctl, FEntry,
        FExit, Lsm,
    },
    Btf, EbpfLoader,
};
use tally_common::map_name;

use super::{
    btf::{program_offsets, KernelBtf, VMLINUX},
    describe_program_error,
    pins::{MapLayout, PinLayout},
    KernelError, Tier, OBJECT,
};

#[derive(Clone, Copy, Debug)]
enum Hook {
    Lsm(&'static str),
    TpBtf(&'static str),
    FEntry(&'static str),
    FExit(&'static str),
    /// A cgroup/sock program (its section gives the attach type), attached to the instance's
    /// parent cgroup2 directory, which every container inherits.
    CgroupSock(&'static str),
    /// cgroup_device and cgroup_sysctl guards, on the same directory.
    CgroupDevice(&'static str),
    CgroupSysctl(&'static str),
    /// A cgroup_skb program (its section gives ingress or egress), on the same directory.
    CgroupSkb(&'static str),
}

/// Which way a program moves the counters; decides the order of detaching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Charge,
    Uncharge,
    /// Neither: a guard that refuses without counting, or a traffic or read counter (no
    /// charge).
    Guard,
}

/// A program of the object (by function name) and the hook it attaches to.
struct ProgramSpec {
    name: &'static str,
    hook: Hook,
    side: Side,
}

impl ProgramSpec {
    /// A program named after its hook (the house style: `fn task_alloc` for lsm/task_alloc).
    const fn new(side: Side, hook: Hook) -> ProgramSpec {
        let name = match hook {
            Hook::Lsm(n)
            | Hook::TpBtf(n)
            | Hook::FEntry(n)
            | Hook::FExit(n)
            | Hook::CgroupSock(n)
            | Hook::CgroupDevice(n)
            | Hook::CgroupSysctl(n)
            | Hook::CgroupSkb(n) => n,
        };
        ProgramSpec { name, hook, side }
    }
    const fn charge(hook: Hook) -> ProgramSpec {
        ProgramSpec::new(Side::Charge, hook)
    }
    const fn uncharge(hook: Hook) -> ProgramSpec {
        ProgramSpec::new(Side::Uncharge, hook)
    }
    const fn guard(hook: Hook) -> ProgramSpec {
        ProgramSpec::new(Side::Guard, hook)
    }
    /// A charging program whose function is not named after its hook (its hook has another
    /// program of the same name in the other tier).
    const fn charge_named(name: &'static str, hook: Hook) -> ProgramSpec {
        ProgramSpec {
            name,
            hook,
            side: Side::Charge,
        }
    }
    /// A counter (no charge) whose function is not named after its hook: several programs
    /// of one kind, each on its own kernel function.
    const fn counter(name: &'static str, hook: Hook) -> ProgramSpec {
        ProgramSpec {
            name,
            hook,
            side: Side::Guard,
        }
    }
}

/// Full tier: LSM hooks refuse; release_task uncharges when the pids controller would (the
/// free hooks run an RCU grace period later, seconds with lazy RCU) and task_free catches
/// charged tasks that were never released (forks that failed after task_alloc). The
/// programs' own docs say more.
const FULL: &[ProgramSpec] = &[
    ProgramSpec::charge(Hook::Lsm("task_alloc")),
    ProgramSpec::uncharge(Hook::Lsm("task_free")),
    ProgramSpec::charge(Hook::TpBtf("cgroup_attach_task")),
    ProgramSpec::charge_named("fork_into_cgroup", Hook::TpBtf("sched_process_fork")),
    ProgramSpec::uncharge(Hook::FEntry("release_task")),
    ProgramSpec::charge(Hook::Lsm("file_open")),
    ProgramSpec::charge(Hook::Lsm("file_lock")),
    ProgramSpec::uncharge(Hook::Lsm("file_free_security")),
    ProgramSpec::charge(Hook::Lsm("socket_post_create")),
    ProgramSpec::charge(Hook::Lsm("socket_accept")),
    ProgramSpec::charge(Hook::Lsm("sock_graft")),
    ProgramSpec::uncharge(Hook::Lsm("sk_free_security")),
    ProgramSpec::guard(Hook::CgroupDevice("device")),
    ProgramSpec::guard(Hook::CgroupSysctl("sysctl")),
    ProgramSpec::guard(Hook::CgroupSkb("ingress")),
    ProgramSpec::guard(Hook::CgroupSkb("egress")),
    // File-read statistics: file_permission names the files a container's read syscall reads
    // (the real file behind an overlay one too), fexit on the syscall counts them.
    ProgramSpec::guard(Hook::Lsm("file_permission")),
    read_exit(0),
    read_exit(1),
    read_exit(2),
    read_exit(3),
    read_exit(4),
    read_exit(5),
    read_exit(6),
    read_exit(7),
];

/// The full tier's fexit program on read syscall `i` of tally_common::read_syscalls.
const fn read_exit(i: usize) -> ProgramSpec {
    let (_, name, entry) = tally_common::read_syscalls::PROGRAMS[i];
    ProgramSpec::counter(name, Hook::FExit(entry))
}
const _: () = assert!(tally_common::read_syscalls::PROGRAMS.len() == 8);

/// Fallback tier: the same accounting from tracepoints; the pids controller refuses.
const FALLBACK: &[ProgramSpec] = &[
    ProgramSpec::charge(Hook::TpBtf("sched_process_fork")),
    ProgramSpec::uncharge(Hook::TpBtf("sched_process_exit")),
    ProgramSpec::uncharge(Hook::TpBtf("sched_process_free")),
    ProgramSpec::charge(Hook::TpBtf("cgroup_attach_task")),
    ProgramSpec::charge(Hook::CgroupSock("sock_create")),
    ProgramSpec::uncharge(Hook::CgroupSock("sock_release")),
    ProgramSpec::guard(Hook::CgroupDevice("device")),
    ProgramSpec::guard(Hook::CgroupSysctl("sysctl")),
    ProgramSpec::guard(Hook::CgroupSkb("ingress")),
    ProgramSpec::guard(Hook::CgroupSkb("egress")),
    // File-read statistics: sys_exit counts a read syscall against the file behind its
    // descriptor and the real file behind an overlay one (every syscall of the host passes
    // it); replaced by FILEMAP_READS where the kernel has that tracepoint.
    ProgramSpec::guard(Hook::TpBtf("sys_exit")),
];

/// The fallback tier's file-read statistics where the kernel has the filemap tracepoints
/// (Linux 6.11 on): only buffered reads pay, not every syscall.
static FILEMAP_READS: ProgramSpec = ProgramSpec::counter("filemap_get_pages", Hook::TpBtf("mm_filemap_get_pages"));

/// Where the fallback tier counts file reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadHook {
    /// tp_btf mm_filemap_get_pages: only buffered reads through the page-cache read path pay.
    Filemap,
    /// tp_btf sys_exit: every syscall of the host passes it.
    SysExit,
}

impl ReadHook {
    /// Filemap where the kernel has the tracepoint and the instance's files (under `root`) are
    /// not on tmpfs, whose reads (shmem's own read path) never reach the tracepoint.
    pub fn for_instance(root: &Path) -> ReadHook {
        let tmpfs = nix::sys::statfs::statfs(root)
            .map(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
            .unwrap_or(false);
        if has_filemap_tracepoint() && !tmpfs {
            ReadHook::Filemap
        } else {
            ReadHook::SysExit
        }
    }
}

/// Whether the kernel has the mm_filemap_get_pages tracepoint (its BTF names the
/// tracepoint's type, btf_trace_mm_filemap_get_pages). Read once per process.
pub fn has_filemap_tracepoint() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        let needle: &[u8] = b"btf_trace_mm_filemap_get_pages\0";
        fs::read(super::btf::VMLINUX)
            .map(|btf| btf.windows(needle.len()).any(|w| w == needle))
            .unwrap_or(false)
    })
}

const PINNED_MAPS: [&str; 10] = [
    map_name::COUNTERS,
    map_name::LIMITS,
    map_name::CHARGE_TABLE,
    map_name::CHARGE_TABLE_ENTRIES,
    map_name::CHARGES,
    map_name::CHARGES_IN_HASH,
    map_name::ERRORS,
    map_name::EVENTS,
    map_name::TRAFFIC,
    map_name::FILE_READS,
];

fn programs(tier: Tier, reads: ReadHook) -> Vec<&'static ProgramSpec> {
    match tier {
        Tier::Full => FULL.iter().collect(),
        Tier::Fallback => FALLBACK
            .iter()
            .map(|s| {
                if s.name == "sys_exit" && reads == ReadHook::Filemap {
                    &FILEMAP_READS
                } else {
                    s
                }
            })
            .collect(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// Programs were loaded and attached by this call.
    Fresh,
    /// Pinned links of an earlier tallyd were found and kept.
    Adopted,
}

/// Makes sure the tier's programs are attached through pinned links and the maps pinned
/// (`reads`: the fallback tier's read-statistics hook).
/// `cgroup_parent` is the instance's cgroup2 directory, where cgroup programs attach (made if
/// missing).
pub fn ensure_attached(
    pins: &PinLayout,
    tier: Tier,
    reads: ReadHook,
    cgroup_parent: &Path,
) -> Result<Attach, KernelError> {
    let specs = programs(tier, reads);
    // Maps are adopted either way (with the programs, or by the loader below): never one
    // that is not what this build's programs read and write.
    pins.check(&expected_layouts()?)?;
    let stamp = object_stamp(pins);
    let attached = if stamp.exists()
        && specs.iter().all(|s| pins.link(s.name).exists())
        && PINNED_MAPS.iter().all(|m| pins.map(m).exists())
    {
        Attach::Adopted
    } else {
        attach(pins, &specs, cgroup_parent, stamp, false)?;
        Attach::Fresh
    };
    pins.stamp_layout().map_err(|source| KernelError::Io {
        path: pins.root.clone(),
        source,
    })?;
    Ok(attached)
}

/// For the hooks benchmark only: attaches the tier's programs, in place of whatever is pinned,
/// loaded so that each returns at once (ebpf `floor.rs`), to measure what attaching costs apart
/// from the programs' work. Their stamp is not the build's: a tallyd finding them attaches its
/// own programs instead of adopting these.
pub fn attach_bench_floor(
    pins: &PinLayout,
    tier: Tier,
    reads: ReadHook,
    cgroup_parent: &Path,
) -> Result<(), KernelError> {
    // bpffs refuses names with a dot.
    let mut name = object_stamp(pins).into_os_string();
    name.push("-bench-floor");
    let stamp = PathBuf::from(name);
    attach(pins, &programs(tier, reads), cgroup_parent, stamp, true)
}

/// Loads the object (`floor`: as the benchmark's floor), attaches `specs` through pinned links
/// in place of any pinned before, keeping the maps, and stamps the pins with `stamp`.
fn attach(
    pins: &PinLayout,
    specs: &[&'static ProgramSpec],
    cgroup_parent: &Path,
    stamp: PathBuf,
    floor: bool,
) -> Result<(), KernelError> {
    for dir in [pins.root.join("maps"), pins.root.join("links")] {
        fs::create_dir_all(&dir).map_err(|source| KernelError::Io {
            path: dir.clone(),
            source,
        })?;
    }
    // Every link already pinned goes before attaching: links of a half-finished earlier attach
    // are made again, and links of the other tier (an earlier tallyd that ran it) would count
    // twice beside this tier's. The maps, and so the counters, are kept.
    let pinned: Vec<PathBuf> = fs::read_dir(pins.root.join("links"))
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    detach_and_wait(&pinned)?;

    // The kernel's BTF, parsed, is tens of MB: each parse is dropped as soon as it has
    // served, and the loader and the attach share one (EbpfLoader::new parses its own, which
    // `btf()` drops at once).
    let offsets = program_offsets(&KernelBtf::load(Path::new(VMLINUX))?)?;
    log::debug!("kernel struct offsets: {offsets:?}");
    let btf = Btf::from_sys_fs().map_err(|e| KernelError::Btf(e.to_string()))?;
    let map_paths: Vec<(&str, PathBuf)> = PINNED_MAPS.iter().map(|m| (*m, pins.map(m))).collect();
    let mut loader = EbpfLoader::new();
    loader.btf(Some(&btf));
    for (name, path) in &map_paths {
        loader.map_pin_path(name, path.as_path());
    }
    for (global, value) in &offsets {
        loader.override_global(global, value, true);
    }
    if floor {
        loader.override_global("BENCH_FLOOR", &1u64, true);
    }
    let mut ebpf = loader.load(OBJECT)?;

    fs::create_dir_all(cgroup_parent).map_err(|source| KernelError::Io {
        path: cgroup_parent.to_path_buf(),
        source,
    })?;
    let cgroup_dir = fs::File::open(cgroup_parent).map_err(|source| KernelError::Io {
        path: cgroup_parent.to_path_buf(),
        source,
    })?;
    for &spec in specs {
        let program_err = |message: String| KernelError::Program {
            name: spec.name,
            message,
        };
        let program = ebpf
            .program_mut(spec.name)
            .ok_or_else(|| program_err("not in the object".into()))?;
        let guard = match spec.hook {
            Hook::CgroupDevice(_) => Some(super::rawlink::BPF_CGROUP_DEVICE),
            Hook::CgroupSysctl(_) => Some(super::rawlink::BPF_CGROUP_SYSCTL),
            _ => None,
        };
        if let Some(attach_type) = guard {
            match spec.hook {
                Hook::CgroupDevice(_) => {
                    let p: &mut CgroupDevice = program.try_into().map_err(|e| program_err(format!("{e}")))?;
                    p.load().map_err(|e| program_err(describe_program_error(&e)))?;
                }
                _ => {
                    let p: &mut CgroupSysctl = program.try_into().map_err(|e| program_err(format!("{e}")))?;
                    p.load().map_err(|e| program_err(describe_program_error(&e)))?;
                }
            }
            let fd = program.fd().map_err(|e| program_err(e.to_string()))?;
            super::rawlink::attach_and_pin(fd.as_fd(), cgroup_dir.as_fd(), attach_type, &pins.link(spec.name))
                .map_err(|e| program_err(format!("attaching to {}: {e}", cgroup_parent.display())))?;
            continue;
        }
        // The programs attached to a kernel function or tracepoint named in their BTF: load
        // against it, attach, keep the link.
        macro_rules! btf_attached {
            ($kind:ty, $target:expr) => {{
                let p: &mut $kind = program.try_into().map_err(|e| program_err(format!("{e}")))?;
                p.load($target, &btf)
                    .map_err(|e| program_err(describe_program_error(&e)))?;
                let id = p.attach().map_err(|e| program_err(describe_program_error(&e)))?;
                p.take_link(id).map_err(|e| program_err(e.to_string()))?.into()
            }};
        }
        let link: FdLink = match spec.hook {
            Hook::Lsm(hook) => btf_attached!(Lsm, hook),
            Hook::TpBtf(tp) => btf_attached!(BtfTracePoint, tp),
            Hook::FEntry(function) => btf_attached!(FEntry, function),
            Hook::FExit(function) => btf_attached!(FExit, function),
            Hook::CgroupSock(_) => {
                let p: &mut CgroupSock = program.try_into().map_err(|e| program_err(format!("{e}")))?;
                p.load().map_err(|e| program_err(describe_program_error(&e)))?;
                // A bpf_link attachment takes no flags (the kernel refuses any with EINVAL) and
                // always coexists with other programs: "Single" is what passes no flags.
                let id = p
                    .attach(&cgroup_dir, CgroupAttachMode::Single)
                    .map_err(|e| program_err(describe_program_error(&e)))?;
                let link = p.take_link(id).map_err(|e| program_err(e.to_string()))?;
                FdLink::try_from(link).map_err(|e| program_err(format!("cgroup link cannot be pinned: {e}")))?
            }
            Hook::CgroupSkb(_) => {
                let p: &mut CgroupSkb = program.try_into().map_err(|e| program_err(format!("{e}")))?;
                p.load().map_err(|e| program_err(describe_program_error(&e)))?;
                let direction = (*p.expected_attach_type())
                    .ok_or_else(|| program_err("no ingress/egress in its section".into()))?;
                // As for cgroup/sock: a link, no flags.
                let id = p
                    .attach(&cgroup_dir, direction, CgroupAttachMode::Single)
                    .map_err(|e| program_err(describe_program_error(&e)))?;
                let link = p.take_link(id).map_err(|e| program_err(e.to_string()))?;
                FdLink::try_from(link).map_err(|e| program_err(format!("cgroup link cannot be pinned: {e}")))?
            }
            Hook::CgroupDevice(_) | Hook::CgroupSysctl(_) => unreachable!("attached above"),
        };
        link.pin(pins.link(spec.name))
            .map_err(|e| program_err(format!("pinning the link: {e}")))?;
    }
    clear_stamps(pins);
    fs::create_dir(&stamp).map_err(|source| KernelError::Io { path: stamp, source })?;
    Ok(())
}

/// The layout of each pinned map as this build's object defines it.
fn expected_layouts() -> Result<Vec<(&'static str, MapLayout)>, KernelError> {
    let object = aya_obj::Object::parse(OBJECT).map_err(|e| KernelError::Program {
        name: "object",
        message: e.to_string(),
    })?;
    PINNED_MAPS
        .iter()
        .map(|name| {
            let map = object.maps.get(*name).ok_or(KernelError::Program {
                name,
                message: "not in the object".into(),
            })?;
            Ok((
                *name,
                MapLayout {
                    map_type: map.map_type(),
                    key_size: map.key_size(),
                    value_size: map.value_size(),
                    max_entries: map.max_entries(),
                },
            ))
        })
        .collect()
}

/// The pinned programs' build: a directory named after the object's digest (bpffs holds no
/// plain files). A tallyd of another build (an upgrade) finds no stamp of its own and
/// re-attaches its programs, keeping the maps and so the counters, instead of adopting
/// programs that are not its own.
fn object_stamp(pins: &PinLayout) -> PathBuf {
    use sha2::Digest;
    let digest = format!("{:x}", sha2::Sha256::digest(OBJECT));
    pins.root.join(format!("object-{}", &digest[..16]))
}

fn clear_stamps(pins: &PinLayout) {
    for entry in fs::read_dir(&pins.root).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with("object-") {
            let _ = fs::remove_dir(entry.path());
        }
    }
}

/// Detaches everything of this instance and forgets its counters. Charging programs go
/// first and are waited for (the kernel frees a link asynchronously): the other order would
/// leave a window in which tasks are charged and never uncharged.
pub fn unpin_all(pins: &PinLayout) -> Result<(), KernelError> {
    let links = pins.root.join("links");
    let mut present: Vec<PathBuf> = match fs::read_dir(&links) {
        Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
        Err(_) => vec![],
    };
    let side_of = |path: &Path| {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        FULL.iter()
            .chain(FALLBACK)
            .chain([&FILEMAP_READS])
            .find(|s| s.name == name)
            .map_or(Side::Charge, |s| s.side)
    };
    for side in [Side::Charge, Side::Uncharge, Side::Guard] {
        let (now, later): (Vec<PathBuf>, Vec<PathBuf>) = present.into_iter().partition(|p| side_of(p) == side);
        present = later;
        detach_and_wait(&now)?;
    }
    let _ = fs::remove_dir(&links);
    let maps = pins.root.join("maps");
    if let Ok(entries) = fs::read_dir(&maps) {
        for entry in entries.flatten() {
            remove_file(&entry.path())?;
        }
    }
    let _ = fs::remove_dir(&maps);
    clear_stamps(pins);
    pins.clear_layout_stamp();
    let _ = fs::remove_dir(&pins.root);
    Ok(())
}

/// Removes the link pins and waits until the kernel has released those links.
fn detach_and_wait(pinned: &[PathBuf]) -> Result<(), KernelError> {
    let mut ids = Vec::new();
    for path in pinned {
        if let Ok(link) = PinnedLink::from_pin(path) {
            if let Ok(info) = FdLink::from(link).info() {
                ids.push(info.id());
            }
        }
        remove_file(path)?;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let alive = loaded_links().flatten().any(|l| ids.contains(&l.id()));
        if !alive {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Err(KernelError::Io {
        path: pinned.first().cloned().unwrap_or_default(),
        source: std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "links still attached 10 s after unpinning",
        ),
    })
}

fn remove_file(path: &Path) -> Result<(), KernelError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(KernelError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Mounts the host's bpffs at /sys/fs/bpf when nothing is mounted there (as systemd does at
/// boot); pins need it.
pub fn ensure_bpffs() -> Result<(), KernelError> {
    let target = Path::new("/sys/fs/bpf");
    if is_bpffs(target) {
        return Ok(());
    }
    nix::mount::mount(
        Some("bpf"),
        target,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| KernelError::Io {
        path: target.to_path_buf(),
        source: e.into(),
    })
}

pub fn is_bpffs(path: &Path) -> bool {
    const BPF_FS_MAGIC: i64 = 0xcafe4a11;
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 as i64 == BPF_FS_MAGIC)
}

/// What the kernel measured of one attached program (with BPF stats enabled).
#[derive(Clone, Debug)]
pub struct ProgramStats {
    /// The program's kernel id.
    pub id: u32,
    pub name: String,
    pub run_time_ns: u64,
    pub run_count: u64,
}

/// Run-time statistics of the instance's attached programs, found through their link pins.
/// The kernel counts only while BPF stats are enabled (`aya::sys::enable_stats`).
pub fn program_stats(pins: &PinLayout) -> Result<Vec<ProgramStats>, KernelError> {
    let links = pins.root.join("links");
    let mut wanted = Vec::new();
    for entry in fs::read_dir(&links)
        .map_err(|source| KernelError::Io {
            path: links.clone(),
            source,
        })?
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Ok(info) = PinnedLink::from_pin(entry.path())
            .map(FdLink::from)
            .and_then(|l| l.info())
        {
            wanted.push((info.program_id(), name));
        }
    }
    let mut out: Vec<ProgramStats> = aya::programs::loaded_programs()
        .flatten()
        .filter_map(|p| {
            let name = wanted.iter().find(|(id, _)| *id == p.id())?.1.clone();
            Some(ProgramStats {
                id: p.id(),
                name,
                run_time_ns: p.run_time().as_nanos() as u64,
                run_count: p.run_count(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    //! The built object against what userspace expects of it, read from the object itself.

    use std::collections::BTreeSet;

    use object::{Object as _, ObjectSymbol as _};

    use super::*;

    fn parsed() -> aya_obj::Object {
        aya_obj::Object::parse(OBJECT).expect("the built object parses")
    }

    #[test]
    fn every_program_userspace_attaches_is_in_the_object() {
        let object = parsed();
        let mut attached = BTreeSet::new();
        for tier in [Tier::Full, Tier::Fallback] {
            for reads in [ReadHook::Filemap, ReadHook::SysExit] {
                attached.extend(programs(tier, reads).iter().map(|s| s.name));
            }
        }
        for name in &attached {
            assert!(
                object.programs.contains_key(*name),
                "program {name} is not in the object"
            );
        }
        // And the object has no program that nobody attaches or probes with.
        for name in object.programs.keys() {
            assert!(
                attached.contains(name.as_str()) || name.starts_with("probe_"),
                "the object's program {name} is attached by no tier"
            );
        }
    }

    #[test]
    fn every_pinned_map_is_in_the_object_with_a_layout() {
        let layouts = expected_layouts().expect("every pinned map is in the object");
        assert_eq!(layouts.len(), PINNED_MAPS.len());
        for (name, layout) in layouts {
            assert!(layout.key_size > 0 || name == map_name::EVENTS, "{name}: {layout}");
            assert!(layout.max_entries > 0, "{name}: {layout}");
        }
    }

    #[test]
    fn the_objects_globals_are_the_ones_userspace_fills_in() {
        let file = object::File::parse(OBJECT).expect("an ELF object");
        let globals: BTreeSet<String> = file
            .symbols()
            .filter_map(|s| s.name().ok().map(str::to_string))
            .filter(|n| n.ends_with("_OFFSET"))
            .collect();
        let filled: BTreeSet<String> = super::super::btf::OFFSET_GLOBALS
            .iter()
            .map(|(g, _, _)| g.to_string())
            .collect();
        assert_eq!(
            globals, filled,
            "offset globals of the object against those btf.rs fills in"
        );
        assert!(
            file.symbols().any(|s| s.name() == Ok("BENCH_FLOOR")),
            "the benchmark's floor switch is a global of the object"
        );
    }

    #[test]
    fn the_objects_license_is_the_workspaces() {
        let object = parsed();
        // GPL-2.0-only, as the kernel spells it.
        assert_eq!(env!("CARGO_PKG_LICENSE"), "GPL-2.0-only");
        assert_eq!(object.license.to_str(), Ok("GPL v2"));
    }
}
