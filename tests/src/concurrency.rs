//! tallyd serves many at once: nothing waits behind a long operation on another container,
//! operations on different containers run side by side with nothing lost or duplicated, and a
//! second operation on a busy container is refused with `locked` (9) and changes nothing.
//!
//! Both need native CPUs for their timing and their load; their subject (tallyd's state
//! ownership) is the same in every tier and kernel, so the host run shows it.

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    sync::{Arc, Barrier},
    time::{Duration, Instant},
};

use anyhow::{bail, Result};

use crate::{
    check,
    env::Env,
    harness::{free_port, http_get, ok, Outcome, Test},
    try_or_fail,
};

pub fn tests() -> Vec<Test> {
    vec![
        Test {
            name: "nothing_waits_behind_a_stop_in_its_grace_period_and_a_second_operation_gets_locked",
            run: nothing_waits_behind_a_stop,
        },
        Test {
            name: "twenty_lifecycles_side_by_side_lose_and_duplicate_nothing",
            run: twenty_side_by_side,
        },
    ]
}

fn on_native_cpus() -> Option<Outcome> {
    crate::harness::emulated().then(|| {
        Outcome::Elsewhere(
            "timing and load need native CPUs; tallyd's locking is the same on every tier, and the host's run shows it"
                .into(),
        )
    })
}

/// The longest time one of `n` runs of `op` took, and the moment the last one ended.
fn longest_of(n: usize, op: impl Fn() -> Result<()>) -> Result<(Duration, Instant)> {
    let mut longest = Duration::ZERO;
    for i in 0..n {
        let t = Instant::now();
        op().map_err(|e| e.context(format!("run {i}")))?;
        longest = longest.max(t.elapsed());
    }
    Ok((longest, Instant::now()))
}

