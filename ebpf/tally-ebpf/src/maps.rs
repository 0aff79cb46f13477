//! Every map of the object. Userspace pins the long-lived ones under /sys/fs/bpf/tally/maps
//! so that enforcement and counters outlive tallyd.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use tally_common::{
    stat, ChargeKey, Counters, FileKey, FileReadCounts, Limits, Traffic, EVENTS_BYTES, MAX_CHARGED_OBJECTS,
    MAX_CONTAINERS, MAX_FILE_READS,
};

use crate::lsm::read::ReadInFlight;

/// cgroup2 id -> every row's held/maxheld/failcnt. Written by programs (atomically);
/// userspace creates the zeroed row when it registers a container.
#[map(name = "counters")]
pub static COUNTERS: HashMap<u64, Counters> = HashMap::with_max_entries(MAX_CONTAINERS, 0);

/// cgroup2 id -> every row's barrier/limit. Written by userspace only; presence marks a
/// container.
#[map(name = "limits")]
pub static LIMITS: HashMap<u64, Limits> = HashMap::with_max_entries(MAX_CONTAINERS, 0);

/// (object, row) -> cgroup2 id charged for it, so that the free side (which runs in whatever
/// context drops the last reference) uncharges the container that was charged.
#[map(name = "charges")]
pub static CHARGES: HashMap<ChargeKey, u64> = HashMap::with_max_entries(MAX_CHARGED_OBJECTS, 0);

/// Limit-hit events (tally_common::LimitHit), rate-limited per container and row.
#[map(name = "events")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// cgroup2 id -> the container's traffic (cgroup/skb.rs). The programs create a container's
/// row at its first packet; userspace drops the rows of cgroups that are no longer containers.
#[map(name = "traffic")]
pub static TRAFFIC: HashMap<u64, Traffic> = HashMap::with_max_entries(MAX_CONTAINERS, 0);

/// (container, dev, inode) -> what the container read of that file (trace/read.rs). An LRU
/// hash: when full, the least recently read file makes room, so counting never fails.
#[map(name = "file_reads")]
pub static FILE_READS: LruHashMap<FileKey, FileReadCounts> = LruHashMap::with_max_entries(MAX_FILE_READS, 0);

/// pid_tgid -> the files the thread's read syscall in progress has read (full tier:
/// file_permission adds them, fexit on the syscall counts them and removes the entry). Not
/// pinned: only calls in progress live here; an LRU hash, so that an entry left behind (a call
/// that began before the programs were attached) never blocks another.
#[map(name = "reads_in_flight")]
pub static READS_IN_FLIGHT: LruHashMap<u64, ReadInFlight> = LruHashMap::with_max_entries(16384, 0);

/// Failure counters (see tally_common::stat), per CPU.
#[map(name = "stats")]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

pub fn bump_stat(index: u32) {
    if let Some(p) = STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, this program is not preempted by another on this CPU while
        // it runs a non-sleepable hook; p comes from a successful lookup.
        unsafe { *p += 1 };
    }
}
