//! The memory controller, v1 or v2, behind one reading and one setting: what a container
//! uses (for the memory beancounter rows) and its RAM/swap limits (VSwap's --ram/--swap).

use std::{collections::BTreeMap, fs, path::Path};

use super::{container::keyed_value, io_err, CgroupError, ContainerCgroup, Controller, Flavor};

/// What the memory controller says about a container, in bytes.
#[derive(Clone, Debug, Default)]
pub struct MemoryUsage {
    pub current: u64,
    pub peak: Option<u64>,
    /// Charges refused at the limit: v2 memory.events "max", v1 memory.failcnt (+ memsw's),
    /// and at least the OOM kills the limit caused (6.18 was seen leaving v1's failcnt at 0
    /// through an OOM kill).
    pub limit_hits: u64,
    pub swap_current: Option<u64>,
    pub swap_peak: Option<u64>,
    pub swap_limit_hits: Option<u64>,
    /// Kernel memory, where the controller keeps a counter of it: v1's memory.kmem.* (its
    /// memory.stat has no kernel figures); v2 tells it in memory.stat's "kernel".
    pub kmem_current: Option<u64>,
    pub kmem_peak: Option<u64>,
    /// memory.stat, key -> value.
    pub stat: BTreeMap<String, u64>,
}

/// A cgroup file's text, or None where this kernel or hierarchy lacks the file.
fn read_optional(path: &Path) -> Result<Option<String>, CgroupError> {
    match fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn read_u64(path: &Path) -> Result<Option<u64>, CgroupError> {
    Ok(read_optional(path)?.and_then(|t| t.trim().parse().ok()))
}

fn read_keyed(path: &Path, key: &str) -> Result<Option<u64>, CgroupError> {
    Ok(read_optional(path)?.and_then(|t| keyed_value(&t, key)))
}

impl ContainerCgroup {
    fn memory(&self) -> Result<(&Path, Flavor), CgroupError> {
        self.controllers
            .get(&Controller::Memory)
            .map(|(d, f)| (d.as_path(), *f))
            .ok_or(CgroupError::MissingController(Controller::Memory))
    }

    pub fn has_memory(&self) -> bool {
        self.controllers.contains_key(&Controller::Memory)
    }

    pub fn memory_usage(&self) -> Result<MemoryUsage, CgroupError> {
        let (dir, flavor) = self.memory()?;
        let stat_path = dir.join("memory.stat");
        let stat = fs::read_to_string(&stat_path)
            .map_err(io_err(&stat_path))?
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((k.to_string(), v.trim().parse().ok()?))
            })
            .collect();
        Ok(match flavor {
            Flavor::V2 => {
                let events = read_optional(&dir.join("memory.events"))?.unwrap_or_default();
                let oom_kills = keyed_value(&events, "oom_kill").unwrap_or(0);
                let swap_peak = read_u64(&dir.join("memory.swap.peak"))?;
                // The kernel counts swap.events "max" only when it tries to swap past
                // swap.max; a cgroup whose swap is full is not even scanned for swapping
                // (reclaim stops a little short of the limit) and goes to the OOM
                // killer. So: the OOM kills of a container whose swap peaked at its limit
                // (within 1/32 of it: 6.12 was seen stopping 15 to 62 pages short of 4096).
                let swap_full = match (swap_peak, read_u64(&dir.join("memory.swap.max"))?) {
                    (Some(peak), Some(max)) => peak.saturating_add((max / 32).max(32 * crate::ubc::page_size())) >= max,
                    _ => false,
                };
                let swap_events = read_keyed(&dir.join("memory.swap.events"), "max")?;
                MemoryUsage {
                    current: read_u64(&dir.join("memory.current"))?.unwrap_or(0),
                    peak: read_u64(&dir.join("memory.peak"))?,
                    limit_hits: keyed_value(&events, "max").unwrap_or(0).max(oom_kills),
                    swap_current: read_u64(&dir.join("memory.swap.current"))?,
                    swap_peak,
                    swap_limit_hits: swap_events.map(|e| if swap_full { e.max(oom_kills) } else { e }),
                    kmem_current: None,
                    kmem_peak: None,
                    stat,
                }
            }
            Flavor::V1 => {
                let current = read_u64(&dir.join("memory.usage_in_bytes"))?.unwrap_or(0);
                // memsw counts RAM + swap; without swap accounting the files are absent.
                let memsw = read_u64(&dir.join("memory.memsw.usage_in_bytes"))?;
                let oom_kills = read_keyed(&dir.join("memory.oom_control"), "oom_kill")?.unwrap_or(0);
                // Linux 6.18 leaves memsw.failcnt at 0 when RAM + swap is full (its page counter
                // no longer counts failures there): then the OOM kills of a container whose
                // RAM + swap has reached its limit are the limit's hits.
                let memsw_full = match (
                    read_u64(&dir.join("memory.memsw.max_usage_in_bytes"))?,
                    read_u64(&dir.join("memory.memsw.limit_in_bytes"))?,
                ) {
                    (Some(peak), Some(limit)) => peak >= limit,
                    _ => false,
                };
                let memsw_hits =
                    read_u64(&dir.join("memory.memsw.failcnt"))?.map(|f| if memsw_full { f.max(oom_kills) } else { f });
                MemoryUsage {
                    current,
                    peak: read_u64(&dir.join("memory.max_usage_in_bytes"))?,
                    // v1 charges RAM+swap (memsw) first: a charge refused there never reaches
                    // the RAM counter, so each refusal is in exactly one of the two failcnts.
                    limit_hits: (read_u64(&dir.join("memory.failcnt"))?.unwrap_or(0) + memsw_hits.unwrap_or(0))
                        .max(oom_kills),
                    swap_current: memsw.map(|m| m.saturating_sub(current)),
                    swap_peak: None,
                    swap_limit_hits: memsw_hits,
                    kmem_current: read_u64(&dir.join("memory.kmem.usage_in_bytes"))?,
                    kmem_peak: read_u64(&dir.join("memory.kmem.max_usage_in_bytes"))?,
                    stat,
                }
            }
        })
    }

    /// RAM and swap limits in bytes; None lifts the limit.
    pub fn set_memory_limits(&self, ram: Option<u64>, swap: Option<u64>) -> Result<(), CgroupError> {
        let (dir, flavor) = self.memory()?;
        let write = |file: &str, value: String| {
            let path = dir.join(file);
            fs::write(&path, value).map_err(io_err(&path))
        };
        match flavor {
            Flavor::V2 => {
                write("memory.max", ram.map_or("max".into(), |b| b.to_string()))?;
                if dir.join("memory.swap.max").exists() {
                    write("memory.swap.max", swap.map_or("max".into(), |b| b.to_string()))?;
                }
            }
            Flavor::V1 => {
                let memsw = dir.join("memory.memsw.limit_in_bytes").exists();
                // v1 refuses a memory limit above memsw's and the reverse: lift memsw first.
                if memsw {
                    write("memory.memsw.limit_in_bytes", "-1".into())?;
                }
                write("memory.limit_in_bytes", ram.map_or("-1".into(), |b| b.to_string()))?;
                if memsw {
                    let both = ram.zip(swap).map(|(r, s)| r.saturating_add(s));
                    write(
                        "memory.memsw.limit_in_bytes",
                        both.map_or("-1".into(), |b| b.to_string()),
                    )?;
                }
            }
        }
        Ok(())
    }
}

impl ContainerCgroup {
    /// The kernel's memory guarantees (cgroup v2): `low` protects from reclaim as far as it can,
    /// `min` always; bytes, None for none. Returns false where the controller has no such knobs
    /// (v1), so that the caller can say the guarantee is not kept there.
    pub fn set_memory_guarantees(&self, low: Option<u64>, min: Option<u64>) -> Result<bool, CgroupError> {
        let (dir, flavor) = self.memory()?;
        if flavor == Flavor::V1 {
            return Ok(false);
        }
        for (file, value) in [("memory.low", low), ("memory.min", min)] {
            let path = dir.join(file);
            fs::write(&path, value.unwrap_or(0).to_string()).map_err(io_err(&path))?;
        }
        Ok(true)
    }
}
