//! The Prometheus exporter: `GET /metrics` on a TCP address (default 127.0.0.1:9477), in the
//! text format. Everything is read when scraped (pinned maps, cgroup files), nothing polled:
//! beancounter rows, per-container CPU, memory and traffic under tally's names and cAdvisor's,
//! per-container top files by bytes read, and tallyd's own health (map fill, failures inside
//! programs, the scrape's duration).

use std::{sync::Arc, time::Instant};

use anyhow::{Context, Result};
use axum::{http::header, response::IntoResponse, routing::get, Router};
use prometheus::{core::Collector, Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use tally::{
    cgroup::ContainerCgroup,
    ct::{ContainerView, CtId, Host},
    kernel::{
        maps::{map_fill, BeancounterMaps, TrafficMap},
        pins::PinLayout,
        reads::{self, FileRead},
        Tier,
    },
    ubc::Resource,
};
use tally_common::{errors, program, Traffic};

/// `--metrics`'s default; `off` turns the exporter off.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9477";

/// Binds the exporter's address (before tallyd says it is ready, so a scrape right after
/// the ready line finds it). `None` for `off`.
pub fn bind(addr: &str) -> Result<Option<std::net::TcpListener>> {
    if addr == "off" {
        return Ok(None);
    }
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("binding the exporter to {addr} (--metrics HOST:PORT or off)"))?;
    listener.set_nonblocking(true)?;
    Ok(Some(listener))
}

/// What a scrape reads from.
pub struct Exporter {
    pub host: Arc<Host>,
    pub pins: PinLayout,
    pub tier: Tier,
}

pub async fn serve(listener: std::net::TcpListener, exporter: Arc<Exporter>) -> Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let exporter = exporter.clone();
            async move {
                match tokio::task::spawn_blocking(move || exporter.scrape()).await {
                    Ok(Ok(text)) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
                    Ok(Err(e)) => {
                        log::error!("scrape: {e:#}");
                        (axum::http::StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n")).into_response()
                    }
                    Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
                }
            }
        }),
    );
    axum::serve(listener, app).await?;
    Ok(())
}

/// One metric family of a scrape, its samples written straight in the text format: with
/// hundreds of containers a scrape has some 100 000 samples, and building them as registry
/// objects (hashing label sets, cloning them into protobuf structures, sorting) costs far more
/// than reading them.
struct Family {
    name: String,
    help: String,
    kind: &'static str,
    /// Label names, in the (alphabetical) order they are written.
    labels: &'static [&'static str],
    body: std::cell::RefCell<String>,
}

