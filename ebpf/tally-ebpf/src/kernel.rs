//! Kernel struct layout, given by userspace from /sys/kernel/btf/vmlinux at load time
//! (rustc emits no CO-RE relocations). The loader overrides these read-only globals, so the
//! verifier sees constants.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use tally_common::FileId;

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
#[unsafe(no_mangle)]
static INODE_I_MODE_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
static INODE_I_INO_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
static INODE_I_SB_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
static SUPER_BLOCK_S_DEV_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
static SUPER_BLOCK_S_MAGIC_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
static FILE_PRIVATE_DATA_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
static TASK_STRUCT_FILES_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
static FILES_STRUCT_FDT_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
static FDTABLE_MAX_FDS_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
static FDTABLE_FD_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
static ADDRESS_SPACE_HOST_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
static TASK_STRUCT_CGROUPS_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
static CSS_SET_DFL_CGRP_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
static PT_REGS_ORIG_AX_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
static PT_REGS_DI_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
static PT_REGS_SI_OFFSET: u64 = 0;

/// How an overlayfs file leads to the real file it reads from (userspace finds out from the
/// overlay's BTF): 0, `private_data` is the real file (Linux up to 6.12); 1, it points to a
/// `struct ovl_file` with the real file at OVL_FILE_REALFILE and, once the file was copied
/// up, the upper file at OVL_FILE_UPPERFILE (6.13 on).
#[unsafe(no_mangle)]
static OVL_FILE_INDIRECT: u64 = 0;
#[unsafe(no_mangle)]
static OVL_FILE_REALFILE: u64 = 0;
#[unsafe(no_mangle)]
static OVL_FILE_UPPERFILE: u64 = 8;

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

/// For a child just forked by `parent`: the cgroup2 id of the cgroup it was forked straight
/// into (clone3's CLONE_INTO_CGROUP), or None when it shares its parent's css_set, as every
/// other fork does (two reads: the common case stays cheap on this per-fork path).
#[inline(always)]
pub fn forked_into_cgroup(parent: u64, child: u64) -> Option<u64> {
    let cset: u64 = read(child, offset(&TASK_STRUCT_CGROUPS_OFFSET))?;
    let parent_cset: u64 = read(parent, offset(&TASK_STRUCT_CGROUPS_OFFSET))?;
    if cset == parent_cset {
        return None;
    }
    let cgrp: u64 = read(cset, offset(&CSS_SET_DFL_CGRP_OFFSET))?;
    let kn: u64 = read(cgrp, offset(&CGROUP_KN_OFFSET))?;
    read(kn, offset(&KERNFS_NODE_ID_OFFSET))
}

/// `sock->sk` of the struct socket a hook received, loaded directly (the verifier checks the
/// load against the kernel's BTF), so that it stays the typed pointer a charge record's key
/// is made from (record.rs), like the `sk` that sk_free_security receives.
#[inline(always)]
pub fn socket_sk(sock: u64) -> Option<u64> {
    // SAFETY: `sock` is the hook's struct socket and the offset its `sk` field's, from BTF;
    // the verifier refuses a load that is not that field.
    let sk = unsafe { core::ptr::read_volatile((sock + offset(&SOCKET_SK_OFFSET)) as *const u64) };
    (sk != 0).then_some(sk)
}

/// `file->f_inode->i_rdev` of the struct file a hook received: the device number of a device
/// file (0 for others). Loaded directly, like `socket_sk`: two helper calls to
/// bpf_probe_read_kernel cost file_open about 140 ns under emulation.
#[inline(always)]
pub fn file_rdev(file: u64) -> Option<u32> {
    // SAFETY: `file` is the hook's struct file and the offset its `f_inode` field's, from BTF;
    // the verifier refuses a load that is not that field, and turns the load through the
    // inode pointer it yields into one that cannot fault (a NULL inode reads 0).
    let inode = unsafe { core::ptr::read_volatile((file + offset(&FILE_F_INODE_OFFSET)) as *const u64) };
    if inode == 0 {
        return None;
    }
    // SAFETY: as above, for the inode's `i_rdev`.
    Some(unsafe { core::ptr::read_volatile((inode + offset(&INODE_I_RDEV_OFFSET)) as *const u32) })
}

