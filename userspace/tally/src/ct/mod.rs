//! Containers as tallyd manages them: their ids and config files, templates, root trees
//! (overlay), network (netlink), the launch of their init into fresh namespaces, and the
//! lifecycle on the host (cgroups, beancounter registration, limits applied per tier).

mod accounting;
pub mod cache;
mod config;
pub mod debootstrap;
mod host;
pub mod join;
mod journal;
pub mod launch;
mod lifecycle;
mod locks;
pub mod net;
mod reaper;
mod recovery;
pub mod rootfs;
pub mod sampled;
pub mod template;
pub mod userns;

pub use config::{ConfigError, CpuConfig, CtConfig};
pub use host::{Host, HostError, Instance};
pub use lifecycle::{bridge_of, parse_signal, STOP_TIMEOUT};

// The API's types, named where containers are handled too (their home is `api`).
use crate::api;
pub use crate::api::{ContainerView, CreateRequest, CtId, CtIdError, JoinPlan, Status};
