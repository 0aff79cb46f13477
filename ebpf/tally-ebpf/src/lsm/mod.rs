//! Full tier: BPF LSM hooks that charge and refuse.
mod task;