impl Family {
    fn new(name: &str, help: &str, kind: &'static str, labels: &'static [&'static str]) -> Family {
        Family {
            name: name.to_string(),
            help: help.to_string(),
            kind,
            labels,
            body: Default::default(),
        }
    }

    /// One sample: `values` for the family's labels, in order.
    fn sample(&self, values: &[&str], value: impl std::fmt::Display) {
        use std::fmt::Write;
        let mut body = self.body.borrow_mut();
        body.push_str(&self.name);
        if !self.labels.is_empty() {
            body.push('{');
            for (i, (name, v)) in self.labels.iter().zip(values).enumerate() {
                if i > 0 {
                    body.push(',');
                }
                body.push_str(name);
                body.push_str("=\"");
                for c in v.chars() {
                    match c {
                        '\\' => body.push_str("\\\\"),
                        '"' => body.push_str("\\\""),
                        '\n' => body.push_str("\\n"),
                        c => body.push(c),
                    }
                }
                body.push('"');
            }
            body.push('}');
        }
        let _ = writeln!(body, " {value}");
    }

    /// HELP, TYPE and the samples; nothing for a family without samples.
    fn write_to(&self, out: &mut String) {
        let body = self.body.borrow();
        if body.is_empty() {
            return;
        }
        let help = self.help.replace('\\', "\\\\").replace('\n', "\\n");
        out.push_str(&format!(
            "# HELP {} {help}\n# TYPE {} {}\n",
            self.name, self.name, self.kind
        ));
        out.push_str(&body);
    }
}

/// The families of one scrape (made afresh each time: a container that went is not
/// reported again).
struct Families {
    registry: Registry,
    ubc_held: Family,
    ubc_maxheld: Family,
    ubc_barrier: Family,
    ubc_limit: Family,
    ubc_failcnt: Family,
    running: Family,
    processes: Family,
    /// (tally's name labelled ctid, cAdvisor's labelled id + name), same value.
    cpu: [Family; 2],
    cpu_user: Family,
    cpu_system: Family,
    memory_usage: [Family; 2],
    memory_working_set: [Family; 2],
    memory_rss: Family,
    memory_cache: Family,
    memory_swap: Family,
    /// rx bytes, tx bytes, rx packets, tx packets; each as [tally, cAdvisor].
    network: [[Family; 2]; 4],
    file_read_bytes: Family,
}

/// How many of each container's most read files a scrape exports.
const TOP_FILES: usize = 5;

const CT: &[&str] = &["ctid"];
/// cAdvisor's labels, in the order they are written: id, then name.
const CADVISOR: &[&str] = &["id", "name"];

impl Families {
    fn new() -> Result<Families> {
        let gauge = |name: &str, help: &str, labels: &'static [&'static str]| Family::new(name, help, "gauge", labels);
        let counter =
            |name: &str, help: &str, labels: &'static [&'static str]| Family::new(name, help, "counter", labels);
        let row: &'static [&'static str] = &["ctid", "resource"];
        let unit = "in the row's unit (/proc/user_beancounters: pages, bytes or objects)";
        let network = |what: &str, dir: &str, help: &str| -> [Family; 2] {
            let help = format!("{help} by the container's sockets (cgroup_skb: IP packets)");
            [
                counter(&format!("tally_container_network_{dir}_{what}_total"), &help, CT),
                counter(&format!("container_network_{dir}_{what}_total"), &help, CADVISOR),
            ]
        };
        Ok(Families {
            registry: Registry::new(),
            ubc_held: gauge("tally_ubc_held", &format!("Beancounter held, {unit}"), row),
            ubc_maxheld: gauge("tally_ubc_maxheld", &format!("Beancounter maxheld, {unit}"), row),
            ubc_barrier: gauge("tally_ubc_barrier", &format!("Beancounter barrier, {unit}"), row),
            ubc_limit: gauge("tally_ubc_limit", &format!("Beancounter limit, {unit}"), row),
            ubc_failcnt: counter("tally_ubc_failcnt_total", "Beancounter failcnt: refused charges", row),
            running: gauge("tally_container_running", "1 when the container's init runs", CT),
            processes: gauge("tally_container_processes", "Processes in the container's cgroup", CT),
            cpu: [
                counter(
                    "tally_container_cpu_seconds_total",
                    "CPU time of the container (cgroup cpu.stat)",
                    CT,
                ),
                counter(
                    "container_cpu_usage_seconds_total",
                    "CPU time of the container (cgroup cpu.stat)",
                    CADVISOR,
                ),
            ],
            cpu_user: counter(
                "container_cpu_user_seconds_total",
                "User CPU time of the container",
                CADVISOR,
            ),
            cpu_system: counter(
                "container_cpu_system_seconds_total",
                "System CPU time of the container",
                CADVISOR,
            ),
            memory_usage: [
                gauge(
                    "tally_container_memory_usage_bytes",
                    "Memory charged to the container",
                    CT,
                ),
                gauge(
                    "container_memory_usage_bytes",
                    "Memory charged to the container",
                    CADVISOR,
                ),
            ],
            memory_working_set: [
                gauge(
                    "tally_container_memory_working_set_bytes",
                    "Memory usage less inactive file pages",
                    CT,
                ),
                gauge(
                    "container_memory_working_set_bytes",
                    "Memory usage less inactive file pages",
                    CADVISOR,
                ),
            ],
            memory_rss: gauge("container_memory_rss", "Anonymous memory of the container", CADVISOR),
            memory_cache: gauge(
                "container_memory_cache",
                "Page cache charged to the container",
                CADVISOR,
            ),
            memory_swap: gauge("container_memory_swap", "Swap used by the container", CADVISOR),
            network: [
                network("bytes", "receive", "Bytes received"),
                network("bytes", "transmit", "Bytes sent"),
                network("packets", "receive", "Packets received"),
                network("packets", "transmit", "Packets sent"),
            ],
            file_read_bytes: counter(
                "tally_file_read_bytes_total",
                &format!(
                    "Bytes the container read of the file (dev major:minor, inode), its {TOP_FILES} most read \
                     files; a file behind an overlay is counted as its real file and as the overlay's inode"
                ),
                &["ctid", "dev", "ino"],
            ),
        })
    }

    /// Every family in the text format, then the registry's (tallyd's own metrics).
    fn encode(&self) -> Result<String> {
        let mut out = String::with_capacity(1 << 20);
        let mut all: Vec<&Family> = vec![
            &self.ubc_held,
            &self.ubc_maxheld,
            &self.ubc_barrier,
            &self.ubc_limit,
            &self.ubc_failcnt,
            &self.running,
            &self.processes,
            &self.cpu_user,
            &self.cpu_system,
            &self.memory_rss,
            &self.memory_cache,
            &self.memory_swap,
            &self.file_read_bytes,
        ];
        all.extend(self.cpu.iter());
        all.extend(self.memory_usage.iter());
        all.extend(self.memory_working_set.iter());
        all.extend(self.network.iter().flatten());
        all.sort_by(|a, b| a.name.cmp(&b.name));
        for f in all {
            f.write_to(&mut out);
        }
        let mut own = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut own)?;
        out.push_str(&String::from_utf8(own)?);
        Ok(out)
    }

    /// The container's most read files (`top`: already its own, most read first).
    fn file_reads(&self, ct: &str, top: &[FileRead]) {
        for r in top {
            let dev = format!("{}:{}", libc::major(r.dev), libc::minor(r.dev));
            self.file_read_bytes.sample(&[ct, &dev, &r.ino.to_string()], r.bytes);
        }
    }

    fn container(
        &self,
        view: &ContainerView,
        cgroup: &ContainerCgroup,
        memory: Option<&tally::cgroup::MemoryUsage>,
        traffic: &Traffic,
        id: &str,
    ) {
        let ct = view.ctid.as_str();
        for r in Resource::ALL.iter().filter(|r| !r.is_dummy()) {
            let Some(row) = view.beancounters.get(r.index()) else {
                continue;
            };
            let labels = [ct, r.name()];
            self.ubc_held.sample(&labels, int(row.held));
            self.ubc_maxheld.sample(&labels, int(row.maxheld));
            self.ubc_barrier.sample(&labels, int(row.barrier));
            self.ubc_limit.sample(&labels, int(row.limit));
            self.ubc_failcnt.sample(&labels, row.failcnt);
        }
        self.running.sample(&[ct], i64::from(view.status.running));
        self.processes.sample(&[ct], view.pids.len());
        let both = [&[ct][..], &[id, ct][..]];

        let cpu = cpu_stat(cgroup);
        for (family, labels) in self.cpu.iter().zip(both) {
            family.sample(labels, cpu.usage);
        }
        self.cpu_user.sample(&[id, ct], cpu.user);
        self.cpu_system.sample(&[id, ct], cpu.system);

        if let Some(memory) = memory {
            // v2 keys, then v1's hierarchical ones.
            let stat = |keys: [&str; 2]| keys.iter().find_map(|k| memory.stat.get(*k).copied()).unwrap_or(0);
            let working_set = memory
                .current
                .saturating_sub(stat(["inactive_file", "total_inactive_file"]));
            for (i, labels) in both.iter().enumerate() {
                self.memory_usage[i].sample(labels, int(memory.current));
                self.memory_working_set[i].sample(labels, int(working_set));
            }
            self.memory_rss.sample(&[id, ct], int(stat(["anon", "total_rss"])));
            self.memory_cache.sample(&[id, ct], int(stat(["file", "total_cache"])));
            self.memory_swap
                .sample(&[id, ct], int(memory.swap_current.unwrap_or(0)));
        }

        let values = [
            traffic.rx_bytes,
            traffic.tx_bytes,
            traffic.rx_packets,
            traffic.tx_packets,
        ];
        for (pair, value) in self.network.iter().zip(values) {
            for (family, labels) in pair.iter().zip(both) {
                family.sample(labels, value);
            }
        }
    }
}

