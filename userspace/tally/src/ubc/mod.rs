//! The beancounter model, pure: the OpenVZ rows (names, units, kernel order), one container's
//! quintuple per row, the `barrier:limit` value syntax and the /proc/user_beancounters text.
//! Nothing here touches the kernel; everything is unit-tested without root.

mod format;
mod human;
mod resource;
mod validate;
mod value;

pub use format::{parse_proc, render_proc, ContainerRows, NamedRow, ProcParseError, UbcJson};
pub use human::{render_human, HumanOptions, NEAR};
pub use resource::{Resource, Unit};
pub use validate::{validate, Finding, Severity};
pub use value::{parse_barrier_limit, ParseError};

pub use tally_common::UNLIMITED;

/// One row of one container: OpenVZ's quintuple.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Beancounter {
    pub held: u64,
    pub maxheld: u64,
    pub barrier: u64,
    pub limit: u64,
    pub failcnt: u64,
}

impl Beancounter {
    pub fn unlimited() -> Self {
        Beancounter {
            barrier: UNLIMITED,
            limit: UNLIMITED,
            ..Default::default()
        }
    }
}

/// The kernel's page size: what page rows (physpages, privvmpages, ...) count in.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as u64
    } else {
        4096
    }
}
