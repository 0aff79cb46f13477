//! The pinned beancounter maps of one instance, opened by path: tallyd writes limits here and
//! readers (`tally ubc`, tests) read counters without loading the object again.

use aya::maps::{HashMap, Map, MapData, MapError, PerCpuArray};
use tally_common::{errors, map_name, program, ChargeKey, Counters, Limits, Traffic, CHARGE_BUCKETS, CHARGE_SLOTS};

use super::{pins::PinLayout, KernelError};

/// Failures counted inside the programs: [program][kind].
pub type ProgramFailures = [[u64; errors::KINDS as usize]; program::COUNT as usize];

pub struct BeancounterMaps {
    counters: HashMap<MapData, u64, Counters>,
    limits: HashMap<MapData, u64, Limits>,
    errors: PerCpuArray<MapData, u64>,
}

const BPF_NOEXIST: u64 = 1;

fn open(pins: &PinLayout, name: &'static str) -> Result<MapData, KernelError> {
    let path = pins.map(name);
    if !path.exists() {
        return Err(KernelError::NotLoaded(pins.root.clone()));
    }
    MapData::from_pin(&path).map_err(|source| KernelError::Map { name, source })
}

impl BeancounterMaps {
    pub fn open(pins: &PinLayout) -> Result<Self, KernelError> {
        let typed = |name: &'static str| move |source: MapError| KernelError::Map { name, source };
        Ok(BeancounterMaps {
            counters: HashMap::try_from(Map::HashMap(open(pins, map_name::COUNTERS)?))
                .map_err(typed(map_name::COUNTERS))?,
            limits: HashMap::try_from(Map::HashMap(open(pins, map_name::LIMITS)?)).map_err(typed(map_name::LIMITS))?,
            errors: PerCpuArray::try_from(Map::PerCpuArray(open(pins, map_name::ERRORS)?))
                .map_err(typed(map_name::ERRORS))?,
        })
    }

    /// Makes `cgid` a container with `limits`. Its counters row is created zeroed only if it
    /// does not exist yet: a restarted tallyd re-registering a container keeps its counters.
    pub fn register(&mut self, cgid: u64, limits: &Limits) -> Result<(), KernelError> {
        match self.counters.insert(cgid, Counters::default(), BPF_NOEXIST) {
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
            other => other.map_err(|source| KernelError::Map {
                name: map_name::COUNTERS,
                source,
            })?,
        }
        self.set_limits(cgid, limits)
    }

    /// Replaces the barriers and limits (one map update: programs see old or new, never a mix).
    pub fn set_limits(&mut self, cgid: u64, limits: &Limits) -> Result<(), KernelError> {
        self.limits.insert(cgid, limits, 0).map_err(|source| KernelError::Map {
            name: map_name::LIMITS,
            source,
        })
    }

    pub fn counters(&self, cgid: u64) -> Result<Option<Counters>, KernelError> {
        get(&self.counters, cgid, map_name::COUNTERS)
    }

    pub fn limits(&self, cgid: u64) -> Result<Option<Limits>, KernelError> {
        get(&self.limits, cgid, map_name::LIMITS)
    }

    /// Forgets the container: programs stop charging it (limits row first) and its counters go.
    pub fn unregister(&mut self, cgid: u64) -> Result<(), KernelError> {
        for (map, name) in [
            (&mut self.limits as &mut dyn Remove, map_name::LIMITS),
            (&mut self.counters, map_name::COUNTERS),
        ] {
            match map.remove_key(cgid) {
                Err(MapError::KeyNotFound) => {}
                other => other.map_err(|source| KernelError::Map { name, source })?,
            }
        }
        Ok(())
    }

    /// Failures inside programs, summed over CPUs: [program][kind] (tally_common::program,
    /// tally_common::errors).
    pub fn program_failures(&self) -> Result<ProgramFailures, KernelError> {
        let mut out = [[0; errors::KINDS as usize]; program::COUNT as usize];
        for (p, kinds) in out.iter_mut().enumerate() {
            for (k, slot) in kinds.iter_mut().enumerate() {
                let index = p as u32 * errors::KINDS + k as u32;
                let per_cpu = self.errors.get(&index, 0).map_err(|source| KernelError::Map {
                    name: map_name::ERRORS,
                    source,
                })?;
                *slot = per_cpu.iter().sum();
            }
        }
        Ok(out)
    }
}

