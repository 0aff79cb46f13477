//! The vzctl lifecycle on a `Host`: create, mount/umount, start, stop, destroy, status.
//!
//! A container *exists* when it has a config file; it is *mounted* when its overlay root is
//! mounted; it is *running* when its cgroup holds a process that is PID 1 of a PID namespace
//! of its own (the init). All three are read from the system each time, never remembered,
//! so a restarted tallyd sees what is really there.

use std::{
    net::Ipv4Addr,
    os::fd::{AsFd, OwnedFd},
    time::{Duration, Instant},
};

use nix::{
    poll::{poll, PollFd, PollFlags, PollTimeout},
    sys::signal::Signal,
};

use super::journal::{self, Op};
use super::{
    api::{CreateRequest, Status},
    host::HostError,
    launch::{self, pidfd_open, LaunchSpec},
    net, template, CtConfig, CtId, Host,
};
use crate::ubc::Resource;

/// How long `stop` waits for the init to power off before it kills the container.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// OpenVZ keys that name host paths or tools: tally decides those itself.
/// NETIF names the old host's bridges and interfaces.
const DROPPED_ON_IMPORT: &[&str] = &["VE_ROOT", "VE_PRIVATE", "VE_LAYOUT", "ORIGIN_SAMPLE", "NETIF"];

/// Sample configs shipped with tally (vzctl's ve-NAME.conf-sample).
const SAMPLES: &[(&str, &str)] = &[
    ("basic", include_str!("../../samples/ve-basic.conf-sample")),
    ("unlimited", include_str!("../../samples/ve-unlimited.conf-sample")),
];

fn check_hostname(h: &str) -> Result<(), HostError> {
    let ok = !h.is_empty()
        && h.len() <= 64
        && h.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(HostError::BadHostname(h.to_string()))
    }
}

/// The host uid and gid of a container's root (USERNS_BASE), `None` for a privileged one.
pub fn userns_base(config: &CtConfig) -> Result<Option<u32>, HostError> {
    match config.values.get("USERNS_BASE") {
        None => Ok(None),
        Some(v) => match v.parse::<u32>() {
            Ok(b) if super::userns::valid_base(b) => Ok(Some(b)),
            _ => Err(HostError::Config(super::ConfigError::Syntax {
                file: "USERNS_BASE".into(),
                line: 0,
                message: format!(
                    "'{v}' is not a range base tally gives ({} + n * {})",
                    super::userns::FIRST_BASE,
                    super::userns::RANGE_SIZE
                ),
            })),
        },
    }
}

/// The bridge of a bridged container (NETIF's bridge=), `None` for venet-style routing.
pub fn bridge_of(config: &CtConfig) -> Option<&str> {
    config.values.get("NETIF").and_then(|v| net::netif_bridge(v))
}

fn parse_addresses(config: &CtConfig) -> Vec<Ipv4Addr> {
    config
        .values
        .get("IP_ADDRESS")
        .map(|v| v.split_whitespace().filter_map(|a| a.parse().ok()).collect())
        .unwrap_or_default()
}

