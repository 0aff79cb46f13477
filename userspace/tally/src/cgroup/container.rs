//! A container's cgroup: its cgroup2 directory (identity) plus, per controller, the directory
//! holding that controller's files. Created under a parent named after the tally instance;
//! nothing outside that parent is ever written.

use std::{
    collections::BTreeMap,
    fs,
    io::{Read, Seek, SeekFrom},
    os::{fd::AsFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use nix::{
    poll::{ppoll, PollFd, PollFlags},
    sys::time::TimeSpec,
};

use super::{io_err, CgroupError, Controller, Flavor, Layout};

#[derive(Clone, Debug)]
pub struct ContainerCgroup {
    /// The cgroup2 directory; its inode number is the container's id for BPF.
    pub unified: PathBuf,
    /// Controller -> (directory with its files, flavor). On pure v2 every entry is `unified`.
    pub controllers: BTreeMap<Controller, (PathBuf, Flavor)>,
}

impl ContainerCgroup {
    /// Paths for container `name` under `parent` (e.g. "tally/101"); nothing is created.
    pub fn locate(layout: &Layout, parent: &str, name: &str, wanted: &[Controller]) -> Result<Self, CgroupError> {
        let unified = layout.unified()?.join(parent).join(name);
        let mut controllers = BTreeMap::new();
        for c in wanted {
            let (mount, flavor) = layout.controllers.get(c).ok_or(CgroupError::MissingController(*c))?;
            let dir = match flavor {
                Flavor::V2 => unified.clone(),
                Flavor::V1 => mount.join(parent).join(name),
            };
            controllers.insert(*c, (dir, *flavor));
        }
        Ok(ContainerCgroup { unified, controllers })
    }

    /// Creates the directories (idempotent). On cgroup2, the parent delegates the wanted
    /// controllers to its children through cgroup.subtree_control.
    pub fn create(&self) -> Result<(), CgroupError> {
        let parent = self.unified.parent().expect("container cgroup has a parent");
        mkdir(parent)?;
        let v2: Vec<&str> = self
            .controllers
            .iter()
            .filter(|(_, (_, f))| *f == Flavor::V2)
            .map(|(c, _)| c.v2_name())
            .collect();
        if !v2.is_empty() {
            let enable: Vec<String> = v2.iter().map(|c| format!("+{c}")).collect();
            write(&parent.join("cgroup.subtree_control"), &enable.join(" "))?;
        }
        mkdir(&self.unified)?;
        for (dir, flavor) in self.controllers.values() {
            if *flavor == Flavor::V1 {
                mkdir(dir.parent().expect("container cgroup has a parent"))?;
                mkdir(dir)?;
            }
        }
        Ok(())
    }

    pub fn exists(&self) -> bool {
        self.unified.is_dir()
    }

    /// The cgroup2 id (what bpf_get_current_cgroup_id() returns for member tasks).
    pub fn id(&self) -> Result<u64, CgroupError> {
        Ok(fs::metadata(&self.unified).map_err(io_err(&self.unified))?.ino())
    }

    /// Moves process `pid` into the container on every hierarchy; cgroup2 last, so that
    /// once BPF sees the task in the container its controllers apply too.
    pub fn add_process(&self, pid: u32) -> Result<(), CgroupError> {
        for (dir, flavor) in self.controllers.values() {
            if *flavor == Flavor::V1 {
                write(&dir.join("cgroup.procs"), &pid.to_string())?;
            }
        }
        write(&self.unified.join("cgroup.procs"), &pid.to_string())
    }

    /// The `tasks` files of its v1 hierarchies: writing "0" moves the writing thread
    /// without the thread-group lock (whose first taking after a quiet spell waits an RCU
    /// grace period), and for a single-threaded process that is the whole process. cgroup2 is
    /// joined at creation instead (clone3's CLONE_INTO_CGROUP into [`Self::unified`]).
    pub fn v1_tasks_files(&self) -> Vec<PathBuf> {
        self.controllers
            .values()
            .filter(|(_, f)| *f == Flavor::V1)
            .map(|(d, _)| d.join("tasks"))
            .collect()
    }

    /// Kills everything in the container and waits (up to `timeout`) until no process is left
    /// in any of its cgroups (the cgroup2 subtree and every v1 directory). Returns whether it
    /// emptied.
    ///
    /// No fixed sleep: cgroup2's cgroup.events polls POLLPRI when "populated" changes, so
    /// the wait ends as soon as the last task has exited. The kernel rate-limits those
    /// notifications (one per 10 ms per file) and v1 directories have none, so the wait is
    /// also bounded by naps that start at 0.1 ms and double up to 20 ms.
    pub fn kill_and_wait(&self, timeout: Duration) -> Result<bool, CgroupError> {
        if !self.unified.is_dir() {
            return Ok(true);
        }
        let deadline = Instant::now() + timeout;
        let mut events = fs::File::open(self.unified.join("cgroup.events")).ok();
        let mut nap = FIRST_NAP;
        let started = Instant::now();
        loop {
            let unified_empty = match events.as_mut().map(populated) {
                Some(Ok(p)) => !p,
                // No cgroup.events (or the directory went away under us): its cgroup.procs.
                Some(Err(_)) | None => {
                    events = None;
                    self.pids()?.is_empty()
                }
            };
            let stragglers = self.v1_pids()?;
            if unified_empty && stragglers.is_empty() {
                return Ok(true);
            }
            if !unified_empty {
                self.kill_all(started.elapsed())?;
            }
            // Tasks in a v1 directory only (moved in, not yet into cgroup2).
            kill_pids(&stragglers);
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            let wait = nap.min(deadline - now);
            match &events {
                // When only v1 stragglers are left, cgroup.events has nothing to say.
                Some(file) if !unified_empty => wait_for_change(file, wait),
                _ => std::thread::sleep(wait),
            }
            nap = (nap * 2).min(LAST_NAP);
        }
    }

    /// Processes in the container (from cgroup2).
    pub fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        read_procs(&self.unified.join("cgroup.procs"))
    }

    /// Processes in the container's v1 directories (none on pure v2; a directory that is
    /// not there has none).
    fn v1_pids(&self) -> Result<Vec<u32>, CgroupError> {
        let mut pids = Vec::new();
        for (dir, flavor) in self.controllers.values() {
            if *flavor == Flavor::V1 {
                match read_procs(&dir.join("cgroup.procs")) {
                    Ok(p) => pids.extend(p),
                    Err(CgroupError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    fn controller_dir(&self, c: Controller) -> Result<&Path, CgroupError> {
        self.controllers
            .get(&c)
            .map(|(d, _)| d.as_path())
            .ok_or(CgroupError::MissingController(c))
    }

    /// pids.max: None means "max".
    pub fn set_pids_max(&self, max: Option<u64>) -> Result<(), CgroupError> {
        let value = max.map_or_else(|| "max".to_string(), |m| m.to_string());
        write(&self.controller_dir(Controller::Pids)?.join("pids.max"), &value)
    }

    /// Tasks the pids controller counts (zombies included), from pids.current.
    pub fn pids_current(&self) -> Result<u64, CgroupError> {
        let path = self.controller_dir(Controller::Pids)?.join("pids.current");
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        Ok(text.trim().parse().unwrap_or(0))
    }

    /// Forks refused by pids.max ("max" in pids.events; pids.events.local where the kernel
    /// has it, since newer kernels count the whole subtree in pids.events).
    pub fn pids_refusals(&self) -> Result<u64, CgroupError> {
        let dir = self.controller_dir(Controller::Pids)?;
        let local = dir.join("pids.events.local");
        let path = if local.exists() { local } else { dir.join("pids.events") };
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        Ok(keyed_value(&text, "max").unwrap_or(0))
    }

    /// Kills every process in the container and removes its directories (the instance's
    /// parent stays). Safe to call on a partly created or already removed container.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        // A cgroup stays busy until its killed tasks have exited; rmdir_retrying covers
        // whatever this wait did not.
        self.kill_and_wait(RMDIR_PATIENCE)?;
        let mut dirs: Vec<&Path> = self.controllers.values().map(|(d, _)| d.as_path()).collect();
        dirs.push(&self.unified);
        dirs.sort();
        dirs.dedup();
        for dir in dirs {
            rmdir_retrying(dir)?;
        }
        Ok(())
    }

    /// SIGKILL to every process listed, round after round (the init's death takes its whole
    /// PID namespace along); cgroup.kill, which no fork escapes, only when that has not emptied
    /// the container within a second: once a cgroup was killed that way, kernels with
    /// cgroup.kill's kill_seq (6.14+) SIGKILL every child later created straight into it with
    /// clone3's CLONE_INTO_CGROUP, which is how containers start (see ct::launch::spawn).
    fn kill_all(&self, trying: Duration) -> Result<(), CgroupError> {
        let kill = self.unified.join("cgroup.kill");
        if trying > PER_PROCESS_KILLING && kill.exists() {
            write(&kill, "1")?;
        } else {
            kill_pids(&self.pids()?);
        }
        Ok(())
    }
}

/// How long per-process SIGKILLs are tried before cgroup.kill.
const PER_PROCESS_KILLING: Duration = Duration::from_secs(1);

/// The first and the longest nap between two looks at a container's cgroups. A busybox
/// container is gone some 0.1 to 0.3 ms after the kill, and its cgroup.events often cannot
/// say so at once (it notified "populated 1" less than 10 ms before, at the start).
const FIRST_NAP: Duration = Duration::from_micros(100);
const LAST_NAP: Duration = Duration::from_millis(20);
/// How long `destroy` waits for a cgroup to empty and to be removable.
const RMDIR_PATIENCE: Duration = Duration::from_secs(5);

fn kill_pids(pids: &[u32]) {
    for pid in pids {
        // SAFETY: kill(2) with a pid just read from one of this container's cgroup.procs.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
}

fn read_procs(path: &Path) -> Result<Vec<u32>, CgroupError> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// "populated" of an open cgroup.events, read from its start. Reading also re-arms the
/// file's poll notification (kernfs reports a change since the last read).
fn populated(file: &mut fs::File) -> std::io::Result<bool> {
    file.seek(SeekFrom::Start(0))?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    keyed_value(&text, "populated")
        .map(|v| v != 0)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no populated in cgroup.events"))
}

/// Waits until a kernfs file (cgroup.events) changes (POLLPRI), or `timeout`.
fn wait_for_change(file: &fs::File, timeout: Duration) {
    let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLPRI)];
    let _ = ppoll(&mut fds, Some(TimeSpec::from_duration(timeout)), None);
}

fn rmdir_retrying(dir: &Path) -> Result<(), CgroupError> {
    let deadline = Instant::now() + RMDIR_PATIENCE;
    let mut nap = FIRST_NAP;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(nap);
                nap = (nap * 2).min(LAST_NAP);
            }
            Err(e) => return Err(io_err(dir)(e)),
        }
    }
}

fn mkdir(dir: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(io_err(dir)(e)),
        _ => Ok(()),
    }
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(io_err(path))
}

