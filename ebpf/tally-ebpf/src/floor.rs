//! The benchmark's floor: `tally-itest bench` loads the object a second way, with `BENCH_FLOOR`
//! set, in which every program returns at once what it returns for an operation it lets
//! through. Its rounds then measure what attaching the programs costs apart from their work
//! (the kernel's trampolines and program runs), beside rounds with the programs and rounds
//! without. tallyd leaves it 0: the verifier sees the read-only global as a constant and
//! removes the branch, so the check costs a production program nothing.

#[unsafe(no_mangle)]
static BENCH_FLOOR: u64 = 0;

/// Whether this load is the benchmark's floor.
#[inline(always)]
pub fn on() -> bool {
    // SAFETY: a read of a static; volatile so that the loader's override is what is read.
    unsafe { core::ptr::read_volatile(&BENCH_FLOOR) != 0 }
}

/// `hook_result!(try_HOOK(&ctx))`: a hook written as a `try_` function returns `Ok(verdict)`
/// or `Err(verdict)` (the early exits of `?`); the hook returns the verdict either way.
macro_rules! hook_result {
    ($try:expr) => {
        match $try {
            Ok(verdict) | Err(verdict) => verdict,
        }
    };
}

/// `floor_return!(ALLOW)` at the top of a program: returns ALLOW, what the program returns for
/// an operation it lets through, at once when this load is the benchmark's floor.
macro_rules! floor_return {
    ($allow:expr) => {
        if crate::floor::on() {
            return $allow;
        }
    };
}