/// Gauges are i64: UNLIMITED (i64::MAX) fits, larger values are clamped.
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[derive(Default)]
struct CpuSeconds {
    usage: f64,
    user: f64,
    system: f64,
}

/// cpu.stat of the container's cgroup2 directory (cgroup2 keeps it for every cgroup, with
/// or without the cpu controller; a hybrid host's v1 cpu hierarchy does not matter).
fn cpu_stat(cgroup: &ContainerCgroup) -> CpuSeconds {
    let text = std::fs::read_to_string(cgroup.unified.join("cpu.stat")).unwrap_or_default();
    let usec = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse::<u64>().ok())
            .unwrap_or(0) as f64
            / 1e6
    };
    CpuSeconds {
        usage: usec("usage_usec"),
        user: usec("user_usec"),
        system: usec("system_usec"),
    }
}

impl Exporter {
    /// One scrape, as text. It takes no container's lock: it reads what the system holds, as
    /// API reads do, whatever operation is under way.
    fn scrape(&self) -> Result<String> {
        let started = Instant::now();
        let families = Families::new()?;
        let beancounters = BeancounterMaps::open(&self.pins)?;
        let mut traffic = TrafficMap::open(&self.pins)?;
        // Rows of destroyed containers go (nothing else removes them).
        traffic.forget_unregistered(&beancounters)?;
        let file_reads = reads::file_reads(&self.pins)?;

        let host = &self.host;
        let (instance, ids) = (host.instance.name.clone(), host.configured()?);
        let root = host.instance.root.clone();
        let mut unreadable = 0;
        for ct in &ids {
            let read = || -> Result<(ContainerView, Option<tally::cgroup::MemoryUsage>, ContainerCgroup)> {
                let (view, memory) = host.view_and_memory(ct)?;
                Ok((view, memory, host.cgroup(ct)?))
            };
            match read() {
                Ok((view, memory, cgroup)) => {
                    let rows = traffic.traffic(view.cgroup_id)?;
                    families.container(&view, &cgroup, memory.as_ref(), &rows, &cadvisor_id(&instance, ct));
                    families.file_reads(
                        view.ctid.as_str(),
                        &reads::top_files(&file_reads, view.cgroup_id, TOP_FILES),
                    );
                }
                // Destroyed between the listing and now, or its cgroup gone: not reported.
                Err(e) => {
                    log::debug!("scrape: CT {ct}: {e:#}");
                    unreadable += 1;
                }
            }
        }
        self.health(&families.registry, &beancounters, ids.len(), unreadable)?;
        cache_metrics(&families.registry, &root)?;

        let scrape = prometheus::Gauge::with_opts(Opts::new(
            "tally_scrape_duration_seconds",
            "How long this scrape took to read everything (before encoding)",
        ))?;
        scrape.set(started.elapsed().as_secs_f64());
        families.registry.register(Box::new(scrape))?;
        families.encode()
    }

