//! The Debian package as an administrator meets it: `dpkg -i` puts tally, tallyd, the unit,
//! man pages and completions in place; tallyd runs under systemd where systemd runs, or
//! through the unit's ExecStart, says READY=1 and pings the watchdog as the unit asks; a
//! container runs; `dpkg -r` leaves the containers' data and `dpkg --purge` removes it.
//!
//! It uses the default instance (the package's paths: /var/lib/tally, /run/tally, pins at
//! /sys/fs/bpf/tally), so it refuses to run where tally is installed already, and purges what
//! it installed whatever happens.

use std::{
    io::{BufRead, BufReader, Read},
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{
    env::Env,
    harness::{Outcome, Test},
};

pub fn tests() -> Vec<Test> {
    vec![Test {
        name: "the_debian_package_installs_runs_a_container_under_its_unit_and_removes_cleanly",
        run: package,
    }]
}

const STATE: &str = "/var/lib/tally";
const PINS: &str = "/sys/fs/bpf/tally";
const CT: &str = "170";

/// What the package must hold.
const FILES: &[&str] = &[
    "/usr/sbin/tally",
    "/usr/sbin/tallyd",
    "/lib/systemd/system/tallyd.service",
    "/usr/share/man/man8/tally.8.gz",
    "/usr/share/man/man8/tally-create.8.gz",
    "/usr/share/man/man8/tallyd.8.gz",
    "/usr/share/bash-completion/completions/tally",
    "/usr/share/bash-completion/completions/tallyd",
    "/usr/share/zsh/vendor-completions/_tally",
    "/usr/share/zsh/vendor-completions/_tallyd",
    "/usr/share/tally/samples/ve-basic.conf-sample",
    "/usr/share/tally/grafana/dashboards/tally-container.json",
    "/usr/share/tally/prometheus/alerts.yml",
];

fn package(_env: &mut Env) -> Outcome {
    if crate::harness::emulated() {
        return Outcome::Elsewhere("the package is installed on the host, which has dpkg".into());
    }
    let Some(deb) = std::env::var_os("TALLY_ITEST_DEB").map(PathBuf::from) else {
        return Outcome::Skip("no package to install: `cargo xtask test` builds one (TALLY_ITEST_DEB)".into());
    };
    let installed = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "tally"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("installed"));
    if installed || Path::new(STATE).exists() || Path::new(PINS).exists() || Path::new("/usr/sbin/tallyd").exists() {
        return Outcome::Skip(format!(
            "tally is installed or has state on this machine ({STATE}, {PINS}): this test would take it over"
        ));
    }
    let mut guard = Installed { tallyd: None };
    let outcome = run(&deb, &mut guard);
    drop(guard);
    let left: Vec<&str> = [STATE, PINS, "/usr/sbin/tally", "/run/tally"]
        .into_iter()
        .filter(|p| Path::new(p).exists())
        .collect();
    match outcome {
        Ok(()) if left.is_empty() => Outcome::Pass,
        Ok(()) => Outcome::Fail(format!("the purge left {left:?}")),
        Err(e) => Outcome::Fail(format!("{e:#}")),
    }
}

