//! numproc accounting shared by both tiers (the attach charge, the safety-net free) and the
//! fallback tier's fork/exit accounting (there the pids controller refuses).

use aya_ebpf::{helpers::bpf_get_current_cgroup_id, macros::btf_tracepoint, programs::BtfTracePointContext};
use tally_common::{program, res::NUMPROC};

use crate::charge::{charge_object, charged_to, uncharge_object, Strictness};
use crate::kernel::{dfl_cgroup_id, forked_into_cgroup};
use crate::maps::LIMITS;
use crate::record::Object;

/// sched_process_fork(parent, child): runs in the parent after a successful fork, with the
/// child in its cgroup: the parent's, or the one clone3's CLONE_INTO_CGROUP put it in.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> i32 {
    floor_return!(0);
    let child: u64 = ctx.arg(1);
    let dst = forked_into_cgroup(ctx.arg(0), child).unwrap_or_else(|| {
        // SAFETY: a BPF helper without preconditions.
        unsafe { bpf_get_current_cgroup_id() }
    });
    // A fresh task: no earlier charge to move (no task_alloc program in this tier).
    charge_object(
        program::SCHED_PROCESS_FORK,
        Object::at(child),
        NUMPROC,
        dst,
        Strictness::Force,
    );
    0
}

/// The full tier's sched_process_fork: task_alloc charged the parent's container (or nothing);
/// a child forked straight into another cgroup (clone3's CLONE_INTO_CGROUP: tallyd's launcher,
/// `tally exec`) moves its charge there, as a task written into cgroup.procs does.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn fork_into_cgroup(ctx: BtfTracePointContext) -> i32 {
    floor_return!(0);
    let child: u64 = ctx.arg(1);
    if let Some(dst) = forked_into_cgroup(ctx.arg(0), child) {
        move_numproc(program::FORK_INTO_CGROUP, child, dst);
    }
    0
}

/// Charges `task`'s numproc to container `dst` (force: it is there already), uncharging the
/// container it was charged to before, if another; nothing for a cgroup that is no container.
#[inline(always)]
fn move_numproc(program: u32, task: u64, dst: u64) {
    let task = Object::at(task);
    let previous = charged_to(task, NUMPROC);
    if previous == Some(dst) {
        return;
    }
    if previous.is_some() {
        uncharge_object(program, task, NUMPROC);
    }
    if LIMITS.get_ptr(dst).is_some() {
        charge_object(program, task, NUMPROC, dst, Strictness::Force);
    }
}

/// sched_process_exit(task): the task has exited. Threads and auto-reaped tasks are released
/// right after; a zombie leader is uncharged before its parent reaps it. The fallback tier
/// uncharges here because the free side runs an RCU grace period later (seconds with lazy
/// RCU), which would count long-gone tasks; the pids controller, which refuses in this tier,
/// still counts zombies.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> i32 {
    floor_return!(0);
    uncharge_object(program::SCHED_PROCESS_EXIT, Object::at(ctx.arg(0)), NUMPROC);
    0
}

/// cgroup_attach_task(dst_cgrp, path, task, threadgroup): a task written into cgroup.procs.
/// Tasks that enter a container this way (its first process, `tally exec`) did not fork
/// there, so they are force-charged here and uncharged from where they leave; a task is
/// charged to at most one container at a time. Only the named task moves its charge:
/// tally moves single-threaded processes.
#[btf_tracepoint(function = "cgroup_attach_task")]
pub fn cgroup_attach_task(ctx: BtfTracePointContext) -> i32 {
    floor_return!(0);
    let Some(dst) = dfl_cgroup_id(ctx.arg(0)) else {
        return 0;
    };
    move_numproc(program::CGROUP_ATTACH_TASK, ctx.arg(2), dst);
    0
}

/// sched_process_free(task): the task's last reference is gone; the safety net for charged
/// tasks that never passed sched_process_exit.
#[btf_tracepoint(function = "sched_process_free")]
pub fn sched_process_free(ctx: BtfTracePointContext) -> i32 {
    floor_return!(0);
    uncharge_object(program::SCHED_PROCESS_FREE, Object::at(ctx.arg(0)), NUMPROC);
    0
}
