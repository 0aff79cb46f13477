//! The host side of containers, as tallyd runs it: an `Instance` (where its state, pins and
//! cgroups live), the errors of every operation, and `Host`: what it shares between requests
//! and where a container's parts are found. What it does is split by concern: accounting
//! (limits and rows), lifecycle, recovery, the dedup cache.

use std::{
    collections::HashMap,
    fs,
    path::PathBuf,
    sync::{Mutex, MutexGuard},
};

use tally_common::RESOURCE_COUNT;

use super::{
    api::{ExitCode, Status},
    config::ConfigError,
    rootfs::Rootfs,
    template::Templates,
    CtConfig, CtId,
};
use crate::{
    cgroup::{CgroupError, ContainerCgroup, Controller, Layout},
    kernel::{maps::BeancounterMaps, pins::PinLayout, KernelError, Tier},
    ubc::Resource,
};

/// One tally installation on a host: its state directory, and a name that its bpffs pins
/// (/sys/fs/bpf/NAME) and cgroups (NAME/CTID on every hierarchy) carry. Tests run their own
/// instances beside a real one.
#[derive(Clone, Debug)]
pub struct Instance {
    pub name: String,
    pub root: PathBuf,
}

impl Instance {
    pub const DEFAULT_NAME: &'static str = "tally";
    pub const DEFAULT_ROOT: &'static str = "/var/lib/tally";

