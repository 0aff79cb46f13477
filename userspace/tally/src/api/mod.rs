//! What tallyd and the CLI say to each other: REST/JSON over a Unix socket (root only).
//! The request/response types, the error body, the exit-code catalogue, and the client.
//!
//! Routes (v1):
//! - `GET    /v1/containers`                 -> `[ContainerView]`
//! - `POST   /v1/containers/{ctid}`          `CreateRequest` -> `ContainerView` (stopped)
//! - `GET    /v1/containers/{ctid}`          -> `ContainerView`
//! - `GET    /v1/containers/{ctid}/status`   -> `Status` (also for containers that do not exist)
//! - `POST   /v1/containers/{ctid}/start`    -> `ContainerView`
//! - `POST   /v1/containers/{ctid}/stop`     `Stop` -> `Status`
//! - `POST   /v1/containers/{ctid}/restart`  -> `ContainerView`
//! - `POST   /v1/containers/{ctid}/mount`    -> `Status`
//! - `POST   /v1/containers/{ctid}/umount`   -> `Status`
//! - `PUT    /v1/containers/{ctid}/limits`   `SetLimits` -> `ContainerView` (applied live)
//! - `POST   /v1/containers/{ctid}/attach`   `Attach` -> `{}` (moves a process in)
//! - `GET    /v1/containers/{ctid}/join`     -> `JoinPlan` (for a process that joins by itself)
//! - `DELETE /v1/containers/{ctid}`          -> `{}` (stops it first)
//! - `GET    /v1/templates`                  -> `[TemplateInfo]`
//! - `POST   /v1/templates`                  `ImportTemplate` -> `TemplateInfo`
//! - `POST   /v1/templates/create`           `CreateTemplate` -> `TemplateInfo` (debootstrap)
//! - `GET    /v1/events?after=ID`            -> `[EventView]` (limit-hit events newer than ID)
//! - `GET    /v1/containers/{ctid}/reads?top=N` -> `[FileReadView]` (its most read files)

mod client;
mod exit;
mod id;

use std::collections::BTreeMap;

pub use client::{Client, ClientError};
pub use exit::ExitCode;
pub use id::{CtId, CtIdError};

use crate::ubc::Beancounter;

pub const DEFAULT_SOCKET: &str = "/run/tally/tally.sock";

/// Body of `PUT /v1/containers/{ctid}/limits`: row name -> "barrier[:limit]" as on vzctl's
/// command line (`"numproc": "20:20"`, `"privvmpages": "5M:6M"`, `"numfile": "unlimited"`).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetLimits {
    pub limits: BTreeMap<String, String>,
    /// Other settings by config key: CPUUNITS, CPULIMIT, CPUS.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// Also write them to the container's config (vzctl's `--save`).
    #[serde(default)]
    pub save: bool,
}

/// Body of `POST /v1/templates`: a template made from a root-tree archive on the host.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportTemplate {
    pub name: String,
    /// Absolute path of a tar archive (plain, gzip or zstd) that tallyd reads.
    pub archive: std::path::PathBuf,
    /// The signal that powers the template's init off; guessed from /sbin/init if absent.
    #[serde(default)]
    pub halt_signal: Option<String>,
}

/// Body of `POST /v1/templates/create`: a distribution template made with debootstrap.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTemplate {
    /// debian-11, debian-12 or debian-13; also the template's name.
    pub dist: String,
    /// The Debian mirror (default http://deb.debian.org/debian).
    #[serde(default)]
    pub mirror: Option<String>,
    /// Absolute path of a `debootstrap --make-tarball` tarball to install from, offline.
    #[serde(default)]
    pub debs: Option<std::path::PathBuf>,
}

/// Body of `POST /v1/containers/{ctid}/stop`.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stop {
    /// Kill at once instead of asking the init to power off (vzctl's `--fast`).
    #[serde(default)]
    pub fast: bool,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attach {
    pub pid: u32,
}

/// Every non-2xx answer carries this body.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ApiError {
    /// Which catalogue entry (the CLI exits with its number).
    pub code: ExitCode,
    pub message: String,
}

/// One file a container read (`GET /v1/containers/{ctid}/reads`): the kernel's counts
/// (`FileRead`'s fields, flattened) and, when tallyd finds it cheaply, where it is.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileReadView {
    #[serde(flatten)]
    pub read: crate::kernel::reads::FileRead,
    /// The path inside the container of a file in its own upper directory (what it wrote or
    /// copied up); None for template files and the overlay's own inodes.
    #[serde(default)]
    pub path: Option<std::path::PathBuf>,
}

/// How many files `GET /v1/containers/{ctid}/reads` returns without `top`.
pub const DEFAULT_TOP_READS: usize = 20;

