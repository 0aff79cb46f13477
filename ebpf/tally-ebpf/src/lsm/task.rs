//! numproc: every task (process or thread) a container creates is charged at task_alloc and
//! uncharged at task_free, to the container recorded at charge time.

use aya_ebpf::{
    helpers::bpf_get_current_cgroup_id,
    macros::{fentry, lsm},
    programs::{FEntryContext, LsmContext},
};
use tally_common::res;

use crate::charge::{charge, Charge, Strictness};
use crate::trace::task::{record_task_charge, uncharge_task};

const EAGAIN: i32 = 11;

/// security_task_alloc(task, clone_flags): runs in the parent, whose cgroup the child joins.
#[lsm(hook = "task_alloc")]
pub fn task_alloc(ctx: LsmContext) -> i32 {
    match try_task_alloc(&ctx) {
        Ok(ret) | Err(ret) => ret,
    }
}

fn try_task_alloc(ctx: &LsmContext) -> Result<i32, i32> {
    // An earlier BPF LSM program refused already: keep its verdict, charge nothing.
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return Err(previous);
    }
    let task: u64 = ctx.arg(0);
    // SAFETY: a BPF helper without preconditions.
    let cgid = unsafe { bpf_get_current_cgroup_id() };
    match charge(cgid, res::NUMPROC, 1, Strictness::Hard) {
        Charge::NotContainer => Ok(0),
        Charge::Refused => Err(-EAGAIN),
        Charge::Charged => record_task_charge(task, cgid).map(|()| 0).map_err(|()| -EAGAIN),
    }
}

/// security_task_free(task): also runs for a task whose task_alloc was refused (then
/// nothing was recorded and nothing is uncharged).
#[lsm(hook = "task_free")]
pub fn task_free(ctx: LsmContext) -> i32 {
    uncharge_task(ctx.arg(0));
    0
}

/// release_task(task): the task is reaped, the moment the pids controller uncharges too.
/// task_free runs an RCU grace period later (seconds with lazy RCU): uncharging only there
/// would refuse forks for tasks long gone. task_free stays as the safety net for tasks charged
/// at task_alloc but never released (a fork that failed after the charge).
#[fentry(function = "release_task")]
pub fn release_task(ctx: FEntryContext) -> u32 {
    uncharge_task(ctx.arg(0));
    0
}
