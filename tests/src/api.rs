//! Misuse of tallyd's API: malformed JSON, unknown fields, wrong types, oversized bodies, bad
//! paths, conflicting requests at once on one container, and clients that are not root. Each
//! gets a clear error with its catalogue code, and nothing changes.

use std::{
    io::{Read, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream, process::CommandExt},
    time::Duration,
};

use anyhow::{Context, Result};

use crate::{
    check,
    env::Env,
    harness::{dir_names, ok, Outcome, Test},
    try_or_fail,
};

pub fn tests() -> Vec<Test> {
    vec![
        Test {
            name: "api_misuse_gets_clear_errors_and_changes_nothing",
            run: misuse,
        },
        Test {
            name: "the_systemd_unit_passes_systemd_analyze_verify",
            run: systemd_unit,
        },
    ]
}

/// One raw HTTP/1.1 request on the socket: (status, JSON body).
fn raw(env: &Env, method: &str, path: &str, body: &[u8]) -> Result<(u16, serde_json::Value)> {
    // An oversized body is refused part-way: tallyd answers and closes with the rest unread,
    // which resets the connection, and a reset can overtake the answer. Then ask again.
    let mut last = None;
    for _ in 0..5 {
        match raw_once(env, method, path, body) {
            Ok(answer) => return Ok(answer),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("tried"))
}

fn raw_once(env: &Env, method: &str, path: &str, body: &[u8]) -> Result<(u16, serde_json::Value)> {
    let mut s = UnixStream::connect(&env.socket)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: tallyd\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    // The body from another thread, so that the answer is read while it is still being sent.
    let mut writer = s.try_clone()?;
    let body = body.to_vec();
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&body);
    });
    let mut text = Vec::new();
    let read = s.read_to_end(&mut text);
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = sender.join();
    if text.is_empty() {
        read?;
    }
    let text = String::from_utf8_lossy(&text).into_owned();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status in {text:?}"))?;
    let json = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    Ok((status, serde_json::from_str(json).unwrap_or(serde_json::Value::Null)))
}

/// Everything of the instance a request could change.
fn snapshot(env: &Env) -> Vec<String> {
    let root = &env.instance.root;
    let mut out: Vec<String> = ["conf", "private", "root", "template", "journal"]
        .iter()
        .flat_map(|d| dir_names(&root.join(d)).into_iter().map(move |n| format!("{d}/{n}")))
        .collect();
    for name in dir_names(&env.instance.config_dir()) {
        out.push(std::fs::read_to_string(env.instance.config_dir().join(&name)).unwrap_or_default());
    }
    out
}

