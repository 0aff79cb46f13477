//! Sysctl writes from containers (both tiers): only the namespaced ones, which change the
//! container's own namespaces and never the host: net/* (network namespace), kernel/hostname
//! and kernel/domainname (UTS), the System V IPC limits and fs/mqueue/* (IPC). Reads are
//! free. Attached to the instance's cgroup2 directory.

use aya_ebpf::{helpers::generated::bpf_sysctl_get_name, macros::cgroup_sysctl, programs::SysctlContext};

const ALLOW: i32 = 1;
const REFUSE: i32 = 0;

/// Writable prefixes of the full name ("net/ipv4/ip_forward": relative to /proc/sys).
const NAMESPACED: [&[u8]; 10] = [
    b"net/",
    b"kernel/hostname",
    b"kernel/domainname",
    b"kernel/shm",
    b"kernel/msg",
    b"kernel/sem",
    b"fs/mqueue/",
    b"kernel/auto_msgmni",
    b"user/",
    b"kernel/ns_last_pid",
];

const NAME_LEN: usize = 64;

#[cgroup_sysctl]
pub fn sysctl(ctx: SysctlContext) -> i32 {
    floor_return!(ALLOW);
    // SAFETY: ctx.sysctl is the bpf_sysctl the kernel hands this program.
    if unsafe { (*ctx.sysctl).write } == 0 {
        return ALLOW;
    }
    let mut name = [0u8; NAME_LEN];
    // SAFETY: a BPF helper valid in cgroup/sysctl programs, writing into our own buffer;
    // flags 0 asks for the full name.
    let n = unsafe { bpf_sysctl_get_name(ctx.sysctl, name.as_mut_ptr().cast(), NAME_LEN as u64, 0) };
    if n < 0 && n != -7 {
        // Not even a truncated name (-E2BIG = -7 still fills the buffer).
        return REFUSE;
    }
    for prefix in NAMESPACED {
        if starts_with(&name, prefix) {
            return ALLOW;
        }
    }
    REFUSE
}

#[inline(always)]
fn starts_with(name: &[u8; NAME_LEN], prefix: &[u8]) -> bool {
    let mut i = 0;
    while i < prefix.len() && i < NAME_LEN {
        if name[i] != prefix[i] {
            return false;
        }
        i += 1;
    }
    true
}
