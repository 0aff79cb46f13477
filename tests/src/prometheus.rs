//! The exporter and grafana/ against a real Prometheus (Debian's package): it scrapes tallyd
//! every second while one container storms into its numproc barrier and another moves
//! traffic and CPU; then every dashboard panel query (the ctid variable set to each test
//! container) and every alert rule (grafana/alerts.yml, loaded with its `for:` shortened)
//! must return series for the test's containers, the failcnt alert must fire for the
//! container that hit its limit, and the down alert once tallyd is gone. promtool checks what
//! tallyd serves and grafana/'s rules and config.
//!
//! Prometheus listens on 127.0.0.1 only (a free port); its config and storage live in a
//! tally-itest-prometheus-* directory, removed with the process whatever happens.

use std::{
    collections::BTreeSet,
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{
    check,
    drive::Driven,
    env::Env,
    harness::{free_port, http_get, Outcome, Test},
    try_or_fail,
};

pub fn tests() -> Vec<Test> {
    vec![Test {
        name: "prometheus_scraping_tallyd_answers_every_dashboard_query_and_alert_and_the_failcnt_alert_fires",
        run: dashboards_and_alerts,
    }]
}

/// The container that storms into numproc 20:20, and the one with traffic and CPU.
const STORM: &str = "101";
const BUSY: &str = "102";
/// What Grafana's interval variables become here (Prometheus scrapes every second).
const RATE_INTERVAL: &str = "1m";
const RANGE: &str = "5m";

fn grafana_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../grafana")
}