fn run(deb: &Path, guard: &mut Installed) -> Result<()> {
    dpkg(&["-i"], Some(deb))?;
    for f in FILES {
        if !Path::new(f).is_file() {
            bail!("the package has no {f}");
        }
    }
    let mut page = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open("/usr/share/man/man8/tally.8.gz")?).read_to_string(&mut page)?;
    if !(page.contains(".TH") && page.contains("create") && page.contains("ubc")) {
        bail!(
            "man tally does not read as a man page of tally's commands: {}",
            &page[..page.len().min(300)]
        );
    }
    let unit = std::fs::read_to_string("/lib/systemd/system/tallyd.service")?;
    if !unit.lines().any(|l| l == "Type=notify") {
        bail!("the installed unit is not Type=notify");
    }

    if Path::new("/run/systemd/system").exists() {
        systemctl(&["start", "tallyd.service"])?;
        wait_for(Path::new("/run/tally/tally.sock"), Duration::from_secs(60))?;
    } else {
        guard.tallyd = Some(exec_start(&unit)?);
    }
    let tally = |args: &[&str]| -> Result<String> {
        let out = Command::new("/usr/sbin/tally")
            .args(args)
            .env_remove("TALLY_SOCKET")
            .output()?;
        if !out.status.success() {
            bail!("tally {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    tally(&["create", CT, "--ipadd", "10.77.18.2"])?;
    tally(&["start", CT])?;
    let hostname = tally(&["exec", CT, "--", "hostname"])?;
    if hostname.trim() != format!("ct{CT}") {
        bail!("hostname inside: {hostname:?}");
    }
    tally(&["stop", CT])?;
    guard.stop_tallyd()?;

    dpkg(&["-r", "tally"], None)?;
    if Path::new("/usr/sbin/tally").exists() || Path::new("/usr/share/man/man8/tally.8.gz").exists() {
        bail!("dpkg -r left the programs or their man pages");
    }
    let config = Path::new(STATE).join(format!("conf/{CT}.conf"));
    if !config.is_file() {
        bail!("dpkg -r removed the container's config {}", config.display());
    }
    dpkg(&["--purge", "tally"], None)?;
    Ok(())
}

/// The unit's ExecStart, run as systemd would without it: with a notify socket of ours, and
/// a 2 s watchdog, both of which tallyd must use.
fn exec_start(unit: &str) -> Result<Child> {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .context("no ExecStart in the unit")?;
    let argv: Vec<&str> = line.split_whitespace().collect();
    let dir = tempdir()?;
    let socket_path = dir.join("notify");
    let socket = UnixDatagram::bind(&socket_path)?;
    socket.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "2000000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running ExecStart={line}"))?;
    let stdout = child.stdout.take().expect("piped");
    let saw_ready_line = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.starts_with("tallyd: ready"))
    });
    let mut said = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(said.iter().any(|m: &String| m.contains("READY=1")) && said.iter().any(|m| m.contains("WATCHDOG=1"))) {
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("tallyd said {said:?} on its notify socket, not READY=1 and WATCHDOG=1");
        }
        let mut buf = [0u8; 512];
        if let Ok(n) = socket.recv(&mut buf) {
            said.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    if saw_ready_line.is_finished() && !saw_ready_line.join().unwrap_or(false) {
        bail!("tallyd ended without its ready line");
    }
    Ok(child)
}

fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("tally-itest-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn wait_for(path: &Path, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        if Instant::now() > deadline {
            bail!("{} did not appear within {timeout:?}", path.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn dpkg(args: &[&str], file: Option<&Path>) -> Result<()> {
    let mut cmd = Command::new("dpkg");
    cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    if let Some(f) = file {
        cmd.arg(f);
    }
    let out = cmd.output().context("running dpkg")?;
    if !out.status.success() {
        bail!(
            "dpkg {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn systemctl(args: &[&str]) -> Result<()> {
    let out = Command::new("systemctl").args(args).output()?;
    if !out.status.success() {
        bail!("systemctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Whatever happened: tallyd stopped, the container and tally's pins gone, the package purged.
struct Installed {
    tallyd: Option<Child>,
}

impl Installed {
    fn stop_tallyd(&mut self) -> Result<()> {
        if Path::new("/run/systemd/system").exists() {
            let _ = systemctl(&["stop", "tallyd.service"]);
        }
        match self.tallyd.take() {
            Some(mut child) => crate::env::terminate(&mut child, Duration::from_secs(30)),
            None => Ok(()),
        }
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if Path::new("/usr/sbin/tally").exists() && self.tallyd.is_some() {
            let _ = Command::new("/usr/sbin/tally").args(["destroy", CT]).output();
        }
        let _ = self.stop_tallyd();
        if Path::new("/usr/sbin/tallyd").exists() {
            let _ = Command::new("/usr/sbin/tallyd").arg("--unload").output();
        }
        let _ = dpkg(&["--purge", "tally"], None);
        let _ = std::fs::remove_dir_all(STATE);
        let _ = std::fs::remove_dir_all("/run/tally");
    }
}
