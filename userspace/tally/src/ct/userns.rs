//! User namespaces: a container's root is an unprivileged range of host ids. Each container
//! of an instance gets its own range of 65536 uids and gids (root inside = the range's base on
//! the host), chosen at create and kept in its config (`USERNS_BASE`).
//!
//! The template stays shared and owned by host root: it is mounted into the overlay through an
//! idmapped mount (mount_setattr(2) with MOUNT_ATTR_IDMAP), so the container sees its files
//! owned by its own root, and copies-up land in the private area owned by the range. That needs
//! a kernel and a template filesystem that can idmap (ext4, xfs, btrfs; tmpfs from Linux 6.3):
//! [`supported`] says whether this host can, and why not.

use std::{
    ffi::CString,
    fs::File,
    io::Read,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

use nix::unistd::{fork, ForkResult};

/// Ids per container: a full 16-bit range, so distributions' system users all map.
pub const RANGE_SIZE: u32 = 65536;
/// The first container's base: far above the ids of host users and of /etc/subuid's usual
/// ranges (100000 and up).
pub const FIRST_BASE: u32 = 0x4000_0000;
/// How many ranges fit below 2^31.
const SLOTS: u32 = (0x8000_0000 - FIRST_BASE) / RANGE_SIZE;

/// The lowest range base that no base in `used` has.
pub fn allocate(used: &[u32]) -> Option<u32> {
    (0..SLOTS)
        .map(|slot| FIRST_BASE + slot * RANGE_SIZE)
        .find(|base| !used.contains(base))
}

/// Whether `base` is a base [`allocate`] could give (a config value to trust).
pub fn valid_base(base: u32) -> bool {
    base >= FIRST_BASE && (base - FIRST_BASE) % RANGE_SIZE == 0 && (base - FIRST_BASE) / RANGE_SIZE < SLOTS
}

fn os(what: &str) -> impl FnOnce(std::io::Error) -> std::io::Error + '_ {
    move |e| std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// A new user namespace mapping 0..65536 inside to `base`.. on the host, uids and gids.
pub fn make(base: u32) -> std::io::Result<OwnedFd> {
    make_inner(base, false).map(|(user, _)| user)
}

/// A new user namespace as [`make`] and a network namespace owned by it, so that the
/// container's root administers its own network (binds ports below 1024, opens raw sockets)
/// and nothing of the host's.
pub fn make_with_net(base: u32) -> std::io::Result<(OwnedFd, OwnedFd)> {
    make_inner(base, true).map(|(user, net)| (user, net.expect("asked for")))
}

/// A forked child unshares the user namespace and waits; this process writes its maps (as
/// root of the parent namespace, which may map any range); the child, root in it, unshares
/// the network namespace; this process takes descriptors of both and lets the child exit.
///
/// Every step is a byte said, never an end of file: tallyd starts containers side by side,
/// and a child forked by another thread meanwhile holds copies of these pipes' ends until it
/// exits, so an end of file could wait on that child, and it on this one.
fn make_inner(base: u32, with_net: bool) -> std::io::Result<(OwnedFd, Option<OwnedFd>)> {
    let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
    let (ready_r, ready_w) = nix::unistd::pipe2(cloexec).map_err(std::io::Error::from)?;
    let (go_r, go_w) = nix::unistd::pipe2(cloexec).map_err(std::io::Error::from)?;
    // SAFETY: the child makes only async-signal-safe calls (close, unshare, write, read,
    // _exit) on descriptors it owns; it never returns into Rust code that could take a lock.
    match unsafe { fork() }.map_err(std::io::Error::from)? {
        ForkResult::Child => {
            // SAFETY: plain system calls on our own descriptors, then _exit.
            unsafe {
                // Our copies of the parent's ends: the reads below must see the parent's close.
                libc::close(go_w.as_raw_fd());
                libc::close(ready_r.as_raw_fd());
                let (ready, go) = (ready_w.as_raw_fd(), go_r.as_raw_fd());
                let mut b: u8 = if libc::unshare(libc::CLONE_NEWUSER) == 0 {
                    b'1'
                } else {
                    b'0'
                };
                libc::write(ready, (&b as *const u8).cast(), 1);
                // "n": the maps are written, make the network namespace; anything else: done.
                if libc::read(go, (&mut b as *mut u8).cast(), 1) == 1 && b == b'n' {
                    let b: u8 = if libc::unshare(libc::CLONE_NEWNET) == 0 {
                        b'1'
                    } else {
                        b'0'
                    };
                    libc::write(ready, (&b as *const u8).cast(), 1);
                    let mut c = 0u8;
                    libc::read(go, (&mut c as *mut u8).cast(), 1);
                }
                libc::_exit(0);
            }
        }
        ForkResult::Parent { child } => {
            drop(ready_w);
            drop(go_r);
            let mut ready = File::from(ready_r);
            let mut go = File::from(go_w);
            let result = (|| {
                let mut ok = [0u8; 1];
                ready.read_exact(&mut ok).map_err(os("waiting for the child"))?;
                if ok[0] != b'1' {
                    return Err(std::io::Error::other("unshare(CLONE_NEWUSER) failed"));
                }
                let proc = format!("/proc/{child}");
                let map = format!("0 {base} {RANGE_SIZE}\n");
                for file in ["uid_map", "gid_map"] {
                    std::fs::write(format!("{proc}/{file}"), &map).map_err(os(file))?;
                }
                let user = OwnedFd::from(File::open(format!("{proc}/ns/user")).map_err(os("ns/user"))?);
                if !with_net {
                    return Ok((user, None));
                }
                std::io::Write::write_all(&mut go, b"n").map_err(os("telling the child"))?;
                ready.read_exact(&mut ok).map_err(os("waiting for the child"))?;
                if ok[0] != b'1' {
                    return Err(std::io::Error::other(
                        "unshare(CLONE_NEWNET) in the user namespace failed",
                    ));
                }
                let net = OwnedFd::from(File::open(format!("{proc}/ns/net")).map_err(os("ns/net"))?);
                Ok((user, Some(net)))
            })();
            // The child waits for one more byte whatever happened (or has exited already).
            let _ = std::io::Write::write_all(&mut go, b"x");
            drop(go);
            let _ = nix::sys::wait::waitpid(child, None);
            result
        }
    }
}

// Mount API constants (linux/mount.h), which the libc crate does not all carry.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A detached, read-only copy of the mount of `dir`, idmapped through `userns`.
fn idmapped_tree(dir: &Path, userns: &OwnedFd) -> std::io::Result<OwnedFd> {
    let path = CString::new(dir.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: open_tree(2) with a NUL-terminated path; returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(os("open_tree")(std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: mount_setattr(2) on our detached tree with a struct that outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(os("mount_setattr(MOUNT_ATTR_IDMAP)")(std::io::Error::last_os_error()));
    }
    Ok(tree)
}

/// Mounts `dir` at `at`, read-only and idmapped through `userns`.
pub fn mount_idmapped(dir: &Path, at: &Path, userns: &OwnedFd) -> std::io::Result<()> {
    let tree = idmapped_tree(dir, userns)?;
    let to = CString::new(at.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: move_mount(2) of our detached tree onto a NUL-terminated path.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(os("move_mount")(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Whether containers made from templates in `dir` can have user namespaces here: a user
/// namespace can be made and `dir`'s filesystem idmapped. The error says why not.
pub fn supported(dir: &Path) -> Result<(), String> {
    // The answer stays while the process lives (a kernel or a filesystem does not gain or
    // lose idmapped mounts underneath it): once per template directory, not per create.
    static KNOWN: std::sync::Mutex<Option<std::collections::HashMap<std::path::PathBuf, Result<(), String>>>> =
        std::sync::Mutex::new(None);
    let mut known = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
    let known = known.get_or_insert_with(Default::default);
    if let Some(answer) = known.get(dir) {
        return answer.clone();
    }
    let answer = probe_support(dir);
    known.insert(dir.to_path_buf(), answer.clone());
    answer
}

fn probe_support(dir: &Path) -> Result<(), String> {
    let userns = make(FIRST_BASE).map_err(|e| format!("cannot make a user namespace: {e}"))?;
    idmapped_tree(dir, &userns).map(drop).map_err(|e| {
        format!(
            "{} cannot be idmapped ({e}): the kernel or the filesystem lacks idmapped mounts (tmpfs has them from Linux 6.3)",
            dir.display()
        )
    })
}

/// Whether process `pid` is in another user namespace than this process.
pub fn in_other_userns(pid: u32) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let theirs = std::fs::metadata(format!("/proc/{pid}/ns/user"))?;
    let ours = std::fs::metadata("/proc/self/ns/user")?;
    Ok((theirs.dev(), theirs.ino()) != (ours.dev(), ours.ino()))
}

/// After joining a user namespace: become its root (uid and gid 0, no supplementary groups),
/// which gives back the capabilities the namespace grants.
pub fn become_root() -> std::io::Result<()> {
    // SAFETY: plain credential system calls on this process.
    unsafe {
        if libc::setresgid(0, 0, 0) != 0 {
            return Err(os("setresgid")(std::io::Error::last_os_error()));
        }
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(os("setgroups")(std::io::Error::last_os_error()));
        }
        if libc::setresuid(0, 0, 0) != 0 {
            return Err(os("setresuid")(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_do_not_overlap_and_stay_below_2_31() {
        assert_eq!(allocate(&[]), Some(FIRST_BASE));
        assert_eq!(allocate(&[FIRST_BASE]), Some(FIRST_BASE + RANGE_SIZE));
        assert_eq!(allocate(&[FIRST_BASE + RANGE_SIZE]), Some(FIRST_BASE));
        let last = FIRST_BASE + (SLOTS - 1) * RANGE_SIZE;
        assert!(last as u64 + RANGE_SIZE as u64 <= 0x8000_0000);
        assert!(valid_base(last) && !valid_base(last + RANGE_SIZE) && !valid_base(FIRST_BASE + 1) && !valid_base(0));
    }
}