fn misuse(env: &mut Env) -> Outcome {
    if let Some(o) = crate::harness::shown_by_the_full_tier_run("tallyd's API checks do not depend on the tier") {
        return o;
    }
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    try_or_fail!(ok(env, &["create", "401"]), "create");
    let before = snapshot(env);
    let big = format!("{{\"import\":\"{}\"}}", "x".repeat(1 << 20));
    let cases: &[(&str, &str, &[u8], u16, &str, &str)] = &[
        (
            "POST",
            "/v1/containers/402",
            b"{not json",
            400,
            "bad_argument",
            "malformed JSON",
        ),
        (
            "POST",
            "/v1/containers/402",
            br#"{"ostemplate":"busybox","bogus":1}"#,
            400,
            "bad_argument",
            "an unknown field",
        ),
        (
            "POST",
            "/v1/containers/402",
            br#"{"ipadd":"10.77.40.2"}"#,
            400,
            "bad_argument",
            "a wrong type",
        ),
        (
            "PUT",
            "/v1/containers/401/limits",
            br#"{"limits":{"numproc":5}}"#,
            400,
            "bad_argument",
            "a wrong type in limits",
        ),
        (
            "PUT",
            "/v1/containers/401/limits",
            br#"{"limits":{"numproc":"9:1"}}"#,
            400,
            "bad_value",
            "barrier above limit",
        ),
        (
            "PUT",
            "/v1/containers/401/limits",
            br#"{"limits":{"nosuchrow":"1"}}"#,
            400,
            "bad_argument",
            "an unknown row",
        ),
        (
            "POST",
            "/v1/containers/402",
            big.as_bytes(),
            400,
            "bad_argument",
            "a 1 MiB body",
        ),
        (
            "POST",
            "/v1/containers/%2e%2e%2fx",
            b"{}",
            400,
            "bad_value",
            "a ../ container id",
        ),
        ("GET", "/v1/nosuch", b"", 400, "bad_argument", "an unknown route"),
        (
            "POST",
            "/v1/containers/401/stop",
            b"",
            400,
            "bad_argument",
            "a missing body",
        ),
    ];
    for (method, path, body, status, code, what) in cases {
        let (got, json) = try_or_fail!(raw(env, method, path, body), format!("{what}: the request"));
        let message = json["message"].as_str().unwrap_or_default();
        check!(
            got == *status && json["code"].as_str() == Some(*code) && !message.is_empty(),
            "{what}: {method} {path} answered {got} {json} (expected {status} with code {code} and a message)"
        );
        println!("    {what}: {got} {message}");
        check!(snapshot(env) == before, "{what} changed the instance");
    }

    // Conflicting requests at once: one runs, each other one is refused, as `locked` (9) while
    // the first runs, or as its outcome makes it wrong ('running', 'not running') after.
    let race = |args: &'static [&'static str], n: usize| -> Vec<Option<i32>> {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let mut cmd = env.tally_command();
                cmd.args(args);
                std::thread::spawn(move || cmd.output().ok().and_then(|o| o.status.code()))
            })
            .collect();
        let mut codes: Vec<Option<i32>> = handles.into_iter().map(|h| h.join().unwrap_or(None)).collect();
        codes.sort();
        codes
    };
    let starts = race(&["start", "401"], 6);
    check!(
        starts[0] == Some(0) && starts[1..].iter().all(|c| matches!(c, Some(9) | Some(32))),
        "6 starts at once: exit codes {starts:?} (one start, the others 'locked' or 'running')"
    );
    let stops = race(&["stop", "401", "--fast"], 4);
    check!(
        stops[0] == Some(0) && stops[1..].iter().all(|c| matches!(c, Some(9) | Some(31))),
        "4 stops at once: exit codes {stops:?} (one stop, the others 'locked' or 'not running')"
    );
    let status = try_or_fail!(ok(env, &["status", "401"]), "status");
    check!(
        status.trim() == "CTID 401 exist unmounted down",
        "after the races: {status}"
    );
    check!(snapshot(env) == before, "the races left the instance changed");

    // Not root: the socket's mode keeps others out, and tallyd checks the peer itself too.
    let as_nobody = |env: &Env| -> Result<std::process::Output> {
        let mut cmd = env.tally_command();
        cmd.args(["list", "-a"]).uid(65534).gid(65534);
        Ok(cmd.output()?)
    };
    let out = try_or_fail!(as_nobody(env), "tally as nobody");
    let err = String::from_utf8_lossy(&out.stderr);
    check!(
        out.status.code() == Some(12) && err.contains("root's only"),
        "tally as nobody: exit {:?}: {err}",
        out.status.code()
    );
    try_or_fail!(
        std::fs::set_permissions(&env.socket, std::fs::Permissions::from_mode(0o666)),
        "loosening the socket"
    );
    let out = as_nobody(env);
    let _ = std::fs::set_permissions(&env.socket, std::fs::Permissions::from_mode(0o600));
    let out = try_or_fail!(out, "tally as nobody on a loosened socket");
    let err = String::from_utf8_lossy(&out.stderr);
    check!(
        out.status.code() == Some(12) && err.contains("peer uid Some(65534)"),
        "tally as nobody on a 0666 socket: exit {:?}: {err}",
        out.status.code()
    );
    check!(snapshot(env) == before, "non-root clients changed the instance");
    try_or_fail!(ok(env, &["destroy", "401"]), "destroy");
    Outcome::Pass
}

/// userspace/tallyd/tallyd.service as systemd reads it, with ExecStart pointing at the tallyd
/// under test (the unit names /usr/local/sbin/tallyd, where the README installs it).
fn systemd_unit(env: &mut Env) -> Outcome {
    let analyze = std::path::Path::new("/usr/bin/systemd-analyze");
    if !analyze.exists() {
        let why = "no systemd-analyze here".to_string();
        return if crate::harness::emulated() {
            Outcome::Elsewhere(format!("{why} (the host tier runs this)"))
        } else {
            Outcome::Skip(why)
        };
    }
    let unit = include_str!("../../userspace/tallyd/tallyd.service");
    let tallyd = env.itest_binary().with_file_name("tallyd");
    check!(
        unit.contains("ExecStart=/usr/sbin/tallyd ") && unit.contains("Type=notify"),
        "the unit's ExecStart: {unit}"
    );
    check!(
        unit.contains("KillMode=process"),
        "containers must outlive a tallyd restart: KillMode=process"
    );
    let copy = env.instance.root.join("tally-itest.service");
    try_or_fail!(
        std::fs::write(&copy, unit.replace("/usr/sbin/tallyd", &tallyd.display().to_string())),
        "writing the unit"
    );
    let out = try_or_fail!(
        std::process::Command::new(analyze).arg("verify").arg(&copy).output(),
        "systemd-analyze"
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    check!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {:?}: {said}",
        out.status.code()
    );
    Outcome::Pass
}
