//! The cache as tallyd runs it: which container read which of its own files (the kernel's
//! per-container read statistics, keyed by the real inode, mapped back to paths in the
//! containers' upper directories), promotion, garbage collection, status.

use std::{
    collections::{BTreeMap, HashSet},
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use super::{layer, Settings, Store};
use crate::api::{CacheStatus, GcReport};
use crate::ct::{Host, HostError};

/// A file some container read, as the kernel's statistics key it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReadKey {
    pub cgroup_id: u64,
    /// st_dev encoding.
    pub dev: u64,
    pub ino: u64,
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        match e.file_type() {
            Ok(t) if t.is_dir() => files_under(&e.path(), out),
            Ok(t) if t.is_file() => out.push(e.path()),
            _ => {}
        }
    }
}

impl Host {
    fn cache_parts(&self) -> Result<(Settings, Store), HostError> {
        let root = &self.instance.root;
        let settings = Settings::load(root)?;
        let store = Store::new(root, settings.cap);
        Ok((settings, store))
    }

    /// Maps `reads` to files in the containers' upper directories under the included
    /// directories, and promotes what qualifies. Returns the links made pending.
    pub fn cache_promote(&self, reads: &[ReadKey]) -> Result<usize, HostError> {
        // The walk of the containers' upper directories (the long part) takes no lock; the
        // store and the link lists are changed under the cache's.
        let (settings, store) = self.cache_parts()?;
        let mut found = Vec::new();
        for ct in self.configured()? {
            let cgroup = self.cgroup(&ct)?;
            if !cgroup.exists() {
                continue;
            }
            let cgid = cgroup.id()?;
            let keys: HashSet<(u64, u64)> = reads
                .iter()
                .filter(|r| r.cgroup_id == cgid)
                .map(|r| (r.dev, r.ino))
                .collect();
            if keys.is_empty() {
                continue;
            }
            let Ok(config) = self.config(&ct) else {
                continue;
            };
            let root_id = crate::ct::lifecycle::userns_base(&config)?.unwrap_or(0);
            let upper = self.rootfs(&ct).private.join("upper");
            let mut files = Vec::new();
            for inc in &settings.includes {
                files_under(&upper.join(inc.strip_prefix("/").unwrap_or(inc)), &mut files);
            }
            for f in files {
                let Ok(meta) = fs::symlink_metadata(&f) else {
                    continue;
                };
                if keys.contains(&(meta.dev(), meta.ino())) {
                    let inside = Path::new("/").join(f.strip_prefix(&upper).expect("under upper"));
                    found.push(layer::Read {
                        ct: ct.to_string(),
                        upper: upper.clone(),
                        root_id,
                        path: inside,
                    });
                }
            }
        }
        let _cache = crate::ct::host::lock(&self.cache_lock);
        Ok(layer::promote(&self.instance.root, &store, &settings, &found)?)
    }

    pub fn cache_status(&self) -> Result<CacheStatus, HostError> {
        let (settings, store) = self.cache_parts()?;
        let mut pending = BTreeMap::new();
        let mut linked = BTreeMap::new();
        for ct in self.configured()? {
            let n = layer::pending(&self.instance.root, ct.as_str()).len();
            if n > 0 {
                pending.insert(ct.to_string(), n);
            }
            let mut files = Vec::new();
            files_under(&self.rootfs(&ct).cache_layer(), &mut files);
            if !files.is_empty() {
                linked.insert(ct.to_string(), files.len());
            }
        }
        Ok(CacheStatus {
            stats: store.stats()?,
            includes: settings.includes,
            min_size: settings.min_size,
            max_size: settings.max_size,
            min_containers: settings.min_containers,
            pending,
            linked,
        })
    }

    /// Checks every object (dropping corrupt ones) and evicts down to the cap.
    pub fn cache_gc(&self) -> Result<GcReport, HostError> {
        let _cache = crate::ct::host::lock(&self.cache_lock);
        let (_, store) = self.cache_parts()?;
        let before = store.stats()?;
        let hashes = store.hashes();
        let mut report = GcReport::default();
        for hex in &hashes {
            report.checked += 1;
            store.verify(hex)?;
        }
        report.evicted = store.evict()?;
        report.corrupt_dropped = store.stats()?.corrupt_dropped - before.corrupt_dropped;
        Ok(report)
    }

    /// Removes every object; containers keep the links they have.
    pub fn cache_drop(&self) -> Result<u64, HostError> {
        let _cache = crate::ct::host::lock(&self.cache_lock);
        let (_, store) = self.cache_parts()?;
        Ok(store.drop_all()?)
    }
}
