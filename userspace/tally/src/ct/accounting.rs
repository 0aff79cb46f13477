//! Accounting on a `Host`: a container's limits brought into the kernel (the beancounter
//! maps and the controllers the tier enforces with), changed live by `set`, and its rows read
//! back from wherever each one is kept.

use std::collections::BTreeMap;

use tally_common::{Limit, Limits, RESOURCE_COUNT};

use super::{config::ConfigError, host::lock, sampled, ContainerView, CtConfig, CtId, Host, HostError};
use crate::{
    cgroup::{ContainerCgroup, Controller},
    kernel::{
        rows::{self, Enforcement, Held, LimitTo, MemoryFigure, RowSource, Sample},
        Tier,
    },
    ubc::{page_size, Beancounter, Resource},
};

impl Host {
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
        self.remember_cgroup(cgid, ct);
        // Each row's limits go where kernel::rows says, besides the map (which has them all).
        let bounded = |r: Resource| Some(rows.rows[r.index()].limit).filter(|l| *l != tally_common::UNLIMITED);
        let guarantee =
            |r: Resource| Some(rows.rows[r.index()].barrier).filter(|b| *b != tally_common::UNLIMITED && *b > 0);
        let bytes = |pages: u64| pages.saturating_mul(page_size());
        let (mut pids_max, mut ram, mut swap, mut low, mut min) = (None, None, None, None, None);
        for r in Resource::ALL {
            let Some(source) = rows::source(r, self.tier) else {
                continue;
            };
            match source.limit_to {
                LimitTo::Map => {}
                LimitTo::PidsMax => pids_max = Some(bounded(r)),
                LimitTo::MemoryMax => ram = bounded(r).map(bytes),
                LimitTo::SwapMax => swap = bounded(r).map(bytes),
                LimitTo::MemoryLow => low = guarantee(r).map(bytes),
                LimitTo::MemoryMin => min = guarantee(r).map(bytes),
            }
        }
        if let Some(max) = pids_max {
            cgroup.set_pids_max(max)?;
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
            // VSwap: the RAM and the swap; OpenVZ's guarantees as the kernel offers them (memory.low
            // protects from reclaim, memory.min always).
            cgroup.set_memory_limits(ram, swap)?;
            cgroup.set_memory_guarantees(low, min)?;
        }
        Ok(())
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
        // One pass over the sockets serves the four buffer rows.
        let mut buffers = None;
        let mut sampled = Vec::new();
        for r in Resource::ALL {
            let Some(Held::Sampled(what)) = rows::source(r, self.tier).map(|s| s.held) else {
                continue;
            };
            let mut socket = || *buffers.get_or_insert_with(|| sampled::socket_buffers(&pids));
            let held = match what {
                Sample::PrivateVm => sampled::private_vm_pages(&pids),
                Sample::TcpSendQueues => socket().tcp_send,
                Sample::TcpReceiveQueues => socket().tcp_receive,
                Sample::OtherSent => socket().other_send,
                Sample::DatagramReceive => socket().datagram_receive,
                Sample::NetfilterEntries => sampled::netfilter_entries(&pids),
                Sample::QueuedSignals => sampled::pending_signals(&pids).unwrap_or(0),
            };
            sampled.push((r, held));
        }
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
        let mut memory = None;
        for r in Resource::ALL {
            match rows::source(r, self.tier) {
                Some(RowSource {
                    enforcement: Enforcement::PidsController,
                    ..
                }) => rows[r.index()].failcnt = cgroup.pids_refusals()?,
                Some(RowSource {
                    held: Held::Memory(figure),
                    ..
                }) if cgroup.has_memory() => {
                    if memory.is_none() {
                        memory = Some(cgroup.memory_usage()?);
                    }
                    memory_row(&mut rows[r.index()], figure, memory.as_ref().expect("read above"));
                }
                _ => {}
            }
        }
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

/// A memory row from the memory controller (as on newer Virtuozzo kernels): held and maxheld
/// from its figure and peak, failcnt from its limit hits where it has them.
fn memory_row(row: &mut Beancounter, figure: MemoryFigure, m: &crate::cgroup::MemoryUsage) {
    let page = page_size();
    let stat = |k: &str| m.stat.get(k).copied();
    let swap = m.swap_current.unwrap_or(0);
    let (held, peak, failcnt) = match figure {
        MemoryFigure::Ram => (Some(m.current / page), m.peak.map(|p| p / page), Some(m.limit_hits)),
        MemoryFigure::Swap => (Some(swap / page), m.swap_peak.map(|p| p / page), m.swap_limit_hits),
        // OpenVZ's oomguarpages held: RAM and swap in use.
        MemoryFigure::RamAndSwap => (Some((m.current + swap) / page), None, None),
        // v1 keeps a kernel-memory counter of its own; v2 has "kernel" in memory.stat (5.18+),
        // older v2 kernels spell out the parts.
        MemoryFigure::Kernel => {
            let kernel = m.kmem_current.or_else(|| stat("kernel")).unwrap_or_else(|| {
                ["kernel_stack", "slab", "percpu", "pagetables", "sock"]
                    .iter()
                    .filter_map(|k| stat(k))
                    .sum()
            });
            (Some(kernel), m.kmem_peak, None)
        }
        MemoryFigure::SlabReclaimable => (stat("slab_reclaimable"), None, None),
        MemoryFigure::Shmem => (stat("shmem").map(|b| b / page), None, None),
        MemoryFigure::Unevictable => (stat("unevictable").map(|b| b / page), None, None),
    };
    // A figure the controller cannot tell leaves what BPF has (zero).
    if let Some(held) = held {
        row.held = held;
        row.maxheld = peak.unwrap_or(0).max(held);
    }
    if let Some(f) = failcnt {
        row.failcnt = f;
    }
}
