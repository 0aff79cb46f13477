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
        Test {
            name: "top_puts_the_container_at_its_limit_first_with_its_row_and_failcnt",
            run: top,
        },
    ]
}

fn views_agree(env: &mut Env) -> Outcome {
    if let Some(o) = crate::harness::shown_by_the_full_tier_run("the views format the same rows whatever the tier") {
        return o;
    }
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
    if let Some(o) = crate::harness::shown_by_the_full_tier_run("validation reads configs alone") {
        return o;
    }
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

/// `tally top -b`: the container whose numproc is at its barrier (a fork storm holds it there)
/// comes first, with numproc as its nearest row at 100% and the failcnt tally ubc reports; an
/// idle container comes after it.
fn top(env: &mut Env) -> Outcome {
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    for (ct, args) in [("601", vec!["--numproc", "6:6"]), ("602", vec!["--numproc", "50:50"])] {
        let out = try_or_fail!(env.set(ct, &args), "tally set");
        check!(
            out.status.success(),
            "tally set: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        try_or_fail!(crate::harness::ok(env, &["start", ct]), "start");
    }
    let storm = try_or_fail!(
        crate::numproc::Running::start(env.workload_in("601", &["forks", "10"])),
        "fork storm"
    );
    let row = env.ubc_row("601", Resource::NumProc);
    let out = env.tally(&["top", "-b", "-n", "2", "-d", "0.2"]);
    let ended = storm.release();
    let row = try_or_fail!(row, "numproc of 601");
    let out = try_or_fail!(out, "tally top");
    try_or_fail!(ended, "ending the storm");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{}", text.lines().take(4).collect::<Vec<_>>().join("\n"));
    check!(
        out.status.success(),
        "tally top: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let screens: Vec<&str> = text.split("tally top - ").filter(|s| !s.trim().is_empty()).collect();
    check!(screens.len() == 2, "-n 2 gave {} screens:\n{text}", screens.len());
    for screen in screens {
        let lines: Vec<&str> = screen.lines().skip(2).filter(|l| !l.trim().is_empty()).collect();
        check!(lines.len() == 2, "two running containers, two lines:\n{screen}");
        let first: Vec<&str> = lines[0].split_whitespace().collect();
        check!(
            first.first() == Some(&"601") && first.get(3) == Some(&"100%"),
            "601 at its barrier comes first:\n{screen}"
        );
        let expect = format!("numproc 6/6 100% fc {}", row.failcnt);
        check!(
            row.failcnt > 0 && lines[0].contains(&expect),
            "601's nearest row should read {expect:?}:\n{screen}"
        );
        check!(lines[1].starts_with("602 "), "602 comes second:\n{screen}");
    }
    Outcome::Pass
}
