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
];

/// The offsets the programs need, by the global's name in the object.
pub fn program_offsets(btf: &KernelBtf) -> Result<Vec<(&'static str, u64)>, KernelError> {
    OFFSET_GLOBALS
        .iter()
        .map(|(global, strukt, member)| Ok((*global, btf.member_offset(strukt, member)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::OFFSET_GLOBALS;

    #[test]
    fn every_offset_global_of_the_programs_is_filled_in() {
        let src = include_str!("../../../../ebpf/tally-ebpf/src/kernel.rs");
        let mut declared: Vec<&str> = src
            .lines()
            .filter_map(|l| l.trim().strip_prefix("static ")?.split(':').next())
            .filter(|name| name.ends_with("_OFFSET"))
            .collect();
        let mut filled: Vec<&str> = OFFSET_GLOBALS.iter().map(|(g, _, _)| *g).collect();
        declared.sort();
        filled.sort();
        assert_eq!(declared, filled);
    }
}

// `resolve_name` takes a &dyn BtfType; keep the trait in scope for callers of this module.
#[allow(unused_imports)]
use BtfType as _;
