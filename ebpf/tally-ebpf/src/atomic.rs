//! The only place with atomic intrinsics. The bpf target has no core::sync::atomic
//! fetch_add, and with LLVM 22 a Relaxed xadd whose result is used compiles to a plain add,
//! so everything here is SeqCst (built with -C target-cpu=v3 for BPF_FETCH/CMPXCHG).

use core::intrinsics::{atomic_cxchg, atomic_xadd, atomic_xsub, AtomicOrdering};

/// Adds `v` to `*p` and returns the new value.
#[inline(always)]
pub fn add(p: *mut u64, v: u64) -> u64 {
    // SAFETY: callers pass pointers into map values obtained from a successful lookup; the
    // verifier checks the bounds.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(p, v) }.wrapping_add(v)
}

/// Subtracts `v` from `*p`, returning the new value.
#[inline(always)]
pub fn sub(p: *mut u64, v: u64) -> u64 {
    // SAFETY: as in `add`.
    unsafe { atomic_xsub::<u64, u64, { AtomicOrdering::SeqCst }>(p, v) }.wrapping_sub(v)
}

/// An aligned 64-bit load is atomic on BPF; LLVM's BPF backend rejects seq_cst loads.
#[inline(always)]
pub fn load(p: *const u64) -> u64 {
    // SAFETY: as in `add`.
    unsafe { core::ptr::read_volatile(p) }
}

/// Raises `*p` to at least `v`. A few compare-exchange rounds are enough: every loser saw a
/// value another CPU raised, and gives up once `*p >= v`.
#[inline(always)]
pub fn max(p: *mut u64, v: u64) {
    let mut seen = load(p);
    let mut tries = 0;
    while seen < v && tries < 8 {
        // SAFETY: as in `add`.
        let (old, ok) =
            unsafe { atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(p, seen, v) };
        if ok {
            return;
        }
        seen = old;
        tries += 1;
    }
}

/// Sets `*p` to `new` if it holds `current`; whether it did.
#[inline(always)]
pub fn compare_exchange(p: *mut u64, current: u64, new: u64) -> bool {
    // SAFETY: as in `add`.
    unsafe { atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(p, current, new) }.1
}
