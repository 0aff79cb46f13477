//! OS templates: read-only root trees under ROOT/template/NAME, shared by every container made
//! from them as the lower layer of an overlay (so their files share one page cache, as
//! Virtuozzo's templates share memory). Each has a small KEY="value" file beside it
//! (ROOT/template/NAME.conf) saying how its init is stopped.
//!
//! `busybox`, the built-in default, is made from the host's static busybox (Debian's
//! busybox-static): the binary, a link per applet, and just enough /etc for init and login.

pub use crate::api::TemplateInfo;
use std::{
    fs,
    os::unix::fs::{symlink, PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
};

use super::CtConfig;

pub const DEFAULT: &str = "busybox";
/// Where Debian's busybox-static puts its static binary.
pub const HOST_BUSYBOX: &str = "/bin/busybox";

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("OS template '{0}' not found (see `tally template list`)")]
    NotFound(String),
    #[error("invalid template name '{0}': use A-Z a-z 0-9 _ . - (starting with a letter or digit)")]
    BadName(String),
    #[error("cannot make the busybox template: {0}")]
    Busybox(String),
    #[error("OS template '{0}' exists already")]
    Exists(String),
    #[error("unknown distribution '{0}': tally template create knows debian-11, debian-12, debian-13")]
    UnknownDistribution(String),
    #[error("cannot make template {name}: {why}")]
    Build { name: String, why: String },
    #[error("cannot import {path}: {why}")]
    Import { path: PathBuf, why: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TemplateError + '_ {
    move |source| TemplateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The template store of one tally root.
pub struct Templates {
    dir: PathBuf,
}

impl Templates {
    pub fn new(root: &Path) -> Templates {
        Templates {
            dir: root.join("template"),
        }
    }

    fn check_name(name: &str) -> Result<(), TemplateError> {
        super::CtId::parse(name)
            .map(drop)
            .map_err(|_| TemplateError::BadName(name.to_string()))
    }

    pub fn rootfs(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn meta_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.conf"))
    }

    /// The template `name`; the built-in busybox one is made on first use.
    pub fn get(&self, name: &str) -> Result<TemplateInfo, TemplateError> {
        Self::check_name(name)?;
        if name == DEFAULT && !self.meta_path(name).exists() {
            self.make_busybox()?;
        }
        let meta = self.meta_path(name);
        if !meta.is_file() || !self.rootfs(name).is_dir() {
            return Err(TemplateError::NotFound(name.to_string()));
        }
        let text = fs::read_to_string(&meta).map_err(io(&meta))?;
        let conf = CtConfig::parse(&meta.display().to_string(), &text)
            .map_err(|e| TemplateError::Busybox(format!("bad template metadata: {e}")))?;
        Ok(TemplateInfo {
            name: name.to_string(),
            rootfs: self.rootfs(name),
            halt_signal: conf
                .values
                .get("HALT_SIGNAL")
                .cloned()
                .unwrap_or_else(|| "SIGPWR".into()),
        })
    }

    /// Every usable template (metadata and tree both present), by name; busybox is listed
    /// when it can be made.
    pub fn list(&self) -> Result<Vec<TemplateInfo>, TemplateError> {
        let mut names: Vec<String> = match fs::read_dir(&self.dir) {
            Ok(entries) => entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.strip_suffix(".conf").map(str::to_string))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
            Err(e) => return Err(io(&self.dir)(e)),
        };
        if !names.iter().any(|n| n == DEFAULT) && Path::new(HOST_BUSYBOX).exists() {
            names.push(DEFAULT.to_string());
        }
        names.sort();
        names.iter().filter_map(|n| self.get(n).ok().map(Ok)).collect()
    }

    /// Makes template `name` from a root-tree archive (tar, gzip or zstd compressed, told
    /// apart by their magic bytes), unpacked in a temporary directory and renamed into place,
    /// the metadata last. Entries that would land outside the tree (`..`, absolute links
    /// followed) are refused by the unpacker. `halt_signal`: how the template's init is asked
    /// to power off; when not given, SIGRTMIN+4 for systemd, SIGUSR2 for busybox init, else
    /// SIGTERM.
    pub fn import(&self, name: &str, archive: &Path, halt_signal: Option<&str>) -> Result<TemplateInfo, TemplateError> {
        Self::check_name(name)?;
        if self.meta_path(name).exists() || self.rootfs(name).exists() || name == DEFAULT {
            return Err(TemplateError::Exists(name.to_string()));
        }
        if let Some(sig) = halt_signal {
            super::parse_signal(sig).ok_or_else(|| TemplateError::Import {
                path: archive.to_path_buf(),
                why: format!("bad halt signal '{sig}'"),
            })?;
        }
        let import_err = |why: String| TemplateError::Import {
            path: archive.to_path_buf(),
            why,
        };
        let mut file = fs::File::open(archive).map_err(|e| import_err(e.to_string()))?;
        let mut magic = [0u8; 4];
        let n = std::io::Read::read(&mut file, &mut magic).map_err(|e| import_err(e.to_string()))?;
        std::io::Seek::rewind(&mut file).map_err(|e| import_err(e.to_string()))?;
        let reader: Box<dyn std::io::Read> = match &magic[..n] {
            [0x1f, 0x8b, ..] => Box::new(flate2::read::GzDecoder::new(file)),
            [0x28, 0xb5, 0x2f, 0xfd] => {
                Box::new(zstd::stream::read::Decoder::new(file).map_err(|e| import_err(e.to_string()))?)
            }
            _ => Box::new(file),
        };
        self.install(name, halt_signal, |tmp| {
            let mut tar = tar::Archive::new(reader);
            tar.set_preserve_permissions(true);
            tar.set_preserve_ownerships(true);
            tar.set_unpack_xattrs(true);
            tar.unpack(tmp).map_err(|e| {
                // The unpacker's error names the entry; its source says what went wrong.
                let cause = std::error::Error::source(&e)
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default();
                import_err(format!("{e}{cause}"))
            })?;
            if !tmp.join("bin").exists() && !tmp.join("usr/bin").exists() {
                return Err(import_err("no bin/ or usr/bin/ in it: not a root tree".into()));
            }
            Ok(())
        })
    }

    /// Makes template `dist` (debian-11, debian-12, debian-13) with debootstrap from `mirror`,
    /// or offline from `debs`, a tarball of `debootstrap --make-tarball` (see
    /// [`debootstrap`](super::debootstrap)).
    pub fn create(&self, dist: &str, mirror: Option<&str>, debs: Option<&Path>) -> Result<TemplateInfo, TemplateError> {
        Self::check_name(dist)?;
        let suite =
            super::debootstrap::suite(dist).ok_or_else(|| TemplateError::UnknownDistribution(dist.to_string()))?;
        if self.meta_path(dist).exists() || self.rootfs(dist).exists() {
            return Err(TemplateError::Exists(dist.to_string()));
        }
        let mirror = mirror.unwrap_or(super::debootstrap::DEFAULT_MIRROR);
        self.install(dist, Some(super::debootstrap::HALT_SIGNAL), |tmp| {
            // debootstrap makes the directory itself.
            fs::remove_dir(tmp).map_err(io(tmp))?;
            super::debootstrap::build(suite, tmp, mirror, debs).map_err(|why| TemplateError::Build {
                name: dist.to_string(),
                why,
            })
        })
    }

    /// Builds template `name` with `fill` in a temporary directory, renames it into place and
    /// writes the metadata last, so a half-made template is never listed or used.
    fn install(
        &self,
        name: &str,
        halt_signal: Option<&str>,
        fill: impl FnOnce(&Path) -> Result<(), TemplateError>,
    ) -> Result<TemplateInfo, TemplateError> {
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        // Unique per build: two builds of one name race to the rename, and one loses cleanly.
        static BUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self.dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let target = self.rootfs(name);
        let result = (|| {
            fs::create_dir(&tmp).map_err(io(&tmp))?;
            fill(&tmp)?;
            let halt = match halt_signal {
                Some(s) => s.to_string(),
                None => guess_halt_signal(&tmp).to_string(),
            };
            fs::rename(&tmp, &target).map_err(io(&target))?;
            let conf = CtConfig {
                values: [
                    ("DISTRIBUTION".to_string(), name.to_string()),
                    ("HALT_SIGNAL".to_string(), halt),
                ]
                .into(),
            };
            let meta = self.meta_path(name);
            conf.save(&meta).map_err(|e| {
                let _ = fs::remove_dir_all(&target);
                TemplateError::Io {
                    path: meta.clone(),
                    source: std::io::Error::other(e.to_string()),
                }
            })
        })();
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        self.get(name)
    }

    /// Builds the busybox tree in a temporary directory and renames it into place, so a
    /// half-made template is never used; the metadata file is written last.
    fn make_busybox(&self) -> Result<(), TemplateError> {
        let busybox = Path::new(HOST_BUSYBOX);
        if !busybox.is_file() {
            return Err(TemplateError::Busybox(format!(
                "{HOST_BUSYBOX} is missing (install busybox-static: cargo xtask setup)"
            )));
        }
        // A tree without its metadata is a leftover of an interrupted build.
        let _ = fs::remove_dir_all(self.rootfs(DEFAULT));
        self.install(DEFAULT, Some("SIGUSR2"), |tmp| build_busybox_tree(busybox, tmp))
            .map(drop)
    }
}

