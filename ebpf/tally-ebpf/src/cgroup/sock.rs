//! Fallback tier's socket rows: cgroup/sock_create can refuse inet sockets (the kernel then
//! returns EPERM) and cgroup/sock_release gives them back. Unix sockets and accepted sockets
//! do not pass these hooks; the full tier's LSM programs count those.

use aya_ebpf::{helpers::bpf_get_current_cgroup_id, macros::cgroup_sock, programs::SockContext};
use tally_common::{
    program,
    res::{NUMOTHERSOCK, NUMTCPSOCK},
};

use crate::{
    charge::{charge_object, uncharge_object, Charge, Strictness},
    record::Object,
};

const SOCK_STREAM: u32 = 1;
const IPPROTO_TCP: u32 = 6;

/// Return values of cgroup sock programs: 1 lets the socket be, 0 refuses it (EPERM).
const ALLOW: i32 = 1;
const REFUSE: i32 = 0;

/// TCP sockets are numtcpsock, every other inet socket numothersock.
#[inline(always)]
fn row(ctx: &SockContext) -> usize {
    // SAFETY: ctx.sock is the bpf_sock the kernel hands this program.
    let (sock_type, protocol) = unsafe { ((*ctx.sock).type_, (*ctx.sock).protocol) };
    if sock_type == SOCK_STREAM && protocol == IPPROTO_TCP {
        NUMTCPSOCK
    } else {
        NUMOTHERSOCK
    }
}

/// The socket's record is keyed by its struct sock (the context is one): the slab hands a
/// freed sock's address to the next socket, so a busy loop finds its record's bucket in the
/// cache (a cookie, new for every socket, would take a cold bucket each time).
#[cgroup_sock(sock_create)]
pub fn sock_create(ctx: SockContext) -> i32 {
    floor_return!(ALLOW);
    let sk = Object::at(ctx.sock as u64);
    // SAFETY: a BPF helper valid in cgroup/sock programs.
    let cgid = unsafe { bpf_get_current_cgroup_id() };
    match charge_object(program::SOCK_CREATE, sk, row(&ctx), cgid, Strictness::Hard) {
        Charge::Refused => REFUSE,
        _ => ALLOW,
    }
}

/// The socket is being closed, in whatever context drops it. Its type says which row it was
/// charged to: one lookup, not two.
#[cgroup_sock(sock_release)]
pub fn sock_release(ctx: SockContext) -> i32 {
    floor_return!(ALLOW);
    uncharge_object(program::SOCK_RELEASE, Object::at(ctx.sock as u64), row(&ctx));
    ALLOW
}