fn nothing_waits_behind_a_stop(env: &mut Env) -> Outcome {
    if let Some(o) = on_native_cpus() {
        return o;
    }
    const SLOW: &str = "1501";
    const OTHER: &str = "1502";
    let port = try_or_fail!(free_port(), "a port for the exporter");
    try_or_fail!(
        env.start_tallyd_with(&["--metrics", &format!("127.0.0.1:{port}")]),
        "starting tallyd"
    );
    // busybox's init, asked to halt with a signal it has no handler for: as PID 1 of its
    // namespace it never sees it, and the stop waits out its whole grace period.
    let archive = try_or_fail!(env.busybox_archive(&[]), "making the archive");
    try_or_fail!(
        ok(
            env,
            &[
                "template",
                "import",
                "deaf",
                &archive.to_string_lossy(),
                "--halt-signal",
                "SIGWINCH"
            ]
        ),
        "importing the deaf template"
    );
    try_or_fail!(
        ok(env, &["create", SLOW, "--ostemplate", "deaf", "--ipadd", "10.77.40.2"]),
        "create"
    );
    try_or_fail!(ok(env, &["create", OTHER, "--ipadd", "10.77.40.3"]), "create");
    for ct in [SLOW, OTHER] {
        try_or_fail!(ok(env, &["start", ct]), "start");
    }
    let config = env.instance.config_path(&tally::ct::CtId::parse(SLOW).unwrap());
    let config_before = try_or_fail!(std::fs::read_to_string(&config), "reading the config");

    let stopping = {
        let mut stop = env.tally_command();
        stop.args(["stop", SLOW]);
        let started = Instant::now();
        let child = try_or_fail!(stop.output_in_background(), "running tally stop");
        (child, started)
    };
    // The stop is under way once its intent is on disk.
    let intent = env.instance.root.join("journal").join(SLOW);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !intent.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    check!(
        intent.exists(),
        "the stop never began (no intent at {})",
        intent.display()
    );

    // A second operation on the stopping container: refused at once, nothing changed.
    for args in [
        vec!["set", SLOW, "--numproc", "77", "--save"],
        vec!["start", SLOW],
        vec!["destroy", SLOW],
    ] {
        let t = Instant::now();
        let out = try_or_fail!(env.tally(&args), "tally");
        check!(
            out.status.code() == Some(9),
            "tally {args:?} during the stop exited {:?} (want 9, locked): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        check!(
            t.elapsed() < Duration::from_secs(1),
            "tally {args:?} took {:?} to be refused",
            t.elapsed()
        );
    }
    let config_after = try_or_fail!(std::fs::read_to_string(&config), "reading the config");
    check!(
        config_after == config_before,
        "a refused set changed the config:\n{config_before}\n->\n{config_after}"
    );

    // 100 each, five kinds side by side, all while the stop waits.
    let env_ref = &*env;
    let kinds: Vec<(&str, Box<dyn Fn() -> Result<()> + Sync>)> = vec![
        (
            "tally list",
            Box::new(|| {
                let out = ok(env_ref, &["list", "-a"])?;
                if !out.contains(OTHER) {
                    bail!("{OTHER} missing from tally list: {out}");
                }
                Ok(())
            }),
        ),
        (
            "tally ubc",
            Box::new(|| {
                let out = ok(env_ref, &["ubc", OTHER])?;
                if !out.contains("numproc") {
                    bail!("no numproc row: {out}");
                }
                Ok(())
            }),
        ),
        (
            "tally status",
            Box::new(|| {
                let out = ok(env_ref, &["status", OTHER])?;
                if !out.contains("running") {
                    bail!("{OTHER} not running: {out}");
                }
                Ok(())
            }),
        ),
        (
            "a Prometheus scrape",
            Box::new(|| {
                let body = http_get(port, "/metrics")?;
                if !body.contains(&format!("ctid=\"{OTHER}\"")) {
                    bail!("no series of {OTHER} in the scrape");
                }
                Ok(())
            }),
        ),
        (
            "tally exec",
            Box::new(|| {
                let out = ok(env_ref, &["exec", OTHER, "--", "hostname"])?;
                if out.trim() != format!("ct{OTHER}") {
                    bail!("hostname inside {OTHER}: {out:?}");
                }
                Ok(())
            }),
        ),
    ];
    let results: Vec<(&str, Result<(Duration, Instant)>)> = std::thread::scope(|s| {
        let handles: Vec<_> = kinds
            .iter()
            .map(|(what, op)| (*what, s.spawn(move || longest_of(100, op))))
            .collect();
        handles
            .into_iter()
            .map(|(what, h)| (what, h.join().unwrap_or_else(|_| bail!("panicked"))))
            .collect()
    });
    let (child, started) = stopping;
    let stop = try_or_fail!(child.wait_with_output(), "waiting for the stop");
    let stop_took = started.elapsed();
    let stop_ended = Instant::now();
    check!(
        stop.status.success(),
        "tally stop: {}",
        String::from_utf8_lossy(&stop.stderr).trim()
    );
    check!(
        stop_took >= Duration::from_secs(10),
        "the stop took only {stop_took:?}: its init did not ignore the halt signal"
    );
    for (what, result) in results {
        let (longest, last) = try_or_fail!(result, what);
        println!("    100 x {what}: longest {longest:?}");
        check!(
            longest < Duration::from_secs(1),
            "{what} took {longest:?} once during the stop"
        );
        check!(
            last < stop_ended,
            "{what}: the 100 runs outlasted the stop ({stop_took:?})"
        );
    }
    let status = try_or_fail!(ok(env, &["status", SLOW]), "status");
    check!(status.contains("down"), "after the stop: {status}");
    for ct in [SLOW, OTHER] {
        try_or_fail!(ok(env, &["destroy", ct]), "destroy");
    }
    Outcome::Pass
}

