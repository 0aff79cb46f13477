//! Kernel struct layout, given by userspace from /sys/kernel/btf/vmlinux at load time
//! (rustc emits no CO-RE relocations). The loader overrides these read-only globals, so the
//! verifier sees constants.

use aya_ebpf::helpers::bpf_probe_read_kernel;

#[unsafe(no_mangle)]
static CGROUP_KN_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
static CGROUP_ROOT_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
static KERNFS_NODE_ID_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
static CGROUP_ROOT_HIERARCHY_ID_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
static SOCKET_SK_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
static FILE_F_INODE_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
static INODE_I_RDEV_OFFSET: u64 = 0;

#[inline(always)]
fn offset(global: &'static u64) -> u64 {
    // SAFETY: a read of a static; volatile so that the load survives optimisation and the
    // loader's override is what the program uses.
    unsafe { core::ptr::read_volatile(global) }
}

#[inline(always)]
fn read<T: Copy>(base: u64, off: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel checks the address and fails cleanly on a bad one.
    unsafe { bpf_probe_read_kernel((base + off) as *const T) }.ok()
}

/// The cgroup2 id of `cgrp` (what bpf_get_current_cgroup_id returns for its members), or None
/// when `cgrp` belongs to a v1 hierarchy.
#[inline(always)]
pub fn dfl_cgroup_id(cgrp: u64) -> Option<u64> {
    let root: u64 = read(cgrp, offset(&CGROUP_ROOT_OFFSET))?;
    // The default (cgroup2) hierarchy is the one with hierarchy_id 0.
    let hierarchy_id: i32 = read(root, offset(&CGROUP_ROOT_HIERARCHY_ID_OFFSET))?;
    if hierarchy_id != 0 {
        return None;
    }
    let kn: u64 = read(cgrp, offset(&CGROUP_KN_OFFSET))?;
    read(kn, offset(&KERNFS_NODE_ID_OFFSET))
}

/// `sock->sk` of a struct socket.
#[inline(always)]
pub fn socket_sk(sock: u64) -> Option<u64> {
    read::<u64>(sock, offset(&SOCKET_SK_OFFSET)).filter(|sk| *sk != 0)
}

/// `file->f_inode->i_rdev`: the device number of a device file (0 for others).
#[inline(always)]
pub fn file_rdev(file: u64) -> Option<u32> {
    let inode: u64 = read(file, offset(&FILE_F_INODE_OFFSET))?;
    read(inode, offset(&INODE_I_RDEV_OFFSET))
}
