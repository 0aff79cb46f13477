//! `tally check` against the real kernel.

use crate::{
    check,
    env::Env,
    harness::{Outcome, Test},
    try_or_fail,
};

pub fn tests() -> Vec<Test> {
    vec![Test {
        name: "check_reports_the_tier_this_kernel_gets_and_why",
        run: check_reports_tier,
    }]
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