    /// tallyd's own metrics.
    fn health(&self, registry: &Registry, maps: &BeancounterMaps, containers: usize, unreadable: usize) -> Result<()> {
        let register = |c: Box<dyn Collector>| registry.register(c);
        let info = IntGaugeVec::new(
            Opts::new("tally_info", "tallyd's version and enforcement tier"),
            &["version", "tier"],
        )?;
        info.with_label_values(&[env!("CARGO_PKG_VERSION"), &self.tier.to_string()])
            .set(1);
        register(Box::new(info))?;
        let gauge = |name: &str, help: &str, value: i64| -> Result<()> {
            let g = prometheus::IntGauge::new(name, help)?;
            g.set(value);
            Ok(register(Box::new(g))?)
        };
        gauge("tally_containers", "Containers (with a config)", containers as i64)?;
        gauge(
            "tally_scrape_unreadable_containers",
            "Containers this scrape could not read (destroyed meanwhile)",
            unreadable as i64,
        )?;

        let entries = IntGaugeVec::new(
            Opts::new(
                "tally_bpf_map_entries",
                "Entries in tally's BPF maps of containers and charge records",
            ),
            &["map"],
        )?;
        let capacity = IntGaugeVec::new(
            Opts::new(
                "tally_bpf_map_capacity",
                "Capacity of tally's BPF maps of containers and charge records",
            ),
            &["map"],
        )?;
        for fill in map_fill(&self.pins)? {
            entries.with_label_values(&[fill.name]).set(fill.entries as i64);
            capacity.with_label_values(&[fill.name]).set(i64::from(fill.capacity));
        }
        register(Box::new(entries))?;
        register(Box::new(capacity))?;
        let (entries, capacity) = reads::fill(&self.pins)?;
        gauge(
            "tally_file_reads_map_entries",
            "Files in the read statistics map (per container and file; the least recently read leave when full)",
            entries as i64,
        )?;
        gauge(
            "tally_file_reads_map_capacity",
            "Capacity of the read statistics map",
            i64::from(capacity),
        )?;

        let failures = maps.program_failures()?;
        let by_program = IntCounterVec::new(
            Opts::new(
                "tally_bpf_errors_total",
                "Failures inside tally's programs, by program and kind (charge_map_full: a charge undone \
                 because its record could not be kept; uncharge_orphan: an uncharge found no container row; \
                 events_lost: the event ring was full; counters_missing: a container without its counters row)",
            ),
            &["program", "kind"],
        )?;
        for (p, kinds) in failures.iter().enumerate() {
            for (k, n) in kinds.iter().enumerate() {
                by_program
                    .with_label_values(&[program::NAMES[p], errors::KIND_NAMES[k]])
                    .inc_by(*n);
            }
        }
        register(Box::new(by_program))?;
        // What the kernel measures of each program, while its BPF statistics are on
        // (kernel.bpf_stats_enabled; they cost time on every run, so tally never turns them on).
        let stats_on = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|s| s.trim() == "1");
        if stats_on {
            let runs = IntCounterVec::new(
                Opts::new(
                    "tally_bpf_program_runs_total",
                    "Runs of each of tally's programs (kernel BPF statistics)",
                ),
                &["program"],
            )?;
            let time = prometheus::CounterVec::new(
                Opts::new(
                    "tally_bpf_program_run_seconds_total",
                    "Time spent in each of tally's programs (kernel BPF statistics)",
                ),
                &["program"],
            )?;
            for s in tally::kernel::programs::program_stats(&self.pins)? {
                runs.with_label_values(&[s.name.as_str()]).inc_by(s.run_count);
                time.with_label_values(&[s.name.as_str()])
                    .inc_by(s.run_time_ns as f64 / 1e9);
            }
            register(Box::new(runs))?;
            register(Box::new(time))?;
        }
        // The same, summed over programs, under the names dashboards and alerts have used.
        let total = |kind: u32| failures.iter().map(|kinds| kinds[kind as usize]).sum::<u64>();
        for (kind, name, help) in [
            (
                errors::EVENTS_LOST,
                "tally_bpf_events_lost_total",
                "Limit-hit events dropped: the ring buffer was full",
            ),
            (
                errors::CHARGE_MAP_FULL,
                "tally_bpf_charge_map_full_total",
                "Charges undone because the charge record's bucket and the charges map were full",
            ),
            (
                errors::UNCHARGE_ORPHAN,
                "tally_bpf_uncharge_orphans_total",
                "Uncharges that found no container row",
            ),
        ] {
            let c = prometheus::IntCounter::new(name, help)?;
            c.inc_by(total(kind));
            register(Box::new(c))?;
        }
        Ok(())
    }
}

