//! Where each beancounter row's numbers come from on each tier, what its limits are given to,
//! and whether it is enforced: declared once, here. The declaration drives how tallyd reads a
//! row (ct::accounting), which controller files its limits go to, `tally check`'s text and the
//! row table of docs/rows.md (a test renders it from here). The match below has no catch-all
//! arm: a row added to `Resource` does not compile until it has its sources.

use super::Tier;
use crate::ubc::Resource;

/// Where a row's held (and maxheld) comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// tally's programs keep held, maxheld and failcnt in the pinned counters map.
    Programs,
    /// A figure of the container's memory controller.
    Memory(MemoryFigure),
    /// Sampled from the container's processes when the row is read.
    Sampled(Sample),
    /// No held of its own: a guarantee (as in OpenVZ).
    Nothing,
    /// Not kept on this tier: held 0.
    NotKept,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryFigure {
    /// Usage and peak; failcnt from the limit's hits.
    Ram,
    /// Swap in use and its peak; failcnt from swap's limit hits.
    Swap,
    /// RAM and swap in use.
    RamAndSwap,
    /// Kernel memory: memory.kmem.* on v1, memory.stat's kernel on v2.
    Kernel,
    /// memory.stat's slab_reclaimable.
    SlabReclaimable,
    /// memory.stat's shmem.
    Shmem,
    /// memory.stat's unevictable.
    Unevictable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sample {
    /// VmData + VmStk of the container's processes.
    PrivateVm,
    /// Per-socket memory (sock_diag meminfo) over the container's sockets, by queue.
    TcpSendQueues,
    TcpReceiveQueues,
    OtherSent,
    DatagramReceive,
    /// nftables rules and legacy iptables entries of the container's own netns.
    NetfilterEntries,
    /// The kernel's per-user queued-signal counts of the container's user namespace.
    QueuedSignals,
}

/// Who refuses a charge over the row's barrier (or limit), if anyone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enforcement {
    /// tally's programs refuse (BPF LSM, or cgroup/sock in the fallback tier); they count failcnt.
    Programs,
    /// The pids controller refuses at pids.max = the limit; failcnt from pids.events.
    PidsController,
    /// The memory controller (OOM kill past the limit); failcnt from its limit hits.
    MemoryController,
    /// Counted, not refused.
    Accounted,
    /// The barrier is a guarantee the memory controller gives.
    Guarantee,
    /// Not kept on this tier.
    NotKept,
}

impl Enforcement {
    /// The word `tally check` prints.
    pub fn word(self) -> &'static str {
        match self {
            Enforcement::Programs | Enforcement::PidsController | Enforcement::MemoryController => "enforced",
            Enforcement::Accounted => "accounted",
            Enforcement::Guarantee => "guarantee",
            Enforcement::NotKept => "not kept",
        }
    }
}

/// Where a row's barrier and limit go besides the limits map (which every row has).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitTo {
    /// The limits map alone (programs read it; sampled rows show it).
    Map,
    /// pids.max = the limit.
    PidsMax,
    /// memory.max (memory.limit_in_bytes on v1) = the limit: the RAM.
    MemoryMax,
    /// memory.swap.max (memsw = RAM + swap on v1) = the limit: the swap.
    SwapMax,
    /// memory.low = the barrier (cgroup v2).
    MemoryLow,
    /// memory.min = the barrier (cgroup v2).
    MemoryMin,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowSource {
    pub held: Held,
    pub enforcement: Enforcement,
    pub limit_to: LimitTo,
    /// One sentence of how the row is kept, for `tally check` and docs/rows.md.
    pub how: &'static str,
}

const NEEDS_LSM: &str = "not kept: needs BPF LSM (the full tier); shows held 0";

