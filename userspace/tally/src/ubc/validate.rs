//! vzcfgvalidate's rules: is a container's set of barriers and limits consistent? Errors make
//! `tally validate` exit 2; warnings and recommendations are advice. A rule is checked only
//! where the rows it reads are bounded (unlimited satisfies everything).

use std::fmt;

use super::{Beancounter, Resource, UNLIMITED};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Recommendation,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub resource: &'static str,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "Error",
            Severity::Warning => "Warning",
            Severity::Recommendation => "Recommendation",
        };
        write!(f, "{level}: {}: {}", self.resource, self.message)
    }
}

/// Rows whose barrier must equal their limit (they are counted in whole objects, checked
/// against one number).
const BARRIER_IS_LIMIT: [Resource; 8] = [
    Resource::NumProc,
    Resource::NumTcpSock,
    Resource::NumOtherSock,
    Resource::ShmPages,
    Resource::NumFile,
    Resource::NumPty,
    Resource::NumSigInfo,
    Resource::NumIptEnt,
];

/// Rows whose barrier must not exceed their limit.
const BARRIER_UNDER_LIMIT: [Resource; 9] = [
    Resource::KmemSize,
    Resource::TcpSndBuf,
    Resource::TcpRcvBuf,
    Resource::OtherSockBuf,
    Resource::DgramRcvBuf,
    Resource::PrivVmPages,
    Resource::LockedPages,
    Resource::NumFlock,
    Resource::DcacheSize,
];

