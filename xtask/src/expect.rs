//! What `tally check` must report on kernels we know, as measured (see vendor-kernel-notes/).
//! Unknown kernels get the report's consistency checked only.

pub struct Expectation {
    pub tier: &'static str,
    /// A word the reason must contain.
    pub reason: Option<&'static str>,
}

pub fn for_release(release: &str) -> Option<Expectation> {
    if release.contains("-fc-") {
        // The sandbox kernel of this machine kind: lists bpf in lsm but refuses LSM loads.
        Some(Expectation {
            tier: "fallback",
            reason: Some("EPERM"),
        })
    } else if release.ends_with("-cloud-amd64") && (release.starts_with("6.1.") || release.starts_with("6.12.")) {
        // Debian 12's and 13's cloud kernels, booted with lsm=...,bpf.
        Some(Expectation {
            tier: "full",
            reason: None,
        })
    } else {
        None
    }
}
