//! Per-container file-read statistics (both tiers): per (container, dev, inode) read calls,
//! bytes and the last read, in the `file_reads` LRU map. A read syscall of a container task
//! (read, pread64, readv, preadv, preadv2, sendfile, splice, copy_file_range) is counted once
//! it returned, with the bytes it returned, against the regular files it read:
//!
//! - full tier (lsm/read.rs): the files BPF LSM file_permission saw the call read, which for a
//!   file of a container's overlay are the overlay file and the real (upper or lower) file
//!   behind it (overlayfs reads the real file through vfs_iter_read or vfs_splice_read, which
//!   check its permission again), counted by fexit on the syscall;
//! - fallback tier (here), where the kernel has the filemap tracepoints (Linux 6.11 on):
//!   mm_filemap_get_pages, each batch of page-cache pages a buffered read copies from, against
//!   the file that owns them (for a container's overlay file, the real file behind it), with
//!   the bytes of the pages it spans; a long read is several batches. Only reads pay.
//! - fallback tier on older kernels: sys_exit, the file behind the call's descriptor and, when
//!   that is an overlayfs file, the real file it reads from (its private data). Every syscall
//!   of the host passes it.
//!
//! Not seen in either tier: reads through mmap, io_uring and AIO (and, through the filemap
//! tracepoint, direct I/O).

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_cgroup_id, bpf_ktime_get_ns},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use tally_common::{FileId, FileKey, FileReadCounts};

use crate::{
    atomic,
    kernel::{current_fd_file, mapping_file, overlay_real_file, regular_file, syscall_arg, syscall_nr_btf},
    maps::{FILE_READS, LIMITS},
};

/// For a syscall that reads a file (tally_common::read_syscalls), which argument is the
/// descriptor read from.
#[inline(always)]
pub fn read_syscall_fd_arg(nr: u64) -> Option<u8> {
    for (n, fd_arg) in tally_common::read_syscalls::NUMBERS {
        if n == nr {
            return Some(fd_arg);
        }
    }
    None
}

/// The caller's container, or None for cgroups that are not containers.
#[inline(always)]
pub fn current_container() -> Option<u64> {
    // SAFETY: a BPF helper without preconditions.
    let cgid = unsafe { bpf_get_current_cgroup_id() };
    LIMITS.get_ptr(cgid).map(|_| cgid)
}

/// sys_exit(regs, ret), fallback tier: a syscall returned; read calls are counted against their
/// files. Runs at the end of every syscall on the host: the syscall number comes first.
#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit(ctx: BtfTracePointContext) -> i32 {
    floor_return!(0);
    let regs: *const u8 = ctx.arg(0);
    let Some(fd_arg) = read_syscall_fd_arg(syscall_nr_btf(regs)) else {
        return 0;
    };
    let ret: i64 = ctx.arg(1);
    let regs = regs as u64;
    if ret >= 0 {
        from_descriptor(regs, fd_arg, ret as u64);
    }
    0
}

/// mm_filemap_get_pages(mapping, index, last_index), fallback tier where the kernel has it: a
/// buffered read (of a real file: overlayfs passes reads through) is about to copy pages
/// index..=last_index of `mapping`'s file.
#[btf_tracepoint(function = "mm_filemap_get_pages")]
pub fn filemap_get_pages(ctx: BtfTracePointContext) -> i32 {
    floor_return!(0);
    const PAGE_SIZE: u64 = 4096;
    let Some(cgroup_id) = current_container() else {
        return 0;
    };
    let Some(id) = mapping_file(ctx.arg(0)) else {
        return 0;
    };
    let (first, last): (u64, u64) = (ctx.arg(1), ctx.arg(2));
    // SAFETY: a BPF helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    count(
        cgroup_id,
        id,
        last.saturating_sub(first).saturating_add(1) * PAGE_SIZE,
        now,
    );
    0
}

/// Fallback tier: the file behind the call's descriptor, and the real file behind an
/// overlayfs one.
#[inline(always)]
fn from_descriptor(regs: u64, fd_arg: u8, bytes: u64) {
    let Some(cgroup_id) = current_container() else {
        return;
    };
    let Some(file) = syscall_arg(regs, fd_arg).and_then(current_fd_file) else {
        return;
    };
    let Some(id) = regular_file(file) else {
        return;
    };
    // SAFETY: a BPF helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    count(cgroup_id, id, bytes, now);
    if id.overlay != 0 {
        if let Some(real) = overlay_real_file(file).and_then(regular_file) {
            if real.overlay == 0 {
                count(cgroup_id, real, bytes, now);
            }
        }
    }
}

/// One read call of `bytes` by container `cgroup_id` of file `id`.
#[inline(always)]
pub fn count(cgroup_id: u64, id: FileId, bytes: u64, now: u64) {
    let key = FileKey {
        cgroup_id,
        ino: id.ino,
        dev: id.dev,
        _pad: 0,
    };
    let row = match FILE_READS.get_ptr_mut(&key) {
        Some(row) => row,
        None => {
            // Another CPU may have made it meanwhile: NOEXIST keeps its counts.
            let _ = FILE_READS.insert(&key, &FileReadCounts::default(), BPF_NOEXIST as u64);
            match FILE_READS.get_ptr_mut(&key) {
                Some(row) => row,
                None => return,
            }
        }
    };
    // SAFETY: `row` points into a live map value; the fields are u64.
    unsafe {
        atomic::add(core::ptr::addr_of_mut!((*row).reads), 1);
        atomic::add(core::ptr::addr_of_mut!((*row).bytes), bytes);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*row).last_read_ns), now);
    }
}
