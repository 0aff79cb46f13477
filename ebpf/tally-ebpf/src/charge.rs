//! OpenVZ's charge semantics, for every hook: a charge adds to `held` and is then checked,
//! hard against the barrier or never (force); a refused charge rolls back and bumps
//! `failcnt`; `maxheld` moves only on success. Cgroups without a `limits` row are not
//! containers and are never charged.

use tally_common::{Counter, RESOURCE_COUNT};

use crate::{
    atomic,
    maps::{COUNTERS, LIMITS},
};

/// How strictly a charge is checked (OpenVZ's UB_HARD / UB_FORCE; soft charges, checked
/// against the limit, join when a hook needs them).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// Refused when held would exceed the barrier.
    Hard,
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
pub fn charge(cgid: u64, res: usize, amount: u64, strictness: Strictness) -> Charge {
    if res >= RESOURCE_COUNT {
        return Charge::NotContainer;
    }
    let Some(limits) = LIMITS.get_ptr(cgid) else {
        return Charge::NotContainer;
    };
    let Some(row) = row(cgid, res) else {
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
    if strictness == Strictness::Hard {
        // SAFETY: `limits` comes from a successful lookup; res < RESOURCE_COUNT.
        let barrier = unsafe { (*limits).rows[res].barrier };
        if now > barrier {
            atomic::sub(held, amount);
            atomic::add(failcnt, 1);
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