fn twenty_side_by_side(env: &mut Env) -> Outcome {
    if let Some(o) = on_native_cpus() {
        return o;
    }
    try_or_fail!(env.start_tallyd(), "starting tallyd");
    try_or_fail!(ok(env, &["template", "list"]), "making the busybox template");
    let before = env.state();
    let ids: Vec<String> = (0..20).map(|i| format!("{}", 1601 + i)).collect();
    let addr = |i: usize| Ipv4Addr::new(10, 77, 41, 2 + i as u8);
    // Every thread does each step at the same moment as the others.
    let step = Arc::new(Barrier::new(ids.len() + 1));
    let env_ref = &*env;
    let outcome: Result<()> = std::thread::scope(|s| {
        let workers: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, ct)| {
                let step = step.clone();
                s.spawn(move || -> Result<()> {
                    let ip = addr(i).to_string();
                    let numproc = format!("{}:{}", 40 + i, 40 + i);
                    let steps: [(&str, Vec<&str>); 6] = [
                        ("create", vec!["create", ct, "--ipadd", &ip]),
                        ("start", vec!["start", ct]),
                        ("set", vec!["set", ct, "--numproc", &numproc, "--save"]),
                        ("exec", vec!["exec", ct, "--", "hostname"]),
                        ("stop", vec!["stop", ct]),
                        ("destroy", vec!["destroy", ct]),
                    ];
                    let mut first_error = None;
                    for (what, args) in steps {
                        step.wait();
                        if first_error.is_none() {
                            match ok(env_ref, &args) {
                                Ok(out) if what == "exec" && out.trim() != format!("ct{ct}") => {
                                    first_error = Some(anyhow::anyhow!("{ct}: hostname inside is {out:?}"))
                                }
                                Ok(_) => {}
                                Err(e) => first_error = Some(e.context(format!("{ct}: {what}"))),
                            }
                        }
                        step.wait();
                    }
                    first_error.map_or(Ok(()), Err)
                })
            })
            .collect();
        // Between steps: what tallyd reports is exactly the twenty, each once.
        let check_between = |after: &str| -> Result<()> {
            step.wait();
            step.wait();
            let list: Vec<serde_json::Value> =
                serde_json::from_str(&ok(env_ref, &["list", "-a", "-j", "-o", "ctid,status,numproc.b"])?)?;
            let listed: Vec<String> = list
                .iter()
                .filter_map(|v| v["ctid"].as_str().map(str::to_string))
                .collect();
            let unique: BTreeSet<&String> = listed.iter().collect();
            let want = if after == "destroy" { 0 } else { ids.len() };
            if listed.len() != want || unique.len() != want {
                bail!(
                    "after {after}: tally list has {} entries ({} distinct), want {want}: {listed:?}",
                    listed.len(),
                    unique.len()
                );
            }
            if after == "start" || after == "set" || after == "exec" {
                let running = list.iter().filter(|v| v["status"] == "running").count();
                if running != ids.len() {
                    bail!("after {after}: {running} of {} running", ids.len());
                }
                // Each its own id range and address: nothing chosen twice by creates side by side.
                let mut bases = BTreeSet::new();
                for ct in &ids {
                    let conf = std::fs::read_to_string(env_ref.instance.root.join(format!("conf/{ct}.conf")))?;
                    let base = conf.lines().find(|l| l.starts_with("USERNS_BASE=")).map(str::to_string);
                    if !bases.insert(base.clone()) {
                        bail!("{ct} got a user-namespace range another container has: {base:?}");
                    }
                }
            }
            if after == "set" {
                for v in &list {
                    let ct = v["ctid"].as_str().unwrap_or_default();
                    let k = ids.iter().position(|c| c == ct).unwrap_or(usize::MAX);
                    let barrier = v["numproc.b"].as_u64();
                    if barrier != Some(40 + k as u64) {
                        bail!("{ct}: numproc barrier {barrier:?} after its set, want {}", 40 + k);
                    }
                }
            }
            Ok(())
        };
        let mut between = Ok(());
        for after in ["create", "start", "set", "exec", "stop", "destroy"] {
            let r = check_between(after);
            if between.is_ok() {
                between = r;
            }
        }
        for w in workers {
            w.join().unwrap_or_else(|_| bail!("a worker panicked"))?;
        }
        between
    });
    try_or_fail!(outcome, "twenty side by side");
    let after = env.state();
    check!(
        after == before,
        "the twenty left something behind:\n{before:#?}\n->\n{after:#?}"
    );
    Outcome::Pass
}

/// `Command::output` without waiting for it.
trait Background {
    fn output_in_background(&mut self) -> std::io::Result<std::process::Child>;
}

impl Background for std::process::Command {
    fn output_in_background(&mut self) -> std::io::Result<std::process::Child> {
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
    }
}
