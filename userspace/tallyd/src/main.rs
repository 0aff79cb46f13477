//! tallyd, the host supervisor: probes the kernel for its tier, attaches (or adopts) tally's
//! pinned BPF programs, re-applies every saved container, and serves the API on a Unix
//! socket. Runs in the foreground (for systemd). Enforcement does not depend on it running:
//! programs and maps are pinned, and stay when tallyd exits.

mod api;
mod events;
mod metrics;

use std::{path::PathBuf, sync::Arc};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use tally::{
    cgroup::Layout,
    ct::{Host, Instance},
    kernel::{probe, programs, Tier},
};

#[derive(Parser, Debug)]
#[command(version, about = "tally's host supervisor")]
struct Args {
    /// State directory (container configs).
    #[arg(long, default_value = Instance::DEFAULT_ROOT)]
    root: PathBuf,
    /// Instance name: pins under /sys/fs/bpf/NAME, cgroups under NAME/ (must start with "tally").
    #[arg(long, default_value = Instance::DEFAULT_NAME)]
    instance: String,
    /// API socket.
    #[arg(long, default_value = tally::api::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Enforcement tier; `auto` takes what the probe finds. `fallback` can be forced on a
    /// host that could do `full` (tests do, to run the fallback tier on pure cgroup2).
    #[arg(long, value_enum, default_value_t = TierChoice::Auto)]
    tier: TierChoice,
    /// Detach tally's programs and remove this instance's pins (forgetting all counters), then exit.
    #[arg(long)]
    unload: bool,
    /// Prometheus exporter address (GET /metrics), or `off`. When the default address is
    /// taken (another tallyd), tallyd runs without the exporter; an address given here must bind.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    /// Write the man page and shell completions to DIR and exit (for packaging).
    #[arg(long, value_name = "DIR", hide = true)]
    generate_manual: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum TierChoice {
    Auto,
    Full,
    Fallback,
}

fn main() -> Result<()> {
    // A container's launcher is this binary too (tally::ct::launch): it must not parse
    // tallyd's arguments or start anything.
    let mut argv = std::env::args();
    if argv.nth(1).as_deref() == Some(tally::ct::launch::LAUNCHER_ARG) {
        tally::ct::launch::launcher_main(&argv.next().unwrap_or_default());
    }
    // Host operations run on whichever thread of the blocking pool: glibc's arena per thread
    // (up to 8 per core) would only keep freed memory apart, some 130 kB each. Two arenas.
    // SAFETY: mallopt changes malloc's tuning; no other thread exists yet.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    if let Some(dir) = &args.generate_manual {
        tally::manual::write(<Args as clap::CommandFactory>::command(), dir)
            .with_context(|| format!("writing the manual to {}", dir.display()))?;
        return Ok(());
    }
    let instance = Instance::new(&args.instance, &args.root)?;
    let layout = Layout::detect()?;
    if args.unload {
        programs::unpin_all(&instance.pins())?;
        instance.remove_cgroup_parents(&layout);
        log::info!("removed {}", instance.pins().root.display());
        return Ok(());
    }

    let report = probe::probe();
    let tier = match (args.tier, report.tier) {
        (_, None) => bail!("tally cannot run on this kernel: {}", report.reason),
        (TierChoice::Auto, Some(t)) => t,
        (TierChoice::Fallback, Some(_)) => Tier::Fallback,
        (TierChoice::Full, Some(Tier::Full)) => Tier::Full,
        (TierChoice::Full, Some(Tier::Fallback)) => {
            bail!("--tier full asked, but {}", report.reason)
        }
    };
    log::info!("tier {tier}: {}", report.reason);
    programs::ensure_bpffs().context("mounting bpffs")?;
    let reads = programs::ReadHook::for_instance(&instance.root);
    let attach = programs::ensure_attached(&instance.pins(), tier, reads, &instance.cgroup_parent(&layout)?)?;
    log::info!("programs {attach:?} at {}", instance.pins().root.display());

    // Container inits are reparented to tallyd when their launcher exits, so tallyd reaps them.
    nix::sys::prctl::set_child_subreaper(true).context("PR_SET_CHILD_SUBREAPER")?;
    let host = Host::open(instance, tier)?;
    // Said once here, and again by each start it refuses.
    if let Some((dir, mode)) = host.instance.untraversable_dir() {
        log::warn!("{}", tally::ct::HostError::Untraversable { dir, mode });
    }
    let adopted = host.adopt_all()?;
    log::info!("{} container(s) re-applied", adopted.len());
    // Parsing the kernel's BTF (probe, load, attach) grew the heap by some 45 MB, all freed by
    // now but kept by malloc: hand it back, or tallyd sits on it for its whole life.
    // SAFETY: malloc_trim only releases free memory of malloc's arenas.
    unsafe { libc::malloc_trim(0) };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let pins = host.instance.pins();
    let host = Arc::new(host);
    let event_log = Arc::new(std::sync::Mutex::new(events::EventLog::default()));
    let exporter = match metrics::bind(args.metrics.as_deref().unwrap_or(metrics::DEFAULT_ADDR)) {
        Err(e) if args.metrics.is_none() => {
            log::warn!("no exporter: {e:#}");
            None
        }
        bound => bound?,
    };
    if let Some(listener) = exporter {
        let exporter = metrics::Exporter {
            host: host.clone(),
            pins: pins.clone(),
            tier,
        };
        runtime.spawn(metrics::serve(listener, Arc::new(exporter)));
    }
    runtime.spawn(events::collect(pins, host.clone(), event_log.clone()));
    runtime.spawn(api::cache_rounds(host.clone()));
    let watchdog = runtime.spawn(watchdog());
    let served = runtime.block_on(api::serve(host, event_log, args.socket, move || {
        // The programs are attached, the containers adopted and the socket bound: ready, for
        // systemd (Type=notify) and for tests and scripts (this line).
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        println!(
            "tallyd: ready tier={tier} programs={} containers={}",
            format!("{attach:?}").to_lowercase(),
            adopted.len()
        );
    }));
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    watchdog.abort();
    served
}

/// Pings systemd's watchdog (WatchdogSec= in the unit) at half its interval from the runtime
/// that serves the API, so that a wedged runtime stops the pings and systemd restarts tallyd.
async fn watchdog() {
    let Some(interval) = sd_notify::watchdog_enabled().filter(|d| !d.is_zero()) else {
        return;
    };
    let mut every = tokio::time::interval(interval / 2);
    loop {
        every.tick().await;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
    }
}
