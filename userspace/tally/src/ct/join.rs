//! Joining a running container from outside, as `tally exec` and `tally enter` do (and a
//! console will): what to hold before anything is entered, then, in the process that becomes
//! the command, the container's namespaces, its user namespace as its root, and the same
//! capability and syscall bounds the launcher gives its init (super::launch::confine).

use std::{
    fs::{File, OpenOptions},
    io::Write,
    os::fd::{AsRawFd, OwnedFd},
};

use nix::sched::{setns, CloneFlags};

use super::{api::JoinPlan, launch, userns};

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("the container is not running: {0}")]
    NotRunning(std::io::Error),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{what}: {source}")]
    Sys { what: &'static str, source: nix::Error },
    #[error(transparent)]
    Launch(#[from] launch::LaunchError),
}

/// What a joining process holds, opened before it enters anything (the container's /proc and
/// paths are not the host's once inside).
pub struct Handles {
    /// The init's pidfd: the namespaces to enter.
    pub pidfd: OwnedFd,
    /// Whether the init has a user namespace of its own.
    pub userns: bool,
    /// The container's cgroup2 directory (for clone3's CLONE_INTO_CGROUP).
    pub cgroup_dir: File,
    /// The v1 hierarchies' `tasks` files, where the joining thread writes itself.
    pub v1_tasks: Vec<File>,
}

impl Handles {
    pub fn open(plan: &JoinPlan) -> Result<Handles, JoinError> {
        let io = |what: String| move |source| JoinError::Io { what, source };
        let pidfd = launch::pidfd_open(plan.init_pid).map_err(JoinError::NotRunning)?;
        let userns = userns::in_other_userns(plan.init_pid).map_err(io("the container's user namespace".into()))?;
        let cgroup_dir = File::open(&plan.unified).map_err(io(format!("opening {}", plan.unified.display())))?;
        let v1_tasks = plan
            .v1_tasks
            .iter()
            .map(|p| {
                OpenOptions::new()
                    .write(true)
                    .open(p)
                    .map_err(io(format!("opening {}", p.display())))
            })
            .collect::<Result<_, _>>()?;
        Ok(Handles {
            pidfd,
            userns,
            cgroup_dir,
            v1_tasks,
        })
    }

    /// Children of this process are born in the container's PID namespace.
    pub fn enter_pid_namespace(&self) -> Result<(), JoinError> {
        setns(&self.pidfd, CloneFlags::CLONE_NEWPID).map_err(|source| JoinError::Sys {
            what: "entering the PID namespace",
            source,
        })
    }

    /// In the (single-threaded) child: writes it into the v1 hierarchies' tasks files.
    pub fn join_v1(&self) -> Result<(), JoinError> {
        for mut f in &self.v1_tasks {
            // "0": the writing thread, which is the whole (single-threaded) process.
            f.write_all(b"0").map_err(|source| JoinError::Io {
                what: "joining the container's v1 cgroups".into(),
                source,
            })?;
        }
        Ok(())
    }
}

/// In the process that becomes the command: the container's mount, UTS, IPC, network and
/// cgroup namespaces, its user namespace last (the others are joined with host root's rights)
/// as its root, its root directory, and the init's bounds. Then only exec is left to do.
pub fn enter(pidfd: &OwnedFd, userns: bool) -> Result<(), JoinError> {
    let flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWCGROUP;
    setns(pidfd, flags).map_err(|source| JoinError::Sys {
        what: "entering the container's namespaces",
        source,
    })?;
    if userns {
        setns(pidfd, CloneFlags::CLONE_NEWUSER).map_err(|source| JoinError::Sys {
            what: "entering the container's user namespace",
            source,
        })?;
        userns::become_root().map_err(|source| JoinError::Io {
            what: "becoming root of the user namespace".into(),
            source,
        })?;
    }
    std::env::set_current_dir("/").map_err(|source| JoinError::Io {
        what: "chdir /".into(),
        source,
    })?;
    launch::confine()?;
    let _ = nix::unistd::close(pidfd.as_raw_fd());
    Ok(())
}
