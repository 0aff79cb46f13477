//! The errnos tally's programs refuse with (positive; a hook returns the negation).

/// numproc: fork refused, as at RLIMIT_NPROC.
pub const EAGAIN: i32 = 11;
/// numfile: the file table is full.
pub const ENFILE: i32 = 23;
/// numpty: no pty left.
pub const ENOSPC: i32 = 28;
/// numflock: no lock left.
pub const ENOLCK: i32 = 37;
/// numtcpsock, numothersock: no buffer space (as OpenVZ refuses sockets).
pub const ENOBUFS: i32 = 105;
