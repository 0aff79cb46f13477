//! Full tier: the file-read statistics (trace/read.rs says what is counted). file_permission
//! runs for every file a read passes through (rw_verify_area), so a read of a container's
//! overlay file also names the real upper or lower file that overlayfs reads for it; it keeps
//! them per thread, and fexit on the read syscall counts the call against each with the bytes
//! it returned. Only the read syscalls and the permission checks are hooked: other syscalls
//! pay nothing.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_ktime_get_ns, bpf_task_pt_regs},
    macros::{fexit, lsm},
    programs::{FExitContext, LsmContext},
};

use tally_common::{FileId, ReadInFlight, FILES_PER_READ};

use crate::{
    kernel::{regular_file, syscall_nr},
    maps::READS_IN_FLIGHT,
    trace::read::{count, current_container, read_syscall_fd_arg},
};

const MAY_READ: i32 = 4;

/// security_file_permission(file, mask): a read or write of `file` is about to happen. Never
/// refuses; looks only at reads of regular files inside the read syscalls of container tasks
/// (not at execve's or a module load's reads, which are not followed by a read syscall's exit).
#[lsm(hook = "file_permission")]
pub fn file_permission(ctx: LsmContext) -> i32 {
    floor_return!(0);
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let mask: i32 = ctx.arg(1);
    if mask & MAY_READ != 0 {
        record(ctx.arg(0));
    }
    0
}

#[inline(always)]
fn record(file: u64) {
    // SAFETY: BPF helpers; bpf_task_pt_regs gets the task pointer bpf_get_current_task_btf
    // returned, as the verifier requires.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as u64;
    if syscall_nr(regs).and_then(read_syscall_fd_arg).is_none() {
        return;
    }
    let Some(cgroup_id) = current_container() else {
        return;
    };
    let Some(id) = regular_file(file) else {
        return;
    };
    let thread = bpf_get_current_pid_tgid();
    let flight = match READS_IN_FLIGHT.get_ptr_mut(thread) {
        Some(flight) => flight,
        None => {
            let first = ReadInFlight {
                cgroup_id,
                count: 1,
                files: [id; FILES_PER_READ],
            };
            let _ = READS_IN_FLIGHT.insert(&thread, &first, 0);
            return;
        }
    };
    // SAFETY: `flight` points into a live map value that only this thread writes.
    let flight = unsafe { &mut *flight };
    // sendfile and splice check the same files once per chunk: each file is kept once.
    for i in 0..FILES_PER_READ {
        if (i as u64) < flight.count && flight.files[i] == id {
            return;
        }
    }
    let n = flight.count as usize;
    if n < FILES_PER_READ {
        flight.files[n] = id;
        flight.count += 1;
    }
}

/// A read syscall returned `ret`: the files it read are counted, and forgotten.
#[inline(always)]
fn finish(ret: i64) {
    let thread = bpf_get_current_pid_tgid();
    let Some(p) = READS_IN_FLIGHT.get_ptr(thread) else {
        return;
    };
    // SAFETY: p comes from a successful lookup; the entry is this thread's alone.
    let flight = unsafe { *p };
    let _ = READS_IN_FLIGHT.remove(&thread);
    if ret < 0 {
        return;
    }
    // SAFETY: a BPF helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    for i in 0..FILES_PER_READ {
        if (i as u64) < flight.count {
            count(flight.cgroup_id, flight.files[i], ret as u64, now);
        }
    }
}

/// fexit on each read syscall's x86-64 entry point `__x64_sys_NAME(regs)`: its return value
/// follows its one argument.
macro_rules! read_syscall_exits {
    ($($program:ident => $function:tt),* $(,)?) => {$(
        #[fexit(function = $function)]
        pub fn $program(ctx: FExitContext) -> u32 {
            floor_return!(0);
            finish(ctx.arg(1));
            0
        }
    )*};
}

read_syscall_exits! {
    read_exit => "__x64_sys_read",
    pread64_exit => "__x64_sys_pread64",
    readv_exit => "__x64_sys_readv",
    preadv_exit => "__x64_sys_preadv",
    preadv2_exit => "__x64_sys_preadv2",
    sendfile_exit => "__x64_sys_sendfile64",
    splice_exit => "__x64_sys_splice",
    copy_range_exit => "__x64_sys_copy_file_range",
}
