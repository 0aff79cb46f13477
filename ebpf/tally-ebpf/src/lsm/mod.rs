//! Full tier: BPF LSM hooks (and fentry/fexit where no LSM hook fits) that charge and refuse,
//! one module per object kind, and the read statistics (`read`).
mod file;
pub mod read;
mod sock;
mod task;
