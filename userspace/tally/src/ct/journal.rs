//! Crash safety, the record: every operation that changes a container first writes its intent
//! (ROOT/journal/CTID: the operation's name) and removes it when done, failed or not. A tallyd
//! killed in between leaves the intent behind for the next one (super::recovery).

use std::{
    fs,
    path::{Path, PathBuf},
};

use super::{CtId, HostError};

/// An operation that changes a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Create,
    Start,
    Stop,
    Set,
    Destroy,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Start => "start",
            Op::Stop => "stop",
            Op::Set => "set",
            Op::Destroy => "destroy",
        }
    }

    fn parse(s: &str) -> Option<Op> {
        [Op::Create, Op::Start, Op::Stop, Op::Set, Op::Destroy]
            .into_iter()
            .find(|o| o.name() == s.trim())
    }
}

/// An intent on disk; removed when dropped (when the operation returns, however it went).
pub struct Intent {
    path: PathBuf,
}

impl Drop for Intent {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

pub(super) fn dir(root: &Path) -> PathBuf {
    root.join("journal")
}

/// Records that `op` on `ct` begins (atomically: a temporary file renamed into place).
pub fn begin(root: &Path, ct: &CtId, op: Op) -> Result<Intent, HostError> {
    let dir = dir(root);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| HostError::Io { path, source }
    };
    fs::create_dir_all(&dir).map_err(io(&dir))?;
    let path = dir.join(ct.as_str());
    let tmp = dir.join(format!(".{ct}.tmp"));
    fs::write(&tmp, op.name()).map_err(io(&tmp))?;
    fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(Intent { path })
}

/// The intents a killed tallyd left, oldest first.
pub(super) fn leftovers(root: &Path) -> Vec<(CtId, Option<Op>)> {
    let Ok(entries) = fs::read_dir(dir(root)) else {
        return Vec::new();
    };
    let mut out: Vec<(std::time::SystemTime, CtId, Option<Op>)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            if name.starts_with('.') {
                let _ = fs::remove_file(e.path());
                return None;
            }
            let ct = CtId::parse(&name).ok()?;
            let op = fs::read_to_string(e.path()).ok().and_then(|s| Op::parse(&s));
            let time = e.metadata().and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH);
            Some((time, ct, op))
        })
        .collect();
    out.sort_by_key(|(t, ..)| *t);
    out.into_iter().map(|(_, ct, op)| (ct, op)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intents_are_written_and_removed_with_their_guard() {
        let dir = tempfile::tempdir().unwrap();
        let ct = CtId::parse("101").unwrap();
        let intent = begin(dir.path(), &ct, Op::Start).unwrap();
        assert_eq!(leftovers(dir.path()), vec![(ct.clone(), Some(Op::Start))]);
        drop(intent);
        assert!(leftovers(dir.path()).is_empty());
        // A killed tallyd drops nothing.
        std::mem::forget(begin(dir.path(), &ct, Op::Destroy).unwrap());
        assert_eq!(leftovers(dir.path()), vec![(ct, Some(Op::Destroy))]);
    }
}
