//! Per-container traffic (both tiers): cgroup_skb programs count the bytes and packets of
//! every container socket, in and out, under the socket's cgroup2 id. They only count (the
//! packet always passes); tallyd's exporter reads the `traffic` map when scraped.
//!
//! What passes these hooks is IP traffic of the container's own sockets (egress before the
//! qdisc, ingress at the socket), so bytes are IP lengths, not the veth's wire bytes.

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_skb_cgroup_id, macros::cgroup_skb, programs::SkBuffContext};
use tally_common::Traffic;

use crate::{
    atomic,
    maps::{LIMITS, TRAFFIC},
};

/// Return value of cgroup_skb programs: 1 lets the packet through.
const PASS: i32 = 1;

#[cgroup_skb(ingress)]
pub fn ingress(ctx: SkBuffContext) -> i32 {
    floor_return!(PASS);
    count(&ctx, Direction::Receive);
    PASS
}

#[cgroup_skb(egress)]
pub fn egress(ctx: SkBuffContext) -> i32 {
    floor_return!(PASS);
    count(&ctx, Direction::Transmit);
    PASS
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Receive,
    Transmit,
}

#[inline(always)]
fn count(ctx: &SkBuffContext, direction: Direction) {
    let skb = ctx.skb.skb;
    // SAFETY: skb is the __sk_buff the kernel hands this program; bpf_skb_cgroup_id is valid
    // in cgroup_skb programs (the cgroup of the socket the packet belongs to).
    let (cgid, len, segments) = unsafe { (bpf_skb_cgroup_id(skb), (*skb).len, (*skb).gso_segs) };
    let Some(row) = row(cgid) else {
        return;
    };
    // A GSO (egress) or GRO (ingress) skb stands for gso_segs packets on the wire.
    let packets = if segments > 1 { segments as u64 } else { 1 };
    // SAFETY: `row` points into a live map value (looked up in `row`); the fields are u64.
    let (bytes_field, packets_field) = unsafe {
        match direction {
            Direction::Receive => (
                core::ptr::addr_of_mut!((*row).rx_bytes),
                core::ptr::addr_of_mut!((*row).rx_packets),
            ),
            Direction::Transmit => (
                core::ptr::addr_of_mut!((*row).tx_bytes),
                core::ptr::addr_of_mut!((*row).tx_packets),
            ),
        }
    };
    atomic::add(bytes_field, len as u64);
    atomic::add(packets_field, packets);
}

/// The container's traffic row, made at its first packet. One lookup per packet once the row
/// exists; cgroups that are not containers (no limits row) get none.
#[inline(always)]
fn row(cgid: u64) -> Option<*mut Traffic> {
    if let Some(row) = TRAFFIC.get_ptr_mut(cgid) {
        return Some(row);
    }
    LIMITS.get_ptr(cgid)?;
    // Another CPU may have made it meanwhile: NOEXIST keeps its counts.
    let _ = TRAFFIC.insert(&cgid, &Traffic::default(), BPF_NOEXIST as u64);
    TRAFFIC.get_ptr_mut(cgid)
}
