//! A container's cgroup: its cgroup2 directory (identity) plus, per controller, the directory
//! holding that controller's files. Created under a parent named after the tally instance;
//! nothing outside that parent is ever written.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::Duration,
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

    /// The cgroup.procs files a process writes "0" to, to move itself in: every v1
    /// hierarchy first, cgroup2 last (as in `add_process`).
    pub fn procs_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self
            .controllers
            .values()
            .filter(|(_, f)| *f == Flavor::V1)
            .map(|(d, _)| d.join("cgroup.procs"))
            .collect();
        files.push(self.unified.join("cgroup.procs"));
        files
    }

    /// Kills everything in the container and waits (up to `timeout`) until it is empty.
    /// Returns whether it emptied.
    pub fn kill_and_wait(&self, timeout: Duration) -> Result<bool, CgroupError> {
        if !self.unified.is_dir() {
            return Ok(true);
        }
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.pids()?.is_empty() {
                return Ok(true);
            }
            self.kill_all()?;
            if std::time::Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Processes in the container (from cgroup2).
    pub fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        let path = self.unified.join("cgroup.procs");
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
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
        if self.unified.is_dir() {
            self.kill_all()?;
        }
        let mut dirs: Vec<&Path> = self.controllers.values().map(|(d, _)| d.as_path()).collect();
        dirs.push(&self.unified);
        dirs.sort();
        dirs.dedup();
        for dir in dirs {
            rmdir_retrying(dir)?;
        }
        Ok(())
    }

    fn kill_all(&self) -> Result<(), CgroupError> {
        let kill = self.unified.join("cgroup.kill");
        if kill.exists() {
            write(&kill, "1")?;
        } else {
            for pid in self.pids()? {
                // SAFETY: kill(2) with a pid read from this container's cgroup.procs.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        Ok(())
    }
}

fn rmdir_retrying(dir: &Path) -> Result<(), CgroupError> {
    // A cgroup stays busy until its killed tasks are reaped.
    for _ in 0..200 {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => std::thread::sleep(Duration::from_millis(25)),
            Err(e) => return Err(io_err(dir)(e)),
        }
    }
    fs::remove_dir(dir).map_err(io_err(dir))
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
    fn pids_events_max_is_read() {
        assert_eq!(keyed_value("max 7\n", "max"), Some(7));
        assert_eq!(keyed_value("low 1\nmax 0\n", "max"), Some(0));
        assert_eq!(keyed_value("", "max"), None);
    }
}
