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
