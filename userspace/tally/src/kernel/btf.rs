//! Struct member offsets from the running kernel's BTF. rustc emits no CO-RE relocations for
//! the bpf target, so the loader reads the offsets here and hands them to the programs as
//! read-only globals (the verifier then sees constants).

use std::path::Path;

use btf_rs::{Btf, BtfType, Type};

use super::KernelError;

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    pub fn load(path: &Path) -> Result<Self, KernelError> {
        let btf = Btf::from_file(path).map_err(|e| KernelError::Btf(format!("{}: {e}", path.display())))?;
        Ok(KernelBtf { btf })
    }

    /// Whether `struct name` is described.
    pub fn has_struct(&self, name: &str) -> bool {
        self.btf
            .resolve_types_by_name(name)
            .is_ok_and(|types| types.iter().any(|t| matches!(t, Type::Struct(_))))
    }

    /// Byte offset of `member` in `struct name`, looking through anonymous unions/structs.
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u64, KernelError> {
        let not_found = || KernelError::Btf(format!("struct {name} has no member {member}"));
        let types = self
            .btf
            .resolve_types_by_name(name)
            .map_err(|e| KernelError::Btf(format!("struct {name}: {e}")))?;
        for t in types {
            if let Type::Struct(s) = t {
                if let Some(bits) = self.find_member(&s, member, 0) {
                    return Ok(bits / 8);
                }
            }
        }
        Err(not_found())
    }

    fn find_member(&self, s: &btf_rs::Struct, member: &str, base_bits: u64) -> Option<u64> {
        for m in &s.members {
            let bits = base_bits + u64::from(m.bit_offset());
            match self.btf.resolve_name(m) {
                Ok(n) if n == member => return Some(bits),
                Ok(n) if !n.is_empty() => continue,
                _ => {}
            }
            // An anonymous member: a union or struct whose members belong to the parent.
            if let Ok(Type::Struct(inner) | Type::Union(inner)) = self.btf.resolve_chained_type(m) {
                if let Some(found) = self.find_member(&inner, member, bits) {
                    return Some(found);
                }
            }
        }
        None
    }
}

/// Every offset global of the programs (ebpf/tally-ebpf/src/kernel.rs): (global, struct,
/// member). A unit test checks that this list and the programs' globals are the same set: a
/// global left out would silently stay 0 and the programs would read the wrong field.
pub const OFFSET_GLOBALS: &[(&str, &str, &str)] = &[
    ("CGROUP_KN_OFFSET", "cgroup", "kn"),
    ("CGROUP_ROOT_OFFSET", "cgroup", "root"),
    ("KERNFS_NODE_ID_OFFSET", "kernfs_node", "id"),
    ("CGROUP_ROOT_HIERARCHY_ID_OFFSET", "cgroup_root", "hierarchy_id"),
    ("SOCKET_SK_OFFSET", "socket", "sk"),
    ("FILE_F_INODE_OFFSET", "file", "f_inode"),
    ("INODE_I_RDEV_OFFSET", "inode", "i_rdev"),
    ("INODE_I_MODE_OFFSET", "inode", "i_mode"),
    ("INODE_I_INO_OFFSET", "inode", "i_ino"),
    ("INODE_I_SB_OFFSET", "inode", "i_sb"),
    ("SUPER_BLOCK_S_DEV_OFFSET", "super_block", "s_dev"),
    ("SUPER_BLOCK_S_MAGIC_OFFSET", "super_block", "s_magic"),
    ("FILE_PRIVATE_DATA_OFFSET", "file", "private_data"),
    ("TASK_STRUCT_FILES_OFFSET", "task_struct", "files"),
    ("FILES_STRUCT_FDT_OFFSET", "files_struct", "fdt"),
    ("FDTABLE_MAX_FDS_OFFSET", "fdtable", "max_fds"),
    ("FDTABLE_FD_OFFSET", "fdtable", "fd"),
    ("ADDRESS_SPACE_HOST_OFFSET", "address_space", "host"),
    ("TASK_STRUCT_CGROUPS_OFFSET", "task_struct", "cgroups"),
    ("CSS_SET_DFL_CGRP_OFFSET", "css_set", "dfl_cgrp"),
    // x86-64's names: the syscall number and its first two arguments.
    ("PT_REGS_ORIG_AX_OFFSET", "pt_regs", "orig_ax"),
    ("PT_REGS_DI_OFFSET", "pt_regs", "di"),
    ("PT_REGS_SI_OFFSET", "pt_regs", "si"),
];

/// The offsets the programs need, by the global's name in the object, and how overlayfs
/// files lead to their real files (`overlay_file_layout`).
pub fn program_offsets(btf: &KernelBtf) -> Result<Vec<(&'static str, u64)>, KernelError> {
    let mut out: Vec<(&'static str, u64)> = OFFSET_GLOBALS
        .iter()
        .map(|(global, strukt, member)| Ok((*global, btf.member_offset(strukt, member)?)))
        .collect::<Result<_, KernelError>>()?;
    let layout = overlay_file_layout(btf, Path::new(OVERLAY_BTF), &kernel_release());
    out.extend([
        ("OVL_FILE_INDIRECT", u64::from(layout.indirect)),
        ("OVL_FILE_REALFILE", layout.realfile),
        ("OVL_FILE_UPPERFILE", layout.upperfile),
    ]);
    Ok(out)
}

/// The overlay module's BTF, when overlayfs is a loaded module.
pub const OVERLAY_BTF: &str = "/sys/kernel/btf/overlay";

/// What an overlayfs file's `private_data` is (ebpf/tally-ebpf/src/kernel.rs reads it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverlayFileLayout {
    /// A `struct ovl_file` (Linux 6.13 on); otherwise the real file itself.
    pub indirect: bool,
    /// Offsets of `realfile` and `upperfile` in `struct ovl_file`.
    pub realfile: u64,
    pub upperfile: u64,
}

/// From overlayfs's BTF (in vmlinux when it is built in, in its module's split BTF when that
/// is loaded), else from the kernel release: `struct ovl_file` came with Linux 6.13.
pub fn overlay_file_layout(vmlinux: &KernelBtf, module: &Path, release: &str) -> OverlayFileLayout {
    let from = |btf: &KernelBtf| {
        Some(OverlayFileLayout {
            indirect: true,
            realfile: btf.member_offset("ovl_file", "realfile").ok()?,
            upperfile: btf.member_offset("ovl_file", "upperfile").ok()?,
        })
    };
    let direct = OverlayFileLayout {
        indirect: false,
        realfile: 0,
        upperfile: 8,
    };
    if vmlinux.has_struct("ovl_inode") {
        return from(vmlinux).unwrap_or(direct);
    }
    if let Ok(split) = Btf::from_split_file(module, &vmlinux.btf) {
        let split = KernelBtf { btf: split };
        if split.has_struct("ovl_inode") {
            return from(&split).unwrap_or(direct);
        }
    }
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    OverlayFileLayout {
        indirect: version >= (6, 13),
        ..direct
    }
}

fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

// `resolve_name` takes a &dyn BtfType; keep the trait in scope for callers of this module.
#[allow(unused_imports)]
use BtfType as _;
