//! What this kernel offers, found by loading tiny programs (the securityfs LSM list can name
//! bpf while every LSM load is refused, as on the sandbox kernel), and the enforcement tier
//! that follows. Loading only: the probe attaches nothing and pins nothing.

use std::path::Path;

use aya::{
    programs::{
        BtfTracePoint, CgroupDevice, CgroupSkb, CgroupSock, CgroupSockAddr, CgroupSysctl, FEntry, Lsm, ProgramError,
    },
    Btf, EbpfLoader,
};
use serde::Serialize;

use super::{describe_program_error, programs::is_bpffs, OBJECT};
use crate::cgroup::{Controller, Layout, LayoutKind};
use crate::ubc::Resource;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// BPF LSM programs load: tally's own programs refuse over the barrier.
    Full,
    /// No BPF LSM: cgroup controllers refuse, tracepoints account.
    Fallback,
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tier::Full => "full",
            Tier::Fallback => "fallback",
        })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub ok: bool,
    pub detail: String,
}

impl Check {
    fn ok(detail: impl Into<String>) -> Self {
        Check {
            ok: true,
            detail: detail.into(),
        }
    }
    fn failed(detail: impl Into<String>) -> Self {
        Check {
            ok: false,
            detail: detail.into(),
        }
    }
}

