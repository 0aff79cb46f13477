//! OpenVZ's charge semantics, for every hook: a charge adds to `held` and is then checked,
//! hard against the barrier, soft against the limit, or never (force); a refused charge rolls
//! back and bumps `failcnt`; `maxheld` moves only on success. Cgroups without a `limits` row
//! are not containers and are never charged. Every function that can fail takes the number
//! of the program it runs in (tally_common::program), to count the failure against it.

use aya_ebpf::helpers::{bpf_get_current_cgroup_id, bpf_ktime_get_ns};
use tally_common::{errors, Counter, LimitHit, EVENT_INTERVAL_NS, RESOURCE_COUNT};

use crate::{
    atomic,
    maps::{error, COUNTERS, EVENTS, LIMITS},
    record::{self, NotRecorded, Object},
};

/// How strictly a charge is checked (OpenVZ's UB_HARD / UB_SOFT / UB_FORCE).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// Refused when held would exceed the barrier: what a process asks for.
    Hard,
    /// Refused when held would exceed the limit: what must not fail easily (OpenVZ's stack
    /// growth; here accepted connections, which the kernel has already made for a peer).
    Soft,
    /// Never refused: for what the kernel has already done (accounting-only hooks).
    Force,
}

pub enum Charge {
    /// Not a container: nothing charged, nothing to uncharge.
    NotContainer,
    Charged,
    Refused,
}

#[inline(always)]
fn row(cgid: u64, res: usize) -> Option<*mut Counter> {
    if res >= RESOURCE_COUNT {
        return None;
    }
    let counters = COUNTERS.get_ptr_mut(cgid)?;
    // SAFETY: res < RESOURCE_COUNT, so the row lies inside the map value.
    Some(unsafe { core::ptr::addr_of_mut!((*counters).rows[res]) })
}

#[inline(always)]
pub fn charge(program: u32, cgid: u64, res: usize, amount: u64, strictness: Strictness) -> Charge {
    if res >= RESOURCE_COUNT {
        return Charge::NotContainer;
    }
    let Some(limits) = LIMITS.get_ptr(cgid) else {
        return Charge::NotContainer;
    };
    let Some(row) = row(cgid, res) else {
        error(program, errors::COUNTERS_MISSING);
        return Charge::NotContainer;
    };
    // SAFETY: `row` points into a live map value (lookup above); the fields are u64.
    let (held, maxheld, failcnt) = unsafe {
        (
            core::ptr::addr_of_mut!((*row).held),
            core::ptr::addr_of_mut!((*row).maxheld),
            core::ptr::addr_of_mut!((*row).failcnt),
        )
    };
    let now = atomic::add(held, amount);
    if strictness != Strictness::Force {
        // SAFETY: `limits` comes from a successful lookup; res < RESOURCE_COUNT.
        let (barrier, limit) = unsafe { ((*limits).rows[res].barrier, (*limits).rows[res].limit) };
        let ceiling = if strictness == Strictness::Hard { barrier } else { limit };
        if now > ceiling {
            let held_now = atomic::sub(held, amount);
            let failures = atomic::add(failcnt, 1);
            // SAFETY: `row` points into a live map value; the field is a u64.
            let last = unsafe { core::ptr::addr_of_mut!((*row).last_event_ns) };
            limit_hit(
                program,
                cgid,
                res,
                last,
                LimitHit {
                    failcnt: failures,
                    held: held_now,
                    barrier,
                    ..Default::default()
                },
            );
            return Charge::Refused;
        }
    }
    atomic::max(maxheld, now);
    Charge::Charged
}

/// Gives `amount` back to the container that was charged (not necessarily the caller's).
#[inline(always)]
pub fn uncharge(cgid: u64, res: usize, amount: u64) -> bool {
    let Some(row) = row(cgid, res) else {
        return false;
    };
    // SAFETY: as in `charge`.
    atomic::sub(unsafe { core::ptr::addr_of_mut!((*row).held) }, amount);
    true
}

/// Whether `object` is charged for `res` already (a file locked twice holds one lock charge).
#[inline(always)]
pub fn is_charged(object: Object, res: usize) -> bool {
    record::get(object, res).is_some()
}

/// Charges one `res` to container `cgid` for `object` and remembers it, so that
/// `uncharge_object` gives it back to `cgid` whoever frees the object. When the record
/// cannot be kept the charge is undone and reported as refused: a container must never hold
/// what tally could not give back.
#[inline(always)]
pub fn charge_object(program: u32, object: Object, res: usize, cgid: u64, strictness: Strictness) -> Charge {
    match charge(program, cgid, res, 1, strictness) {
        Charge::Charged => match record::insert(object, res, cgid) {
            Ok(()) => Charge::Charged,
            Err(why) => {
                if let NotRecorded::Full = why {
                    error(program, errors::CHARGE_MAP_FULL);
                }
                uncharge(cgid, res, 1);
                Charge::Refused
            }
        },
        other => other,
    }
}

/// Gives back what `object` holds of `res`, to the container recorded at charge time;
/// whether there was such a record.
#[inline(always)]
pub fn uncharge_object(program: u32, object: Object, res: usize) -> bool {
    give_back(program, record::take(object, res), res)
}

/// [`uncharge_object`] for several rows of one object (one scan of its records).
#[inline(always)]
pub fn uncharge_rows<const N: usize>(program: u32, object: Object, rows: [usize; N]) {
    record::take_each(object, rows, |res, cgid| {
        give_back(program, Some(cgid), res);
    });
}

/// Gives one `res` back to the container a record named, if there was a record.
#[inline(always)]
pub fn give_back(program: u32, record: Option<u64>, res: usize) -> bool {
    let Some(cgid) = record else {
        return false;
    };
    if !uncharge(cgid, res, 1) {
        error(program, errors::UNCHARGE_ORPHAN);
    }
    true
}

/// The container `object` is charged to for `res`, if any.
#[inline(always)]
pub fn charged_to(object: Object, res: usize) -> Option<u64> {
    record::get(object, res)
}

/// Emits a limit-hit event unless this row emitted one less than EVENT_INTERVAL_NS ago.
#[inline(always)]
fn limit_hit(program: u32, cgid: u64, res: usize, last_event_ns: *mut u64, mut event: LimitHit) {
    // SAFETY: a BPF helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if now.wrapping_sub(atomic::load(last_event_ns)) < EVENT_INTERVAL_NS {
        return;
    }
    // SAFETY: the pointer comes from a live map value; a plain store (a lost race only lets
    // one more event through).
    unsafe { core::ptr::write_volatile(last_event_ns, now) };
    event.cgroup_id = cgid;
    event.resource = res as u32;
    event.time_ns = now;
    if EVENTS.output::<LimitHit>(&event, 0).is_err() {
        error(program, errors::EVENTS_LOST);
    }
}

/// The refusing hooks' common case: hard-charges one `res` for `object` to the caller's
/// container. Returns what the hook returns: `-errno` when refused, 0 otherwise (also for
/// cgroups that are not containers).
#[inline(always)]
pub fn charge_caller(program: u32, object: Object, res: usize, errno: i32) -> i32 {
    // SAFETY: a BPF helper without preconditions.
    let cgid = unsafe { bpf_get_current_cgroup_id() };
    match charge_object(program, object, res, cgid, Strictness::Hard) {
        Charge::Refused => -errno,
        Charge::NotContainer | Charge::Charged => 0,
    }
}