impl Host {
    /// Creates a stopped container: config, private area, cgroups and beancounters. Every
    /// value is checked first; on any failure nothing is left behind.
    pub fn create(&self, ct: &CtId, req: &CreateRequest) -> Result<super::ContainerView, HostError> {
        let _lock = self.locks.take(ct, "create")?;
        if self.exists(ct) || self.rootfs(ct).exists() {
            return Err(HostError::Exists(ct.clone()));
        }
        let mut config = match (&req.config, &req.import) {
            (None, None) => CtConfig::default(),
            (Some(name), None) => self.sample(name)?,
            (None, Some(text)) => {
                let mut c = CtConfig::parse(&format!("{ct}.conf"), text)?;
                c.values.retain(|k, _| !DROPPED_ON_IMPORT.contains(&k.as_str()));
                c
            }
            (Some(_), Some(_)) => {
                return Err(HostError::NoSample(
                    "--config with an import".into(),
                    self.sample_names(),
                ))
            }
        };
        let ostemplate = req
            .ostemplate
            .clone()
            .or_else(|| config.values.get("OSTEMPLATE").cloned())
            .unwrap_or_else(|| template::DEFAULT.to_string());
        self.templates().get(&ostemplate)?;
        let hostname = req
            .hostname
            .clone()
            .or_else(|| config.values.get("HOSTNAME").cloned())
            .unwrap_or_else(|| format!("ct{ct}"));
        check_hostname(&hostname)?;
        let imported: Vec<String> = config
            .values
            .get("IP_ADDRESS")
            .map(|v| {
                v.split_whitespace()
                    .map(|a| a.split('/').next().unwrap_or(a).to_string())
                    .collect()
            })
            .unwrap_or_default();
        let wanted = if req.ipadd.is_empty() { &imported } else { &req.ipadd };
        // Until the config is saved: another create must see what this one chose.
        let allocation = super::host::lock(&self.allocation);
        let addrs = self.check_addresses(ct, wanted)?;
        if let Some(bridge) = &req.bridge {
            net::check_bridge(bridge).map_err(HostError::BadBridge)?;
            // On a bridge of tally's, addresses come from tally's range (the bridge's subnet).
            if let Some(a) = addrs.iter().find(|a| net::owns_bridge(bridge) && !net::in_range(**a)) {
                return Err(HostError::BadAddress(format!(
                    "{a} (bridge {bridge} carries {}/{}: use an address in it)",
                    net::RANGE.0,
                    net::RANGE.1
                )));
            }
            config.values.insert("NETIF".into(), net::netif_value(bridge));
        }
        // OpenVZ configs have neither key: tally decides.
        config.values.remove("USERNS_BASE");
        config.values.remove("PRIVILEGED");
        let privileged_why = if req.privileged {
            Some("asked for".to_string())
        } else {
            super::userns::supported(&self.templates().get(&ostemplate)?.rootfs).err()
        };
        match privileged_why {
            None => {
                let base = super::userns::allocate(&self.userns_bases_in_use()?)
                    .ok_or_else(|| HostError::Userns("every id range of this instance is taken".into()))?;
                config.values.insert("USERNS_BASE".into(), base.to_string());
            }
            Some(why) => {
                if !req.privileged {
                    log::warn!("container {ct} is privileged (no user namespace): {why}");
                }
                config.values.insert("PRIVILEGED".into(), "yes".into());
            }
        }
        config.values.remove("IP_ADDRESS");
        config.values.insert("OSTEMPLATE".into(), ostemplate);
        config.values.insert("HOSTNAME".into(), hostname);
        if !addrs.is_empty() {
            let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
            config.values.insert("IP_ADDRESS".into(), list.join(" "));
        }
        let rootfs = self.rootfs(ct);
        let _intent = journal::begin(&self.instance.root, ct, Op::Create)?;
        let result = (|| {
            rootfs.create()?;
            config.save(&self.instance.config_path(ct))?;
            drop(allocation);
            self.apply(ct, &config)
        })();
        if let Err(e) = result {
            let _ = self.remove_everything(ct);
            return Err(e);
        }
        self.view(ct)
    }

    /// USERNS_BASE of every container of this instance.
    fn userns_bases_in_use(&self) -> Result<Vec<u32>, HostError> {
        Ok(self
            .configured()?
            .iter()
            .filter_map(|other| CtConfig::load(&self.instance.config_path(other)).ok())
            .filter_map(|c| userns_base(&c).ok().flatten())
            .collect())
    }

