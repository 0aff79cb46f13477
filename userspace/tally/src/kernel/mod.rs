//! The kernel boundary for BPF: what this kernel offers (`probe`, which decides the tier),
//! loading and pinning tally's programs (`programs`), the pinned beancounter maps (`maps`),
//! the per-container file-read statistics (`reads`), and struct offsets from the kernel's BTF
//! (`btf`).

pub mod btf;
pub mod events;
pub mod maps;
pub mod pins;
pub mod probe;
pub mod programs;
mod rawlink;
pub mod reads;
pub mod rows;

pub use probe::{HostReport, Tier};

/// The eBPF object built by build.rs from ebpf/tally-ebpf.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tally.bpf.o"));

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("BTF: {0}")]
    Btf(String),
    #[error("loading the BPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {message}")]
    Program { name: &'static str, message: String },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Layout(#[from] pins::LayoutError),
    #[error("tally's BPF state is not loaded (no pins at {0}); is tallyd running?")]
    NotLoaded(std::path::PathBuf),
}

/// A short errno-named reason for an aya program error, e.g. "EPERM (Operation not
/// permitted)": the point of a probe is to say exactly what the kernel refused.
pub fn describe_program_error(e: &aya::programs::ProgramError) -> String {
    use aya::programs::ProgramError;
    let io = match e {
        ProgramError::LoadError { io_error, .. } => Some(io_error),
        ProgramError::SyscallError(s) => Some(&s.io_error),
        _ => None,
    };
    let summary = match io.and_then(|io| io.raw_os_error()) {
        Some(errno) => format!("{} ({})", errno_name(errno), nix::errno::Errno::from_raw(errno).desc()),
        None => e.to_string(),
    };
    // The verifier's last words say why a program was rejected (before its statistics).
    let statistics = ["verification time", "stack depth", "processed "];
    match e {
        ProgramError::LoadError { verifier_log, .. } => {
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log
                .lines()
                .filter(|l| !l.trim().is_empty() && !statistics.iter().any(|s| l.starts_with(s)))
                .rev()
                .take(3)
                .collect();
            if tail.is_empty() {
                summary
            } else {
                format!(
                    "{summary}; verifier: {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                )
            }
        }
        _ => summary,
    }
}

fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::EINVAL => "EINVAL",
        libc::ENOENT => "ENOENT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::E2BIG => "E2BIG",
        libc::ENOSPC => "ENOSPC",
        libc::ESRCH => "ESRCH",
        _ => "errno",
    }
}