    /// `name` must start with "tally" (everything tally creates in the kernel says so) and
    /// be a plain file name.
    pub fn new(name: &str, root: impl Into<PathBuf>) -> Result<Instance, HostError> {
        let valid = name.starts_with("tally")
            && name.len() <= 64
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(HostError::BadInstance(name.to_string()));
        }
        Ok(Instance {
            name: name.to_string(),
            root: root.into(),
        })
    }

    pub fn pins(&self) -> PinLayout {
        PinLayout::new(PathBuf::from("/sys/fs/bpf").join(&self.name))
    }

    pub fn config_dir(&self) -> PathBuf {
        self.root.join("conf")
    }

    pub fn config_path(&self, ct: &CtId) -> PathBuf {
        self.config_dir().join(format!("{ct}.conf"))
    }

    /// The instance's cgroup2 directory: parent of its containers, where cgroup programs
    /// attach. It outlives its containers (removing it would detach those programs).
    pub fn cgroup_parent(&self, layout: &Layout) -> Result<PathBuf, CgroupError> {
        Ok(layout.unified()?.join(&self.name))
    }

    /// The first directory from the root of the filesystem down to the state directory that
    /// others may not search (with its mode). A user-namespaced container's ids are "others"
    /// to every host directory, so such a directory keeps them out of their own root tree.
    pub fn untraversable_dir(&self) -> Option<(PathBuf, u32)> {
        use std::os::unix::fs::PermissionsExt;
        let root = fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone());
        let mut dirs: Vec<&std::path::Path> = root.ancestors().collect();
        dirs.reverse();
        dirs.into_iter().find_map(|d| {
            let mode = fs::metadata(d).ok()?.permissions().mode() & 0o7777;
            (mode & 0o001 == 0).then(|| (d.to_path_buf(), mode))
        })
    }

    /// Removes the instance's (empty) parent directories on every hierarchy; for unloading.
    pub fn remove_cgroup_parents(&self, layout: &Layout) {
        let v1 = layout.controllers.values().map(|(mount, _)| mount.join(&self.name));
        for dir in v1.chain(layout.unified.iter().map(|u| u.join(&self.name))) {
            let _ = fs::remove_dir(dir);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("invalid instance name '{0}': it must start with 'tally' and use A-Z a-z 0-9 - _")]
    BadInstance(String),
    #[error("container {0} does not exist")]
    NoSuchContainer(CtId),
    #[error("resource shortage: {resource} in CT {ct} is at its barrier ({held})")]
    Shortage { ct: CtId, resource: Resource, held: u64 },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("container {0} already exists")]
    Exists(CtId),
    #[error("container {0} is not running")]
    NotRunning(CtId),
    #[error("container {0} is running")]
    Running(CtId),
    #[error("container {0} is mounted")]
    Mounted(CtId),
    #[error("container {ct} is locked: a {op} is under way")]
    Locked { ct: CtId, op: String },
    #[error("container {ct}: {message}")]
    StopFailed { ct: CtId, message: String },
    #[error("invalid hostname '{0}': use letters, digits, '-' and '.', at most 64 characters")]
    BadHostname(String),
    #[error("invalid IP address '{0}'")]
    BadAddress(String),
    #[error("{0}")]
    BadBridge(String),
    #[error("user namespace: {0}")]
    Userns(String),
    #[error(
        "{dir} (mode {mode:04o}) keeps containers with a user namespace out of their roots under it: their ids are \
         others to the host's directories, and others may not search this one. Run `chmod o+x {dir}`, or give tallyd \
         a --root whose every parent others may search"
    )]
    Untraversable { dir: PathBuf, mode: u32 },
    #[error("file cache: {0}")]
    Cache(#[from] super::cache::CacheError),
    #[error("IP address {addr} is in use by container {by}")]
    AddressInUse { addr: std::net::Ipv4Addr, by: CtId },
    #[error("no sample config '{0}' (samples: {1})")]
    NoSample(String, String),
    #[error(transparent)]
    Template(#[from] super::template::TemplateError),
    #[error(transparent)]
    Rootfs(#[from] super::rootfs::RootfsError),
    #[error(transparent)]
    Net(#[from] super::net::NetError),
    #[error("starting container: {0}")]
    Launch(#[from] super::launch::LaunchError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl HostError {
    /// The catalogue entry a client exits with. Exhaustive on purpose: a new error must be
    /// given its code here, never fall into `system_error` unseen.
    pub fn exit_code(&self) -> ExitCode {
        use super::template::TemplateError as T;
        match self {
            HostError::NoSuchContainer(_) => ExitCode::NoSuchContainer,
            HostError::Shortage { .. } => ExitCode::ResourceShortage,
            HostError::Config(ConfigError::Value { .. } | ConfigError::Syntax { .. }) => ExitCode::BadValue,
            HostError::Config(ConfigError::Io { .. }) => ExitCode::ConfigSaveFailed,
            HostError::Exists(_) => ExitCode::Exists,
            HostError::NotRunning(_) => ExitCode::NotRunning,
            HostError::Running(_) => ExitCode::Running,
            HostError::Mounted(_) => ExitCode::Mounted,
            HostError::Locked { .. } => ExitCode::Locked,
            HostError::StopFailed { .. } => ExitCode::StopFailed,
            HostError::BadInstance(_)
            | HostError::BadHostname(_)
            | HostError::BadAddress(_)
            | HostError::BadBridge(_)
            | HostError::NoSample(..) => ExitCode::BadValue,
            HostError::AddressInUse { .. } => ExitCode::AddressInUse,
            HostError::Template(t) => match t {
                T::NotFound(_) | T::BadName(_) | T::UnknownDistribution(_) => ExitCode::NoTemplate,
                T::Import { .. } => ExitCode::BadValue,
                T::Exists(_) => ExitCode::Exists,
                T::Busybox(_) | T::Build { .. } | T::Io { .. } => ExitCode::SystemError,
            },
            HostError::Launch(_) | HostError::Untraversable { .. } => ExitCode::StartFailed,
            HostError::Userns(_)
            | HostError::Cgroup(_)
            | HostError::Kernel(_)
            | HostError::Cache(_)
            | HostError::Rootfs(_)
            | HostError::Net(_)
            | HostError::Io { .. } => ExitCode::SystemError,
        }
    }
}

/// The host's containers as one tallyd keeps them. Shared by every request (`&self`
/// throughout): an operation that changes a container holds that container's lock
/// ([`super::locks`]), never a host-wide one, so a long stop holds up nothing else. What is
/// host-wide is short: the maps (one syscall per access), the choice of a new container's
/// addresses and id range, and the dedup cache's link lists.
pub struct Host {
    pub instance: Instance,
    pub tier: Tier,
    pub(super) layout: Layout,
    maps: Mutex<BeancounterMaps>,
    pub(super) locks: super::locks::Locks,
    /// Held while a create chooses addresses and a user-namespace range and saves its config,
    /// so that two creates cannot choose the same.
    pub(super) allocation: Mutex<()>,
    /// Held while the dedup cache promotes, collects or drops, and while a mount links what
    /// it promoted.
    pub(super) cache_lock: Mutex<()>,
    /// cgroup2 id -> container, kept current by `apply` and `remove_everything` (events carry
    /// ids, people read names).
    cgroup_ids: Mutex<HashMap<u64, CtId>>,
    pub(super) reaper: super::reaper::Reaper,
    /// Peaks of the rows sampled when read (no program keeps their maxheld), per cgroup id.
    /// Kept by this tallyd: a restarted one starts them again from what it sees.
    pub(super) sampled_peaks: Mutex<HashMap<u64, [u64; RESOURCE_COUNT]>>,
}

/// A poisoned lock still guards consistent data here (every holder leaves it whole).
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Host {
    /// Opens the instance's pinned maps (the programs must be attached already).
    pub fn open(instance: Instance, tier: Tier) -> Result<Host, HostError> {
        let layout = Layout::detect()?;
        let maps = BeancounterMaps::open(&instance.pins())?;
        let dir = instance.config_dir();
        fs::create_dir_all(&dir).map_err(|source| HostError::Io { path: dir, source })?;
        let reaper = super::reaper::Reaper::start().map_err(|source| HostError::Io {
            path: "reaper thread".into(),
            source,
        })?;
        Ok(Host {
            instance,
            tier,
            layout,
            maps: Mutex::new(maps),
            locks: Default::default(),
            allocation: Mutex::new(()),
            cache_lock: Mutex::new(()),
            cgroup_ids: Default::default(),
            reaper,
            sampled_peaks: Default::default(),
        })
    }

    pub(super) fn maps(&self) -> MutexGuard<'_, BeancounterMaps> {
        lock(&self.maps)
    }

    /// Controllers the tier enforces with: memory in both (the memory rows), cpu in both
    /// (each container a scheduling group, so a busy one cannot starve the others), pids where
    /// no BPF LSM refuses forks. A controller this host lacks is left out; its rows say so.
    pub(super) fn controllers(&self) -> Vec<Controller> {
        let wanted: &[Controller] = match self.tier {
            Tier::Full => &[Controller::Memory, Controller::Cpu],
            Tier::Fallback => &[Controller::Pids, Controller::Memory, Controller::Cpu],
        };
        wanted
            .iter()
            .copied()
            .filter(|c| self.layout.controllers.contains_key(c))
            .collect()
    }

    pub fn cgroup(&self, ct: &CtId) -> Result<ContainerCgroup, HostError> {
        Ok(ContainerCgroup::locate(
            &self.layout,
            &self.instance.name,
            ct.as_str(),
            &self.controllers(),
        )?)
    }

    /// Every container with a config file.
    pub fn configured(&self) -> Result<Vec<CtId>, HostError> {
        let dir = self.instance.config_dir();
        let entries = fs::read_dir(&dir).map_err(|source| HostError::Io {
            path: dir.clone(),
            source,
        })?;
        let mut ids: Vec<CtId> = entries
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".conf")
                    .and_then(|s| CtId::parse(s).ok())
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The container whose cgroup2 id is `cgid`, from the ids `apply` recorded (every
    /// container tallyd runs or adopted went through it).
    pub fn ctid_of(&self, cgid: u64) -> Option<CtId> {
        lock(&self.cgroup_ids).get(&cgid).cloned()
    }

    pub(super) fn remember_cgroup(&self, cgid: u64, ct: &CtId) {
        lock(&self.cgroup_ids).insert(cgid, ct.clone());
    }

    /// Drops the container's beancounters and what this tallyd remembers of its cgroup.
    pub(super) fn unregister(&self, cgid: u64) -> Result<(), HostError> {
        self.maps().unregister(cgid)?;
        lock(&self.cgroup_ids).remove(&cgid);
        lock(&self.sampled_peaks).remove(&cgid);
        Ok(())
    }

    pub fn exists(&self, ct: &CtId) -> bool {
        self.instance.config_path(ct).exists()
    }

    pub fn templates(&self) -> Templates {
        Templates::new(&self.instance.root)
    }

    pub fn rootfs(&self, ct: &CtId) -> Rootfs {
        Rootfs::new(&self.instance.root, ct)
    }

    pub(super) fn config(&self, ct: &CtId) -> Result<CtConfig, HostError> {
        if !self.exists(ct) {
            return Err(HostError::NoSuchContainer(ct.clone()));
        }
        Ok(CtConfig::load(&self.instance.config_path(ct))?)
    }

    /// The container's init: the process of its cgroup that is PID 1 in a namespace below
    /// the host's.
    pub fn init_pid(&self, ct: &CtId) -> Option<u32> {
        let cgroup = self.cgroup(ct).ok()?;
        cgroup.pids().ok()?.into_iter().find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    let line = s.lines().find(|l| l.starts_with("NSpid:"))?.to_string();
                    let ids: Vec<&str> = line.split_whitespace().skip(1).collect();
                    Some(ids.len() >= 2 && ids.last() == Some(&"1"))
                })
                .unwrap_or(false)
        })
    }

    pub fn status(&self, ct: &CtId) -> Result<Status, HostError> {
        let init_pid = if self.exists(ct) { self.init_pid(ct) } else { None };
        Ok(Status {
            exists: self.exists(ct),
            mounted: self.rootfs(ct).is_mounted(),
            running: init_pid.is_some(),
            init_pid,
        })
    }
}
