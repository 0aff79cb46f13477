//! Types shared by tally's eBPF programs and its userspace: the per-container beancounter
//! rows as the kernel side stores them, the map names, and the resource indices.
//!
//! Everything here is `#[repr(C)]` with explicit padding and compile-time size checks, so
//! the BPF and userspace views of a map value are the same bytes.
#![cfg_attr(not(test), no_std)]

/// Number of beancounter rows, in OpenVZ kernel order (`kmemsize` = 0 ... `swappages` = 24,
/// dummy rows included so that indices match `/proc/user_beancounters`).
pub const RESOURCE_COUNT: usize = 25;

/// Row indices, OpenVZ kernel order. Only the rows that BPF programs charge are named here;
/// the full model (names, units, semantics) lives in userspace (`tally::ubc`).
pub mod res {
    pub const NUMPROC: usize = 5;
    pub const NUMTCPSOCK: usize = 9;
    pub const NUMFLOCK: usize = 10;
    pub const NUMPTY: usize = 11;
    pub const NUMOTHERSOCK: usize = 17;
    pub const NUMFILE: usize = 19;
}

/// The value OpenVZ shows for "no limit": LONG_MAX on 64-bit.
pub const UNLIMITED: u64 = i64::MAX as u64;

/// What a container has of one resource, kept by the BPF programs (userspace only reads it,
/// except when it creates the zeroed row before the container's first process exists).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// In use now.
    pub held: u64,
    /// Peak of `held` since the row was created (moves only on successful charges).
    pub maxheld: u64,
    /// Refused charges, monotonic.
    pub failcnt: u64,
    /// When this row last emitted a limit-hit event (ktime ns): events are rate-limited per
    /// container and row; failcnt keeps the full count.
    pub last_event_ns: u64,
}

/// A container's barrier and limit for one resource, written only by userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    pub barrier: u64,
    pub limit: u64,
}

impl Limit {
    pub const UNLIMITED: Limit = Limit {
        barrier: UNLIMITED,
        limit: UNLIMITED,
    };
}

impl Default for Limit {
    fn default() -> Self {
        Limit::UNLIMITED
    }
}

/// Value of the `counters` map: every row of one container.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counters {
    pub rows: [Counter; RESOURCE_COUNT],
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            rows: [Counter::default(); RESOURCE_COUNT],
        }
    }
}

/// Value of the `limits` map: every row of one container. A cgroup id present in this map
/// is a container; programs leave every other cgroup alone.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub rows: [Limit; RESOURCE_COUNT],
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            rows: [Limit::UNLIMITED; RESOURCE_COUNT],
        }
    }
}

/// Key of the `charges` map: one charged object (a task, a file, a socket) for one row. An
/// object may be charged for several rows (a ptmx file: numfile and numpty).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ChargeKey {
    /// The kernel object's address (task_struct, file, sock).
    pub object: u64,
    pub resource: u32,
    pub _pad: u32,
}

/// Records per bucket of `charge_table`.
pub const CHARGE_SLOTS: usize = 8;
/// Buckets of `charge_table` (a power of two: the bucket is the top bits of a hash).
pub const CHARGE_BUCKETS: u32 = 1 << CHARGE_BUCKET_BITS;
const CHARGE_BUCKET_BITS: u32 = 16;

/// One record of `charge_table`: `key` is [`charge_slot_key`] (0: free), `cgroup_id` the
/// container charged.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChargeSlot {
    pub key: u64,
    pub cgroup_id: u64,
}

/// A value of `charge_table`: the records of the objects whose address hashes here, every
/// row of one object in the same bucket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChargeBucket {
    pub slots: [ChargeSlot; CHARGE_SLOTS],
}

/// The record key of (object, row): the row in the low 6 bits, so one word says both and a
/// compare-exchange claims a slot. Never 0 (row + 1). Kernel addresses lose only their top
/// bits, which all of them share; socket cookies are far below 2^58.
#[inline(always)]
pub fn charge_slot_key(object: u64, resource: usize) -> u64 {
    (object << 6) | (resource as u64 + 1)
}

