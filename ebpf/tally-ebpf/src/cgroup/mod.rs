//! cgroup BPF programs, attached to each container's cgroup2 directory (both tiers).
mod sock;