/// The sources of row `r` in `tier`; None for OpenVZ's dummy rows.
pub fn source(r: Resource, tier: Tier) -> Option<RowSource> {
    use Enforcement as E;
    use Resource::*;
    let row = |held, enforcement, limit_to, how| {
        Some(RowSource {
            held,
            enforcement,
            limit_to,
            how,
        })
    };
    let full = tier == Tier::Full;
    match r {
        Dummy4 | Dummy20 | Dummy21 | Dummy22 => None,
        NumProc if full => row(
            Held::Programs,
            E::Programs,
            LimitTo::Map,
            "BPF LSM task_alloc refuses with EAGAIN over the barrier; uncharged when the task is reaped (fentry \
             release_task), task_free as the safety net",
        ),
        NumProc => row(
            Held::Programs,
            E::PidsController,
            LimitTo::PidsMax,
            "pids controller refuses (pids.max = limit); held/maxheld from tracepoints (zombies are not held: \
             uncharged at exit); failcnt from pids.events",
        ),
        NumFile if full => row(
            Held::Programs,
            E::Programs,
            LimitTo::Map,
            "BPF LSM file_open refuses with ENFILE over the barrier; uncharged at file_free_security",
        ),
        NumFlock if full => row(
            Held::Programs,
            E::Programs,
            LimitTo::Map,
            "BPF LSM file_lock: a file holding locks is one numflock, ENOLCK over the barrier; uncharged at \
             unlock or file release",
        ),
        NumPty if full => row(
            Held::Programs,
            E::Programs,
            LimitTo::Map,
            "BPF LSM file_open of /dev/ptmx refuses with ENOSPC over the barrier",
        ),
        NumFile | NumFlock | NumPty => row(Held::NotKept, E::NotKept, LimitTo::Map, NEEDS_LSM),
        NumTcpSock if full => row(
            Held::Programs,
            E::Programs,
            LimitTo::Map,
            "BPF LSM socket_post_create refuses a TCP socket with ENOBUFS over the barrier; socket_accept \
             refuses accepted connections over the limit (a soft charge: the connection exists already); \
             uncharged at sk_free_security",
        ),
        NumOtherSock if full => row(
            Held::Programs,
            E::Programs,
            LimitTo::Map,
            "BPF LSM socket_post_create refuses every other socket (UDP, unix, raw, netlink) with ENOBUFS over \
             the barrier; uncharged at sk_free_security",
        ),
        NumTcpSock => row(
            Held::Programs,
            E::Programs,
            LimitTo::Map,
            "TCP sockets made in the container: cgroup/sock_create refuses (the kernel returns EPERM), \
             cgroup/sock_release uncharges; accepted connections are not counted",
        ),
        NumOtherSock => row(
            Held::Programs,
            E::Programs,
            LimitTo::Map,
            "inet sockets other than TCP (UDP, raw): cgroup/sock_create refuses (the kernel returns EPERM), \
             cgroup/sock_release uncharges; unix sockets are not counted",
        ),
        NumSigInfo => row(
            Held::Sampled(Sample::QueuedSignals),
            E::Accounted,
            LimitTo::Map,
            "containers with a user namespace (the default): the kernel's own per-user count of queued signals \
             (the ucounts behind RLIMIT_SIGPENDING, SigQ in /proc/PID/status) summed over the users of the \
             container's namespace, sampled when read; privileged containers share the host's counts and show \
             held 0; not refused: no hook sees a siginfo freed (__sigqueue_free is inlined on Debian's 6.1 and \
             6.12 kernels)",
        ),
        PhysPages => row(
            Held::Memory(MemoryFigure::Ram),
            E::MemoryController,
            LimitTo::MemoryMax,
            "memory controller: held/maxheld from its usage and peak, limit = RAM (memory.max or \
             memory.limit_in_bytes, OOM kill past it), failcnt from its limit hits (at least its OOM kills)",
        ),
        SwapPages => row(
            Held::Memory(MemoryFigure::Swap),
            E::MemoryController,
            LimitTo::SwapMax,
            "memory controller: swap in use; limit = swap (memory.swap.max, or memsw = RAM + swap on v1)",
        ),
        KmemSize => row(
            Held::Memory(MemoryFigure::Kernel),
            E::Accounted,
            LimitTo::Map,
            "memory controller: kernel memory (memory.stat's kernel on v2, memory.kmem.usage_in_bytes and its \
             peak on v1), in bytes; not refused",
        ),
        DcacheSize => row(
            Held::Memory(MemoryFigure::SlabReclaimable),
            E::Accounted,
            LimitTo::Map,
            "memory controller: reclaimable slab (memory.stat's slab_reclaimable: dentries and inodes above \
             all), in bytes; not refused",
        ),
        ShmPages => row(
            Held::Memory(MemoryFigure::Shmem),
            E::Accounted,
            LimitTo::Map,
            "memory controller: shared memory and tmpfs pages (memory.stat's shmem); not refused",
        ),
        LockedPages => row(
            Held::Memory(MemoryFigure::Unevictable),
            E::Accounted,
            LimitTo::Map,
            "memory controller: pages that cannot be evicted (memory.stat's unevictable: mlocked and ramfs \
             pages); not refused",
        ),
        OomGuarPages => row(
            Held::Memory(MemoryFigure::RamAndSwap),
            E::Accounted,
            LimitTo::MemoryMin,
            "RAM + swap in use, from the memory controller; barrier = memory.min (a guarantee, cgroup v2 only)",
        ),
        VmGuarPages => row(
            Held::Nothing,
            E::Guarantee,
            LimitTo::MemoryLow,
            "barrier = memory.low (cgroup v2 only); no held of its own, as in OpenVZ",
        ),
        PrivVmPages => row(
            Held::Sampled(Sample::PrivateVm),
            E::Accounted,
            LimitTo::Map,
            "private writable memory and stacks of the container's processes (VmData + VmStk), sampled when \
             read; not refused: vm_enough_memory is closed to BPF",
        ),
        TcpSndBuf => row(
            Held::Sampled(Sample::TcpSendQueues),
            E::Accounted,
            LimitTo::Map,
            buffers_how::TCPSND,
        ),
        TcpRcvBuf => row(
            Held::Sampled(Sample::TcpReceiveQueues),
            E::Accounted,
            LimitTo::Map,
            buffers_how::TCPRCV,
        ),
        OtherSockBuf => row(
            Held::Sampled(Sample::OtherSent),
            E::Accounted,
            LimitTo::Map,
            buffers_how::OTHERSND,
        ),
        DgramRcvBuf => row(
            Held::Sampled(Sample::DatagramReceive),
            E::Accounted,
            LimitTo::Map,
            buffers_how::DGRAMRCV,
        ),
        NumIptEnt => row(
            Held::Sampled(Sample::NetfilterEntries),
            E::Accounted,
            LimitTo::Map,
            "the container's own network namespace, read when asked: its nftables rules (nfnetlink dump) plus \
             the entries of its legacy iptables tables, policies included; not refused",
        ),
    }
}

