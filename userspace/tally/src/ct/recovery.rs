//! Crash safety, the recovery: a tallyd killed half-way through an operation leaves its intent
//! (super::journal), and the next tallyd, before it adopts anything, finishes or rolls back
//! each leftover ([`Host::recover`]): a half-made container is removed (its creator never heard
//! back), a half-destroyed one is destroyed, a start that got its init running stands and one
//! that did not is undone, a stop is finished, a `set` falls back to the saved config.
//! Leftovers no intent names are swept too: template builds' temporary trees, cgroups and
//! private areas of containers that have no config.
//!
//! Enforcement needs none of this: programs and maps are pinned and keep working while no
//! tallyd runs.

use std::{
    fs,
    path::{Path, PathBuf},
};

use super::{
    journal::{dir, leftovers, Op},
    CtConfig, CtId, Host, HostError,
};

impl Host {
    /// tallyd start-up: containers whose beancounters are still registered (pinned) keep
    /// them as they are, live limits included; the others get their saved config applied.
    pub fn adopt_all(&self) -> Result<Vec<CtId>, HostError> {
        for line in self.recover()? {
            log::info!("recovery: {line}");
        }
        let ids = self.configured()?;
        for ct in &ids {
            let cgroup = self.cgroup(ct)?;
            let registered = cgroup.exists() && self.maps().limits(cgroup.id()?)?.is_some();
            if registered {
                self.remember_cgroup(cgroup.id()?, ct);
            } else {
                let config = CtConfig::load(&self.instance.config_path(ct))?;
                self.apply(ct, &config)?;
            }
        }
        Ok(ids)
    }

    /// Finishes or rolls back what a killed tallyd left half done, then sweeps leftovers no
    /// intent names. Returns what it did, one line per container, for the log.
    pub fn recover(&self) -> Result<Vec<String>, HostError> {
        let root = self.instance.root.clone();
        let mut done = Vec::new();
        for (ct, op) in leftovers(&root) {
            let what = self.recover_one(&ct, op);
            done.push(match what {
                Ok(w) => format!("{ct}: {w}"),
                Err(e) => format!("{ct}: recovery failed: {e}"),
            });
            let _ = fs::remove_file(dir(&root).join(ct.as_str()));
        }
        done.extend(self.sweep()?);
        Ok(done)
    }

    fn recover_one(&self, ct: &CtId, op: Option<Op>) -> Result<&'static str, HostError> {
        let running = self.exists(ct) && self.init_pid(ct).is_some();
        match op {
            // Whoever asked never heard back: as if it had not happened.
            Some(Op::Create) | None => {
                self.remove_everything(ct)?;
                Ok("create rolled back")
            }
            Some(Op::Destroy) => {
                if self.exists(ct) || self.rootfs(ct).exists() {
                    if let Ok(cg) = self.cgroup(ct) {
                        cg.kill_and_wait(std::time::Duration::from_secs(10))?;
                    }
                    self.remove_everything(ct)?;
                }
                Ok("destroy finished")
            }
            Some(Op::Start) if running => Ok("start had finished"),
            Some(Op::Start) | Some(Op::Stop) => {
                if let Ok(cg) = self.cgroup(ct) {
                    cg.kill_and_wait(std::time::Duration::from_secs(10))?;
                }
                let config = self.config(ct).ok();
                let _ = super::net::remove(&self.instance.name, ct, config.as_ref().and_then(super::bridge_of));
                self.rootfs(ct).umount()?;
                Ok(if op == Some(Op::Start) {
                    "start rolled back"
                } else {
                    "stop finished"
                })
            }
            Some(Op::Set) => {
                let config = CtConfig::load(&self.instance.config_path(ct))?;
                self.apply(ct, &config)?;
                Ok("set rolled back to the saved config")
            }
        }
    }

    /// Leftovers without an intent: template builds' temporary trees (with whatever
    /// debootstrap had mounted in them), private areas and cgroups of containers without a
    /// config.
    fn sweep(&self) -> Result<Vec<String>, HostError> {
        let mut done = Vec::new();
        let templates = self.instance.root.join("template");
        if let Ok(entries) = fs::read_dir(&templates) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && name.contains(".tmp-") {
                    umount_under(&e.path());
                    let _ = fs::remove_dir_all(e.path());
                    done.push(format!("template: removed the unfinished {name}"));
                }
            }
        }
        let mut orphans = std::collections::BTreeSet::new();
        for sub in ["private", "root"] {
            if let Ok(entries) = fs::read_dir(self.instance.root.join(sub)) {
                orphans.extend(
                    entries
                        .flatten()
                        .filter_map(|e| CtId::parse(e.file_name().to_str()?).ok()),
                );
            }
        }
        orphans.extend(self.cgroup_children());
        // An idmapped layer mount a kill left behind (`tally mount` has no intent).
        for ct in self.configured()? {
            self.rootfs(&ct).detach_layers();
        }
        for ct in orphans {
            if !self.exists(&ct) {
                if let Ok(cg) = self.cgroup(&ct) {
                    let _ = cg.kill_and_wait(std::time::Duration::from_secs(10));
                }
                self.remove_everything(&ct)?;
                done.push(format!("{ct}: removed what was left without a config"));
            }
        }
        Ok(done)
    }

    /// Container names under this instance's cgroup directories.
    fn cgroup_children(&self) -> Vec<CtId> {
        let mut out = Vec::new();
        let mut parents: Vec<PathBuf> = self
            .layout
            .controllers
            .values()
            .map(|(p, _)| p.join(&self.instance.name))
            .collect();
        if let Some(u) = &self.layout.unified {
            parents.push(u.join(&self.instance.name));
        }
        for p in parents {
            if let Ok(entries) = fs::read_dir(p) {
                out.extend(
                    entries
                        .flatten()
                        .filter(|e| e.path().is_dir())
                        .filter_map(|e| CtId::parse(e.file_name().to_str()?).ok()),
                );
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// Lazily unmounts every mount at or below `dir` (deepest first).
fn umount_under(dir: &Path) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = super::rootfs::mount_points(&info)
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
    }
}