/// The bucket of an object: Fibonacci hashing of its address (or cookie), top bits.
#[inline(always)]
pub fn charge_bucket(object: u64) -> u32 {
    (object.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - CHARGE_BUCKET_BITS)) as u32
}

/// A refused charge, as the `events` ring buffer carries it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitHit {
    pub cgroup_id: u64,
    pub resource: u32,
    pub _pad: u32,
    /// failcnt after this refusal (the rise since the previous event counts the ones the
    /// rate limit held back).
    pub failcnt: u64,
    pub held: u64,
    pub barrier: u64,
    /// ktime (CLOCK_MONOTONIC) ns.
    pub time_ns: u64,
}

/// Value of the `traffic` map: what one container's sockets sent and received, counted by
/// the cgroup_skb programs (IP packets, GSO/GRO aggregates counted as their segments).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
}

/// Key of the `file_reads` map: one file as one container reads it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    /// The reader's container (cgroup2 id).
    pub cgroup_id: u64,
    pub ino: u64,
    /// The file's `i_sb->s_dev`, as the kernel encodes it: `major << 20 | minor`.
    pub dev: u32,
    pub _pad: u32,
}

/// Value of the `file_reads` map: what one container read of one file.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileReadCounts {
    /// Read calls (read, pread64, readv, preadv, preadv2, sendfile, splice, copy_file_range)
    /// that returned without error, EOF included.
    pub reads: u64,
    /// What those calls returned, summed.
    pub bytes: u64,
    /// When the last of them returned: bpf_ktime_get_ns, CLOCK_MONOTONIC ns.
    pub last_read_ns: u64,
}

/// Capacity of `file_reads`, an LRU hash: the least recently read files leave first, so an
/// insert is never refused.
pub const MAX_FILE_READS: u32 = 65536;

/// At most one limit-hit event per container and row per this many ns.
pub const EVENT_INTERVAL_NS: u64 = 1_000_000_000;
/// Size of the `events` ring buffer.
pub const EVENTS_BYTES: u32 = 256 * 1024;

/// Indices of the `stats` per-CPU array: things that went wrong inside programs, exported so
/// that a silent accounting gap shows up as a number.
/// What can fail inside a program, counted per program and kind in the `errors` map (slot
/// `program * errors::KINDS + kind`, per CPU).
pub mod errors {
    /// A charge could not be recorded: its `charge_table` bucket and the `charges` map were
    /// full (the charge was undone and, where the hook can, refused).
    pub const CHARGE_MAP_FULL: u32 = 0;
    /// An uncharge found no counters row (the container was removed while objects lived).
    pub const UNCHARGE_ORPHAN: u32 = 1;
    /// A limit-hit event found the ring buffer full (tallyd not reading).
    pub const EVENTS_LOST: u32 = 2;
    /// A container (a limits row) without its counters row: nothing charged.
    pub const COUNTERS_MISSING: u32 = 3;
    pub const KINDS: u32 = 4;
    /// As tally_bpf_errors_total's `kind` label says them.
    pub const KIND_NAMES: [&str; KINDS as usize] =
        ["charge_map_full", "uncharge_orphan", "events_lost", "counters_missing"];
}