/// How one beancounter row is kept on this host.
#[derive(Clone, Debug, Serialize)]
pub struct RowPlan {
    pub resource: String,
    /// "enforced", "accounted" or "not yet" (the row shows zero held and unlimited).
    pub status: &'static str,
    pub how: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct HostReport {
    pub kernel: String,
    /// None: tally cannot run here (see `reason`).
    pub tier: Option<Tier>,
    pub reason: String,
    pub btf: Check,
    pub lsm_list: Check,
    pub bpffs: Check,
    /// Program type -> whether a tiny program of that type loads.
    pub programs: Vec<(String, Check)>,
    pub cgroups: Layout,
    pub rows: Vec<RowPlan>,
    /// Statistics that are not beancounter rows (the per-container file-read statistics).
    pub statistics: Vec<RowPlan>,
}

pub fn probe() -> HostReport {
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let btf_path = Path::new(super::btf::VMLINUX);
    let btf = Btf::from_sys_fs();
    let btf_check = match &btf {
        Ok(_) => Check::ok(format!("{} parsed", btf_path.display())),
        Err(e) => Check::failed(format!("{}: {e} (needs CONFIG_DEBUG_INFO_BTF)", btf_path.display())),
    };
    let lsm_list = match std::fs::read_to_string("/sys/kernel/security/lsm") {
        Ok(list) if list.split(',').any(|l| l.trim() == "bpf") => Check::ok(list.trim().to_string()),
        Ok(list) => Check::failed(format!("{} (bpf missing: boot with lsm=...,bpf)", list.trim())),
        Err(e) => Check::failed(format!(
            "/sys/kernel/security/lsm unreadable ({e}); securityfs not mounted?"
        )),
    };
    let bpffs = if is_bpffs(Path::new("/sys/fs/bpf")) {
        Check::ok("/sys/fs/bpf is a bpffs")
    } else {
        Check::failed("no bpffs at /sys/fs/bpf (tallyd mounts it)")
    };
    let programs = match &btf {
        Ok(btf) => probe_programs(btf),
        Err(_) => vec![],
    };
    let cgroups = Layout::detect().unwrap_or(Layout {
        kind: LayoutKind::V1,
        unified: None,
        controllers: Default::default(),
    });
    let loads = |name: &str| programs.iter().any(|(n, c)| n == name && c.ok);
    let lsm_detail = programs
        .iter()
        .find(|(n, _)| n == "lsm")
        .map(|(_, c)| c.detail.clone())
        .unwrap_or_default();

    let (tier, reason) = if !btf_check.ok {
        (None, format!("no kernel BTF: {}", btf_check.detail))
    } else if cgroups.unified.is_none() {
        (
            None,
            "no cgroup2 hierarchy mounted: containers are identified by cgroup2 id".to_string(),
        )
    } else if !loads("tp_btf") {
        (None, "tp_btf programs are refused: tally cannot account".to_string())
    } else if loads("lsm") && loads("fentry") {
        (
            Some(Tier::Full),
            "BPF LSM and fentry programs load; tally's programs enforce".to_string(),
        )
    } else if !cgroups.controllers.contains_key(&Controller::Pids) {
        (
            None,
            format!("BPF LSM programs are refused ({lsm_detail}) and no pids controller is available"),
        )
    } else {
        let listed = match (&lsm_list, lsm_list.detail.contains("unreadable")) {
            (l, _) if l.ok => "although bpf is in the LSM list",
            (_, true) => "and the LSM list is unreadable",
            _ => "and bpf is not in the LSM list",
        };
        (
            Some(Tier::Fallback),
            format!("BPF LSM programs are refused: loading lsm/file_open failed with {lsm_detail} {listed}; cgroup controllers enforce"),
        )
    };
    let rows = tier.map(row_plans).unwrap_or_default();
    let statistics = tier.map(statistic_plans).unwrap_or_default();
    HostReport {
        kernel,
        tier,
        reason,
        btf: btf_check,
        lsm_list,
        bpffs,
        programs,
        cgroups,
        rows,
        statistics,
    }
}

fn probe_programs(btf: &Btf) -> Vec<(String, Check)> {
    // The caller's parse of the kernel's BTF, not a second one of the loader's own (dropped at
    // once by `btf()`).
    let mut ebpf = match EbpfLoader::new().btf(Some(btf)).load(OBJECT) {
        Ok(e) => e,
        Err(e) => return vec![("object".into(), Check::failed(format!("loading the object: {e}")))],
    };
    let mut out = Vec::new();
    let mut record = |kind: &str, r: Result<(), ProgramError>| {
        let check = match r {
            Ok(()) => Check::ok("loads"),
            Err(e) => Check::failed(describe_program_error(&e)),
        };
        out.push((kind.to_string(), check));
    };
    macro_rules! try_load {
        ($kind:expr, $name:expr, $ty:ty, |$p:ident| $load:expr) => {{
            let r = match ebpf.program_mut($name).map(<&mut $ty>::try_from) {
                Some(Ok($p)) => $load,
                Some(Err(e)) => Err(e),
                None => Err(ProgramError::UnexpectedProgramType),
            };
            record($kind, r);
        }};
    }
    try_load!("lsm", "probe_lsm", Lsm, |p| p.load("file_open", btf));
    try_load!("fentry", "probe_fentry", FEntry, |p| p.load("vfs_read", btf));
    try_load!("tp_btf", "sched_process_fork", BtfTracePoint, |p| p
        .load("sched_process_fork", btf));
    try_load!("cgroup_skb", "probe_cgroup_skb", CgroupSkb, |p| p.load());
    try_load!("cgroup_sock", "probe_cgroup_sock", CgroupSock, |p| p.load());
    try_load!("cgroup_sock_addr", "probe_cgroup_sock_addr", CgroupSockAddr, |p| p
        .load());
    try_load!("cgroup_device", "probe_cgroup_device", CgroupDevice, |p| p.load());
    try_load!("cgroup_sysctl", "probe_cgroup_sysctl", CgroupSysctl, |p| p.load());
    out
}

/// For each row: where its numbers come from on this tier and whether it is enforced, as
/// super::rows declares it.
pub fn row_plans(tier: Tier) -> Vec<RowPlan> {
    Resource::ALL
        .iter()
        .filter_map(|r| {
            let s = super::rows::source(*r, tier)?;
            Some(RowPlan {
                resource: r.name().to_string(),
                status: s.enforcement.word(),
                how: s.how.to_string(),
            })
        })
        .collect()
}

/// How the statistics that are not rows are kept in `tier` (the programs: trace/read.rs).
pub fn statistic_plans(tier: Tier) -> Vec<RowPlan> {
    let names: Vec<&str> = tally_common::read_syscalls::PROGRAMS
        .iter()
        .map(|(n, _, _)| *n)
        .collect();
    let what = format!(
        "per container, device and inode of regular files: read calls, bytes and the last read, counted as {} \
         and {} return",
        names[..names.len() - 1].join(", "),
        names[names.len() - 1]
    );
    const MISSED: &str = "not seen: mmap, io_uring, AIO; in an LRU map of 65536 files";
    let how = match tier {
        Tier::Full => format!(
            "{what} (fexit on each); BPF LSM file_permission names the files each call reads, so a file of a \
             container's overlay counts as the real upper or lower file overlayfs reads and as the overlay's \
             inode; {MISSED}"
        ),
        Tier::Fallback if super::programs::has_filemap_tracepoint() => format!(
            "per container, device and inode of regular files: page-cache read batches, the bytes of the pages \
             they span and the last read (tp_btf mm_filemap_get_pages: only buffered reads pay); the file is the \
             one that owns the pages, for an overlay file the real upper or lower file; {MISSED}, direct I/O \
             (an instance whose state directory is on tmpfs, whose reads bypass that path, keeps sys_exit)"
        ),
        Tier::Fallback => format!(
            "{what} (tp_btf sys_exit, which every syscall on the host passes); the file is the one behind the \
             call's descriptor and, for an overlay file, the real upper or lower file behind it (overlayfs's \
             private data), counted as both; {MISSED}"
        ),
    };
    vec![RowPlan {
        resource: "filereads".to_string(),
        status: "accounted",
        how,
    }]
}
