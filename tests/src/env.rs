//! One test's world: a private tally instance (its own pins, cgroups, state dir and socket,
//! all named tally-itest-*), the real tallyd and tally binaries, and a teardown that removes
//! everything the test made, in the kernel too, even when the test failed.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use tally::{
    cgroup::{ContainerCgroup, Controller, Layout},
    ct::{net, rootfs::Rootfs, CtId, Instance},
    kernel::{maps::BeancounterMaps, programs},
    ubc::{Beancounter, Resource},
};

pub struct Env {
    /// The running test's name.
    pub test: &'static str,
    pub instance: Instance,
    pub socket: PathBuf,
    pub bin_dir: PathBuf,
    daemon: Option<Child>,
    /// What every tallyd of this test wrote to its stderr (its log), line by line.
    tallyd_log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Env {
    pub fn new(test: &'static str) -> Result<Env> {
        let n: u32 = test
            .bytes()
            .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(b as u32))
            % 100_000;
        let name = format!("tally-itest-{}-{n}", std::process::id());
        let root = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&root)?;
        let bin_dir = std::env::current_exe()?.parent().context("exe dir")?.to_path_buf();
        Ok(Env {
            test,
            socket: root.join("tally.sock"),
            instance: Instance::new(&name, root)?,
            bin_dir,
            daemon: None,
            tallyd_log: Default::default(),
        })
    }

    /// Starts tallyd in the tier the run asks for (TALLY_ITEST_TIER, default auto) and waits for
    /// its ready line, which it returns.
    pub fn start_tallyd(&mut self) -> Result<String> {
        let tier = std::env::var("TALLY_ITEST_TIER").unwrap_or_else(|_| "auto".into());
        self.start_tallyd_in(&tier)
    }

    pub fn start_tallyd_in(&mut self, tier: &str) -> Result<String> {
        self.start_tallyd_in_with(tier, &[])
    }

    /// `start_tallyd` with more arguments for tallyd (say `--metrics 127.0.0.1:PORT`).
    pub fn start_tallyd_with(&mut self, extra: &[&str]) -> Result<String> {
        let tier = std::env::var("TALLY_ITEST_TIER").unwrap_or_else(|_| "auto".into());
        self.start_tallyd_in_with(&tier, extra)
    }

    fn start_tallyd_in_with(&mut self, tier: &str, extra: &[&str]) -> Result<String> {
        if self.daemon.is_some() {
            bail!("tallyd already running");
        }
        let mut child = Command::new(self.bin_dir.join("tallyd"))
            .arg("--root")
            .arg(&self.instance.root)
            .args(["--instance", &self.instance.name, "--tier", tier])
            .arg("--socket")
            .arg(&self.socket)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning tallyd")?;
        let stdout = child.stdout.take().expect("piped");
        // tallyd's log goes on to ours, and is kept for tests that read what it said.
        let stderr = child.stderr.take().expect("piped");
        let log = self.tallyd_log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                log.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("tallyd: ready") {
                    let _ = tx.send(line);
                }
            }
        });
        self.daemon = Some(child);
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => Ok(line),
            Err(_) => {
                self.stop_tallyd()?;
                bail!("tallyd did not get ready within 60 s")
            }
        }
    }

    /// SIGTERM, as systemd stops it.
    pub fn stop_tallyd(&mut self) -> Result<()> {
        match self.daemon.take() {
            Some(mut child) => terminate(&mut child, Duration::from_secs(patience_secs())),
            None => Ok(()),
        }
    }

    /// SIGKILL, as a crash or the OOM killer ends it.
    pub fn kill_tallyd(&mut self) -> Result<()> {
        if let Some(mut child) = self.daemon.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Runs the tally CLI against this instance's tallyd.
    pub fn tally(&self, args: &[&str]) -> Result<Output> {
        Command::new(self.bin_dir.join("tally"))
            .args(args)
            .env("TALLY_SOCKET", &self.socket)
            .output()
            .context("running tally")
    }

    /// Everything under the instance that a refused request must not touch.
    pub fn state(&self) -> Vec<String> {
        let mut out: Vec<String> = ["conf", "private", "root"]
            .iter()
            .flat_map(|d| {
                std::fs::read_dir(self.instance.root.join(d))
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .map(|e| e.path().display().to_string())
            .collect();
        if let Ok(cg) = self.cgroup("x") {
            if let Some(parent) = cg.unified.parent() {
                out.extend(
                    std::fs::read_dir(parent)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .filter(|e| e.path().is_dir())
                        .map(|e| e.path().display().to_string()),
                );
            }
        }
        out.extend(
            std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(&self.instance.name))
                .map(str::to_string),
        );
        out.extend(
            std::fs::read_dir("/sys/class/net")
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with("tally")),
        );
        out.sort();
        out
    }

    /// A gzipped tar of this instance's busybox template tree with `extra` files added
    /// (path inside, contents), for `tally template import`. Makes the template first.
    pub fn busybox_archive(&self, extra: &[(&str, &[u8])]) -> Result<PathBuf> {
        crate::harness::ok(self, &["template", "list"])?;
        let busybox = self.instance.root.join("template/busybox");
        let archive = self.instance.root.join("tally-itest-rootfs.tar.gz");
        let gz = flate2::write::GzEncoder::new(std::fs::File::create(&archive)?, flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        tar.follow_symlinks(false);
        tar.append_dir_all(".", &busybox)?;
        for (path, data) in extra {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_cksum();
            tar.append_data(&mut header, path, *data)?;
        }
        tar.into_inner()?.finish()?;
        Ok(archive)
    }

    /// The lines tallyd has logged so far.
    pub fn tallyd_log(&self) -> Vec<String> {
        self.tallyd_log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// tallyd's pid, while it runs.
    pub fn tallyd_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(|c| c.id())
    }

    /// `tally set CT ARGS --save`, creating container `ct` (busybox, stopped) first when it
    /// does not exist yet.
    pub fn set(&self, ct: &str, args: &[&str]) -> Result<Output> {
        let created = self.tally(&["create", ct])?;
        if !created.status.success() && created.status.code() != Some(44) {
            return Ok(created);
        }
        self.tally(&[&["set", ct][..], args, &["--save"]].concat())
    }

    pub fn tally_command(&self) -> Command {
        let mut c = Command::new(self.bin_dir.join("tally"));
        c.env("TALLY_SOCKET", &self.socket);
        c
    }

    /// `tally exec CT -- tally-itest workload ARGS`: a workload inside container `ct`.
    pub fn workload_in(&self, ct: &str, args: &[&str]) -> Command {
        let mut cmd = self.tally_command();
        cmd.args(["exec", "--cgroup-only", ct, "--"])
            .arg(self.itest_binary())
            .arg("workload")
            .args(args);
        cmd
    }

    pub fn itest_binary(&self) -> PathBuf {
        self.bin_dir.join("tally-itest")
    }

    /// `tally-itest workload ARGS` that joins container `ctid`'s cgroups itself (as tallyd
    /// would), for runs without tallyd.
    pub fn workload_joining(&self, ctid: &str, args: &[&str]) -> Result<Command> {
        let cg = self.cgroup(ctid)?;
        let mut cmd = Command::new(self.itest_binary());
        cmd.arg("workload");
        for (dir, flavor) in cg.controllers.values() {
            if *flavor == tally::cgroup::Flavor::V1 {
                cmd.arg("--join").arg(dir.join("cgroup.procs"));
            }
        }
        cmd.arg("--join").arg(cg.unified.join("cgroup.procs")).args(args);
        Ok(cmd)
    }

    /// The container's cgroup as tallyd lays it out (both tiers' controllers, whichever exist).
    pub fn cgroup(&self, ctid: &str) -> Result<ContainerCgroup> {
        let layout = Layout::detect()?;
        let wanted: Vec<Controller> = [Controller::Pids, Controller::Memory]
            .into_iter()
            .filter(|c| layout.controllers.contains_key(c))
            .collect();
        Ok(ContainerCgroup::locate(&layout, &self.instance.name, ctid, &wanted)?)
    }

    /// A row straight from the pinned maps (works while tallyd is down); barrier/limit and
    /// BPF counters only (no cgroup-file sources).
    pub fn pinned_row(&self, ctid: &str, r: Resource) -> Result<Beancounter> {
        let cgid = self.cgroup(ctid)?.id()?;
        let maps = BeancounterMaps::open(&self.instance.pins())?;
        let c = maps.counters(cgid)?.context("no counters row")?.rows[r.index()];
        let l = maps.limits(cgid)?.context("no limits row")?.rows[r.index()];
        Ok(Beancounter {
            held: c.held,
            maxheld: c.maxheld,
            barrier: l.barrier,
            limit: l.limit,
            failcnt: c.failcnt,
        })
    }

    /// A row as `tally ubc --json` reports it.
    pub fn ubc_row(&self, ctid: &str, r: Resource) -> Result<Beancounter> {
        let out = self.tally(&["ubc", "--json", ctid])?;
        if !out.status.success() {
            bail!("tally ubc: {}", String::from_utf8_lossy(&out.stderr));
        }
        let v: Vec<tally::ubc::UbcJson> = serde_json::from_slice(&out.stdout)?;
        v.first()
            .and_then(|ct| ct.row(r))
            .copied()
            .context("no such row in tally ubc --json")
    }

    /// Polls `row` until `pred` holds (what the kernel frees after an RCU grace period
    /// settles within milliseconds, not at once).
    pub fn wait_row(
        &self,
        ctid: &str,
        r: Resource,
        what: &str,
        pred: impl Fn(&Beancounter) -> bool,
    ) -> Result<Beancounter> {
        let patience = patience_secs();
        let deadline = Instant::now() + Duration::from_secs(patience);
        loop {
            let row = self.ubc_row(ctid, r)?;
            if pred(&row) {
                return Ok(row);
            }
            if Instant::now() > deadline {
                bail!("{r} never reached {what}: {row:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Removes everything this test's instance made: tallyd, every container cgroup under the
    /// instance's parents, the pins, the state directory.
    pub fn teardown(&mut self) -> Result<()> {
        let stopped = self.stop_tallyd();
        let layout = Layout::detect()?;
        let mut parents: Vec<PathBuf> = layout
            .controllers
            .values()
            .map(|(p, _)| p.join(&self.instance.name))
            .collect();
        if let Some(u) = &layout.unified {
            parents.push(u.join(&self.instance.name));
        }
        let mut names = std::collections::BTreeSet::new();
        for p in &parents {
            if let Ok(entries) = std::fs::read_dir(p) {
                names.extend(entries.flatten().filter(|e| e.path().is_dir()).map(|e| e.file_name()));
            }
        }
        for name in names {
            let ctid = name.to_string_lossy();
            let all: Vec<Controller> = layout.controllers.keys().copied().collect();
            ContainerCgroup::locate(&layout, &self.instance.name, &ctid, &all)?.destroy()?;
        }
        for p in &parents {
            let _ = std::fs::remove_dir(p);
        }
        // Containers' roots and veths (their processes are dead: the cgroups are gone).
        let mut ctids = std::collections::BTreeSet::new();
        for dir in [self.instance.root.join("root"), self.instance.config_dir()] {
            if let Ok(entries) = std::fs::read_dir(dir) {
                ctids.extend(entries.flatten().filter_map(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    CtId::parse(name.strip_suffix(".conf").unwrap_or(&name)).ok()
                }));
            }
        }
        for ct in &ctids {
            Rootfs::new(&self.instance.root, ct).umount()?;
            let config = tally::ct::CtConfig::load(&self.instance.config_path(ct)).ok();
            net::remove(&self.instance.name, ct, config.as_ref().and_then(tally::ct::bridge_of))?;
        }
        programs::unpin_all(&self.instance.pins())?;
        remove_dir_all(&self.instance.root)?;
        stopped
    }
}

fn remove_dir_all(p: &Path) -> Result<()> {
    match std::fs::remove_dir_all(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// How long to wait for what the kernel or tallyd finishes on its own (a deferred free, an
/// exit): under software emulation (the VM tier on these machines) everything is some 40x
/// slower, and a loaded CI machine slower still.
fn patience_secs() -> u64 {
    if crate::harness::emulated() {
        60
    } else {
        10
    }
}

/// SIGTERM to tallyd `child`, then waits up to `patience` for it to exit (and kills it after).
pub fn terminate(child: &mut Child, patience: Duration) -> Result<()> {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + patience;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            child.kill()?;
            child.wait()?;
            bail!("tallyd ignored SIGTERM for {patience:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
