//! Full tier: BPF LSM hooks that charge and refuse, one module per object kind, and the files
//! a read touches (`read`, for the read statistics).
mod file;
mod read;
mod sock;
mod task;
