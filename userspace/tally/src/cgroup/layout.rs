//! Reads the mount table to learn where cgroup2 and each controller are.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
};

use super::{io_err, CgroupError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Controller {
    Pids,
    Memory,
    Cpu,
    Cpuset,
    Io,
}

impl Controller {
    pub const ALL: [Controller; 5] = [
        Controller::Pids,
        Controller::Memory,
        Controller::Cpu,
        Controller::Cpuset,
        Controller::Io,
    ];

    /// Name in cgroup2's cgroup.controllers.
    pub fn v2_name(self) -> &'static str {
        match self {
            Controller::Pids => "pids",
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Cpuset => "cpuset",
            Controller::Io => "io",
        }
    }

    /// Mount option naming the controller on a v1 hierarchy.
    fn v1_name(self) -> &'static str {
        match self {
            Controller::Io => "blkio",
            other => other.v2_name(),
        }
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.v2_name())
    }
}

/// Which interface a controller's files follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    V1,
    V2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LayoutKind {
    /// Only cgroup2, with its controllers.
    V2,
    /// cgroup2 (possibly without controllers) beside v1 controller hierarchies.
    Hybrid,
    /// No cgroup2 at all.
    V1,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Layout {
    pub kind: LayoutKind,
    /// Where cgroup2 is mounted.
    pub unified: Option<PathBuf>,
    /// For each available controller: the mount that holds it and its flavor.
    pub controllers: BTreeMap<Controller, (PathBuf, Flavor)>,
}

impl Layout {
    pub fn detect() -> Result<Layout, CgroupError> {
        let path = Path::new("/proc/self/mountinfo");
        let text = std::fs::read_to_string(path).map_err(io_err(path))?;
        Ok(Layout::from_mountinfo(&text, |p| {
            std::fs::read_to_string(p.join("cgroup.controllers")).ok()
        }))
    }

    /// `v2_controllers` reads a cgroup2 mount's cgroup.controllers (a parameter so that the
    /// parsing is tested without a kernel).
    pub fn from_mountinfo(mountinfo: &str, v2_controllers: impl Fn(&Path) -> Option<String>) -> Layout {
        let mut unified = None;
        let mut v1: BTreeMap<Controller, PathBuf> = BTreeMap::new();
        for line in mountinfo.lines() {
            // Fields: id parent maj:min root mountpoint options [optional...] - fstype source superopts
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            let (Some(mount_point), Some(fstype), Some(super_opts)) = (left.get(4), right.first(), right.get(2)) else {
                continue;
            };
            let mount_point = PathBuf::from(unescape(mount_point));
            match *fstype {
                "cgroup2" if unified.is_none() => unified = Some(mount_point),
                "cgroup" => {
                    for c in Controller::ALL {
                        if super_opts.split(',').any(|o| o == c.v1_name()) {
                            v1.entry(c).or_insert_with(|| mount_point.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        let mut controllers = BTreeMap::new();
        if let Some(root) = &unified {
            let available = v2_controllers(root).unwrap_or_default();
            for c in Controller::ALL {
                if available.split_whitespace().any(|n| n == c.v2_name()) {
                    controllers.insert(c, (root.clone(), Flavor::V2));
                }
            }
        }
        for (c, path) in v1 {
            controllers.entry(c).or_insert((path, Flavor::V1));
        }
        let kind = match (&unified, controllers.values().any(|(_, f)| *f == Flavor::V1)) {
            (None, _) => LayoutKind::V1,
            (Some(_), true) => LayoutKind::Hybrid,
            (Some(_), false) => LayoutKind::V2,
        };
        Layout {
            kind,
            unified,
            controllers,
        }
    }

    pub fn unified(&self) -> Result<&Path, CgroupError> {
        self.unified.as_deref().ok_or(CgroupError::NoCgroup2)
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
35 24 0:30 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
36 35 0:31 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
39 35 0:34 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
42 35 0:37 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
43 35 0:38 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
44 35 0:39 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
45 35 0:40 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_host_has_v1_controllers_beside_an_empty_cgroup2() {
        let l = Layout::from_mountinfo(HYBRID, |_| Some(String::new()));
        assert_eq!(l.kind, LayoutKind::Hybrid);
        assert_eq!(l.unified.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(
            l.controllers[&Controller::Pids],
            (PathBuf::from("/sys/fs/cgroup/pids"), Flavor::V1)
        );
        assert_eq!(
            l.controllers[&Controller::Io],
            (PathBuf::from("/sys/fs/cgroup/blkio"), Flavor::V1)
        );
        assert!(!l.controllers.contains_key(&Controller::Cpuset));
    }

    #[test]
    fn pure_v2_takes_controllers_from_cgroup_controllers() {
        let info = "30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let l = Layout::from_mountinfo(info, |_| Some("cpuset cpu io memory pids\n".into()));
        assert_eq!(l.kind, LayoutKind::V2);
        assert_eq!(l.controllers.len(), 5);
        assert!(l
            .controllers
            .values()
            .all(|(p, f)| p == Path::new("/sys/fs/cgroup") && *f == Flavor::V2));
    }

    #[test]
    fn no_cgroup2_is_v1() {
        let l = Layout::from_mountinfo("36 35 0:31 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n", |_| {
            None
        });
        assert_eq!(l.kind, LayoutKind::V1);
        assert!(l.unified().is_err());
    }
}