fn dashboards_and_alerts(env: &mut Env) -> Outcome {
    let (Some(prometheus), Some(promtool)) = (on_path("prometheus"), on_path("promtool")) else {
        let why = "no prometheus/promtool binaries (Debian's prometheus package; cargo xtask setup installs it)";
        // The VMs have no Prometheus; the host tier runs this test.
        return if crate::harness::emulated() {
            Outcome::Elsewhere(why.into())
        } else {
            Outcome::Skip(why.into())
        };
    };
    let grafana = grafana_dir();
    check!(grafana.is_dir(), "no grafana/ at {}", grafana.display());

    // grafana/ as it is in the tree.
    let dashboards = try_or_fail!(load_dashboards(&grafana), "reading the dashboards");
    check!(
        dashboards.len() >= 2,
        "expected the overview and container dashboards, found {}",
        dashboards.len()
    );
    for (check, file) in [("rules", "alerts.yml"), ("config", "prometheus.yml")] {
        let path = grafana.join(file);
        try_or_fail!(
            promtool_ok(&promtool, &["check", check, &path.to_string_lossy()], None),
            format!("promtool check {check} grafana/{file}")
        );
    }
    let alerts_yml = try_or_fail!(
        std::fs::read_to_string(grafana.join("alerts.yml")),
        "reading alerts.yml"
    );
    let rule_count = alerts_yml
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();

    let exporter = try_or_fail!(free_port(), "a port for the exporter");
    try_or_fail!(
        env.start_tallyd_with(&["--metrics", &format!("127.0.0.1:{exporter}")]),
        "starting tallyd"
    );
    let set = try_or_fail!(env.set(STORM, &["--numproc", "20:20"]), "creating the storm container");
    check!(
        set.status.success(),
        "tally set: {}",
        String::from_utf8_lossy(&set.stderr)
    );
    for args in [&["create", BUSY, "--config", "basic"][..], &["start", BUSY, "--wait"]] {
        let out = try_or_fail!(env.tally(args), "tally");
        check!(
            out.status.success(),
            "tally {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let scraped = try_or_fail!(http_get(exporter, "/metrics"), "scraping tallyd");
    try_or_fail!(check_exposition(&scraped), "tallyd's /metrics");
    try_or_fail!(
        promtool_ok(&promtool, &["check", "metrics"], Some(&scraped)),
        "promtool check metrics on tallyd's /metrics"
    );

    let server = try_or_fail!(
        Prometheus::start(&prometheus, exporter, &grafana),
        "starting prometheus"
    );
    let p = &server;
    // Samples from before the storm, so that failcnt's rise is seen.
    try_or_fail!(
        p.wait_for(
            "three scrapes of tallyd",
            r#"count_over_time(up{job="tally"}[1m]) >= 3 and up{job="tally"} == 1"#,
        ),
        "prometheus scraping tallyd"
    );

    let mut storm = try_or_fail!(Driven::start(env.workload_in(STORM, &["forks", "30"])), "fork storm");
    let refused: Value = try_or_fail!(storm.read(), "fork storm");
    check!(
        refused["eagain"].as_u64().unwrap_or(0) > 0,
        "the storm was never refused: {refused}"
    );
    let mut traffic = try_or_fail!(Driven::start(env.workload_in(BUSY, &["sockbufs"])), "traffic");
    let _: Value = try_or_fail!(traffic.read(), "traffic");
    let spin = try_or_fail!(
        env.workload_in(BUSY, &["spin", "1"]).stdout(Stdio::null()).status(),
        "spinning"
    );
    check!(spin.success(), "spin workload: {spin}");

    let waits = [
        (
            "numproc's failcnt rising for the storm container",
            format!(r#"increase(tally_ubc_failcnt_total{{ctid="{STORM}",resource="numproc"}}[1m]) > 0"#),
        ),
        (
            "traffic of the busy container",
            format!(r#"tally_container_network_receive_bytes_total{{ctid="{BUSY}"}} > 0"#),
        ),
        (
            "CPU of the busy container",
            format!(r#"tally_container_cpu_seconds_total{{ctid="{BUSY}"}} > 0"#),
        ),
        (
            "the failcnt alert",
            format!(r#"ALERTS{{alertname="TallyFailcntRising",ctid="{STORM}"}}"#),
        ),
    ];
    for (what, query) in &waits {
        try_or_fail!(p.wait_for(what, query), "waiting for scrapes");
    }

    // Every panel of every dashboard, and the variables' own queries.
    let ours: BTreeSet<String> = [STORM, BUSY].iter().map(|s| s.to_string()).collect();
    let mut evaluated = 0;
    for (file, dashboard) in &dashboards {
        for query in variable_queries(dashboard) {
            let result = try_or_fail!(p.query(&query), format!("{file}: variable query {query}"));
            let found = containers_in(&result);
            check!(
                ours.is_subset(&found),
                "{file}: variable query {query} lists {found:?}, not both test containers"
            );
            evaluated += 1;
        }
        for (title, expr) in panel_queries(dashboard) {
            let per_container = expr.contains("$ctid") || expr.contains("${ctid}");
            let targets: Vec<Option<&str>> = if per_container {
                vec![Some(STORM), Some(BUSY)]
            } else {
                vec![None]
            };
            for ct in targets {
                let query = substitute(&expr, ct);
                let result = try_or_fail!(p.query(&query), format!("{file}: panel '{title}': {query}"));
                check!(!result.is_empty(), "{file}: panel '{title}' has no series: {query}");
                let found = containers_in(&result);
                let wanted: BTreeSet<String> = ct.map_or(ours.clone(), |c| [c.to_string()].into());
                // Aggregates (counts, sums, tallyd's own metrics) carry no container.
                check!(
                    found.is_empty() || !found.is_disjoint(&wanted),
                    "{file}: panel '{title}' has series of {found:?} only, none of {wanted:?}: {query}"
                );
                evaluated += 1;
            }
        }
    }

    // Every rule of grafana/alerts.yml, as Prometheus loaded it.
    let rules = try_or_fail!(p.rules(), "listing the loaded rules");
    check!(
        rules.len() == rule_count,
        "grafana/alerts.yml has {rule_count} rules, Prometheus loaded {rules:?}"
    );
    for (name, query, health) in &rules {
        check!(health == "ok", "rule {name}: health {health}");
        if name == "TallyDown" {
            continue;
        }
        let result = try_or_fail!(p.query(query), format!("rule {name}: {query}"));
        check!(
            containers_in(&result).contains(STORM),
            "rule {name} ({query}) has no series for CT {STORM} (which sits at its numproc barrier and was refused): {result:?}"
        );
        evaluated += 1;
    }
    let firing = try_or_fail!(p.firing(), "reading alerts");
    check!(
        firing.contains(&("TallyFailcntRising".to_string(), STORM.to_string())),
        "the failcnt alert is not firing for CT {STORM}: firing {firing:?}"
    );
    check!(
        !firing.iter().any(|(name, _)| name == "TallyDown"),
        "TallyDown fires while tallyd answers: {firing:?}"
    );

    try_or_fail!(storm.finish(), "ending the storm");
    try_or_fail!(traffic.finish(), "ending the traffic");
    // The down rule returns series once tallyd stops answering, and fires.
    let down = rules
        .iter()
        .find(|(name, ..)| name == "TallyDown")
        .map(|(_, q, _)| q.clone());
    let down = try_or_fail!(down.context("no TallyDown rule"), "alerts.yml");
    try_or_fail!(env.stop_tallyd(), "stopping tallyd");
    try_or_fail!(p.wait_for("tallyd down", &down), "the down rule");
    evaluated += 1;
    try_or_fail!(
        p.wait_until("the down alert firing", || Ok(p
            .firing()?
            .iter()
            .any(|(name, _)| name == "TallyDown"))),
        "the down alert"
    );

    println!("  {evaluated} queries evaluated against Prometheus");
    Outcome::Pass
}

/// A binary on PATH (or Debian's /usr/bin).
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs `promtool ARGS` with `stdin` and fails with its output unless it passes.
fn promtool_ok(promtool: &Path, args: &[&str], stdin: Option<&str>) -> Result<()> {
    let mut child = Command::new(promtool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running promtool")?;
    let mut input = child.stdin.take().expect("piped");
    input.write_all(stdin.unwrap_or_default().as_bytes())?;
    drop(input);
    let out = child.wait_with_output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("{}: {}", out.status, text.trim());
    }
    // `check metrics` passes with lint findings printed; tallyd's exposition must have none.
    if args.contains(&"metrics") && !text.trim().is_empty() {
        bail!("lint findings: {}", text.trim());
    }
    Ok(())
}

/// The families the dashboards and cAdvisor-based ones read must all be there, for both
/// containers.
fn check_exposition(text: &str) -> Result<()> {
    for family in [
        "tally_ubc_held",
        "tally_ubc_maxheld",
        "tally_ubc_barrier",
        "tally_ubc_limit",
        "tally_ubc_failcnt_total",
        "tally_container_cpu_seconds_total",
        "tally_container_memory_working_set_bytes",
        "tally_container_network_receive_bytes_total",
        "tally_container_network_transmit_packets_total",
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_memory_usage_bytes",
        "container_network_receive_bytes_total",
        "container_network_transmit_bytes_total",
        "container_network_receive_packets_total",
        "container_network_transmit_packets_total",
    ] {
        for ct in [STORM, BUSY] {
            let (label, value) = if family.starts_with("container_") {
                ("name", ct)
            } else {
                ("ctid", ct)
            };
            let wanted = format!("{label}=\"{value}\"");
            if !text
                .lines()
                .any(|l| l.starts_with(&format!("{family}{{")) && l.contains(&wanted))
            {
                bail!("no {family} series with {wanted}");
            }
        }
    }
    for family in [
        "tally_bpf_map_entries",
        "tally_bpf_map_capacity",
        "tally_bpf_events_lost_total",
        "tally_scrape_duration_seconds",
    ] {
        if !text.lines().any(|l| l.starts_with(family)) {
            bail!("no {family}");
        }
    }
    Ok(())
}

/// grafana/dashboards/*.json, parsed (each must be valid JSON with panels).
fn load_dashboards(grafana: &Path) -> Result<Vec<(String, Value)>> {
    let dir = grafana.join("dashboards");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path)?;
            let value: Value = serde_json::from_str(&text).with_context(|| format!("{name} is not valid JSON"))?;
            if !value["panels"].is_array() {
                bail!("{name} has no panels");
            }
            out.push((name, value));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// (panel title, expr) of every target of every panel, rows' nested panels included.
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?").to_string();
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((title.clone(), expr.to_string()));
                }
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The Prometheus queries behind the dashboard's query variables: Grafana's
/// `label_values(METRIC, LABEL)` asks for LABEL's values among METRIC's series.
fn variable_queries(dashboard: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for var in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if var["type"] != "query" {
            continue;
        }
        let query = var["query"]["query"]
            .as_str()
            .or(var["query"].as_str())
            .unwrap_or_default();
        if let Some(args) = query.strip_prefix("label_values(").and_then(|a| a.strip_suffix(')')) {
            if let Some((metric, label)) = args.rsplit_once(',') {
                out.push(format!("count by ({}) ({})", label.trim(), metric.trim()));
            }
        } else if !query.is_empty() {
            out.push(query.to_string());
        }
    }
    out
}

/// Grafana's variables as a dashboard in use has them.
fn substitute(expr: &str, ct: Option<&str>) -> String {
    let mut q = expr
        .replace("$__rate_interval", RATE_INTERVAL)
        .replace("${__rate_interval}", RATE_INTERVAL)
        .replace("$__range", RANGE)
        .replace("$__interval", "5s");
    if let Some(ct) = ct {
        q = q.replace("${ctid}", ct).replace("$ctid", ct);
    }
    q
}

/// The containers (ctid, or cAdvisor's name) a query's series belong to.
fn containers_in(result: &[Value]) -> BTreeSet<String> {
    result
        .iter()
        .filter_map(|s| s["metric"]["ctid"].as_str().or(s["metric"]["name"].as_str()))
        .map(str::to_string)
        .collect()
}

/// One HTTP/1.0 GET on 127.0.0.1 (no chunking, the server closes): the body of a 200.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server of this test: killed on drop, then its directory removed.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: Scratch,
}

/// A directory removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Prometheus {
    /// Scrapes tallyd's exporter on 127.0.0.1:`exporter` every second and evaluates
    /// grafana/alerts.yml every second, with each `for:` shortened to 0s.
    fn start(binary: &Path, exporter: u16, grafana: &Path) -> Result<Prometheus> {
        let dir = Scratch(std::env::temp_dir().join(format!("tally-itest-prometheus-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(&dir.0);
        std::fs::create_dir_all(dir.0.join("data"))?;
        let port = free_port()?;
        let rules = std::fs::read_to_string(grafana.join("alerts.yml"))?
            .lines()
            .map(|l| match l.split_once("for:") {
                Some((indent, _)) if indent.trim().is_empty() => format!("{indent}for: 0s"),
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.0.join("alerts.yml"), rules)?;
        std::fs::write(
            dir.0.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - alerts.yml\n\
                 scrape_configs:\n  - job_name: tally\n    static_configs:\n      - targets: [\"127.0.0.1:{exporter}\"]\n"
            ),
        )?;
        let child = Command::new(binary)
            .arg(format!("--config.file={}", dir.0.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.0.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning prometheus")?;
        let server = Prometheus { child, port, _dir: dir };
        server.wait_until("prometheus ready", || Ok(http_get(port, "/-/ready").is_ok()))?;
        Ok(server)
    }

    fn api(&self, path: &str) -> Result<Value> {
        let body = http_get(self.port, path)?;
        let v: Value = serde_json::from_str(&body).with_context(|| format!("{path}: {body}"))?;
        if v["status"] != "success" {
            bail!("{path}: {v}");
        }
        Ok(v["data"].clone())
    }

    /// An instant query's series.
    fn query(&self, q: &str) -> Result<Vec<Value>> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(q)))?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// (name, query, health) of every loaded rule.
    fn rules(&self) -> Result<Vec<(String, String, String)>> {
        let data = self.api("/api/v1/rules")?;
        let mut out = Vec::new();
        for group in data["groups"].as_array().into_iter().flatten() {
            for rule in group["rules"].as_array().into_iter().flatten() {
                let s = |k: &str| rule[k].as_str().unwrap_or_default().to_string();
                out.push((s("name"), s("query"), s("health")));
            }
        }
        Ok(out)
    }

    /// (alertname, ctid or "") of the firing alerts.
    fn firing(&self) -> Result<Vec<(String, String)>> {
        let data = self.api("/api/v1/alerts")?;
        Ok(data["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["state"] == "firing")
            .map(|a| {
                let l = |k: &str| a["labels"][k].as_str().unwrap_or_default().to_string();
                (l("alertname"), l("ctid"))
            })
            .collect())
    }

    fn wait_until(&self, what: &str, mut done: impl FnMut() -> Result<bool>) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let last = match done() {
                Ok(true) => return Ok(()),
                Ok(false) => String::new(),
                Err(e) => format!(": {e:#}"),
            };
            if Instant::now() > deadline {
                bail!("{what}: not within 60 s{last}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until `q` returns series.
    fn wait_for(&self, what: &str, q: &str) -> Result<()> {
        self.wait_until(what, || Ok(!self.query(q)?.is_empty()))
            .with_context(|| format!("query {q}"))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
