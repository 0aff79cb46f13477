//! Tiny programs that `tally check` loads (never attaches) to learn which program types this
//! kernel accepts: the LSM list in securityfs can name bpf while loads are refused.

use aya_ebpf::{
    macros::{cgroup_device, cgroup_skb, cgroup_sock, cgroup_sock_addr, cgroup_sysctl, fentry, lsm},
    programs::{DeviceContext, FEntryContext, LsmContext, SkBuffContext, SockAddrContext, SockContext, SysctlContext},
};

#[lsm(hook = "file_open")]
pub fn probe_lsm(_ctx: LsmContext) -> i32 {
    0
}

#[fentry(function = "vfs_read")]
pub fn probe_fentry(_ctx: FEntryContext) -> u32 {
    0
}

#[cgroup_skb]
pub fn probe_cgroup_skb(_ctx: SkBuffContext) -> i32 {
    1
}

#[cgroup_sock(sock_create)]
pub fn probe_cgroup_sock(_ctx: SockContext) -> i32 {
    1
}

#[cgroup_sock_addr(connect4)]
pub fn probe_cgroup_sock_addr(_ctx: SockAddrContext) -> i32 {
    1
}

#[cgroup_device]
pub fn probe_cgroup_device(_ctx: DeviceContext) -> i32 {
    1
}

#[cgroup_sysctl]
pub fn probe_cgroup_sysctl(_ctx: SysctlContext) -> i32 {
    1
}