/// The dedup file cache's store (tally::ct::cache): read when scraped, like the rest.
fn cache_metrics(registry: &Registry, root: &std::path::Path) -> Result<()> {
    let settings = tally::ct::cache::Settings::load(root)?;
    let stats = tally::ct::cache::Store::new(root, settings.cap).stats()?;
    for (name, help, value, counter) in [
        (
            "tally_cache_objects",
            "Files in the dedup cache's store",
            stats.objects,
            false,
        ),
        (
            "tally_cache_bytes",
            "Bytes in the dedup cache's store",
            stats.bytes,
            false,
        ),
        (
            "tally_cache_cap_bytes",
            "The store's cap (PFCACHE_SIZE)",
            stats.cap,
            false,
        ),
        (
            "tally_cache_page_cache_saved_bytes",
            "Page cache the shared copies save: each object's size times its links into containers less one",
            stats.page_cache_saved_bytes,
            false,
        ),
        (
            "tally_cache_promotions_total",
            "Container copies promoted to shared links",
            stats.promotions,
            true,
        ),
        (
            "tally_cache_evictions_total",
            "Objects evicted to keep the store under its cap",
            stats.evictions,
            true,
        ),
        (
            "tally_cache_corrupt_dropped_total",
            "Objects that no longer matched their names, dropped (never served)",
            stats.corrupt_dropped,
            true,
        ),
    ] {
        if counter {
            let c = prometheus::IntCounter::new(name, help)?;
            c.inc_by(value);
            registry.register(Box::new(c))?;
        } else {
            let g = prometheus::IntGauge::new(name, help)?;
            g.set(int(value));
            registry.register(Box::new(g))?;
        }
    }
    Ok(())
}

