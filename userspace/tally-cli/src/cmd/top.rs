//! `tally top [-d SECS] [-n N] [-b] [--rows K]`: a live view of the containers whose
//! beancounters are nearest to their barriers, top-like: one line per container, busiest
//! first, with its K rows nearest to their barriers (held / barrier) and how much failcnt rose
//! since the previous screen. `-b` writes plain screens one after another (for scripts and
//! logs), `-n` stops after N screens.

use std::{collections::BTreeMap, io::IsTerminal, time::Duration};

use tally::{
    api::{Client, ContainerView},
    ubc::{Beancounter, Resource, UNLIMITED},
};

use crate::Failure;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds between screens.
    #[arg(short, long, default_value_t = 2.0)]
    delay: f64,
    /// Stop after this many screens.
    #[arg(short = 'n', long)]
    iterations: Option<u64>,
    /// Batch mode: no screen clearing, no colour.
    #[arg(short, long)]
    batch: bool,
    /// Rows shown per container.
    #[arg(long, default_value_t = 3)]
    rows: usize,
    /// Stopped containers too.
    #[arg(short, long)]
    all: bool,
}

/// A row's use of its barrier, 0.0 to 1.0 and beyond; none when it has no barrier.
fn usage(b: &Beancounter) -> Option<f64> {
    (b.barrier != UNLIMITED && b.barrier > 0).then(|| b.held as f64 / b.barrier as f64)
}

/// One container's line: its rows nearest to their barriers (or with new failures) first.
struct Line {
    ctid: String,
    status: &'static str,
    nproc: usize,
    nearest: f64,
    rows: Vec<(Resource, Beancounter, Option<f64>, u64)>,
    failcnt_rise: u64,
}

fn line(v: &ContainerView, previous: &BTreeMap<(String, Resource), u64>, k: usize) -> Line {
    let ctid = v.ctid.to_string();
    let mut rows: Vec<(Resource, Beancounter, Option<f64>, u64)> = Resource::ALL
        .iter()
        .zip(&v.beancounters)
        .map(|(r, b)| {
            let before = previous.get(&(ctid.clone(), *r)).copied().unwrap_or(b.failcnt);
            (*r, *b, usage(b), b.failcnt.saturating_sub(before))
        })
        .filter(|(_, b, u, rise)| u.is_some() || b.failcnt > 0 || *rise > 0)
        .collect();
    rows.sort_by(|a, b| {
        (b.3 > 0)
            .cmp(&(a.3 > 0))
            .then(b.2.unwrap_or(0.0).total_cmp(&a.2.unwrap_or(0.0)))
    });
    let failcnt_rise = rows.iter().map(|r| r.3).sum();
    let nearest = rows.iter().filter_map(|r| r.2).fold(0.0, f64::max);
    rows.truncate(k);
    Line {
        status: if v.status.running { "running" } else { "stopped" },
        nproc: v.pids.len(),
        nearest,
        rows,
        failcnt_rise,
        ctid,
    }
}

fn render(lines: &[Line], colour: bool) -> String {
    let mut out = format!(
        "{:<12} {:<8} {:>5} {:>6}  ROWS NEAREST TO THEIR BARRIERS (held/barrier use%, failcnt +rise)\n",
        "CTID", "STATUS", "NPROC", "NEAR%"
    );
    for l in lines {
        let rows: Vec<String> = l
            .rows
            .iter()
            .map(|(r, b, u, rise)| {
                let pct = u.map_or_else(|| "-".to_string(), |u| format!("{:.0}%", u * 100.0));
                let text = format!(
                    "{} {}/{} {pct} fc {}{}",
                    r.name(),
                    b.held,
                    show(b.barrier),
                    b.failcnt,
                    if *rise > 0 { format!(" +{rise}") } else { String::new() }
                );
                if colour && (*rise > 0 || u.is_some_and(|u| u >= 0.9)) {
                    format!("\x1b[1;31m{text}\x1b[0m")
                } else {
                    text
                }
            })
            .collect();
        out.push_str(&format!(
            "{:<12} {:<8} {:>5} {:>5.0}%  {}\n",
            l.ctid,
            l.status,
            l.nproc,
            l.nearest * 100.0,
            rows.join(", ")
        ));
    }
    out
}

fn show(v: u64) -> String {
    if v == UNLIMITED {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

pub async fn run(client: &Client, args: Args) -> Result<i32, Failure> {
    if !(args.delay.is_finite() && args.delay > 0.0) {
        return Err(Failure::new(
            crate::ExitCode::BadArgument,
            format!("bad delay {}", args.delay),
        ));
    }
    let colour = !args.batch && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut previous: BTreeMap<(String, Resource), u64> = BTreeMap::new();
    let mut screens = 0;
    loop {
        let views: Vec<ContainerView> = client.get("/v1/containers").await?;
        let mut lines: Vec<Line> = views
            .iter()
            .filter(|v| args.all || v.status.running)
            .map(|v| line(v, &previous, args.rows))
            .collect();
        lines.sort_by(|a, b| {
            (b.failcnt_rise > 0)
                .cmp(&(a.failcnt_rise > 0))
                .then(b.nearest.total_cmp(&a.nearest))
                .then(a.ctid.cmp(&b.ctid))
        });
        let running = views.iter().filter(|v| v.status.running).count();
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        if colour {
            print!("\x1b[H\x1b[2J");
        }
        println!(
            "tally top - {now}: {} containers, {running} running; failcnt rose in {}",
            views.len(),
            lines.iter().filter(|l| l.failcnt_rise > 0).count()
        );
        print!("{}", render(&lines, colour));
        if args.batch {
            println!();
        }
        previous = views
            .iter()
            .flat_map(|v| {
                Resource::ALL
                    .iter()
                    .zip(&v.beancounters)
                    .map(move |(r, b)| ((v.ctid.to_string(), *r), b.failcnt))
            })
            .collect();
        screens += 1;
        if args.iterations.is_some_and(|n| screens >= n) {
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_secs_f64(args.delay)).await;
    }
}
