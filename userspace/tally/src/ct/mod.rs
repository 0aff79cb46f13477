//! Containers as tallyd manages them: their ids, their config files, and the host operations
//! on them (cgroups, beancounter registration, limits applied per tier).

mod config;
mod host;
mod id;

pub use config::{ConfigError, CtConfig};
pub use host::{ContainerView, Host, HostError, Instance};
pub use id::{CtId, CtIdError};
