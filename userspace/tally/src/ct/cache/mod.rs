//! The dedup file cache (Virtuozzo's pfcache, on a stock kernel): one copy of a file that
//! several containers hold and read, in a content-addressed store (ROOT/cache/objects/hh/rest,
//! named by SHA-256), hardlinked into each such container's cache layer, an overlay lower
//! layer above the template. Hardlinks of one inode share one page cache, so N containers
//! reading the file cache it once. A container that writes the file copies it up into its own
//! upper directory and leaves the shared set alone.
//!
//! - [`hash`]: a file's SHA-256, kept in an xattr with the size and mtime it belongs to.
//! - [`Store`]: the objects, their integrity (an object whose content no longer matches its
//!   name is dropped, never served), least-recently-used eviction under a size cap, counters.
//! - [`layer`]: which files to promote (read in at least N containers, size within bounds,
//!   under the included directories) and the cache layers built from them at a container's
//!   next start.

mod host;
pub mod layer;

pub use host::ReadKey;

use std::{
    fs,
    io::{Read, Write},
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

use crate::api::CacheStats;

/// The xattr a file's hash is kept in: "HEX SIZE MTIME_NS".
const HASH_XATTR: &str = "user.tally.sha256";

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("bad cache setting {key}='{value}': {why}")]
    Setting { key: String, value: String, why: String },
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The cache's settings (ROOT/pfcache.conf, vzctl-style KEY="value"; defaults below).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Directories inside containers whose files may be promoted (PFCACHE_INCLUDES).
    pub includes: Vec<PathBuf>,
    /// Files smaller than this are not worth it (PFCACHE_MIN_SIZE, bytes).
    pub min_size: u64,
    /// Nor larger than this (PFCACHE_MAX_SIZE).
    pub max_size: u64,
    /// The store's cap (PFCACHE_SIZE); the least recently used objects leave above it.
    pub cap: u64,
    /// A file is promoted when read in at least this many containers (PFCACHE_MIN_CONTAINERS).
    pub min_containers: usize,
    /// Seconds between tallyd's promotion rounds; 0: only `tally cache promote`
    /// (PFCACHE_INTERVAL).
    pub interval: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            includes: ["/bin", "/sbin", "/lib", "/lib64", "/usr", "/opt", "/srv"]
                .iter()
                .map(PathBuf::from)
                .collect(),
            min_size: 4096,
            max_size: 1 << 30,
            cap: 4 << 30,
            min_containers: 2,
            interval: 300,
        }
    }
}

impl Settings {
    pub fn path(root: &Path) -> PathBuf {
        root.join("pfcache.conf")
    }

    /// The settings in ROOT/pfcache.conf, defaults for what it does not say.
    pub fn load(root: &Path) -> Result<Settings, CacheError> {
        let path = Self::path(root);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Settings::default()),
            Err(e) => return Err(io(&path)(e)),
        };
        let conf = super::CtConfig::parse(&path.display().to_string(), &text).map_err(|e| CacheError::Setting {
            key: path.display().to_string(),
            value: String::new(),
            why: e.to_string(),
        })?;
        let mut s = Settings::default();
        let bad = |key: &str, value: &str, why: &str| CacheError::Setting {
            key: key.into(),
            value: value.into(),
            why: why.into(),
        };
        for (key, value) in &conf.values {
            match key.as_str() {
                "PFCACHE_INCLUDES" => {
                    s.includes = value.split_whitespace().map(PathBuf::from).collect();
                    if s.includes
                        .iter()
                        .any(|p| !p.is_absolute() || p.components().any(|c| c.as_os_str() == ".."))
                    {
                        return Err(bad(key, value, "absolute paths without '..'"));
                    }
                }
                "PFCACHE_MIN_SIZE" | "PFCACHE_MAX_SIZE" | "PFCACHE_SIZE" => {
                    // A bytes row's syntax: a number with K, M, G, T or P.
                    let n = crate::ubc::parse_barrier_limit(crate::ubc::Resource::KmemSize, value)
                        .map(|(b, _)| b)
                        .map_err(|_| bad(key, value, "a size (bytes, K, M, G)"))?;
                    match key.as_str() {
                        "PFCACHE_MIN_SIZE" => s.min_size = n,
                        "PFCACHE_MAX_SIZE" => s.max_size = n,
                        _ => s.cap = n,
                    }
                }
                "PFCACHE_INTERVAL" => {
                    s.interval = value.parse().map_err(|_| bad(key, value, "seconds"))?;
                }
                "PFCACHE_MIN_CONTAINERS" => {
                    s.min_containers = value
                        .parse()
                        .ok()
                        .filter(|n| *n >= 2)
                        .ok_or_else(|| bad(key, value, "a number of containers, 2 or more"))?;
                }
                _ => {}
            }
        }
        if s.min_size > s.max_size {
            return Err(bad(
                "PFCACHE_MIN_SIZE",
                &s.min_size.to_string(),
                "above PFCACHE_MAX_SIZE",
            ));
        }
        Ok(s)
    }
}