    fn sample(&self, name: &str) -> Result<CtConfig, HostError> {
        CtId::parse(name).map_err(|_| HostError::NoSample(name.to_string(), self.sample_names()))?;
        let file = self.instance.config_dir().join(format!("ve-{name}.conf-sample"));
        if file.is_file() {
            return Ok(CtConfig::load(&file)?);
        }
        let (_, text) = SAMPLES
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| HostError::NoSample(name.to_string(), self.sample_names()))?;
        Ok(CtConfig::parse(&format!("ve-{name}.conf-sample"), text)?)
    }

    fn sample_names(&self) -> String {
        SAMPLES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
    }

    /// Parses addresses and refuses ones another container of this instance has.
    fn check_addresses(&self, ct: &CtId, raw: &[String]) -> Result<Vec<Ipv4Addr>, HostError> {
        let mut addrs = Vec::new();
        for a in raw {
            let addr: Ipv4Addr = a.parse().map_err(|_| HostError::BadAddress(a.clone()))?;
            if addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast() || addr == net::GATEWAY {
                return Err(HostError::BadAddress(a.clone()));
            }
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        for other in self.configured()? {
            if &other == ct {
                continue;
            }
            let Ok(config) = CtConfig::load(&self.instance.config_path(&other)) else {
                continue;
            };
            if let Some(addr) = parse_addresses(&config).into_iter().find(|a| addrs.contains(a)) {
                return Err(HostError::AddressInUse { addr, by: other });
            }
        }
        Ok(addrs)
    }

    pub fn mount(&self, ct: &CtId) -> Result<Status, HostError> {
        let _lock = self.locks.take(ct, "mount")?;
        let config = self.config(ct)?;
        self.mount_with(ct, &config, None)?;
        self.status(ct)
    }

    /// Mounts the root; `userns`: the container's user namespace when one is made already.
    fn mount_with(&self, ct: &CtId, config: &CtConfig, userns: Option<&OwnedFd>) -> Result<(), HostError> {
        let name = config
            .values
            .get("OSTEMPLATE")
            .cloned()
            .unwrap_or_else(|| template::DEFAULT.into());
        let tpl = self.templates().get(&name)?;
        let rootfs = self.rootfs(ct);
        if !rootfs.is_mounted() {
            // Files the dedup cache promoted since the last mount become links now, while
            // nothing has the upper directory under an overlay.
            let root = &self.instance.root;
            let _cache = super::host::lock(&self.cache_lock);
            let store = super::cache::Store::new(root, super::cache::Settings::load(root)?.cap);
            let upper = rootfs.private.join("upper");
            super::cache::layer::apply(root, &store, ct.as_str(), &upper, &rootfs.cache_layer())?;
        }
        rootfs.mount(&tpl.rootfs, userns_base(config)?, userns)?;
        Ok(())
    }

    pub fn umount(&self, ct: &CtId) -> Result<Status, HostError> {
        let _lock = self.locks.take(ct, "umount")?;
        self.config(ct)?;
        if self.init_pid(ct).is_some() {
            return Err(HostError::Running(ct.clone()));
        }
        self.rootfs(ct).umount()?;
        self.status(ct)
    }

    /// Starts the container: mounts its root, applies its saved config, makes its network
    /// and launches its init. On failure the container is left as it was (stopped).
    pub fn start(&self, ct: &CtId) -> Result<super::ContainerView, HostError> {
        let _lock = self.locks.take(ct, "start")?;
        self.start_locked(ct)
    }

    /// Stops the container if it runs, then starts it, as one operation.
    pub fn restart(&self, ct: &CtId) -> Result<super::ContainerView, HostError> {
        let _lock = self.locks.take(ct, "restart")?;
        if self.status(ct)?.running {
            self.stop_locked(ct, false)?;
        }
        self.start_locked(ct)
    }

    fn start_locked(&self, ct: &CtId) -> Result<super::ContainerView, HostError> {
        let config = self.config(ct)?;
        if self.init_pid(ct).is_some() {
            return Err(HostError::Running(ct.clone()));
        }
        let _intent = journal::begin(&self.instance.root, ct, Op::Start)?;
        let was_mounted = self.rootfs(ct).is_mounted();
        let result = self.launch(ct, &config);
        if let Err(e) = result {
            let _ = self.cgroup(ct).map(|c| c.kill_and_wait(Duration::from_secs(5)));
            let _ = net::remove(&self.instance.name, ct, bridge_of(&config));
            if !was_mounted {
                let _ = self.rootfs(ct).umount();
            }
            return Err(e);
        }
        self.view(ct)
    }

    fn launch(&self, ct: &CtId, config: &CtConfig) -> Result<(), HostError> {
        let base = userns_base(config)?;
        if base.is_some() {
            if let Some((dir, mode)) = self.instance.untraversable_dir() {
                return Err(HostError::Untraversable { dir, mode });
            }
        }
        // One user namespace serves the idmapped layers and the container itself.
        let (userns, netns) = match base {
            Some(base) => {
                let (user, net) = super::userns::make_with_net(base).map_err(|e| {
                    HostError::Launch(launch::LaunchError::Sys {
                        what: "making the user namespace".into(),
                        source: e,
                    })
                })?;
                (Some(user), Some(net))
            }
            None => (None, None),
        };
        self.mount_with(ct, config, userns.as_ref())?;
        self.apply(ct, config)?;
        let cgroup = self.cgroup(ct)?;
        // Stale processes (say, from `exec --cgroup-only`) do not belong to this boot.
        let numproc = config.limits().unwrap_or_default().get(&Resource::NumProc).copied();
        if let Some((barrier, _)) = numproc {
            let held = cgroup.pids()?.len() as u64;
            if held >= barrier {
                return Err(HostError::Shortage {
                    ct: ct.clone(),
                    resource: Resource::NumProc,
                    held,
                });
            }
        }
        let netns = net::create(
            &self.instance.name,
            ct,
            &parse_addresses(config),
            bridge_of(config),
            netns,
        )?;
        let rootfs = self.rootfs(ct);
        let spec = LaunchSpec {
            root: rootfs.root.clone(),
            hostname: config
                .values
                .get("HOSTNAME")
                .cloned()
                .unwrap_or_else(|| format!("ct{ct}")),
            init: vec!["/sbin/init".into()],
            console: rootfs.console_log(),
            userns_base: base,
        };
        let pid = launch::spawn(
            &spec,
            &netns,
            userns.as_ref(),
            &cgroup.v1_tasks_files(),
            &cgroup.unified,
        )?;
        self.reaper.watch(pid);
        Ok(())
    }

    /// Stops the container: its init is asked to power off with the template's signal
    /// (unless `fast`), and whatever is left after STOP_TIMEOUT is killed. Then the root is
    /// unmounted, as vzctl does.
    pub fn stop(&self, ct: &CtId, fast: bool) -> Result<Status, HostError> {
        let _lock = self.locks.take(ct, "stop")?;
        self.stop_locked(ct, fast)
    }

    fn stop_locked(&self, ct: &CtId, fast: bool) -> Result<Status, HostError> {
        let config = self.config(ct)?;
        let Some(pid) = self.init_pid(ct) else {
            return Err(HostError::NotRunning(ct.clone()));
        };
        let _intent = journal::begin(&self.instance.root, ct, Op::Stop)?;
        let cgroup = self.cgroup(ct)?;
        if !fast {
            let name = config
                .values
                .get("OSTEMPLATE")
                .cloned()
                .unwrap_or_else(|| template::DEFAULT.into());
            let signal = self
                .templates()
                .get(&name)
                .ok()
                .and_then(|t| parse_signal(&t.halt_signal))
                .unwrap_or(libc::SIGPWR);
            if let Ok(pidfd) = pidfd_open(pid) {
                // SAFETY: pidfd_send_signal on a pidfd we own; no siginfo.
                unsafe {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        std::os::fd::AsRawFd::as_raw_fd(&pidfd),
                        signal,
                        std::ptr::null::<libc::siginfo_t>(),
                        0,
                    )
                };
                wait_exit(&pidfd, STOP_TIMEOUT);
            }
        }
        // Killing the init takes its whole PID namespace along; the cgroup kill catches
        // anything else charged there.
        if !cgroup.kill_and_wait(Duration::from_secs(10))? {
            return Err(HostError::StopFailed {
                ct: ct.clone(),
                message: "processes are left after SIGKILL".into(),
            });
        }
        let _ = net::remove(&self.instance.name, ct, bridge_of(&config));
        self.rootfs(ct).umount()?;
        self.status(ct)
    }

    /// Stops (fast) if running, then removes everything: private area, cgroups, beancounters,
    /// network, config.
    pub fn destroy(&self, ct: &CtId) -> Result<(), HostError> {
        let _lock = self.locks.take(ct, "destroy")?;
        if !self.exists(ct) {
            return Err(HostError::NoSuchContainer(ct.clone()));
        }
        if self.init_pid(ct).is_some() {
            self.stop_locked(ct, true)?;
        }
        // After the stop: its own intent would replace this one.
        let _intent = journal::begin(&self.instance.root, ct, Op::Destroy)?;
        self.remove_everything(ct)
    }

    pub(super) fn remove_everything(&self, ct: &CtId) -> Result<(), HostError> {
        let cgroup = self.cgroup(ct)?;
        if cgroup.exists() {
            let cgid = cgroup.id()?;
            cgroup.destroy()?;
            self.unregister(cgid)?;
        }
        let config = self.config(ct).ok();
        let _ = net::remove(&self.instance.name, ct, config.as_ref().and_then(bridge_of));
        super::cache::layer::forget(&self.instance.root, ct.as_str());
        self.rootfs(ct).destroy()?;
        let path = self.instance.config_path(ct);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(HostError::Io { path, source: e }),
            _ => Ok(()),
        }
    }
}

