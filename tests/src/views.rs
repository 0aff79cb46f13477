//! `tally ubc`'s three views against a live tallyd: the /proc text parses back to what the
//! JSON says, the human view keeps rows near their limits with -q, and -r shows how much
//! failcnt rose since the last look.

use tally::ubc::{parse_proc, Resource, UbcJson};

use crate::{
    check,
    drive::Driven,
    env::Env,
    harness::{Outcome, Test},
    try_or_fail,
};

pub fn tests() -> Vec<Test> {
    vec![
        Test {
            name: "ubc_text_json_and_human_views_agree",
            run: views_agree,
        },
        Test {
            name: "validate_exits_2_on_an_error_and_0_on_advice",
            run: validate_levels,
        },
    ]
}

fn views_agree(env: &mut Env) -> Outcome {
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    let out = try_or_fail!(
        env.set("101", &["--numproc", "20:20", "--numfile", "1000"]),
        "tally set"
    );
    check!(
        out.status.success(),
        "tally set: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cmd = env.workload_in("101", &["forks", "30"]);
    let mut storm = try_or_fail!(Driven::start(cmd), "fork storm");
    let counted: serde_json::Value = try_or_fail!(storm.read(), "fork storm");
    try_or_fail!(storm.finish(), "ending the storm");
    let refused = counted["eagain"].as_u64().unwrap_or(0);
    try_or_fail!(
        env.wait_row("101", Resource::NumProc, "held 0", |r| r.held == 0),
        "after the storm"
    );

    let text = try_or_fail!(env.tally(&["ubc", "101"]), "tally ubc");
    let parsed = try_or_fail!(
        parse_proc(&String::from_utf8_lossy(&text.stdout)),
        "parsing tally ubc's text"
    );
    let json = try_or_fail!(env.tally(&["ubc", "--json", "101"]), "tally ubc --json");
    let json: Vec<UbcJson> = try_or_fail!(serde_json::from_slice(&json.stdout), "tally ubc --json output");
    check!(
        parsed.len() == 1 && parsed[0].0 == "101" && json.len() == 1,
        "one container expected"
    );
    for r in Resource::ALL.iter().filter(|r| !r.is_dummy()) {
        let (a, b) = (parsed[0].1[r.index()], *json[0].row(*r).expect("every named row"));
        // Memory rows move between two reads; limits and tally's own counters do not.
        let same = if r.unit() == tally::ubc::Unit::Items {
            a == b
        } else {
            (a.barrier, a.limit) == (b.barrier, b.limit)
        };
        check!(same, "{r}: text {a:?} vs json {b:?}");
    }
    check!(
        json[0].row(Resource::NumProc).unwrap().failcnt == refused && refused > 0,
        "numproc failcnt in the views"
    );

    let cache = env.instance.root.join("cache");
    let human = |args: &[&str]| -> anyhow::Result<String> {
        let mut cmd = env.tally_command();
        let out = cmd
            .args(["ubc", "--human"])
            .args(args)
            .arg("101")
            .env("XDG_CACHE_HOME", &cache)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "tally ubc --human: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let quiet = try_or_fail!(human(&["-q"]), "--human -q");
    let rows: Vec<&str> = quiet
        .lines()
        .filter_map(|l| l.split('|').next())
        .map(str::trim)
        .collect();
    check!(
        rows.contains(&"numproc") && !rows.contains(&"kmemsize"),
        "-q should keep numproc only:\n{quiet}"
    );
    check!(!quiet.contains('\x1b'), "no colour when not on a terminal");
    let numproc_fail = |text: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with("numproc"))
            .map(|l| l.rsplit('|').next().unwrap_or("").trim().to_string())
    };
    let first = try_or_fail!(human(&["-r"]), "--human -r");
    check!(
        numproc_fail(&first) == Some(format!("+{refused}")),
        "first -r look should show +{refused}:\n{first}"
    );
    let second = try_or_fail!(human(&["-r"]), "--human -r again");
    check!(
        numproc_fail(&second).as_deref() == Some("-"),
        "no rise since the last look:\n{second}"
    );
    Outcome::Pass
}

/// vzcfgvalidate's levels through the CLI: an error exits 2, advice alone exits 0; a config
/// file is checked the same way without tallyd.
fn validate_levels(env: &mut Env) -> Outcome {
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    let set = |args: &[&str]| env.set("101", args);
    let out = try_or_fail!(set(&["--numproc", "20:30"]), "tally set");
    check!(
        out.status.success(),
        "tally set: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = try_or_fail!(env.tally(&["validate", "101"]), "tally validate");
    let text = String::from_utf8_lossy(&bad.stdout);
    check!(
        bad.status.code() == Some(2),
        "an error should exit 2: {:?}\n{text}",
        bad.status.code()
    );
    check!(
        text.contains("Error: numproc: barrier (20) should be equal to limit (30)"),
        "{text}"
    );

    try_or_fail!(set(&["--numproc", "100:100", "--numfile", "1000"]), "tally set");
    let advice = try_or_fail!(env.tally(&["validate", "101"]), "tally validate");
    let text = String::from_utf8_lossy(&advice.stdout);
    check!(
        advice.status.code() == Some(0),
        "advice alone should exit 0: {:?}\n{text}",
        advice.status.code()
    );
    check!(text.contains("Recommendation: numfile"), "{text}");

    let file = env.instance.root.join("102.conf");
    try_or_fail!(
        std::fs::write(&file, "NUMTCPSOCK=\"10:10\"\nTCPSNDBUF=\"100000:110000\"\n"),
        "writing a config"
    );
    let offline = try_or_fail!(
        env.tally(&["validate", "--file", &file.display().to_string()]),
        "tally validate --file"
    );
    let text = String::from_utf8_lossy(&offline.stdout);
    check!(
        offline.status.code() == Some(2) && text.contains("Error: tcpsndbuf"),
        "{text}"
    );
    Outcome::Pass
}