/// Value of `key` in a flat-keyed cgroup file ("key value" lines).
pub(crate) fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::Layout;

    #[test]
    fn hybrid_container_has_unified_identity_and_v1_controller_dirs() {
        let info = "\
42 35 0:37 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
45 35 0:40 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        let layout = Layout::from_mountinfo(info, |_| Some(String::new()));
        let cg = ContainerCgroup::locate(&layout, "tally", "101", &[Controller::Pids]).unwrap();
        assert_eq!(cg.unified, PathBuf::from("/sys/fs/cgroup/unified/tally/101"));
        assert_eq!(
            cg.controllers[&Controller::Pids].0,
            PathBuf::from("/sys/fs/cgroup/pids/tally/101")
        );
        assert!(matches!(
            ContainerCgroup::locate(&layout, "tally", "101", &[Controller::Memory]),
            Err(CgroupError::MissingController(Controller::Memory))
        ));
    }

    #[test]
    fn populated_is_read_from_the_start_each_time() {
        let path = std::env::temp_dir().join(format!("tally-unit-events-{}", std::process::id()));
        fs::write(&path, "populated 1\nfrozen 0\n").unwrap();
        let mut file = fs::File::open(&path).unwrap();
        assert!(populated(&mut file).unwrap());
        fs::write(&path, "populated 0\nfrozen 0\n").unwrap();
        assert!(!populated(&mut file).unwrap());
        fs::write(&path, "frozen 0\n").unwrap();
        assert!(populated(&mut file).is_err());
        fs::remove_file(&path).unwrap();
    }

    #[test]
    fn pids_events_max_is_read() {
        assert_eq!(keyed_value("max 7\n", "max"), Some(7));
        assert_eq!(keyed_value("low 1\nmax 0\n", "max"), Some(0));
        assert_eq!(keyed_value("", "max"), None);
    }
}