/// "SIGUSR2", "USR2", "SIGRTMIN+4" -> the number.
pub fn parse_signal(name: &str) -> Option<i32> {
    let n = name.trim().trim_start_matches("SIG");
    if let Some(off) = n.strip_prefix("RTMIN+") {
        return Some(libc::SIGRTMIN() + off.parse::<i32>().ok()?);
    }
    format!("SIG{n}").parse::<Signal>().ok().map(|s| s as i32)
}

/// Waits until the process behind `pidfd` exits (the pidfd polls readable), or `timeout`.
fn wait_exit(pidfd: &OwnedFd, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::ZERO);
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(n) if n > 0 => return true,
            Ok(_) if left.is_zero() => return false,
            Ok(_) | Err(nix::Error::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_is_vzctls() {
        let ct = CtId::parse("101").unwrap();
        let s = Status {
            exists: true,
            mounted: true,
            running: true,
            init_pid: Some(7),
        };
        assert_eq!(s.line(&ct), "CTID 101 exist mounted running");
        assert_eq!(Status::default().line(&ct), "CTID 101 deleted unmounted down");
    }

    #[test]
    fn signals_by_name() {
        assert_eq!(parse_signal("SIGUSR2"), Some(libc::SIGUSR2));
        assert_eq!(parse_signal("PWR"), Some(libc::SIGPWR));
        assert_eq!(parse_signal("SIGRTMIN+4"), Some(libc::SIGRTMIN() + 4));
        assert_eq!(parse_signal("NOPE"), None);
    }

    #[test]
    fn hostnames() {
        for ok in ["ct101", "web.example.com", "a-b"] {
            assert!(check_hostname(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a..b", "a b", "x/y", &"x".repeat(65)] {
            assert!(check_hostname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn samples_parse() {
        for (name, text) in SAMPLES {
            CtConfig::parse(name, text).unwrap();
        }
    }
}
