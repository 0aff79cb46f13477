//! tally's eBPF programs: per-container beancounters keyed by cgroup2 id.
//!
//! `lsm/` enforces (full tier: BPF LSM), `trace/` only accounts (fallback tier, where the
//! cgroup controllers refuse; and the file-read statistics of both tiers), `cgroup/` runs
//! attached to each container's cgroup, `probe` holds the tiny programs `tally check` loads to
//! learn what this kernel allows. `charge` is the one place where OpenVZ's charge semantics
//! live, `record` the one place that keeps who pays for each charged object; `floor` lets the
//! benchmark load every program as one that returns at once.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

// First: its macros serve the programs below.
#[macro_use]
mod floor;

mod atomic;
mod cgroup;
mod charge;
mod errno;
mod kernel;
mod lsm;
mod maps;
mod probe;
mod record;
mod trace;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 7] = *b"GPL v2\0";