/// The programs that charge or uncharge, by number (for the `errors` map), named as the
/// object names them.
pub mod program {
    pub const TASK_ALLOC: u32 = 0;
    pub const TASK_FREE: u32 = 1;
    pub const RELEASE_TASK: u32 = 2;
    pub const SCHED_PROCESS_FORK: u32 = 3;
    pub const FORK_INTO_CGROUP: u32 = 4;
    pub const CGROUP_ATTACH_TASK: u32 = 5;
    pub const SCHED_PROCESS_EXIT: u32 = 6;
    pub const SCHED_PROCESS_FREE: u32 = 7;
    pub const FILE_OPEN: u32 = 8;
    pub const FILE_LOCK: u32 = 9;
    pub const FILE_FREE_SECURITY: u32 = 10;
    pub const SOCKET_POST_CREATE: u32 = 11;
    pub const SOCKET_ACCEPT: u32 = 12;
    pub const SOCK_GRAFT: u32 = 13;
    pub const SK_FREE_SECURITY: u32 = 14;
    pub const SOCK_CREATE: u32 = 15;
    pub const SOCK_RELEASE: u32 = 16;
    pub const COUNT: u32 = 17;
    pub const NAMES: [&str; COUNT as usize] = [
        "task_alloc",
        "task_free",
        "release_task",
        "sched_process_fork",
        "fork_into_cgroup",
        "cgroup_attach_task",
        "sched_process_exit",
        "sched_process_free",
        "file_open",
        "file_lock",
        "file_free_security",
        "socket_post_create",
        "socket_accept",
        "sock_graft",
        "sk_free_security",
        "sock_create",
        "sock_release",
    ];
}

/// Slots of the `errors` map.
pub const ERROR_SLOTS: u32 = program::COUNT * errors::KINDS;

/// Map names, as the object declares them and as they are pinned under `/sys/fs/bpf/tally/maps`.
pub mod map_name {
    pub const COUNTERS: &str = "counters";
    pub const LIMITS: &str = "limits";
    pub const CHARGES: &str = "charges";
    pub const ERRORS: &str = "errors";
    pub const EVENTS: &str = "events";
    pub const TRAFFIC: &str = "traffic";
    pub const FILE_READS: &str = "file_reads";
    pub const CHARGE_TABLE: &str = "charge_table";
    pub const CHARGE_TABLE_ENTRIES: &str = "charge_table_entries";
    pub const CHARGES_IN_HASH: &str = "charges_in_hash";
}

/// Capacity of the maps keyed by container (cgroup id).
pub const MAX_CONTAINERS: u32 = 8192;
/// Capacity of `charges`, the hash map that takes the records a full `charge_table` bucket
/// cannot: charged objects (tasks, files, sockets, locks, ptys) beyond the table's.
pub const MAX_CHARGED_OBJECTS: u32 = 262144;

const _: () = assert!(core::mem::size_of::<Counter>() == 32);
const _: () = assert!(core::mem::size_of::<Limit>() == 16);
const _: () = assert!(core::mem::size_of::<Counters>() == 32 * RESOURCE_COUNT);
const _: () = assert!(core::mem::size_of::<LimitHit>() == 48);
const _: () = assert!(core::mem::size_of::<Limits>() == 16 * RESOURCE_COUNT);
const _: () = assert!(core::mem::size_of::<ChargeKey>() == 16);
const _: () = assert!(core::mem::size_of::<ChargeBucket>() == 16 * CHARGE_SLOTS);
const _: () = assert!(RESOURCE_COUNT < 63);
const _: () = assert!(core::mem::size_of::<Traffic>() == 32);
const _: () = assert!(core::mem::size_of::<FileKey>() == 24);
const _: () = assert!(core::mem::size_of::<FileReadCounts>() == 24);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are #[repr(C)] structs of u64/u32 fields with explicit padding (sizes asserted above), so
    // every bit pattern is valid and there is no padding.
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::Limit {}
    unsafe impl aya::Pod for super::Counters {}
    unsafe impl aya::Pod for super::Limits {}
    unsafe impl aya::Pod for super::ChargeKey {}
    unsafe impl aya::Pod for super::ChargeBucket {}
    unsafe impl aya::Pod for super::LimitHit {}
    unsafe impl aya::Pod for super::Traffic {}
    unsafe impl aya::Pod for super::FileKey {}
    unsafe impl aya::Pod for super::FileReadCounts {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kernel addresses of objects (a slab's neighbours, far apart, the top of the address
    /// space) and socket cookies.
    const OBJECTS: [u64; 6] = [
        0xffff_8881_0a2b_3c00,
        0xffff_8881_0a2b_3d00,
        0xffff_c900_0001_0000,
        0xffff_ffff_ffff_ffc0,
        1,
        4096,
    ];

    #[test]
    fn every_object_and_row_has_its_own_nonzero_record_key() {
        let mut keys = std::collections::HashSet::new();
        for object in OBJECTS {
            for res in 0..RESOURCE_COUNT {
                let key = charge_slot_key(object, res);
                assert_ne!(key, 0, "0 marks a free slot");
                assert!(keys.insert(key), "{object:#x} row {res} shares key {key:#x}");
            }
        }
    }

    #[test]
    fn an_objects_rows_share_a_bucket_inside_the_table() {
        for object in OBJECTS {
            assert!(charge_bucket(object) < CHARGE_BUCKETS);
        }
        // Neighbouring slab objects spread over buckets instead of piling into one.
        let buckets: std::collections::HashSet<u32> = (0..4096u64)
            .map(|i| charge_bucket(0xffff_8881_0000_0000 + i * 256))
            .collect();
        assert!(buckets.len() > 4000, "{} buckets for 4096 neighbours", buckets.len());
    }
}

/// A file as the read statistics key it: its inode number and its superblock's dev_t.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub ino: u64,
    pub dev: u32,
    /// 1: an overlayfs file, which reads a real file behind it.
    pub overlay: u32,
}

