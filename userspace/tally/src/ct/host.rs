//! The host side of containers, as tallyd runs it: an `Instance` (where its state, pins and
//! cgroups live) and `Host`, which creates a container's cgroups, registers its beancounters,
//! applies limits the way the tier enforces them, and reads its rows back.

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    path::PathBuf,
    sync::{Mutex, MutexGuard},
};

use tally_common::{Limit, Limits, RESOURCE_COUNT};

use super::{api::ExitCode, config::ConfigError, sampled, ContainerView, CtConfig, CtId};
use crate::{
    cgroup::{CgroupError, ContainerCgroup, Controller, Layout},
    kernel::{maps::BeancounterMaps, programs::PinLayout, KernelError, Tier},
    ubc::page_size,
    ubc::{Beancounter, Resource},
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
            HostError::Launch(_) => ExitCode::StartFailed,
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
    sampled_peaks: Mutex<HashMap<u64, [u64; RESOURCE_COUNT]>>,
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

    fn maps(&self) -> MutexGuard<'_, BeancounterMaps> {
        lock(&self.maps)
    }

    /// Controllers the tier enforces with: memory in both (the memory rows), cpu in both
    /// (each container a scheduling group, so a busy one cannot starve the others), pids where
    /// no BPF LSM refuses forks. A controller this host lacks is left out; its rows say so.
    fn controllers(&self) -> Vec<Controller> {
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

    /// Sets `limits` on container `ct` and applies them at once; with `save`, they are also
    /// saved in its config (and so apply at the next start). Nothing changes when the new
    /// config cannot be saved or applied.
    pub fn set_limits(
        &self,
        ct: &CtId,
        limits: &BTreeMap<Resource, (u64, u64)>,
        settings: &BTreeMap<String, String>,
        save: bool,
    ) -> Result<ContainerView, HostError> {
        let _lock = self.locks.take(ct, "set")?;
        if !self.exists(ct) {
            return Err(HostError::NoSuchContainer(ct.clone()));
        }
        let _intent = super::journal::begin(&self.instance.root, ct, super::journal::Op::Set)?;
        let path = self.instance.config_path(ct);
        let saved = CtConfig::load(&path)?;
        // The live limits are the base: an earlier unsaved `set` stays in force.
        let mut live = saved.clone();
        if let Ok(Some(current)) = self.live_limits(ct) {
            for (r, (b, l)) in current {
                live.set_limit(r, b, l);
            }
        }
        let change = |c: &mut CtConfig| -> Result<(), HostError> {
            for (r, (b, l)) in limits {
                c.set_limit(*r, *b, *l);
            }
            c.values.extend(settings.iter().map(|(k, v)| (k.clone(), v.clone())));
            c.cpu().map_err(|message| ConfigError::Syntax {
                file: ct.to_string(),
                line: 0,
                message,
            })?;
            Ok(())
        };
        let mut config = live.clone();
        change(&mut config)?;
        if save {
            let mut saved_new = saved.clone();
            change(&mut saved_new)?;
            saved_new.save(&path)?;
        }
        if let Err(e) = self.apply(ct, &config) {
            if save {
                saved.save(&path)?;
            }
            let _ = self.apply(ct, &live);
            return Err(e);
        }
        self.view(ct)
    }

    /// The limits in force (the pinned limits map), when the container is registered.
    fn live_limits(&self, ct: &CtId) -> Result<Option<BTreeMap<Resource, (u64, u64)>>, HostError> {
        let cgid = self.cgroup(ct)?.id()?;
        Ok(self.maps().limits(cgid)?.map(|limits| {
            Resource::ALL
                .iter()
                .filter(|r| !r.is_dummy())
                .map(|r| (*r, (limits.rows[r.index()].barrier, limits.rows[r.index()].limit)))
                .collect()
        }))
    }

    /// Brings the kernel in line with the config: cgroups exist, beancounters registered
    /// (counters kept if already there), controller limits set. Used at start-up to adopt
    /// containers too.
    pub fn apply(&self, ct: &CtId, config: &CtConfig) -> Result<(), HostError> {
        let limits = config.limits().map_err(|source| ConfigError::Value {
            file: ct.to_string(),
            source,
        })?;
        let cgroup = self.cgroup(ct)?;
        cgroup.create()?;
        let mut rows = Limits::default();
        for (r, (barrier, limit)) in &limits {
            rows.rows[r.index()] = Limit {
                barrier: *barrier,
                limit: *limit,
            };
        }
        let cgid = cgroup.id()?;
        self.maps().register(cgid, &rows)?;
        lock(&self.cgroup_ids).insert(cgid, ct.clone());
        let bounded = |r: Resource| Some(rows.rows[r.index()].limit).filter(|l| *l != tally_common::UNLIMITED);
        if self.tier == Tier::Fallback {
            cgroup.set_pids_max(bounded(Resource::NumProc))?;
        }
        if self.controllers().contains(&Controller::Cpu) {
            let cpu = config.cpu().map_err(|message| ConfigError::Syntax {
                file: ct.to_string(),
                line: 0,
                message,
            })?;
            cgroup.set_cpu(cpu.units, crate::cgroup::cpu::quota_us(cpu.limit, cpu.cpus))?;
        }
        if cgroup.has_memory() {
            // VSwap: physpages' limit is the RAM, swappages' limit the swap.
            let bytes = |pages: u64| pages.saturating_mul(page_size());
            cgroup.set_memory_limits(
                bounded(Resource::PhysPages).map(bytes),
                bounded(Resource::SwapPages).map(bytes),
            )?;
            // OpenVZ's guarantees as the kernel offers them: vmguarpages' barrier is protected
            // from reclaim (memory.low), oomguarpages' barrier always (memory.min).
            let guarantee =
                |r: Resource| Some(rows.rows[r.index()].barrier).filter(|b| *b != tally_common::UNLIMITED && *b > 0);
            cgroup.set_memory_guarantees(
                guarantee(Resource::VmGuarPages).map(bytes),
                guarantee(Resource::OomGuarPages).map(bytes),
            )?;
        }
        Ok(())
    }

    /// tallyd start-up: containers whose beancounters are still registered (pinned) keep
    /// them as they are, live limits included; the others get their saved config applied.
    pub fn adopt_all(&self) -> Result<Vec<CtId>, HostError> {
        for line in self.recover()? {
            log::info!("recovery: {line}");
        }
        let ids = self.configured()?;
        for ct in &ids {
            let cgroup = self.cgroup(ct)?;
            let registered = cgroup.exists() && self.maps().limits(cgroup.id()?)?.is_some();
            if registered {
                lock(&self.cgroup_ids).insert(cgroup.id()?, ct.clone());
            } else {
                let config = CtConfig::load(&self.instance.config_path(ct))?;
                self.apply(ct, &config)?;
            }
        }
        Ok(ids)
    }

    /// The container whose cgroup2 id is `cgid`, from the ids `apply` recorded (every
    /// container tallyd runs or adopted went through it).
    pub fn ctid_of(&self, cgid: u64) -> Option<CtId> {
        lock(&self.cgroup_ids).get(&cgid).cloned()
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

    pub fn view(&self, ct: &CtId) -> Result<ContainerView, HostError> {
        Ok(self.view_and_memory(ct)?.0)
    }

    /// [`Self::view`], with the memory controller's figures its memory rows came from (the
    /// exporter reports them too, without reading them twice).
    pub fn view_and_memory(&self, ct: &CtId) -> Result<(ContainerView, Option<crate::cgroup::MemoryUsage>), HostError> {
        if !self.exists(ct) {
            return Err(HostError::NoSuchContainer(ct.clone()));
        }
        let cgroup = self.cgroup(ct)?;
        let cgid = cgroup.id()?;
        let config = CtConfig::load(&self.instance.config_path(ct))?;
        let value = |k: &str| config.values.get(k).cloned().unwrap_or_default();
        let (beancounters, memory) = self.beancounters_and_memory(&cgroup, cgid)?;
        let view = ContainerView {
            ctid: ct.clone(),
            status: self.status(ct)?,
            ostemplate: value("OSTEMPLATE"),
            hostname: value("HOSTNAME"),
            ip_address: value("IP_ADDRESS").split_whitespace().map(str::to_string).collect(),
            cgroup_id: cgid,
            pids: cgroup.pids()?,
            beancounters: beancounters.to_vec(),
        };
        Ok((view, memory))
    }

    /// The container's rows: what `kept_rows` has, and the rows sampled from its processes;
    /// with the memory controller's figures the memory rows came from.
    fn beancounters_and_memory(
        &self,
        cgroup: &ContainerCgroup,
        cgid: u64,
    ) -> Result<([Beancounter; RESOURCE_COUNT], Option<crate::cgroup::MemoryUsage>), HostError> {
        let (mut rows, memory) = self.kept_rows_and_memory(cgroup, cgid)?;
        let pids = cgroup.pids()?;
        let buffers = sampled::socket_buffers(&pids);
        let sampled = [
            (Resource::PrivVmPages, sampled::private_vm_pages(&pids)),
            (Resource::TcpSndBuf, buffers.tcp_send),
            (Resource::TcpRcvBuf, buffers.tcp_receive),
            (Resource::OtherSockBuf, buffers.other_send),
            (Resource::DgramRcvBuf, buffers.datagram_receive),
            (Resource::NumIptEnt, sampled::netfilter_entries(&pids)),
            (Resource::NumSigInfo, sampled::pending_signals(&pids).unwrap_or(0)),
        ];
        let mut peaks = lock(&self.sampled_peaks);
        let peaks = peaks.entry(cgid).or_insert([0; RESOURCE_COUNT]);
        for (r, held) in sampled {
            let peak = &mut peaks[r.index()];
            *peak = (*peak).max(held);
            let row = &mut rows[r.index()];
            row.held = held;
            row.maxheld = row.maxheld.max(*peak);
        }
        Ok((rows, memory))
    }

    /// The rows kept as they change: counters from BPF, barrier/limit from the limits map, the
    /// memory rows from the memory controller, and on the fallback tier numproc's failcnt from
    /// the pids controller (which is what refuses).
    fn kept_rows(&self, cgroup: &ContainerCgroup, cgid: u64) -> Result<[Beancounter; RESOURCE_COUNT], HostError> {
        Ok(self.kept_rows_and_memory(cgroup, cgid)?.0)
    }

    /// [`Self::kept_rows`], with the memory controller's figures they were read from.
    fn kept_rows_and_memory(
        &self,
        cgroup: &ContainerCgroup,
        cgid: u64,
    ) -> Result<([Beancounter; RESOURCE_COUNT], Option<crate::cgroup::MemoryUsage>), HostError> {
        let counters = self.maps().counters(cgid)?.unwrap_or_default();
        let limits = self.maps().limits(cgid)?.unwrap_or_default();
        let mut rows = [Beancounter::default(); RESOURCE_COUNT];
        for (i, row) in rows.iter_mut().enumerate() {
            let (c, l) = (counters.rows[i], limits.rows[i]);
            *row = Beancounter {
                held: c.held,
                maxheld: c.maxheld,
                barrier: l.barrier,
                limit: l.limit,
                failcnt: c.failcnt,
            };
        }
        if self.tier == Tier::Fallback {
            rows[Resource::NumProc.index()].failcnt = cgroup.pids_refusals()?;
        }
        let memory = if cgroup.has_memory() {
            let m = cgroup.memory_usage()?;
            memory_rows(&mut rows, &m);
            Some(m)
        } else {
            None
        };
        Ok((rows, memory))
    }

    /// Moves process `pid` into the container (it is charged there from now on). Refused when
    /// the container's numproc is at its barrier: neither the pids controller nor any LSM hook
    /// refuses a task that migrates in, so this is the only gate on that path.
    pub fn attach(&self, ct: &CtId, pid: u32) -> Result<(), HostError> {
        if !self.exists(ct) {
            return Err(HostError::NoSuchContainer(ct.clone()));
        }
        let cgroup = self.cgroup(ct)?;
        self.room_for_a_process(ct, &cgroup)?;
        Ok(cgroup.add_process(pid)?)
    }

    /// For a process that joins running container `ct` by itself (see [`super::JoinPlan`]),
    /// refused as [`Self::attach`] is: at the numproc barrier.
    pub fn join_plan(&self, ct: &CtId) -> Result<super::JoinPlan, HostError> {
        if !self.exists(ct) {
            return Err(HostError::NoSuchContainer(ct.clone()));
        }
        let init_pid = self.init_pid(ct).ok_or_else(|| HostError::NotRunning(ct.clone()))?;
        let cgroup = self.cgroup(ct)?;
        self.room_for_a_process(ct, &cgroup)?;
        Ok(super::JoinPlan {
            init_pid,
            unified: cgroup.unified.clone(),
            v1_tasks: cgroup.v1_tasks_files(),
        })
    }

    /// Refuses one more process at the numproc barrier (what a fork there would be refused at).
    fn room_for_a_process(&self, ct: &CtId, cgroup: &ContainerCgroup) -> Result<(), HostError> {
        let numproc = self.kept_rows(&cgroup, cgroup.id()?)?[Resource::NumProc.index()];
        // The fallback tier's held leaves out zombies; the pids controller, which enforces
        // there, still counts them.
        let held = match self.tier {
            Tier::Full => numproc.held,
            Tier::Fallback => numproc.held.max(cgroup.pids_current()?),
        };
        if held >= numproc.barrier {
            return Err(HostError::Shortage {
                ct: ct.clone(),
                resource: Resource::NumProc,
                held,
            });
        }
        Ok(())
    }
}

/// The memory rows come from the memory controller (as on newer Virtuozzo kernels): held and
/// maxheld from its usage and peak, failcnt from its limit hits. Rows the controller cannot
/// tell keep what BPF has (zero).
fn memory_rows(rows: &mut [Beancounter; RESOURCE_COUNT], m: &crate::cgroup::MemoryUsage) {
    let page = page_size();
    let stat = |k: &str| m.stat.get(k).copied();
    let mut set = |r: Resource, held: u64, peak: Option<u64>, failcnt: Option<u64>| {
        let row = &mut rows[r.index()];
        row.held = held;
        row.maxheld = peak.unwrap_or(0).max(held);
        if let Some(f) = failcnt {
            row.failcnt = f;
        }
    };
    set(
        Resource::PhysPages,
        m.current / page,
        m.peak.map(|p| p / page),
        Some(m.limit_hits),
    );
    let swap = m.swap_current.unwrap_or(0);
    set(
        Resource::SwapPages,
        swap / page,
        m.swap_peak.map(|p| p / page),
        m.swap_limit_hits,
    );
    // OpenVZ's oomguarpages held: RAM and swap in use.
    set(Resource::OomGuarPages, (m.current + swap) / page, None, None);
    // v1 keeps a kernel-memory counter of its own; v2 has "kernel" in memory.stat (5.18+),
    // older v2 kernels spell out the parts.
    let kernel = m.kmem_current.or_else(|| stat("kernel")).unwrap_or_else(|| {
        ["kernel_stack", "slab", "percpu", "pagetables", "sock"]
            .iter()
            .filter_map(|k| stat(k))
            .sum()
    });
    set(Resource::KmemSize, kernel, m.kmem_peak, None);
    if let Some(dcache) = stat("slab_reclaimable") {
        set(Resource::DcacheSize, dcache, None, None);
    }
    if let Some(shmem) = stat("shmem") {
        set(Resource::ShmPages, shmem / page, None, None);
    }
    if let Some(locked) = stat("unevictable") {
        set(Resource::LockedPages, locked / page, None, None);
    }
}