/// `rows` in kernel order (only barrier and limit are read).
pub fn validate(rows: &[Beancounter]) -> Vec<Finding> {
    let get = |r: Resource| rows.get(r.index()).copied().unwrap_or_else(Beancounter::unlimited);
    let bounded = |v: u64| v != UNLIMITED;
    let mut out = Vec::new();
    let mut add = |severity, r: Resource, message: String| {
        out.push(Finding {
            severity,
            resource: r.name(),
            message,
        })
    };

    for r in BARRIER_IS_LIMIT {
        let b = get(r);
        if b.barrier != b.limit {
            add(
                Severity::Error,
                r,
                format!("barrier ({}) should be equal to limit ({})", b.barrier, b.limit),
            );
        }
    }
    for r in BARRIER_UNDER_LIMIT {
        let b = get(r);
        if b.barrier > b.limit {
            add(
                Severity::Error,
                r,
                format!("barrier ({}) should not be above limit ({})", b.barrier, b.limit),
            );
        }
    }
    for r in [Resource::VmGuarPages, Resource::OomGuarPages] {
        if bounded(get(r).limit) {
            add(Severity::Warning, r, "limit is not used and should be unlimited".into());
        }
    }

    let numproc = get(Resource::NumProc).barrier;
    let kmem = get(Resource::KmemSize);
    let dcache_limit = get(Resource::DcacheSize).limit;
    if bounded(numproc) && bounded(kmem.barrier) {
        // 40 KiB of unswappable kernel memory per process, plus the dentry cache.
        let need = 40 * 1024 * numproc + if bounded(dcache_limit) { dcache_limit } else { 0 };
        if kmem.barrier < need {
            add(
                Severity::Error,
                Resource::KmemSize,
                format!("barrier should be at least {need} (40 KiB per numproc, plus dcachesize's limit)"),
            );
        }
        if bounded(kmem.limit) && kmem.limit.saturating_sub(kmem.barrier) < 40 * 1024 * numproc {
            add(
                Severity::Warning,
                Resource::KmemSize,
                format!(
                    "limit - barrier should be at least {} (40 KiB per numproc)",
                    40 * 1024 * numproc
                ),
            );
        }
    }
    for (buf, socks) in [
        (Resource::TcpSndBuf, Resource::NumTcpSock),
        (Resource::TcpRcvBuf, Resource::NumTcpSock),
        (Resource::OtherSockBuf, Resource::NumOtherSock),
    ] {
        let (b, n) = (get(buf), get(socks).barrier);
        if bounded(b.limit) && bounded(n) && b.limit.saturating_sub(b.barrier) < 2560 * n {
            add(
                Severity::Error,
                buf,
                format!(
                    "limit - barrier should be at least {} (2.5 KiB per {})",
                    2560 * n,
                    socks.name()
                ),
            );
        }
    }
    let (privvm, vmguar) = (get(Resource::PrivVmPages).barrier, get(Resource::VmGuarPages).barrier);
    if bounded(privvm) && bounded(vmguar) && privvm < vmguar {
        add(
            Severity::Warning,
            Resource::PrivVmPages,
            format!("barrier should be at least vmguarpages' barrier ({vmguar})"),
        );
    }
    let numfile = get(Resource::NumFile).barrier;
    if bounded(numfile) && bounded(numproc) && numfile < 32 * numproc {
        add(
            Severity::Recommendation,
            Resource::NumFile,
            format!("should be at least {} (32 per numproc)", 32 * numproc),
        );
    }
    let dcache = get(Resource::DcacheSize).barrier;
    if bounded(dcache) && bounded(numfile) && dcache < 384 * numfile {
        add(
            Severity::Recommendation,
            Resource::DcacheSize,
            format!("barrier should be at least {} (384 bytes per numfile)", 384 * numfile),
        );
    }
    out.sort_by_key(|f| f.severity);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_common::RESOURCE_COUNT;

    fn with(changes: &[(Resource, u64, u64)]) -> Vec<Beancounter> {
        let mut rows = vec![Beancounter::unlimited(); RESOURCE_COUNT];
        for (r, b, l) in changes {
            rows[r.index()].barrier = *b;
            rows[r.index()].limit = *l;
        }
        rows
    }

    #[test]
    fn unlimited_everything_is_valid() {
        assert!(validate(&with(&[])).is_empty());
    }

    #[test]
    fn item_rows_need_barrier_equal_to_limit() {
        let f = validate(&with(&[(Resource::NumProc, 20, 30)]));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].severity, Severity::Error);
        assert_eq!(
            f[0].to_string(),
            "Error: numproc: barrier (20) should be equal to limit (30)"
        );
    }

    #[test]
    fn buffer_rows_need_barrier_under_limit_and_room_per_socket() {
        let f = validate(&with(&[
            (Resource::NumTcpSock, 10, 10),
            (Resource::TcpSndBuf, 100_000, 110_000),
        ]));
        assert!(
            f.iter()
                .any(|f| f.resource == "tcpsndbuf" && f.severity == Severity::Error && f.message.contains("25600")),
            "{f:?}"
        );
        let ok = validate(&with(&[
            (Resource::NumTcpSock, 10, 10),
            (Resource::TcpSndBuf, 100_000, 200_000),
        ]));
        assert!(ok.iter().all(|f| f.resource != "tcpsndbuf"), "{ok:?}");
    }

    #[test]
    fn kmemsize_must_cover_its_processes() {
        let f = validate(&with(&[
            (Resource::NumProc, 100, 100),
            (Resource::KmemSize, 1 << 20, 2 << 20),
        ]));
        assert!(
            f.iter()
                .any(|f| f.resource == "kmemsize" && f.severity == Severity::Error),
            "{f:?}"
        );
        let ok = validate(&with(&[
            (Resource::NumProc, 100, 100),
            (Resource::KmemSize, 8 << 20, 16 << 20),
        ]));
        assert!(ok.iter().all(|f| f.resource != "kmemsize"), "{ok:?}");
    }

    #[test]
    fn guarantees_limits_should_be_unlimited_and_advice_comes_last() {
        let f = validate(&with(&[
            (Resource::VmGuarPages, 100, 200),
            (Resource::NumProc, 100, 100),
            (Resource::NumFile, 1000, 1000),
        ]));
        assert_eq!(
            f.iter().map(|f| f.severity).collect::<Vec<_>>(),
            vec![Severity::Warning, Severity::Recommendation]
        );
        assert_eq!(f[1].resource, "numfile");
    }
}
