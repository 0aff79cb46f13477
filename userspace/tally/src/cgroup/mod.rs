//! One home for cgroups: which hierarchies this host has (v1, v2 or hybrid, and where each
//! controller lives), and a container's cgroup across them. A container always has a cgroup2
//! directory (its identity: BPF programs key on its inode number) and, for each controller
//! it uses, the directory that holds that controller's files (the same directory on pure
//! v2, a v1 directory on hybrid hosts).

mod container;
pub mod cpu;
mod layout;
mod memory;

pub use container::ContainerCgroup;
pub use layout::{Controller, Flavor, Layout, LayoutKind};
pub use memory::MemoryUsage;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup2 hierarchy is mounted: tally identifies containers by cgroup2 id")]
    NoCgroup2,
    #[error("the {0} controller is not available on this host")]
    MissingController(Controller),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}
