//! Fallback tier: tracepoints that account (the cgroup controllers refuse).
pub mod task;
