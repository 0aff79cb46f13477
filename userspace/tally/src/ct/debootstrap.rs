//! Distribution templates made with Debian's own installer, debootstrap (vzpkg's job on
//! OpenVZ): the minbase variant plus [`PACKAGES`], then made ready for a container the way
//! vzctl's distribution scripts do it: sysvinit as the init (systemd wants to own mounts and
//! cgroups that a container does not give it), an inittab without gettys that powers off on
//! SIGPWR (like LXC's Debian templates), no host-specific files, and SSH host keys made by each
//! container at its first boot.

use std::{
    ffi::OsString,
    fs,
    path::Path,
    process::{Command, Stdio},
};

/// Distributions `tally template create` knows: (template name, Debian suite).
pub const DISTRIBUTIONS: &[(&str, &str)] = &[
    ("debian-11", "bullseye"),
    ("debian-12", "bookworm"),
    ("debian-13", "trixie"),
];
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// How a sysvinit template is asked to power off (see [`INITTAB`]).
pub const HALT_SIGNAL: &str = "SIGPWR";

const PACKAGE_LIST: &str = include_str!("debian-packages.txt");

/// The packages installed on top of minbase (from debian-packages.txt).
pub fn packages() -> Vec<&'static str> {
    PACKAGE_LIST
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// The suite of distribution `name`, if tally knows it.
pub fn suite(name: &str) -> Option<&'static str> {
    DISTRIBUTIONS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// debootstrap's arguments. `debs`: a tarball made by `debootstrap --make-tarball` with the
/// same suite and packages (`cargo xtask setup` makes one): nothing is downloaded then.
pub fn arguments(suite: &str, target: &Path, mirror: &str, debs: Option<&Path>) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--variant=minbase".into(),
        format!("--include={}", packages().join(",")).into(),
    ];
    if let Some(debs) = debs {
        let mut a = OsString::from("--unpack-tarball=");
        a.push(debs);
        args.push(a);
    }
    args.extend([suite.into(), target.as_os_str().to_owned(), mirror.into()]);
    args
}

/// No gettys (a container has no consoles; `tally enter` gives a shell), runlevel 2 at boot,
/// and SIGPWR (the halt signal) runs runlevel 0, whose `halt` ends the PID namespace.
const INITTAB: &str = "\
# Made by tally for a container: no gettys; SIGPWR powers off.
id:2:initdefault:
si::sysinit:/etc/init.d/rcS
l0:0:wait:/etc/init.d/rc 0
l1:1:wait:/etc/init.d/rc 1
l2:2:wait:/etc/init.d/rc 2
l3:3:wait:/etc/init.d/rc 3
l4:4:wait:/etc/init.d/rc 4
l5:5:wait:/etc/init.d/rc 5
l6:6:wait:/etc/init.d/rc 6
p0::powerfail:/sbin/init 0
";

/// Runs debootstrap into `tree` (which must not exist) and prepares the result for
/// containers. On failure, the end of debootstrap's log says why.
pub fn build(suite: &str, tree: &Path, mirror: &str, debs: Option<&Path>) -> Result<(), String> {
    let out = Command::new("debootstrap")
        .args(arguments(suite, tree, mirror, debs))
        .stdin(Stdio::null())
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .map_err(|e| format!("cannot run debootstrap (apt-get install debootstrap): {e}"))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        let log = fs::read_to_string(tree.join("debootstrap/debootstrap.log")).unwrap_or_default();
        let tail: Vec<&str> = text.lines().chain(log.lines()).rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!("debootstrap failed ({}):\n{}", out.status, tail.join("\n")));
    }
    prepare(tree).map_err(|e| format!("preparing the tree: {e}"))
}

/// vzctl's distribution-script work, done once on the template.
fn prepare(tree: &Path) -> std::io::Result<()> {
    fs::write(tree.join("etc/inittab"), INITTAB)?;
    // Host-specific: each container gets its own hostname from tally, and an empty
    // machine-id is filled in at first boot.
    fs::write(tree.join("etc/hostname"), "localhost\n")?;
    fs::write(tree.join("etc/machine-id"), "")?;
    fs::write(
        tree.join("etc/hosts"),
        "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
    )?;
    // debootstrap leaves the host's resolver; containers reach only their host by default.
    let _ = fs::remove_file(tree.join("etc/resolv.conf"));
    // The apt package lists are large and stale at once.
    if let Ok(entries) = fs::read_dir(tree.join("var/lib/apt/lists")) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_file()) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    let _ = fs::remove_dir_all(tree.join("var/cache/apt/archives"));
    fs::create_dir_all(tree.join("var/cache/apt/archives/partial"))?;
    per_container_ssh_keys(tree)
}

/// Made at first boot, before sshd starts: one set of host keys per container, not one
/// shared by every container of the template.
const SSH_KEYS_SCRIPT: &str = "\
#!/bin/sh
### BEGIN INIT INFO
# Provides:          tally-ssh-keys
# Required-Start:    $local_fs
# Required-Stop:
# X-Start-Before:    ssh
# Default-Start:     2 3 4 5
# Default-Stop:
# Short-Description: Makes this container's own SSH host keys (tally)
### END INIT INFO
case \"$1\" in
start) [ -x /usr/bin/ssh-keygen ] && /usr/bin/ssh-keygen -A ;;
esac
exit 0
";

fn per_container_ssh_keys(tree: &Path) -> std::io::Result<()> {
    let ssh = tree.join("etc/ssh");
    if !ssh.is_dir() {
        return Ok(());
    }
    for e in fs::read_dir(&ssh)?.flatten() {
        if e.file_name().to_string_lossy().starts_with("ssh_host_") {
            fs::remove_file(e.path())?;
        }
    }
    let script = tree.join("etc/init.d/tally-ssh-keys");
    fs::write(&script, SSH_KEYS_SCRIPT)?;
    fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    // The distribution's own tool orders it (insserv), run inside the tree.
    let root = tree.to_path_buf();
    let mut cmd = Command::new("/usr/sbin/update-rc.d");
    cmd.args(["tally-ssh-keys", "defaults"])
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    // SAFETY: chroot(2) and chdir(2) only, in the forked child before exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            std::os::unix::fs::chroot(&root)?;
            std::env::set_current_dir("/")
        });
    }
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "update-rc.d tally-ssh-keys: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debootstrap_is_told_the_package_list_and_the_tarball() {
        let p = packages();
        assert!(p.contains(&"sysvinit-core") && p.contains(&"openssh-server"), "{p:?}");
        assert!(p.iter().all(|x| !x.contains(' ') && !x.contains(',')));
        let args = arguments(
            "bookworm",
            Path::new("/t/x"),
            DEFAULT_MIRROR,
            Some(Path::new("/c/d.tgz")),
        );
        let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(args[0], "--variant=minbase");
        assert_eq!(args[1], format!("--include={}", p.join(",")));
        assert_eq!(args[2], "--unpack-tarball=/c/d.tgz");
        assert_eq!(&args[3..], ["bookworm", "/t/x", DEFAULT_MIRROR]);
        assert_eq!(suite("debian-12"), Some("bookworm"));
        assert_eq!(suite("debian-99"), None);
    }
}
