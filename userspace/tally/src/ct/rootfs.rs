//! A container's file tree: its private area (ROOT/private/CTID: the overlay's upper and
//! work directories, and the console log) and its root (ROOT/root/CTID), where the template
//! and the private area are mounted together as an overlay, like vzctl's VE_PRIVATE and
//! VE_ROOT.

use std::{
    fs,
    path::{Path, PathBuf},
};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::CtId;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("cannot mount {root}: {source}")]
    Mount { root: PathBuf, source: nix::Error },
    #[error("cannot unmount {root}: {source}")]
    Umount { root: PathBuf, source: nix::Error },
    #[error("path {0} cannot be an overlay layer (it contains ',' or ':')")]
    BadPath(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RootfsError + '_ {
    move |source| RootfsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where one container's trees live.
#[derive(Clone, Debug)]
pub struct Rootfs {
    /// VE_PRIVATE: upper/, work/, console.log.
    pub private: PathBuf,
    /// VE_ROOT: the overlay's mount point.
    pub root: PathBuf,
}

impl Rootfs {
    pub fn new(tally_root: &Path, ct: &CtId) -> Rootfs {
        Rootfs {
            private: tally_root.join("private").join(ct.as_str()),
            root: tally_root.join("root").join(ct.as_str()),
        }
    }

    pub fn console_log(&self) -> PathBuf {
        self.private.join("console.log")
    }

    pub fn exists(&self) -> bool {
        self.private.is_dir()
    }

    /// Makes the private area (empty upper and work directories) and the mount point.
    /// Refuses to reuse a private area that is already there.
    pub fn create(&self) -> Result<(), RootfsError> {
        fs::create_dir_all(self.private.parent().expect("private has a parent")).map_err(io(&self.private))?;
        fs::create_dir(&self.private).map_err(io(&self.private))?;
        for dir in [self.private.join("upper"), self.private.join("work"), self.root.clone()] {
            fs::create_dir_all(&dir).map_err(io(&dir))?;
        }
        Ok(())
    }

    /// Whether the overlay is mounted at the root: an overlay has a device of its own, so the
    /// root then sits on another device than its parent directory (two stats, where reading
    /// mountinfo grows with every mount on the host).
    pub fn is_mounted(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let (Ok(root), Some(Ok(parent))) = (fs::metadata(&self.root), self.root.parent().map(fs::metadata)) else {
            return false;
        };
        root.dev() != parent.dev()
    }

    /// Mounts `template` (read-only, shared) under the private upper directory at the root.
    /// With `userns_base`, the template is seen through an idmapped mount (host root's files
    /// are the container root's), and the root of the tree belongs to the container's root.
    /// `userns`: a user namespace with that base's map, when the caller has one (else one is
    /// made for the idmapping).
    pub fn mount(
        &self,
        template: &Path,
        userns_base: Option<u32>,
        userns: Option<&std::os::fd::OwnedFd>,
    ) -> Result<(), RootfsError> {
        if self.is_mounted() {
            return Ok(());
        }
        let (upper, work) = (self.private.join("upper"), self.private.join("work"));
        // The cache layer (files shared through the dedup cache) sits above the template.
        let cache = self.cache_layer();
        let cache = fs::read_dir(&cache)
            .is_ok_and(|mut d| d.next().is_some())
            .then_some(cache);
        let mut layers: Vec<PathBuf> = cache.into_iter().chain([template.to_path_buf()]).collect();
        let mut idmapped: Vec<PathBuf> = Vec::new();
        self.detach_layers();
        if let Some(base) = userns_base {
            nix::unistd::chown(&upper, Some(base.into()), Some(base.into())).map_err(|e| RootfsError::Io {
                path: upper.clone(),
                source: e.into(),
            })?;
            let made;
            let ns = match userns {
                Some(ns) => ns,
                None => {
                    made = super::userns::make(base).map_err(io(&self.private))?;
                    &made
                }
            };
            let count = layers.len();
            for (i, layer) in layers.iter_mut().enumerate() {
                // private/lower is the template's; private/lower-cache the cache layer's.
                let at = self.private.join(if i + 1 == count { "lower" } else { "lower-cache" });
                fs::create_dir_all(&at).map_err(io(&at))?;
                if let Err(e) = super::userns::mount_idmapped(layer, &at, ns) {
                    for m in &idmapped {
                        let _ = umount2(m, MntFlags::MNT_DETACH);
                    }
                    return Err(io(&at)(e));
                }
                idmapped.push(at.clone());
                *layer = at;
            }
        }
        let result = self.mount_overlay(&layers, &upper, &work);
        // The overlay holds its own copies of the idmapped mounts.
        for m in &idmapped {
            let _ = umount2(m, MntFlags::MNT_DETACH);
        }
        result
    }

    /// Detaches idmapped layer mounts a killed tallyd left between making them and handing
    /// them to the overlay (the overlay holds its own copies; these are never needed after).
    pub fn detach_layers(&self) {
        let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
            return;
        };
        let layers = [self.private.join("lower"), self.private.join("lower-cache")];
        for point in mount_points(&info).filter(|p| layers.contains(p)) {
            let _ = umount2(&point, MntFlags::MNT_DETACH);
        }
    }

    /// VE_PRIVATE/cache: hardlinks to the dedup cache's objects (see [`super::cache`]).
    pub fn cache_layer(&self) -> PathBuf {
        self.private.join("cache")
    }

    /// `lower`: the lower layers, topmost first.
    fn mount_overlay(&self, lower: &[PathBuf], upper: &Path, work: &Path) -> Result<(), RootfsError> {
        for p in lower.iter().map(PathBuf::as_path).chain([upper, work]) {
            let s = p.to_string_lossy();
            if s.contains(',') || s.contains(':') {
                return Err(RootfsError::BadPath(p.to_path_buf()));
            }
        }
        fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        let lower: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            upper.display(),
            work.display()
        );
        mount(
            Some("tally-overlay"),
            &self.root,
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(|source| RootfsError::Mount {
            root: self.root.clone(),
            source,
        })
    }

    pub fn umount(&self) -> Result<(), RootfsError> {
        self.detach_layers();
        if !self.is_mounted() {
            return Ok(());
        }
        // Lazily: a host shell whose working directory is inside must not keep it mounted
        // (the tree is unreachable for new lookups at once).
        umount2(&self.root, MntFlags::MNT_DETACH).map_err(|source| RootfsError::Umount {
            root: self.root.clone(),
            source,
        })
    }

    /// Unmounts and removes the private area and the mount point.
    pub fn destroy(&self) -> Result<(), RootfsError> {
        self.umount()?;
        for dir in [&self.private, &self.root] {
            match fs::remove_dir_all(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(dir)(e)),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Mount points in a mountinfo text (field 5, with the kernel's octal escapes undone).
pub(super) fn mount_points(info: &str) -> impl Iterator<Item = PathBuf> + '_ {
    info.lines().filter_map(|l| l.split(' ').nth(4)).map(unescape)
}

fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_points_are_unescaped() {
        let info = "36 35 0:30 / /var/lib/tally/root/101 rw - overlay tally-overlay rw\n\
                    37 35 0:31 / /tmp/a\\040b rw - tmpfs tmpfs rw\n";
        let points: Vec<PathBuf> = mount_points(info).collect();
        assert_eq!(
            points,
            [PathBuf::from("/var/lib/tally/root/101"), PathBuf::from("/tmp/a b")]
        );
    }
}
