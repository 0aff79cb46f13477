//! Full tier: BPF LSM hooks that charge and refuse, one module per object kind.
mod file;
mod sock;
mod task;