fn get<V: aya::Pod>(map: &HashMap<MapData, u64, V>, key: u64, name: &'static str) -> Result<Option<V>, KernelError> {
    match map.get(&key, 0) {
        Ok(v) => Ok(Some(v)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(source) => Err(KernelError::Map { name, source }),
    }
}

/// Removal over both value types, so that unregister walks the two maps in one loop.
trait Remove {
    fn remove_key(&mut self, key: u64) -> Result<(), MapError>;
}

impl<V: aya::Pod> Remove for HashMap<MapData, u64, V> {
    fn remove_key(&mut self, key: u64) -> Result<(), MapError> {
        self.remove(&key)
    }
}

/// The pinned `traffic` map: each container's bytes and packets in and out, as the
/// cgroup_skb programs count them (read by the exporter when scraped).
pub struct TrafficMap {
    traffic: HashMap<MapData, u64, Traffic>,
}

impl TrafficMap {
    pub fn open(pins: &PinLayout) -> Result<Self, KernelError> {
        Ok(TrafficMap {
            traffic: HashMap::try_from(Map::HashMap(open(pins, map_name::TRAFFIC)?)).map_err(|source| {
                KernelError::Map {
                    name: map_name::TRAFFIC,
                    source,
                }
            })?,
        })
    }

    /// The container's traffic; zero before its first packet.
    pub fn traffic(&self, cgid: u64) -> Result<Traffic, KernelError> {
        Ok(get(&self.traffic, cgid, map_name::TRAFFIC)?.unwrap_or_default())
    }

    /// Drops the rows of cgroups that are no longer containers (no limits row): the programs
    /// make rows, and nothing else removes them when a container goes. Returns how many went.
    pub fn forget_unregistered(&mut self, beancounters: &BeancounterMaps) -> Result<usize, KernelError> {
        let keys: Vec<u64> = self.traffic.keys().flatten().collect();
        let mut gone = 0;
        for cgid in keys {
            if beancounters.limits(cgid)?.is_none() {
                match self.traffic.remove(&cgid) {
                    Ok(()) | Err(MapError::KeyNotFound) => gone += 1,
                    Err(source) => {
                        return Err(KernelError::Map {
                            name: map_name::TRAFFIC,
                            source,
                        })
                    }
                }
            }
        }
        Ok(gone)
    }
}

/// How full one of the instance's maps of containers and charge records is.
#[derive(Clone, Debug)]
pub struct MapFill {
    pub name: &'static str,
    pub entries: u64,
    pub capacity: u32,
}

/// Entries and capacity of the instance's maps of containers and charge records (counters,
/// limits, charge_table, charges, traffic). The hash maps' entries are counted by walking the
/// keys (one syscall per entry); charge_table's by the programs.
pub fn map_fill(pins: &PinLayout) -> Result<Vec<MapFill>, KernelError> {
    Ok(vec![
        fill::<u64, Counters>(pins, map_name::COUNTERS)?,
        fill::<u64, Limits>(pins, map_name::LIMITS)?,
        charge_table_fill(pins)?,
        fill::<ChargeKey, u64>(pins, map_name::CHARGES)?,
        fill::<u64, Traffic>(pins, map_name::TRAFFIC)?,
    ])
}

/// The records in `charge_table` (an array, not a hash map: the programs count them, per CPU,
/// in `charge_table_entries`; the sum of the per-CPU deltas, wrapping, is the count).
fn charge_table_fill(pins: &PinLayout) -> Result<MapFill, KernelError> {
    let name = map_name::CHARGE_TABLE_ENTRIES;
    let typed = |source: MapError| KernelError::Map { name, source };
    let counts: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(Map::PerCpuArray(open(pins, name)?)).map_err(typed)?;
    let entries = counts
        .get(&0, 0)
        .map_err(typed)?
        .iter()
        .fold(0u64, |sum, n| sum.wrapping_add(*n));
    Ok(MapFill {
        name: map_name::CHARGE_TABLE,
        entries,
        capacity: CHARGE_BUCKETS * CHARGE_SLOTS as u32,
    })
}

/// How full one of the instance's hash maps is, its entries counted by walking the keys.
fn fill<K: aya::Pod, V: aya::Pod>(pins: &PinLayout, name: &'static str) -> Result<MapFill, KernelError> {
    let typed = |source: MapError| KernelError::Map { name, source };
    let data = open(pins, name)?;
    let capacity = data.info().map_err(typed)?.max_entries();
    let map: HashMap<MapData, K, V> = HashMap::try_from(Map::HashMap(data)).map_err(typed)?;
    let entries = map.keys().filter(Result::is_ok).count() as u64;
    Ok(MapFill {
        name,
        entries,
        capacity,
    })
}
