//! tally: OpenVZ-style user beancounters for mainline Linux, with eBPF.
//!
//! The library every binary stands on. Arrows run downward only: `ct` uses `cgroup`, `ubc`
//! and `kernel`; `kernel` uses tally-common; `ubc` is pure and depends on nothing else here;
//! `api` holds the request/response types shared by tallyd and the CLI.

pub mod api;
pub mod cgroup;
pub mod ct;
pub mod kernel;
pub mod manual;
pub mod ubc;
