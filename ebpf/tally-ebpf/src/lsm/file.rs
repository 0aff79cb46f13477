//! Rows kept on struct file: numfile (every open file), numpty (ptmx opens) and numflock
//! (a file holding locks), charged at the hooks that can refuse and uncharged when the file
//! is freed or unlocked, to the container recorded at charge time.

use aya_ebpf::{helpers::bpf_get_current_cgroup_id, macros::lsm, programs::LsmContext};
use tally_common::{
    program,
    res::{NUMFILE, NUMFLOCK, NUMPTY},
};

use crate::charge::{charge_caller, charge_object, is_charged, uncharge_object, uncharge_rows, Charge, Strictness};
use crate::errno::{ENFILE, ENOLCK, ENOSPC};
use crate::kernel::file_rdev;
use crate::record::Object;

/// /dev/ptmx and every devpts ptmx: character device 5:2 (new_encode_dev).
const PTMX_RDEV: u32 = (5 << 20) | 2;
const F_UNLCK: u32 = 2;

/// security_file_open(file): every open of a path (exec included); pipes and sockets are
/// not opened this way and are not numfile.
#[lsm(hook = "file_open")]
pub fn file_open(ctx: LsmContext) -> i32 {
    floor_return!(0);
    hook_result!(try_file_open(&ctx))
}

fn try_file_open(ctx: &LsmContext) -> Result<i32, i32> {
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return Err(previous);
    }
    let file: u64 = ctx.arg(0);
    let object = Object::at(file);
    // SAFETY: a BPF helper without preconditions.
    let cgid = unsafe { bpf_get_current_cgroup_id() };
    match charge_object(program::FILE_OPEN, object, NUMFILE, cgid, Strictness::Hard) {
        Charge::NotContainer => return Ok(0),
        Charge::Refused => return Err(-ENFILE),
        Charge::Charged => {}
    }
    if file_rdev(file) == Some(PTMX_RDEV) {
        if let Charge::Refused = charge_object(program::FILE_OPEN, object, NUMPTY, cgid, Strictness::Hard) {
            // The open fails as a whole: its numfile charge goes too.
            uncharge_object(program::FILE_OPEN, object, NUMFILE);
            return Err(-ENOSPC);
        }
    }
    Ok(0)
}

/// security_file_lock(file, type): flock() and fcntl() locks and unlocks. A file holding any
/// lock is one numflock; F_UNLCK gives it back (so does the file's release).
#[lsm(hook = "file_lock")]
pub fn file_lock(ctx: LsmContext) -> i32 {
    floor_return!(0);
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let file = Object::at(ctx.arg(0));
    let lock_type: u32 = ctx.arg(1);
    if lock_type == F_UNLCK {
        uncharge_object(program::FILE_LOCK, file, NUMFLOCK);
        return 0;
    }
    if is_charged(file, NUMFLOCK) {
        return 0;
    }
    charge_caller(program::FILE_LOCK, file, NUMFLOCK, ENOLCK)
}

/// security_file_free(file): the last reference is gone, in whatever context dropped it.
#[lsm(hook = "file_free_security")]
pub fn file_free_security(ctx: LsmContext) -> i32 {
    floor_return!(0);
    uncharge_rows(
        program::FILE_FREE_SECURITY,
        Object::at(ctx.arg(0)),
        [NUMFILE, NUMPTY, NUMFLOCK],
    );
    0
}
