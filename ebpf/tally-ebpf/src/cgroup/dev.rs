//! Device access for containers (both tiers): only the nodes a container's /dev is made of,
//! and its ptys; every block device and every other character device is refused, whether
//! opened or made with mknod. Attached to the instance's cgroup2 directory, so every container
//! inherits it.

use aya_ebpf::{macros::cgroup_device, programs::DeviceContext};
use tally_common::devices::{NUMBERS, PTMX, PTS_MAJORS};

/// bpf_cgroup_dev_ctx.access_type: the device type in the low 16 bits.
const DEVCG_DEV_CHAR: u32 = 2;

const ALLOW: i32 = 1;
const REFUSE: i32 = 0;

#[cgroup_device]
pub fn device(ctx: DeviceContext) -> i32 {
    floor_return!(ALLOW);
    // SAFETY: ctx.device is the bpf_cgroup_dev_ctx the kernel hands this program.
    let (access_type, major, minor) = unsafe { ((*ctx.device).access_type, (*ctx.device).major, (*ctx.device).minor) };
    if access_type & 0xffff != DEVCG_DEV_CHAR {
        return REFUSE;
    }
    if PTS_MAJORS.contains(&major)
        || (major, minor) == PTMX
        || NUMBERS.iter().any(|(ma, mi)| *ma == major && *mi == minor)
    {
        ALLOW
    } else {
        REFUSE
    }
}
