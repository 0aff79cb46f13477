//! numtcpsock and numothersock: charged when a process creates a socket (refusable) or
//! accepts one (refused at the gate, charged when the new sock is grafted), uncharged when
//! the sock is freed, to the container recorded at charge time.

use aya_ebpf::{helpers::bpf_get_current_cgroup_id, macros::lsm, programs::LsmContext};
use tally_common::{
    program,
    res::{NUMOTHERSOCK, NUMTCPSOCK},
};

use crate::charge::{charge, charge_caller, charge_object, uncharge, uncharge_rows, Charge, Strictness};
use crate::errno::ENOBUFS;
use crate::kernel::socket_sk;
use crate::record::Object;

const AF_INET: i32 = 2;
const AF_INET6: i32 = 10;
const SOCK_STREAM: i32 = 1;
const IPPROTO_TCP: i32 = 6;

/// OpenVZ's split: TCP sockets are numtcpsock, every other socket numothersock.
fn row(family: i32, sock_type: i32, protocol: i32) -> usize {
    let inet = family == AF_INET || family == AF_INET6;
    // The low bits are the type; SOCK_NONBLOCK/SOCK_CLOEXEC live above them.
    if inet && sock_type & 0xf == SOCK_STREAM && (protocol == 0 || protocol == IPPROTO_TCP) {
        NUMTCPSOCK
    } else {
        NUMOTHERSOCK
    }
}

/// security_socket_post_create(sock, family, type, protocol, kern): sock->sk exists now.
#[lsm(hook = "socket_post_create")]
pub fn socket_post_create(ctx: LsmContext) -> i32 {
    floor_return!(0);
    let previous: i32 = ctx.arg(5);
    if previous != 0 {
        return previous;
    }
    let kern: i32 = ctx.arg(4);
    if kern != 0 {
        return 0;
    }
    let Some(sk) = socket_sk(ctx.arg(0)) else {
        return 0;
    };
    charge_caller(
        program::SOCKET_POST_CREATE,
        Object::at(sk),
        row(ctx.arg(1), ctx.arg(2), ctx.arg(3)),
        ENOBUFS,
    )
}

/// security_socket_accept(sock, newsock): the gate for accepted TCP sockets. The new sock
/// does not exist yet, so the row is only checked here (a charge taken back at once) and
/// charged for real when it is grafted; a refused accept counts in failcnt. The check is
/// soft, against the limit: the connection exists already (the kernel made it when the peer
/// connected) and refusing it leaves the peer waiting, so accepts may use the margin between
/// barrier and limit that socket() may not.
#[lsm(hook = "socket_accept")]
pub fn socket_accept(ctx: LsmContext) -> i32 {
    floor_return!(0);
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    // SAFETY: a BPF helper without preconditions.
    let cgid = unsafe { bpf_get_current_cgroup_id() };
    match charge(program::SOCKET_ACCEPT, cgid, NUMTCPSOCK, 1, Strictness::Soft) {
        Charge::Refused => -ENOBUFS,
        Charge::Charged => {
            uncharge(cgid, NUMTCPSOCK, 1);
            0
        }
        Charge::NotContainer => 0,
    }
}

/// security_sock_graft(sk, parent): an accepted sock joins its socket, in the accepting
/// process. Force: the gate above already refused what was over the limit.
#[lsm(hook = "sock_graft")]
pub fn sock_graft(ctx: LsmContext) -> i32 {
    floor_return!(0);
    let sk = Object::at(ctx.arg(0));
    // SAFETY: a BPF helper without preconditions.
    let cgid = unsafe { bpf_get_current_cgroup_id() };
    charge_object(program::SOCK_GRAFT, sk, NUMTCPSOCK, cgid, Strictness::Force);
    0
}

/// security_sk_free(sk): the sock is gone.
#[lsm(hook = "sk_free_security")]
pub fn sk_free_security(ctx: LsmContext) -> i32 {
    floor_return!(0);
    uncharge_rows(
        program::SK_FREE_SECURITY,
        Object::at(ctx.arg(0)),
        [NUMTCPSOCK, NUMOTHERSOCK],
    );
    0
}