/// How an imported tree's init is asked to power off, by what /sbin/init is.
fn guess_halt_signal(root: &Path) -> &'static str {
    let init = fs::read_link(root.join("sbin/init")).unwrap_or_default();
    let init = init.to_string_lossy();
    if init.contains("systemd") || root.join("lib/systemd/systemd").exists() && !root.join("sbin/init").exists() {
        "SIGRTMIN+4"
    } else if init.ends_with("busybox") {
        "SIGUSR2"
    } else {
        "SIGTERM"
    }
}

/// The files of the busybox template. The applet list comes from the binary itself.
fn build_busybox_tree(busybox: &Path, root: &Path) -> Result<(), TemplateError> {
    let applets = Command::new(busybox).arg("--list-full").output().map_err(io(busybox))?;
    if !applets.status.success() {
        return Err(TemplateError::Busybox(format!(
            "{} --list-full failed",
            busybox.display()
        )));
    }
    for dir in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc/init.d",
        "proc",
        "sys",
        "dev",
        "tmp",
        "root",
        "run",
        "var/log",
        "var/www",
        "home",
    ] {
        let path = root.join(dir);
        fs::create_dir_all(&path).map_err(io(&path))?;
    }
    let tmp = root.join("tmp");
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777)).map_err(io(&tmp))?;
    let root_home = root.join("root");
    fs::set_permissions(&root_home, fs::Permissions::from_mode(0o700)).map_err(io(&root_home))?;

    let target = root.join("bin/busybox");
    fs::copy(busybox, &target).map_err(io(&target))?;
    fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).map_err(io(&target))?;
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "bin/busybox" || applet.contains("..") {
            continue;
        }
        let link = root.join(applet);
        if link.exists() {
            continue;
        }
        let depth = applet.matches('/').count();
        let to = format!("{}bin/busybox", "../".repeat(depth));
        symlink(&to, &link).map_err(io(&link))?;
    }
    let files: &[(&str, &str, u32)] = &[
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n", 0o644),
        ("etc/group", "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n", 0o644),
        ("etc/shadow", "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n", 0o600),
        ("etc/hostname", "localhost\n", 0o644),
        ("etc/hosts", "127.0.0.1 localhost\n", 0o644),
        ("etc/shells", "/bin/sh\n", 0o644),
        ("etc/profile", "export PATH=/bin:/sbin:/usr/bin:/usr/sbin\nexport PS1='\\u@\\h:\\w\\$ '\n", 0o644),
        // No getty: a container has no consoles of its own; `tally enter` gives a shell.
        (
            "etc/inittab",
            "::sysinit:/etc/init.d/rcS\n::shutdown:/bin/sync\n",
            0o644,
        ),
        (
            "etc/init.d/rcS",
            "#!/bin/sh\n# Runs once at boot: start the services in /etc/init.d/S* in order.\nfor s in /etc/init.d/S*; do [ -x \"$s\" ] && \"$s\" start; done\nexit 0\n",
            0o755,
        ),
        ("var/www/index.html", "tally busybox container\n", 0o644),
    ];
    for (path, text, mode) in files {
        let path = root.join(path);
        fs::write(&path, text).map_err(io(&path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).map_err(io(&path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_names_are_checked() {
        let t = Templates::new(Path::new("/nonexistent-tally-root"));
        assert!(matches!(t.get("../etc"), Err(TemplateError::BadName(_))));
        assert!(matches!(t.get("nosuch"), Err(TemplateError::NotFound(_))));
    }

    #[test]
    fn busybox_template_is_made_from_the_host_binary() {
        assert!(
            Path::new(HOST_BUSYBOX).exists(),
            "{HOST_BUSYBOX} missing: run cargo xtask setup"
        );
        let dir = tempfile::tempdir().unwrap();
        let t = Templates::new(dir.path());
        let info = t.get(DEFAULT).unwrap();
        assert_eq!(info.halt_signal, "SIGUSR2");
        let init = fs::read_link(info.rootfs.join("sbin/init")).unwrap();
        assert_eq!(init, Path::new("../bin/busybox"));
        assert!(
            info.rootfs.join("sbin/init").exists(),
            "the link resolves inside the tree"
        );
        assert!(info.rootfs.join("usr/sbin/httpd").exists());
        assert_eq!(t.list().unwrap(), vec![info]);
    }
}