/// A refused charge (a limit hit), as tallyd keeps and reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EventView {
    /// Increasing; `after` in the query takes only newer ones.
    pub id: u64,
    /// The container, when it still exists.
    pub ctid: Option<CtId>,
    pub cgroup_id: u64,
    pub resource: String,
    /// The row's failcnt after this refusal; its rise since the previous event of the same
    /// container and row counts refusals the rate limit did not report one by one.
    pub failcnt: u64,
    pub held: u64,
    pub barrier: u64,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub time_ms: u64,
}

/// A container's rows and where it lives, as the API reports it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ContainerView {
    pub ctid: CtId,
    #[serde(default)]
    pub status: Status,
    /// OSTEMPLATE, HOSTNAME, IP_ADDRESS from the config (empty when unset).
    #[serde(default)]
    pub ostemplate: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub ip_address: Vec<String>,
    pub cgroup_id: u64,
    pub pids: Vec<u32>,
    /// Kernel order, RESOURCE_COUNT rows.
    pub beancounters: Vec<Beancounter>,
}

/// What a process needs to join a running container by itself (`tally exec`): the init whose
/// namespaces it enters, the cgroup2 directory to be forked into (clone3's CLONE_INTO_CGROUP)
/// and the `tasks` files of the v1 hierarchies, where it writes "0". Neither way takes the
/// thread-group lock that a write of another process's pid to cgroup.procs takes, whose first
/// taking after a quiet spell waits an RCU grace period (4 to 16 ms on these hosts).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinPlan {
    pub init_pid: u32,
    pub unified: std::path::PathBuf,
    pub v1_tasks: Vec<std::path::PathBuf>,
}

/// vzctl's status words: `CTID 101 exist mounted running`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Status {
    pub exists: bool,
    pub mounted: bool,
    pub running: bool,
    /// The init's pid on the host, when running.
    pub init_pid: Option<u32>,
}

impl Status {
    pub fn line(&self, ct: &CtId) -> String {
        format!(
            "CTID {ct} {} {} {}",
            if self.exists { "exist" } else { "deleted" },
            if self.mounted { "mounted" } else { "unmounted" },
            if self.running { "running" } else { "down" }
        )
    }
}

/// What `tally create` asks for.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// Template name; default: busybox.
    #[serde(default)]
    pub ostemplate: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    /// The container's addresses: routed (venet style), or on `bridge`'s subnet.
    #[serde(default)]
    pub ipadd: Vec<String>,
    /// Bridged networking: eth0's host end joins this bridge (vzctl's NETIF bridge=).
    #[serde(default)]
    pub bridge: Option<String>,
    /// No user namespace: container root is host root (bounded as ever). By default a
    /// container gets a user namespace where the host can idmap its template.
    #[serde(default)]
    pub privileged: bool,
    /// A sample config to start from (`basic`, `unlimited`, or ROOT/conf/ve-NAME.conf-sample).
    #[serde(default)]
    pub config: Option<String>,
    /// An OpenVZ CTID.conf, taken as it is (`tally import-openvz`): its beancounters, CPU
    /// settings, OSTEMPLATE, HOSTNAME and IP_ADDRESS, unless given above. Its paths
    /// (VE_ROOT, VE_PRIVATE) are tally's own to choose and are dropped.
    #[serde(default)]
    pub import: Option<String>,
}

/// One template, as `tally template list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TemplateInfo {
    pub name: String,
    pub rootfs: std::path::PathBuf,
    /// The signal that asks the template's init to power off (busybox: SIGUSR2; systemd:
    /// SIGRTMIN+4).
    pub halt_signal: String,
}

/// What `tally cache stats` shows.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CacheStats {
    pub objects: u64,
    pub bytes: u64,
    pub cap: u64,
    /// Files promoted (one per container copy replaced by a link).
    pub promotions: u64,
    pub evictions: u64,
    /// Objects found not to match their names, dropped.
    pub corrupt_dropped: u64,
    /// Page cache saved: for each object, its size times (links into containers - 1).
    pub page_cache_saved_bytes: u64,
}

/// What `tally cache status` shows.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct CacheStatus {
    pub stats: CacheStats,
    pub includes: Vec<std::path::PathBuf>,
    pub min_size: u64,
    pub max_size: u64,
    pub min_containers: usize,
    /// Links each container gets at its next start.
    pub pending: std::collections::BTreeMap<String, usize>,
    /// Links each container's cache layer holds now.
    pub linked: std::collections::BTreeMap<String, usize>,
}

/// What `tally cache gc` did.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct GcReport {
    pub checked: u64,
    pub corrupt_dropped: u64,
    pub evicted: u64,
}
