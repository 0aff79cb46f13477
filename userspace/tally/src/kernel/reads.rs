//! Per-container file-read statistics, read from the pinned `file_reads` map (works while
//! tallyd runs or not). The programs count per (container, device, inode): read calls, bytes
//! and the last read; for a file read through a container's overlay they count the real
//! (upper or lower) file, whose (dev, ino) maps back to a path in the container's upper
//! directory, and the overlay's own inode too. What each tier sees: `probe::statistic_plans`.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use aya::maps::{HashMap as BpfHashMap, Map, MapData, MapError};
use tally_common::{map_name, FileKey, FileReadCounts};

use super::{pins::PinLayout, KernelError};

/// What one container read of one file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileRead {
    /// The reader's container (cgroup2 id).
    pub cgroup_id: u64,
    /// The file's device in userspace's st_dev encoding (`libc::makedev(major, minor)`),
    /// converted from the kernel's s_dev: compare with `stat`'s st_dev.
    pub dev: u64,
    pub ino: u64,
    /// Read calls that returned without error (EOF included).
    pub reads: u64,
    /// Bytes those calls returned.
    pub bytes: u64,
    /// When the last read returned: CLOCK_MONOTONIC ns (bpf_ktime_get_ns), the clock
    /// `clock_gettime(CLOCK_MONOTONIC)` reads on the same host.
    pub last_read_ns: u64,
}

/// Now, on the clock `last_read_ns` is stamped with (CLOCK_MONOTONIC).
pub fn monotonic_now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// The kernel's dev_t (`major << 20 | minor`) in userspace's encoding.
pub fn user_dev(kernel_dev: u32) -> u64 {
    libc::makedev(kernel_dev >> 20, kernel_dev & 0xf_ffff)
}

fn open(pins: &PinLayout) -> Result<MapData, KernelError> {
    let path = pins.map(map_name::FILE_READS);
    if !path.exists() {
        return Err(KernelError::NotLoaded(pins.root.clone()));
    }
    MapData::from_pin(&path).map_err(map_error)
}

fn map_error(source: MapError) -> KernelError {
    KernelError::Map {
        name: map_name::FILE_READS,
        source,
    }
}

type ReadsMap = BpfHashMap<MapData, FileKey, FileReadCounts>;

/// The pinned map and its capacity.
fn open_map(pins: &PinLayout) -> Result<(ReadsMap, u32), KernelError> {
    let data = open(pins)?;
    let capacity = data.info().map_err(map_error)?.max_entries();
    let map = ReadsMap::try_from(Map::from_map_data(data).map_err(map_error)?).map_err(map_error)?;
    Ok((map, capacity))
}