/// SHA-256 of `path`'s content, lower-case hex. Kept in an xattr with the size and mtime it
/// was computed for, and recomputed when either changed.
pub fn hash(path: &Path) -> Result<String, CacheError> {
    let meta = fs::symlink_metadata(path).map_err(io(path))?;
    let stamp = format!(
        "{} {}",
        meta.len(),
        meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128
    );
    if let Ok(Some(v)) = xattr::get(path, HASH_XATTR) {
        let v = String::from_utf8_lossy(&v).into_owned();
        if let Some((hex, rest)) = v.split_once(' ') {
            if rest == stamp && hex.len() == 64 {
                return Ok(hex.to_string());
            }
        }
    }
    let hex = hash_content(path)?;
    // Best effort: a filesystem without user xattrs just hashes again next time.
    let _ = xattr::set(path, HASH_XATTR, format!("{hex} {stamp}").as_bytes());
    Ok(hex)
}

fn hash_content(path: &Path) -> Result<String, CacheError> {
    hash_while_reading(path, |_| Ok(()))
}

/// SHA-256 of `path`'s content, handing each chunk read to `also` (a copy being written).
fn hash_while_reading(
    path: &Path,
    mut also: impl FnMut(&[u8]) -> Result<(), CacheError>,
) -> Result<String, CacheError> {
    let mut f = fs::File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        also(&buf[..n])?;
    }
    Ok(format!("{:x}", h.finalize()))
}

