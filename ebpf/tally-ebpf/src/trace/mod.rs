//! Tracepoints: the fallback tier's accounting (the cgroup controllers refuse) and the file-read
//! statistics of both tiers.
pub mod read;
pub mod task;