/// The map's keys. Programs insert and the LRU evicts while this walks: a key that goes away
/// makes the walk start over from the first key, so keys are deduplicated and the walk bounded.
fn keys(map: &ReadsMap, capacity: u32) -> Vec<FileKey> {
    let mut keys: Vec<FileKey> = map
        .keys()
        .take((capacity as usize).saturating_mul(2).max(1024))
        .map_while(Result::ok)
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Every file every container read, as the map holds them now (unordered).
pub fn file_reads(pins: &PinLayout) -> Result<Vec<FileRead>, KernelError> {
    let (map, capacity) = open_map(pins)?;
    let mut out = Vec::new();
    for key in keys(&map, capacity) {
        let counts = match map.get(&key, 0) {
            Ok(counts) => counts,
            // Evicted since the walk saw it.
            Err(MapError::KeyNotFound) => continue,
            Err(e) => return Err(map_error(e)),
        };
        out.push(FileRead {
            cgroup_id: key.cgroup_id,
            dev: user_dev(key.dev),
            ino: key.ino,
            reads: counts.reads,
            bytes: counts.bytes,
            last_read_ns: counts.last_read_ns,
        });
    }
    Ok(out)
}

/// The files container `cgroup_id` read most (by bytes, then calls), at most `top`.
pub fn top_files(reads: &[FileRead], cgroup_id: u64, top: usize) -> Vec<FileRead> {
    let mut mine: Vec<FileRead> = reads.iter().filter(|r| r.cgroup_id == cgroup_id).cloned().collect();
    mine.sort_by(|a, b| (b.bytes, b.reads, a.dev, a.ino).cmp(&(a.bytes, a.reads, b.dev, b.ino)));
    mine.truncate(top);
    mine
}

/// How full the `file_reads` map is: (entries, capacity). Entries are counted by walking the
/// keys (one syscall each).
pub fn fill(pins: &PinLayout) -> Result<(u64, u32), KernelError> {
    let (map, capacity) = open_map(pins)?;
    Ok((keys(&map, capacity).len() as u64, capacity))
}

/// Paths under `dir` (relative to it) of the files `wanted` names by (dev, ino), found by
/// walking `dir` and giving up after `max_entries` directory entries: cheap for a container's
/// upper directory, which holds only what the container wrote. Files on another device than
/// `dir` are never looked for.
pub fn find_paths(dir: &Path, wanted: &[(u64, u64)], max_entries: usize) -> HashMap<(u64, u64), PathBuf> {
    let mut found = HashMap::new();
    let Ok(root) = std::fs::symlink_metadata(dir) else {
        return found;
    };
    let mut left: Vec<u64> = wanted
        .iter()
        .filter(|(dev, _)| *dev == root.dev())
        .map(|(_, ino)| *ino)
        .collect();
    let mut stack = vec![dir.to_path_buf()];
    let mut budget = max_entries;
    while let Some(d) = stack.pop() {
        if left.is_empty() {
            break;
        }
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            if budget == 0 {
                return found;
            }
            budget -= 1;
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            // Another filesystem mounted below: not the container's own files.
            if meta.dev() != root.dev() {
                continue;
            }
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                if let Some(i) = left.iter().position(|ino| *ino == meta.ino()) {
                    left.swap_remove(i);
                    if let Ok(rel) = entry.path().strip_prefix(dir) {
                        found.insert((meta.dev(), meta.ino()), rel.to_path_buf());
                    }
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_dev_becomes_the_st_dev_of_stat() {
        // 8:1 (sda1) and 0:45 (an anonymous device: tmpfs, overlay) and a minor above 255.
        assert_eq!(user_dev((8 << 20) | 1), libc::makedev(8, 1));
        assert_eq!(user_dev(45), libc::makedev(0, 45));
        assert_eq!(user_dev((259 << 20) | 70000), libc::makedev(259, 70000));
    }

    fn read(cgroup_id: u64, ino: u64, reads: u64, bytes: u64) -> FileRead {
        FileRead {
            cgroup_id,
            dev: 1,
            ino,
            reads,
            bytes,
            last_read_ns: 0,
        }
    }

    #[test]
    fn top_files_are_one_containers_most_read_by_bytes() {
        let all = vec![
            read(7, 1, 1, 10),
            read(8, 2, 9, 1000),
            read(7, 3, 5, 500),
            read(7, 4, 2, 500),
        ];
        let top: Vec<u64> = top_files(&all, 7, 2).iter().map(|r| r.ino).collect();
        assert_eq!(top, vec![3, 4]);
    }

    #[test]
    fn find_paths_maps_inodes_back_to_paths_under_a_directory() {
        let dir = std::env::temp_dir().join(format!("tally-unit-reads-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("srv/deep")).unwrap();
        std::fs::write(dir.join("srv/deep/f"), b"x").unwrap();
        std::fs::write(dir.join("g"), b"y").unwrap();
        let meta = std::fs::metadata(dir.join("srv/deep/f")).unwrap();
        let found = find_paths(&dir, &[(meta.dev(), meta.ino()), (meta.dev() + 1, 1)], 100);
        assert_eq!(found.len(), 1);
        assert_eq!(found[&(meta.dev(), meta.ino())], PathBuf::from("srv/deep/f"));
        assert!(find_paths(&dir, &[(meta.dev(), meta.ino())], 1).is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
