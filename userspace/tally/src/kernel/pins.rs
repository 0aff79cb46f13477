//! Where one tally instance keeps its pins under bpffs: maps/NAME and links/NAME below
//! /sys/fs/bpf/INSTANCE.

use std::path::PathBuf;

/// Where one tally instance keeps its pins.
#[derive(Clone, Debug)]
pub struct PinLayout {
    pub root: PathBuf,
}

impl PinLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        PinLayout { root: root.into() }
    }
    pub fn map(&self, name: &str) -> PathBuf {
        self.root.join("maps").join(name)
    }
    pub fn link(&self, name: &str) -> PathBuf {
        self.root.join("links").join(name)
    }
}

/// What a map is, as the kernel keeps it for a pin: its type, key and value sizes and
/// capacity. aya reopens a pin whatever these are, so tallyd holds each pinned map to the
/// object's definition before it adopts one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapLayout {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

impl std::fmt::Display for MapLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "type {}, key {} B, value {} B, {} entries",
            self.map_type, self.key_size, self.value_size, self.max_entries
        )
    }
}

/// The maps' layout version this build pins (a directory `layout-vN` beside the maps: bpffs
/// holds no plain files). A change to the meaning of a map's fields that keeps its sizes
/// bumps it.
pub const LAYOUT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "the pinned map {map} at {path} is {pinned}; this build's is {expected}. tallyd will not reuse it: \
         `tallyd --unload` (with this build or the one that pinned it) removes this instance's pins, and its counters"
    )]
    Mismatch {
        map: String,
        path: PathBuf,
        pinned: MapLayout,
        expected: MapLayout,
    },
    #[error(
        "the maps pinned at {root} have layout version {pinned}; this build's is {expected}. `tallyd --unload` \
         removes this instance's pins, and its counters"
    )]
    Version { root: PathBuf, pinned: u32, expected: u32 },
    #[error("reading the pinned map {map}: {why}")]
    Unreadable { map: String, why: String },
}

impl PinLayout {
    fn version_dirs(&self) -> Vec<(PathBuf, Option<u32>)> {
        std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let v = name.strip_prefix("layout-v")?.parse().ok();
                Some((e.path(), v))
            })
            .collect()
    }

    /// Holds what is pinned to `expected` (map name -> layout): the version stamp, and each
    /// map that is pinned. Pins without a stamp (an instance pinned before stamps) pass when
    /// every map matches.
    pub fn check(&self, expected: &[(&str, MapLayout)]) -> Result<(), LayoutError> {
        for (_, version) in self.version_dirs() {
            match version {
                Some(LAYOUT_VERSION) => {}
                other => {
                    return Err(LayoutError::Version {
                        root: self.root.clone(),
                        pinned: other.unwrap_or(0),
                        expected: LAYOUT_VERSION,
                    })
                }
            }
        }
        for (name, want) in expected {
            let path = self.map(name);
            if !path.exists() {
                continue;
            }
            let info = aya::maps::MapInfo::from_pin(&path).map_err(|e| LayoutError::Unreadable {
                map: name.to_string(),
                why: e.to_string(),
            })?;
            let pinned = MapLayout {
                map_type: info.map_type().map(|t| t as u32).unwrap_or(u32::MAX),
                key_size: info.key_size(),
                value_size: info.value_size(),
                max_entries: info.max_entries(),
            };
            if pinned != *want {
                return Err(LayoutError::Mismatch {
                    map: name.to_string(),
                    path,
                    pinned,
                    expected: *want,
                });
            }
        }
        Ok(())
    }

    /// Removes the layout stamp (with the maps it describes).
    pub fn clear_layout_stamp(&self) {
        for (path, _) in self.version_dirs() {
            let _ = std::fs::remove_dir(path);
        }
    }

    /// Marks the pins with this build's layout version.
    pub fn stamp_layout(&self) -> std::io::Result<()> {
        for (path, version) in self.version_dirs() {
            if version != Some(LAYOUT_VERSION) {
                let _ = std::fs::remove_dir(path);
            }
        }
        match std::fs::create_dir(self.root.join(format!("layout-v{LAYOUT_VERSION}"))) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        }
    }
}
