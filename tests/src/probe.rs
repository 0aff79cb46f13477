//! `tally check` against the real kernel.

use crate::{
    check,
    env::Env,
    harness::{Outcome, Test},
    try_or_fail,
};

pub fn tests() -> Vec<Test> {
    vec![
        Test {
            name: "check_reports_the_tier_this_kernel_gets_and_why",
            run: check_reports_tier,
        },
        Test {
            name: "overlay_files_lead_to_their_real_file_as_the_kernel_btf_or_release_says",
            run: overlay_file_layout,
        },
    ]
}

/// The tier xtask expects for this kernel (host: fallback with EPERM; VMs: full) comes in
/// TALLY_EXPECT_TIER / TALLY_EXPECT_REASON; without them the report is checked for
/// consistency only.
fn check_reports_tier(env: &mut Env) -> Outcome {
    let out = try_or_fail!(env.tally(&["check", "--json"]), "tally check");
    check!(
        out.status.success(),
        "tally check exited {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = try_or_fail!(serde_json::from_slice(&out.stdout), "check --json output");
    let tier = r["tier"].as_str().unwrap_or("none");
    let reason = r["reason"].as_str().unwrap_or("");
    let lsm_loads = r["programs"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|p| p[0] == "lsm" && p[1]["ok"] == true);
    check!(
        (tier == "full") == lsm_loads,
        "tier {tier} but lsm probe loads={lsm_loads}"
    );
    if let Ok(expected) = std::env::var("TALLY_EXPECT_TIER") {
        check!(tier == expected, "expected tier {expected}, got {tier}: {reason}");
    }
    if let Ok(expected) = std::env::var("TALLY_EXPECT_REASON") {
        check!(
            reason.contains(&expected),
            "expected the reason to name {expected}: {reason}"
        );
    }
    let text = try_or_fail!(env.tally(&["check"]), "tally check");
    let text = String::from_utf8_lossy(&text.stdout);
    check!(
        text.contains(&format!("tier         {tier}")),
        "text report lacks the tier line:\n{text}"
    );
    check!(
        text.lines()
            .any(|l| l.starts_with("numproc ") && l.contains("enforced")),
        "numproc row missing:\n{text}"
    );
    Outcome::Pass
}

/// How tally's programs reach the real file behind an overlayfs file: from overlayfs's BTF
/// where the kernel has it built in, otherwise from the release (a `struct ovl_file` from 6.13).
/// Reads this kernel's BTF: where there is none, there is nothing to hold the layout to.
fn overlay_file_layout(_env: &mut Env) -> Outcome {
    use std::path::Path;
    use tally::kernel::btf::{overlay_file_layout, KernelBtf, VMLINUX};
    if let Some(o) = crate::harness::shown_by_the_full_tier_run("the kernel's BTF is the same in every tier") {
        return o;
    }
    let btf = match KernelBtf::load(Path::new(VMLINUX)) {
        Ok(btf) => btf,
        Err(e) => return Outcome::Skip(format!("no kernel BTF to read ({VMLINUX}: {e})")),
    };
    let nothing = Path::new("/nonexistent");
    let layout = overlay_file_layout(&btf, nothing, "6.12.57+deb13-cloud-amd64");
    if btf.has_struct("ovl_inode") {
        // overlayfs is built in here: its BTF decides, whatever the release says.
        check!(
            layout == overlay_file_layout(&btf, nothing, "6.1.0-40-cloud-amd64"),
            "with overlayfs's BTF the release should not matter: {layout:?}"
        );
        check!(
            layout.indirect == btf.has_struct("ovl_file"),
            "indirect ({}) should follow struct ovl_file's presence",
            layout.indirect
        );
    } else {
        check!(
            !layout.indirect,
            "6.12 without overlayfs's BTF: no ovl_file, {layout:?}"
        );
        check!(
            overlay_file_layout(&btf, nothing, "6.13.0").indirect,
            "6.13 without overlayfs's BTF: a struct ovl_file"
        );
    }
    Outcome::Pass
}
