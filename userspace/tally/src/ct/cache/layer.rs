//! Promotion and cache layers. A file is promoted when the same content, at a path under the
//! included directories, sized within bounds, is a private copy (in the upper directory, owned
//! by the container's root, same mode) read in at least N containers: its object is stored
//! once and each such container gets a pending link (ROOT/cache/pending/CTID.json). At the
//! container's next start, before its root is mounted, [`apply`] turns each pending link into a
//! hardlink to the object in the container's cache layer (VE_PRIVATE/cache, the overlay's lower
//! layer above the template) and removes the container's own copy from its upper directory,
//! unless the copy changed since it was hashed or the object fails its check.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::MetadataExt,
    path::{Component, Path, PathBuf},
};

use super::{hash, io, CacheError, Settings, Store};

/// A file a container read: its path inside the container, with where that container keeps
/// its private copies (its upper directory) and who its root is on the host.
#[derive(Clone, Debug)]
pub struct Read {
    pub ct: String,
    pub upper: PathBuf,
    /// The host uid and gid of the container's root (its user namespace's base, or 0).
    pub root_id: u32,
    /// Path inside the container, absolute.
    pub path: PathBuf,
}

/// A link a container gets at its next start.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pending {
    /// Path inside the container, absolute.
    pub path: PathBuf,
    pub hash: String,
    pub size: u64,
    /// The copy's mtime when it was hashed: a later write makes the link stale.
    pub mtime_ns: i128,
}

fn pending_path(root: &Path, ct: &str) -> PathBuf {
    root.join("cache/pending").join(format!("{ct}.json"))
}