/// cAdvisor's `id`: the container's cgroup path from the cgroup2 root.
fn cadvisor_id(instance: &str, ct: &CtId) -> String {
    format!("/{instance}/{ct}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally::ubc::Beancounter;

    /// A cgroup2 directory of its own (a temporary one) holding `cpu_stat` as its cpu.stat.
    fn cgroup_with_cpu_stat(name: &str, cpu_stat: &str) -> ContainerCgroup {
        let dir = std::env::temp_dir().join(format!("tally-unit-metrics-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cpu.stat"), cpu_stat).unwrap();
        ContainerCgroup {
            unified: dir,
            controllers: Default::default(),
        }
    }

    #[test]
    fn cpu_seconds_come_from_cpu_stat_in_microseconds() {
        let cgroup = cgroup_with_cpu_stat("cpu", "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n");
        let cpu = cpu_stat(&cgroup);
        assert_eq!((cpu.usage, cpu.user, cpu.system), (2.5, 2.0, 0.5));
        std::fs::remove_dir_all(cgroup.unified).unwrap();
    }

    #[test]
    fn a_container_is_exported_under_tallys_and_cadvisors_names() {
        let cgroup = cgroup_with_cpu_stat("names", "usage_usec 1000000\n");
        let mut beancounters = vec![Beancounter::unlimited(); tally_common::RESOURCE_COUNT];
        beancounters[Resource::NumProc.index()] = Beancounter {
            held: 20,
            maxheld: 20,
            barrier: 20,
            limit: 20,
            failcnt: 11,
        };
        let view = ContainerView {
            ctid: CtId::parse("101").unwrap(),
            status: Default::default(),
            ostemplate: String::new(),
            hostname: String::new(),
            ip_address: vec![],
            cgroup_id: 7,
            pids: vec![1, 2],
            beancounters,
        };
        let traffic = Traffic {
            rx_bytes: 1500,
            rx_packets: 1,
            tx_bytes: 3000,
            tx_packets: 2,
        };
        let families = Families::new().unwrap();
        families.container(&view, &cgroup, None, &traffic, &cadvisor_id("tally", &view.ctid));
        let text = families.encode().unwrap();
        for line in [
            r#"tally_ubc_held{ctid="101",resource="numproc"} 20"#,
            r#"tally_ubc_failcnt_total{ctid="101",resource="numproc"} 11"#,
            // UNLIMITED (Prometheus keeps it as the float 2^63).
            r#"tally_ubc_barrier{ctid="101",resource="numfile"} 9223372036854775807"#,
            r#"tally_container_cpu_seconds_total{ctid="101"} 1"#,
            r#"container_cpu_usage_seconds_total{id="/tally/101",name="101"} 1"#,
            r#"tally_container_network_receive_bytes_total{ctid="101"} 1500"#,
            r#"container_network_transmit_packets_total{id="/tally/101",name="101"} 2"#,
            r#"tally_container_processes{ctid="101"} 2"#,
            "# TYPE tally_ubc_failcnt_total counter",
            "# TYPE tally_ubc_held gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line} in:\n{text}");
        }
        // OpenVZ's dummy rows are not exported.
        assert!(!text.contains("resource=\"dummy\""));
        std::fs::remove_dir_all(cgroup.unified).unwrap();
    }

    #[test]
    fn a_containers_top_files_are_exported_by_device_and_inode() {
        let families = Families::new().unwrap();
        let read = FileRead {
            cgroup_id: 7,
            dev: libc::makedev(254, 1),
            ino: 42,
            reads: 3,
            bytes: 1 << 20,
            last_read_ns: 1,
        };
        families.file_reads("101", &[read]);
        let text = families.encode().unwrap();
        let line = r#"tally_file_read_bytes_total{ctid="101",dev="254:1",ino="42"} 1048576"#;
        assert!(text.lines().any(|l| l == line), "no line {line} in:\n{text}");
    }
}