const S_IFMT: u16 = 0o170000;
const S_IFREG: u16 = 0o100000;
const OVERLAYFS_SUPER_MAGIC: u64 = 0x794c7630;
/// Pseudo-filesystems whose regular files are interfaces, not data: /proc, /sys, cgroupfs.
const PSEUDO_MAGICS: [u64; 4] = [0x9fa0, 0x62656572, 0x27e0eb, 0x63677270];

/// The id of `file` when it is a regular file worth counting (not on a pseudo-filesystem).
#[inline(always)]
pub fn regular_file(file: u64) -> Option<FileId> {
    regular_inode(read(file, offset(&FILE_F_INODE_OFFSET))?)
}

/// The file whose page cache `mapping` is (`mapping->host`), when it is worth counting.
#[inline(always)]
pub fn mapping_file(mapping: u64) -> Option<FileId> {
    regular_inode(read(mapping, offset(&ADDRESS_SPACE_HOST_OFFSET))?)
}

/// [`regular_file`] for an inode.
#[inline(always)]
fn regular_inode(inode: u64) -> Option<FileId> {
    let mode: u16 = read(inode, offset(&INODE_I_MODE_OFFSET))?;
    if mode & S_IFMT != S_IFREG {
        return None;
    }
    let sb: u64 = read(inode, offset(&INODE_I_SB_OFFSET))?;
    let magic: u64 = read(sb, offset(&SUPER_BLOCK_S_MAGIC_OFFSET))?;
    if PSEUDO_MAGICS.contains(&magic) {
        return None;
    }
    Some(FileId {
        dev: read(sb, offset(&SUPER_BLOCK_S_DEV_OFFSET))?,
        ino: read(inode, offset(&INODE_I_INO_OFFSET))?,
        overlay: u32::from(magic == OVERLAYFS_SUPER_MAGIC),
    })
}

/// The real (upper or lower) file an overlayfs `file` reads from.
#[inline(always)]
pub fn overlay_real_file(file: u64) -> Option<u64> {
    let private: u64 = read(file, offset(&FILE_PRIVATE_DATA_OFFSET))?;
    if private == 0 {
        return None;
    }
    if offset(&OVL_FILE_INDIRECT) == 0 {
        return Some(private);
    }
    // After a copy-up the upper file is the one read.
    let upper: u64 = read(private, offset(&OVL_FILE_UPPERFILE)).unwrap_or(0);
    if upper != 0 {
        return Some(upper);
    }
    read::<u64>(private, offset(&OVL_FILE_REALFILE)).filter(|f| *f != 0)
}

/// The file behind descriptor `fd` of the current task (task->files->fdt->fd[fd]).
#[inline(always)]
pub fn current_fd_file(fd: u64) -> Option<u64> {
    // SAFETY: a BPF helper without preconditions.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read(task, offset(&TASK_STRUCT_FILES_OFFSET))?;
    let fdt: u64 = read(files, offset(&FILES_STRUCT_FDT_OFFSET))?;
    let max_fds: u32 = read(fdt, offset(&FDTABLE_MAX_FDS_OFFSET))?;
    if fd >= max_fds as u64 {
        return None;
    }
    let fds: u64 = read(fdt, offset(&FDTABLE_FD_OFFSET))?;
    read::<u64>(fds, fd * 8).filter(|f| *f != 0)
}

/// The syscall number a sys_exit tracepoint's `regs` belong to (x86-64: orig_ax).
#[inline(always)]
pub fn syscall_nr(regs: u64) -> Option<u64> {
    read(regs, offset(&PT_REGS_ORIG_AX_OFFSET))
}

/// The same, read straight through the tracepoint's BTF-typed `regs` (no helper call): the
/// fast path of a program that runs at every syscall.
#[inline(always)]
pub fn syscall_nr_btf(regs: *const u8) -> u64 {
    // SAFETY: `regs` is the tracepoint's struct pt_regs argument, which the verifier knows by
    // its BTF type, and the offset is orig_ax's (a constant once loaded).
    unsafe { core::ptr::read_volatile(regs.add(offset(&PT_REGS_ORIG_AX_OFFSET) as usize) as *const u64) }
}

/// Argument 0 or 1 of the syscall (x86-64: di, si).
#[inline(always)]
pub fn syscall_arg(regs: u64, n: u8) -> Option<u64> {
    let off = if n == 0 {
        offset(&PT_REGS_DI_OFFSET)
    } else {
        offset(&PT_REGS_SI_OFFSET)
    };
    read(regs, off)
}
