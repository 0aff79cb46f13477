//! numproc: every task (process or thread) a container creates is charged at task_alloc and
//! uncharged when it is reaped, to the container recorded at charge time.

use aya_ebpf::{
    macros::{fentry, lsm},
    programs::{FEntryContext, LsmContext},
};
use tally_common::{program, res::NUMPROC};

use crate::errno::EAGAIN;
use crate::{
    charge::{charge_caller, uncharge_object},
    record::Object,
};

/// security_task_alloc(task, clone_flags): runs in the parent, whose cgroup the child joins.
#[lsm(hook = "task_alloc")]
pub fn task_alloc(ctx: LsmContext) -> i32 {
    floor_return!(0);
    hook_result!(try_task_alloc(&ctx))
}

fn try_task_alloc(ctx: &LsmContext) -> Result<i32, i32> {
    // An earlier BPF LSM program refused already: keep its verdict, charge nothing.
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return Err(previous);
    }
    let task = Object::at(ctx.arg(0));
    match charge_caller(program::TASK_ALLOC, task, NUMPROC, EAGAIN) {
        0 => Ok(0),
        refused => Err(refused),
    }
}

/// security_task_free(task): the safety net for tasks charged at task_alloc but never
/// released (a fork that failed after the charge). Also runs for a task whose task_alloc
/// was refused; then nothing was recorded and nothing is uncharged.
#[lsm(hook = "task_free")]
pub fn task_free(ctx: LsmContext) -> i32 {
    floor_return!(0);
    uncharge_object(program::TASK_FREE, Object::at(ctx.arg(0)), NUMPROC);
    0
}

/// release_task(task): the task is reaped, the moment the pids controller uncharges too.
/// task_free runs an RCU grace period later (seconds with lazy RCU): uncharging only there
/// would refuse forks for tasks long gone.
#[fentry(function = "release_task")]
pub fn release_task(ctx: FEntryContext) -> u32 {
    floor_return!(0);
    uncharge_object(program::RELEASE_TASK, Object::at(ctx.arg(0)), NUMPROC);
    0
}
