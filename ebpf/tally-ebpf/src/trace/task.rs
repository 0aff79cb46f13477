//! numproc accounting without LSM: the pids controller refuses, these tracepoints keep
//! held/maxheld in the same rows. The task-charge record is shared with lsm::task.

use aya_ebpf::{helpers::bpf_get_current_cgroup_id, macros::btf_tracepoint, programs::BtfTracePointContext};
use tally_common::{res, stat};

use crate::charge::{charge, uncharge, Charge, Strictness};
use crate::kernel::dfl_cgroup_id;
use crate::maps::{bump_stat, LIMITS, TASK_CHARGES};

const BPF_NOEXIST: u64 = 1;

/// Remembers which container `task` was charged to; on failure the charge is undone, so a
/// container can never hold tasks that tally could not uncharge later.
#[inline(always)]
pub fn record_task_charge(task: u64, cgid: u64) -> Result<(), ()> {
    if TASK_CHARGES.insert(task, cgid, BPF_NOEXIST).is_err() {
        bump_stat(stat::TASK_MAP_FULL);
        uncharge(cgid, res::NUMPROC, 1);
        return Err(());
    }
    Ok(())
}

#[inline(always)]
pub fn uncharge_task(task: u64) {
    // SAFETY: the value is a plain u64 copied out at once.
    let Some(cgid) = (unsafe { TASK_CHARGES.get(task) }).copied() else {
        return;
    };
    let _ = TASK_CHARGES.remove(task);
    if !uncharge(cgid, res::NUMPROC, 1) {
        bump_stat(stat::UNCHARGE_ORPHAN);
    }
}

/// sched_process_fork(parent, child): runs in the parent after a successful fork.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> i32 {
    let child: u64 = ctx.arg(1);
    // SAFETY: a BPF helper without preconditions.
    let cgid = unsafe { bpf_get_current_cgroup_id() };
    if let Charge::Charged = charge(cgid, res::NUMPROC, 1, Strictness::Force) {
        let _ = record_task_charge(child, cgid);
    }
    0
}

/// cgroup_attach_task(dst_cgrp, path, task, threadgroup): a task written into cgroup.procs.
/// Tasks that enter a container this way (its first process, `tally exec`) did not fork
/// there, so they are force-charged here and uncharged from where they leave; a task is
/// charged to at most one container at a time. Only the named task moves its charge:
/// tally moves single-threaded processes.
#[btf_tracepoint(function = "cgroup_attach_task")]
pub fn cgroup_attach_task(ctx: BtfTracePointContext) -> i32 {
    let Some(dst) = dfl_cgroup_id(ctx.arg(0)) else {
        return 0;
    };
    let task: u64 = ctx.arg(2);
    // SAFETY: the value is a plain u64 copied out at once.
    let previous = unsafe { TASK_CHARGES.get(task) }.copied();
    if previous == Some(dst) {
        return 0;
    }
    if previous.is_some() {
        uncharge_task(task);
    }
    if LIMITS.get_ptr(dst).is_some() {
        if let Charge::Charged = charge(dst, res::NUMPROC, 1, Strictness::Force) {
            let _ = record_task_charge(task, dst);
        }
    }
    0
}

/// sched_process_exit(task): the task has exited. Threads and auto-reaped tasks are released
/// right after; a zombie leader is uncharged before its parent reaps it. The fallback tier
/// uncharges here because the free side runs an RCU grace period later (seconds with lazy
/// RCU), which would count long-gone tasks; the pids controller, which refuses in this tier,
/// still counts zombies.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> i32 {
    uncharge_task(ctx.arg(0));
    0
}

/// sched_process_free(task): the task's last reference is gone; the safety net for charged
/// tasks that never passed sched_process_exit.
#[btf_tracepoint(function = "sched_process_free")]
pub fn sched_process_free(ctx: BtfTracePointContext) -> i32 {
    uncharge_task(ctx.arg(0));
    0
}