/// The socket-buffer rows' sentences, each its own (they share how they are read).
mod buffers_how {
    macro_rules! buffers {
        ($what:literal) => {
            concat!(
                "the send or receive queues the row names: ",
                $what,
                "; read as the kernel's own per-socket memory (sock_diag meminfo) summed over the sockets the \
                 container's processes hold, sampled when read; not refused (TCP and UDP buffers are charged to \
                 the memory controller, whose limit bounds them)"
            )
        };
    }
    pub const TCPSND: &str = buffers!("TCP sockets' send queues (data written and not yet acknowledged)");
    pub const TCPRCV: &str = buffers!("TCP sockets' receive queues (data arrived and not yet read)");
    pub const OTHERSND: &str = buffers!("other sockets' sent data (unix data queued at the peer, UDP in flight)");
    pub const DGRAMRCV: &str = buffers!("datagram and other sockets' receive queues (UDP and unix data not yet read)");
}

/// docs/rows.md's table, as this declaration says it (a test holds the file to it).
pub fn markdown_table() -> String {
    let mut out = String::from("| row | full tier | fallback tier |\n|---|---|---|\n");
    for r in Resource::ALL {
        let (Some(full), Some(fallback)) = (source(r, Tier::Full), source(r, Tier::Fallback)) else {
            continue;
        };
        let cell = |s: RowSource| format!("{}: {}", s.enforcement.word(), s.how);
        out.push_str(&format!("| {} | {} | {} |\n", r.name(), cell(full), cell(fallback)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_but_the_dummies_has_its_own_sentence_in_each_tier() {
        for tier in [Tier::Full, Tier::Fallback] {
            let mut seen = std::collections::HashMap::new();
            for r in Resource::ALL {
                match source(r, tier) {
                    None => assert!(r.is_dummy(), "{} has no source in {tier}", r.name()),
                    Some(s) => {
                        let shared_by_design = s.how == NEEDS_LSM;
                        if let Some(other) = seen.insert(s.how, r) {
                            assert!(
                                shared_by_design,
                                "{} and {} share a sentence in {tier}",
                                r.name(),
                                other.name()
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn docs_rows_md_has_the_declared_table() {
        let doc = include_str!("../../../../docs/rows.md");
        let table = markdown_table();
        assert!(
            doc.contains(&table),
            "docs/rows.md's row table differs from kernel::rows; the table as declared:\n{table}"
        );
    }

    #[test]
    fn what_is_not_kept_has_no_held() {
        for tier in [Tier::Full, Tier::Fallback] {
            for r in Resource::ALL {
                if let Some(s) = source(r, tier) {
                    assert_eq!(
                        s.enforcement == Enforcement::NotKept,
                        s.held == Held::NotKept,
                        "{} in {tier}",
                        r.name()
                    );
                }
            }
        }
    }
}
