//! Containers as tallyd manages them: their ids and config files, templates, root trees
//! (overlay), network (netlink), the launch of their init into fresh namespaces, and the
//! lifecycle on the host (cgroups, beancounter registration, limits applied per tier).

pub mod cache;
mod config;
pub mod debootstrap;
mod host;
mod id;
mod journal;
pub mod launch;
mod lifecycle;
pub mod net;
pub mod rootfs;
pub mod sampled;
pub mod template;
pub mod userns;

pub use config::{ConfigError, CpuConfig, CtConfig};
pub use host::{ContainerView, Host, HostError, Instance};
pub use id::{CtId, CtIdError};
pub use lifecycle::{bridge_of, parse_signal, CreateRequest, JoinPlan, Status, STOP_TIMEOUT};