/// The links container `ct` gets at its next start.
pub fn pending(root: &Path, ct: &str) -> Vec<Pending> {
    fs::read(pending_path(root, ct))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save_pending(root: &Path, ct: &str, list: &[Pending]) -> Result<(), CacheError> {
    let path = pending_path(root, ct);
    let dir = path.parent().expect("has a parent");
    fs::create_dir_all(dir).map_err(io(dir))?;
    if list.is_empty() {
        let _ = fs::remove_file(&path);
        return Ok(());
    }
    let tmp = dir.join(format!(".{ct}.tmp"));
    fs::write(&tmp, serde_json::to_vec_pretty(list).expect("serializable")).map_err(io(&tmp))?;
    fs::rename(&tmp, &path).map_err(io(&path))
}

/// `path` inside a container, relative (no root, no `..`), or None.
fn relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => out.push(n),
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Chooses what to promote from `reads` and records the pending links; returns how many
/// container copies will become links.
pub fn promote(root: &Path, store: &Store, settings: &Settings, reads: &[Read]) -> Result<usize, CacheError> {
    // (hash, mode) -> the copies with that content: (ct, path inside, size, mtime).
    let mut groups: BTreeMap<(String, u32), Vec<(String, PathBuf, u64, i128, PathBuf)>> = BTreeMap::new();
    for r in reads {
        if !settings.includes.iter().any(|inc| r.path.starts_with(inc)) {
            continue;
        }
        let Some(rel) = relative(&r.path) else {
            continue;
        };
        let copy = r.upper.join(&rel);
        // Only the container's own copy in its upper directory: a regular file (not a link)
        // owned by its root; what comes from the template is shared already.
        let Ok(meta) = fs::symlink_metadata(&copy) else {
            continue;
        };
        if !meta.file_type().is_file()
            || meta.uid() != r.root_id
            || meta.gid() != r.root_id
            || meta.len() < settings.min_size
            || meta.len() > settings.max_size
            || meta.nlink() != 1
        {
            continue;
        }
        let hex = hash(&copy)?;
        let mtime = meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128;
        let group = groups.entry((hex, meta.mode() & 0o7777)).or_default();
        if !group.iter().any(|(ct, ..)| *ct == r.ct) {
            group.push((r.ct.clone(), r.path.clone(), meta.len(), mtime, copy));
        }
    }
    let mut per_ct: BTreeMap<String, Vec<Pending>> = BTreeMap::new();
    let mut promoted = 0;
    for ((hex, mode), copies) in groups {
        if copies.len() < settings.min_containers {
            continue;
        }
        // The first copy is stored; put() hashes it again as it copies, so a file that
        // changed since it was hashed is not promoted.
        let stored = store.put(&copies[0].4, &hex, mode)?;
        if !stored {
            continue;
        }
        let object_mode = fs::metadata(store.object_path(&hex))
            .map(|m| m.mode() & 0o7777)
            .unwrap_or(0);
        if object_mode != mode {
            // The same content with another mode is stored already: promote it another time.
            continue;
        }
        store.touch(&hex);
        for (ct, path, size, mtime_ns, _) in copies {
            per_ct.entry(ct).or_default().push(Pending {
                path,
                hash: hex.clone(),
                size,
                mtime_ns,
            });
        }
    }
    for (ct, new) in per_ct {
        let mut list = pending(root, &ct);
        for p in new {
            if !list.iter().any(|q| q.path == p.path) {
                list.push(p);
                promoted += 1;
            }
        }
        save_pending(root, &ct, &list)?;
    }
    if promoted > 0 {
        store.count(|s| s.promotions += promoted as u64)?;
    }
    store.evict()?;
    Ok(promoted)
}

/// Container `ct`'s pending links, made before its root is mounted: each becomes a hardlink
/// to its object in `layer` and the container's own copy leaves `upper`. Stale ones (the copy
/// changed, the object is gone or corrupt) are dropped. Returns the links made.
pub fn apply(root: &Path, store: &Store, ct: &str, upper: &Path, layer: &Path) -> Result<usize, CacheError> {
    let list = pending(root, ct);
    let mut made = 0;
    for p in &list {
        let Some(rel) = relative(&p.path) else {
            continue;
        };
        let copy = upper.join(&rel);
        let Ok(meta) = fs::symlink_metadata(&copy) else {
            continue;
        };
        let mtime = meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128;
        if !meta.file_type().is_file() || meta.len() != p.size || mtime != p.mtime_ns || hash(&copy)? != p.hash {
            continue;
        }
        if !store.verify(&p.hash)? {
            continue;
        }
        let link = layer.join(&rel);
        let parent = link.parent().expect("has a parent");
        fs::create_dir_all(parent).map_err(io(parent))?;
        let _ = fs::remove_file(&link);
        fs::hard_link(store.object_path(&p.hash), &link).map_err(io(&link))?;
        // A new link moves the object's ctime; it was verified just above.
        store.mark_verified(&p.hash)?;
        // The link first, then the copy goes: at any moment one of them is there.
        fs::remove_file(&copy).map_err(io(&copy))?;
        store.touch(&p.hash);
        made += 1;
    }
    save_pending(root, ct, &[])?;
    Ok(made)
}

/// Forgets container `ct`'s pending links (it is destroyed).
pub fn forget(root: &Path, ct: &str) {
    let _ = fs::remove_file(pending_path(root, ct));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_read_in_two_containers_become_links_to_one_object() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let store = Store::new(root, 1 << 30);
        let settings = Settings {
            min_size: 1,
            ..Settings::default()
        };
        let uid = nix::unistd::getuid().as_raw();
        let mut reads = Vec::new();
        for (ct, content) in [("a", "same\n"), ("b", "same\n"), ("c", "other\n")] {
            let upper = root.join(ct).join("upper");
            fs::create_dir_all(upper.join("srv")).unwrap();
            fs::write(upper.join("srv/data"), content).unwrap();
            reads.push(Read {
                ct: ct.into(),
                upper,
                root_id: uid,
                path: "/srv/data".into(),
            });
        }
        // Not under an included directory: ignored.
        reads.push(Read {
            path: "/etc/data".into(),
            ..reads[0].clone()
        });
        assert_eq!(promote(root, &store, &settings, &reads).unwrap(), 2);
        assert_eq!(pending(root, "a").len(), 1);
        assert!(pending(root, "c").is_empty());
        // b wrote its copy after the promotion: it keeps it.
        std::thread::sleep(std::time::Duration::from_millis(10));
        fs::write(root.join("b/upper/srv/data"), "same\n").unwrap();
        let made_a = apply(root, &store, "a", &root.join("a/upper"), &root.join("a/cache")).unwrap();
        let made_b = apply(root, &store, "b", &root.join("b/upper"), &root.join("b/cache")).unwrap();
        assert_eq!((made_a, made_b), (1, 0));
        assert!(!root.join("a/upper/srv/data").exists());
        let link = fs::metadata(root.join("a/cache/srv/data")).unwrap();
        let object = fs::metadata(store.object_path(&pending_hash("same\n"))).unwrap();
        assert_eq!((link.dev(), link.ino()), (object.dev(), object.ino()));
        assert!(root.join("b/upper/srv/data").exists());
        assert!(pending(root, "a").is_empty());
    }

    fn pending_hash(content: &str) -> String {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(content.as_bytes()))
    }
}
