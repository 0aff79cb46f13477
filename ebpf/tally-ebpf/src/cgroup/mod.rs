//! cgroup BPF programs, attached to the instance's cgroup2 directory (both tiers): socket
//! accounting for the fallback tier, traffic counters, and the device and sysctl guards every
//! container gets.
mod dev;
mod skb;
mod sock;
mod sysctl;
