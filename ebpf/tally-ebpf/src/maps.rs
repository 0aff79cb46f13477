//! Every map of the object. Userspace pins the long-lived ones under /sys/fs/bpf/tally/maps
//! so that enforcement and counters outlive tallyd.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use tally_common::{
    errors, ChargeBucket, ChargeKey, Counters, FileKey, FileReadCounts, Limits, ReadInFlight, Traffic, CHARGE_BUCKETS,
    ERROR_SLOTS, EVENTS_BYTES, MAX_CHARGED_OBJECTS, MAX_CONTAINERS, MAX_FILE_READS,
};

/// cgroup2 id -> every row's held/maxheld/failcnt. Written by programs (atomically);
/// userspace creates the zeroed row when it registers a container.
#[map(name = "counters")]
pub static COUNTERS: HashMap<u64, Counters> = HashMap::with_max_entries(MAX_CONTAINERS, 0);

/// cgroup2 id -> every row's barrier/limit. Written by userspace only; presence marks a
/// container.
#[map(name = "limits")]
pub static LIMITS: HashMap<u64, Limits> = HashMap::with_max_entries(MAX_CONTAINERS, 0);

/// Who pays for each charged object (record.rs): buckets of (object, row) -> cgroup2 id, so
/// that the free side (which runs in whatever context drops the last reference) uncharges the
/// container that was charged. An array: finding a bucket is an address computation.
#[map(name = "charge_table")]
pub static CHARGE_TABLE: Array<ChargeBucket> = Array::with_max_entries(CHARGE_BUCKETS, 0);

/// The records in `charge_table`, as per-CPU deltas whose sum is the count (for
/// `tally_bpf_map_entries`; an atomic add on the CPU's own slot, never contended).
#[map(name = "charge_table_entries")]
pub static CHARGE_TABLE_ENTRIES: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The records a full `charge_table` bucket could not take: (object, row) -> cgroup2 id.
#[map(name = "charges")]
pub static CHARGES: HashMap<ChargeKey, u64> = HashMap::with_max_entries(MAX_CHARGED_OBJECTS, 0);

/// How many records `charges` holds: while 0, a record missing from its bucket is missing
/// altogether and no program looks in the hash map.
#[map(name = "charges_in_hash")]
pub static CHARGES_IN_HASH: Array<u64> = Array::with_max_entries(1, 0);

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

/// What failed inside which program (tally_common::errors, tally_common::program), per CPU.
#[map(name = "errors")]
pub static ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(ERROR_SLOTS, 0);

/// Counts one failure of `kind` in program `program`.
#[inline(always)]
pub fn error(program: u32, kind: u32) {
    if let Some(p) = ERRORS.get_ptr_mut(program * errors::KINDS + kind) {
        // SAFETY: per-CPU slot, this program is not preempted by another on this CPU while
        // it runs a non-sleepable hook; p comes from a successful lookup.
        unsafe { *p += 1 };
    }
}
