//! bpf_link_create and pinning for cgroup program types whose aya links cannot become an
//! `FdLink` (cgroup_device, cgroup_sysctl in aya 0.14): two bpf(2) commands, wrapped here.

use std::{
    ffi::CString,
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_LINK_CREATE: libc::c_long = 28;
/// enum bpf_attach_type.
pub const BPF_CGROUP_DEVICE: u32 = 6;
pub const BPF_CGROUP_SYSCTL: u32 = 18;

/// union bpf_attr, as large as any member the kernel reads for these two commands.
#[repr(C, align(8))]
#[derive(Default)]
struct Attr([u32; 32]);

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> std::io::Result<i64> {
    // SAFETY: bpf(2) with a zero-filled attr of the documented size; the kernel reads only the
    // fields of `cmd`, which we set.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut Attr, std::mem::size_of::<Attr>()) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Attaches program `prog` to cgroup `cgroup` with a bpf_link of `attach_type` and pins the
/// link at `pin` (the pin holds it; no descriptor is kept).
pub fn attach_and_pin(
    prog: BorrowedFd<'_>,
    cgroup: BorrowedFd<'_>,
    attach_type: u32,
    pin: &Path,
) -> std::io::Result<()> {
    let mut attr = Attr::default();
    // link_create: prog_fd, target_fd, attach_type, flags.
    attr.0[0] = prog.as_raw_fd() as u32;
    attr.0[1] = cgroup.as_raw_fd() as u32;
    attr.0[2] = attach_type;
    let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
    // SAFETY: a fresh link descriptor from the kernel, owned from here on.
    let link = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let path = CString::new(pin.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let mut attr = Attr::default();
    // obj_pin: pathname (u64), bpf_fd, file_flags.
    let ptr = path.as_ptr() as u64;
    attr.0[0] = ptr as u32;
    attr.0[1] = (ptr >> 32) as u32;
    attr.0[2] = link.as_raw_fd() as u32;
    bpf(BPF_OBJ_PIN, &mut attr)?;
    Ok(())
}