/// At most this many files per read call: the overlay file, the real one, and one more
/// (an overlay over an overlay).
pub const FILES_PER_READ: usize = 3;

/// Value of the programs' `reads_in_flight` map: the files one read syscall has read so far.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ReadInFlight {
    pub cgroup_id: u64,
    pub count: u64,
    pub files: [FileId; FILES_PER_READ],
}

/// The devices a container may use: the character nodes its /dev is made of (the launcher
/// makes them, the cgroup device program lets nothing else be opened or made), the ptmx of its
/// private devpts and its ptys.
pub mod devices {
    /// /dev/NAME, (major, minor).
    pub const NODES: [(&str, u32, u32); 6] = [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ];
    /// The nodes' numbers alone, for the program (which holds no strings).
    pub const NUMBERS: [(u32, u32); NODES.len()] = {
        let mut out = [(0, 0); NODES.len()];
        let mut i = 0;
        while i < NODES.len() {
            out[i] = (NODES[i].1, NODES[i].2);
            i += 1;
        }
        out
    };
    /// /dev/ptmx (a link to the devpts instance's own ptmx, whose node is this).
    pub const PTMX: (u32, u32) = (5, 2);
    /// The pty slaves (/dev/pts/N): UNIX98_PTY_SLAVE_MAJOR and the 7 majors after it.
    pub const PTS_MAJORS: core::ops::RangeInclusive<u32> = 136..=143;
}

/// The syscalls whose reads the file-read statistics count, in one order for the programs and
/// for userspace.
pub mod read_syscalls {
    /// (x86-64 syscall number, the argument that is the descriptor read from).
    pub const NUMBERS: [(u64, u8); 8] = [
        (0, 0),   // read
        (17, 0),  // pread64
        (19, 0),  // readv
        (295, 0), // preadv
        (327, 0), // preadv2
        (40, 1),  // sendfile(out_fd, in_fd, ...)
        (275, 0), // splice
        (326, 0), // copy_file_range
    ];
    /// (the syscall's name, the full tier's fexit program on it, that program's hook: the
    /// syscall's x86-64 entry point).
    pub const PROGRAMS: [(&str, &str, &str); 8] = [
        ("read", "read_exit", "__x64_sys_read"),
        ("pread64", "pread64_exit", "__x64_sys_pread64"),
        ("readv", "readv_exit", "__x64_sys_readv"),
        ("preadv", "preadv_exit", "__x64_sys_preadv"),
        ("preadv2", "preadv2_exit", "__x64_sys_preadv2"),
        ("sendfile", "sendfile_exit", "__x64_sys_sendfile64"),
        ("splice", "splice_exit", "__x64_sys_splice"),
        ("copy_file_range", "copy_range_exit", "__x64_sys_copy_file_range"),
    ];
}