fn valid_hash(hex: &str) -> bool {
    hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The content-addressed store: ROOT/cache/objects/hh/rest, read-only files of root's.
pub struct Store {
    dir: PathBuf,
    cap: u64,
}

impl Store {
    pub fn new(root: &Path, cap: u64) -> Store {
        Store {
            dir: root.join("cache"),
            cap,
        }
    }

    fn objects(&self) -> PathBuf {
        self.dir.join("objects")
    }

    pub fn object_path(&self, hex: &str) -> PathBuf {
        self.objects().join(&hex[..2]).join(&hex[2..])
    }

    /// The object `hex`, copied from `src` when missing. The copy is hashed as it is written:
    /// a file that changed since it was hashed is refused (false), and nothing is stored.
    pub fn put(&self, src: &Path, hex: &str, mode: u32) -> Result<bool, CacheError> {
        if !valid_hash(hex) {
            return Ok(false);
        }
        let target = self.object_path(hex);
        if target.exists() {
            return Ok(true);
        }
        let parent = target.parent().expect("has a parent");
        fs::create_dir_all(parent).map_err(io(parent))?;
        // Root's alone: objects are served through containers' layers, never from here.
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700)).map_err(io(&self.dir))?;
        let tmp = self.dir.join(format!("tmp-{}-{hex}", std::process::id()));
        let result = (|| {
            let mut to = fs::File::create(&tmp).map_err(io(&tmp))?;
            let copied = hash_while_reading(src, |chunk| to.write_all(chunk).map_err(io(&tmp)))?;
            to.sync_all().map_err(io(&tmp))?;
            if copied != hex {
                return Ok(false);
            }
            fs::set_permissions(&tmp, fs::Permissions::from_mode(mode & 0o7777)).map_err(io(&tmp))?;
            fs::rename(&tmp, &target).map_err(io(&target))?;
            self.mark_verified(hex)?;
            Ok(true)
        })();
        let _ = fs::remove_file(&tmp);
        result
    }

    /// Whether object `hex` may be served: its content is re-hashed whenever its ctime moved
    /// since the last check (no write can keep ctime); a mismatch drops it.
    pub fn verify(&self, hex: &str) -> Result<bool, CacheError> {
        let path = self.object_path(hex);
        let Ok(meta) = fs::metadata(&path) else {
            return Ok(false);
        };
        let stamp = ctime_ns(&meta).to_string();
        let ok_file = self.verified_path(hex);
        if fs::read_to_string(&ok_file).is_ok_and(|s| s == stamp) {
            return Ok(true);
        }
        if hash_content(&path)? == hex {
            self.mark_verified(hex)?;
            return Ok(true);
        }
        log::warn!("cache: object {hex} does not match its name: dropped");
        let _ = fs::remove_file(&path);
        let _ = fs::remove_file(&ok_file);
        self.count(|s| s.corrupt_dropped += 1)?;
        Ok(false)
    }

    fn verified_path(&self, hex: &str) -> PathBuf {
        self.dir.join("verified").join(hex)
    }

    /// Records that object `hex` matches its name as of its current ctime.
    pub(crate) fn mark_verified(&self, hex: &str) -> Result<(), CacheError> {
        let meta = fs::metadata(self.object_path(hex)).map_err(io(&self.object_path(hex)))?;
        let dir = self.dir.join("verified");
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let p = self.verified_path(hex);
        fs::write(&p, ctime_ns(&meta).to_string()).map_err(io(&p))
    }

    /// Marks object `hex` used now (its atime-like stamp for eviction is its mtime). Touching
    /// moves its ctime too: a verified object stays verified (without a re-hash).
    pub fn touch(&self, hex: &str) {
        let p = self.object_path(hex);
        let verified = fs::metadata(&p)
            .is_ok_and(|m| fs::read_to_string(self.verified_path(hex)).is_ok_and(|s| s == ctime_ns(&m).to_string()));
        let now = nix::sys::time::TimeSpec::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
        );
        let _ = nix::sys::stat::utimensat(
            None,
            &p,
            &nix::sys::time::TimeSpec::UTIME_OMIT,
            &now,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        );
        if verified {
            let _ = self.mark_verified(hex);
        }
    }

    /// The names of every object.
    pub fn hashes(&self) -> Vec<String> {
        self.list().into_iter().map(|o| o.0).collect()
    }

    /// (hash, size, last use, link count) of every object.
    fn list(&self) -> Vec<(String, u64, i64, u64)> {
        let mut out = Vec::new();
        for d in fs::read_dir(self.objects()).into_iter().flatten().flatten() {
            let hh = d.file_name().to_string_lossy().into_owned();
            for f in fs::read_dir(d.path()).into_iter().flatten().flatten() {
                let hex = format!("{hh}{}", f.file_name().to_string_lossy());
                if let (true, Ok(m)) = (valid_hash(&hex), f.metadata()) {
                    out.push((hex, m.len(), m.mtime() * 1_000_000_000 + m.mtime_nsec(), m.nlink()));
                }
            }
        }
        out
    }

    /// Least recently used objects leave until the store is under its cap. Containers that
    /// link an evicted object keep their links (and still share them); new promotions copy
    /// the file again. Returns how many left.
    pub fn evict(&self) -> Result<u64, CacheError> {
        let mut objects = self.list();
        let mut total: u64 = objects.iter().map(|o| o.1).sum();
        objects.sort_by_key(|o| o.2);
        let mut evicted = 0;
        for (hex, size, ..) in objects {
            if total <= self.cap {
                break;
            }
            let p = self.object_path(&hex);
            fs::remove_file(&p).map_err(io(&p))?;
            let _ = fs::remove_file(self.verified_path(&hex));
            total -= size;
            evicted += 1;
        }
        if evicted > 0 {
            self.count(|s| s.evictions += evicted)?;
        }
        Ok(evicted)
    }

    /// Removes every object (`tally cache drop`); containers keep their links.
    pub fn drop_all(&self) -> Result<u64, CacheError> {
        let n = self.list().len() as u64;
        for dir in [self.objects(), self.dir.join("verified")] {
            match fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&dir)(e)),
                _ => {}
            }
        }
        Ok(n)
    }

    pub fn stats(&self) -> Result<CacheStats, CacheError> {
        let mut s = self.counters();
        let objects = self.list();
        s.objects = objects.len() as u64;
        s.bytes = objects.iter().map(|o| o.1).sum();
        s.cap = self.cap;
        // Links: the store's own name plus one per container layer.
        s.page_cache_saved_bytes = objects.iter().map(|o| o.1 * o.3.saturating_sub(2)).sum();
        Ok(s)
    }

    fn counters_path(&self) -> PathBuf {
        self.dir.join("counters.json")
    }

    fn counters(&self) -> CacheStats {
        fs::read(self.counters_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Updates the persistent counters (atomically: a temporary file renamed into place).
    pub(crate) fn count(&self, f: impl FnOnce(&mut CacheStats)) -> Result<(), CacheError> {
        let mut s = self.counters();
        f(&mut s);
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let tmp = self.dir.join(".counters.tmp");
        fs::write(&tmp, serde_json::to_vec(&s).expect("serializable")).map_err(io(&tmp))?;
        fs::rename(&tmp, self.counters_path()).map_err(io(&self.counters_path()))
    }
}

fn ctime_ns(meta: &fs::Metadata) -> i128 {
    meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_keeps_verified_objects_under_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::write(&src, vec![7u8; 10_000]).unwrap();
        let hex = hash(&src).unwrap();
        assert_eq!(hex, hash_content(&src).unwrap());
        let store = Store::new(dir.path(), 15_000);
        assert!(store.put(&src, &hex, 0o644).unwrap());
        assert!(store.verify(&hex).unwrap());
        // A file that changed since it was hashed is not stored.
        let other = dir.path().join("other");
        fs::write(&other, vec![8u8; 10_000]).unwrap();
        let stale = hash(&other).unwrap();
        fs::write(&other, vec![9u8; 10_000]).unwrap();
        assert!(!store.put(&other, &stale, 0o644).unwrap());
        assert!(!store.object_path(&stale).exists());
        // A second object goes over the cap: the least recently used one leaves.
        let hex2 = hash(&other).unwrap();
        assert!(store.put(&other, &hex2, 0o644).unwrap());
        store.touch(&hex2);
        assert_eq!(store.evict().unwrap(), 1);
        assert!(!store.object_path(&hex).exists() && store.object_path(&hex2).exists());
        // A corrupted object is dropped, not served.
        let p = store.object_path(&hex2);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&p, b"garbage").unwrap();
        assert!(!store.verify(&hex2).unwrap());
        assert!(!p.exists());
        let s = store.stats().unwrap();
        assert_eq!((s.objects, s.evictions, s.corrupt_dropped), (0, 1, 1));
    }

    #[test]
    fn settings_have_defaults_and_refuse_nonsense() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Settings::load(dir.path()).unwrap(), Settings::default());
        fs::write(
            Settings::path(dir.path()),
            "PFCACHE_INCLUDES=\"/srv /usr\"\nPFCACHE_SIZE=\"1G\"\n",
        )
        .unwrap();
        let s = Settings::load(dir.path()).unwrap();
        assert_eq!(s.includes, vec![PathBuf::from("/srv"), PathBuf::from("/usr")]);
        assert_eq!(s.cap, 1 << 30);
        fs::write(Settings::path(dir.path()), "PFCACHE_INCLUDES=\"../etc\"\n").unwrap();
        assert!(Settings::load(dir.path()).is_err());
        fs::write(Settings::path(dir.path()), "PFCACHE_MIN_CONTAINERS=\"1\"\n").unwrap();
        assert!(Settings::load(dir.path()).is_err());
    }
}
