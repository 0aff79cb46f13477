//! Full tier: which files a container's read syscall reads. file_permission runs for every
//! file a read passes through (rw_verify_area), so a read of a container's overlay file also
//! names the real upper or lower file that overlayfs reads for it; sys_exit (trace/read.rs)
//! counts the call against each of them.

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::lsm, programs::LsmContext};

use crate::{kernel::regular_file, maps::READS_IN_FLIGHT, trace::read::FILES_PER_READ};

const MAY_READ: i32 = 4;

/// security_file_permission(file, mask): a read or write of `file` is about to happen. Never
/// refuses; only read syscalls that sys_enter marked are looked at.
#[lsm(hook = "file_permission")]
pub fn file_permission(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let mask: i32 = ctx.arg(1);
    if mask & MAY_READ == 0 {
        return 0;
    }
    let thread = bpf_get_current_pid_tgid();
    let Some(flight) = READS_IN_FLIGHT.get_ptr_mut(thread) else {
        return 0;
    };
    let Some(id) = regular_file(ctx.arg(0)) else {
        return 0;
    };
    // SAFETY: `flight` points into a live map value that only this thread writes.
    let flight = unsafe { &mut *flight };
    // sendfile and splice check the same files once per chunk: each file is kept once.
    for i in 0..FILES_PER_READ {
        if (i as u64) < flight.count && flight.files[i] == id {
            return 0;
        }
    }
    let n = flight.count as usize;
    if n < FILES_PER_READ {
        flight.files[n] = id;
        flight.count += 1;
    }
    0
}
