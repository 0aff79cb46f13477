//! `tally ubc [CTID...]`: the beancounters, as /proc/user_beancounters' exact text (default),
//! as JSON (`--json`), or as a human view in the spirit of vzubc (`--human`, with `-q` for rows
//! near their limits, `-r` for the failcnt rise since the last `-r` look, `-w` to watch).

use std::{collections::BTreeMap, io::IsTerminal, path::PathBuf, time::Duration};

use tally::{
    api::{Client, ContainerView, ExitCode},
    ubc::{page_size, render_human, render_proc, ContainerRows, HumanOptions, Resource, UbcJson},
};

use crate::Failure;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Containers to show (all when none is given).
    ctids: Vec<String>,
    /// JSON: per container, its named rows.
    #[arg(long, conflicts_with = "human")]
    json: bool,
    /// The human view: units, % of barrier and limit, colour on a terminal.
    #[arg(long)]
    human: bool,
    /// With --human: only rows near their barrier or limit, or whose failcnt rose.
    #[arg(short, long, requires = "human")]
    quiet: bool,
    /// With --human: show how much failcnt rose since the last -r run.
    #[arg(short, long, requires = "human")]
    relative: bool,
    /// With --human: redraw every SECS seconds until interrupted.
    #[arg(short, long, value_name = "SECS", requires = "human")]
    watch: Option<u64>,
}

pub async fn run(client: &Client, args: Args) -> Result<i32, Failure> {
    loop {
        let views = fetch(client, &args.ctids).await?;
        let rows: Vec<(String, Vec<tally::ubc::Beancounter>)> = views
            .iter()
            .map(|v| (v.ctid.to_string(), v.beancounters.clone()))
            .collect();
        if args.json {
            let json: Vec<UbcJson> = rows.iter().map(|(id, r)| UbcJson::new(id, r)).collect();
            println!("{}", serde_json::to_string_pretty(&json).expect("serializable"));
        } else if args.human {
            let stdout = std::io::stdout();
            let colour = stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none();
            let previous = if args.relative { Some(load_failcnts()) } else { None };
            let opts = HumanOptions {
                quiet: args.quiet,
                colour,
                previous,
                page_size: page_size(),
            };
            if args.watch.is_some() && colour {
                print!("\x1b[H\x1b[2J");
            }
            print!("{}", render_human(&rows, &opts));
            if args.relative {
                save_failcnts(&rows)?;
            }
        } else {
            let cts: Vec<ContainerRows> = rows.iter().map(|(id, r)| ContainerRows { id, rows: r }).collect();
            print!("{}", render_proc(&cts));
        }
        match args.watch {
            Some(secs) => tokio::time::sleep(Duration::from_secs(secs.max(1))).await,
            None => return Ok(0),
        }
    }
}

async fn fetch(client: &Client, ctids: &[String]) -> Result<Vec<ContainerView>, Failure> {
    if ctids.is_empty() {
        return Ok(client.get("/v1/containers").await?);
    }
    let mut v = Vec::new();
    for ct in ctids {
        let ct = crate::ctid(ct)?;
        v.push(client.get(&format!("/v1/containers/{ct}")).await?);
    }
    Ok(v)
}

/// Where `-r` keeps the failcnts it saw: $XDG_CACHE_HOME/tally or ~/.cache/tally.
fn store() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("tally").join("ubc-failcnt.json")
}

fn load_failcnts() -> BTreeMap<(String, String), u64> {
    let saved: BTreeMap<String, BTreeMap<String, u64>> = std::fs::read(store())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    saved
        .into_iter()
        .flat_map(|(ct, rows)| rows.into_iter().map(move |(r, f)| ((ct.clone(), r), f)))
        .collect()
}

fn save_failcnts(rows: &[(String, Vec<tally::ubc::Beancounter>)]) -> Result<(), Failure> {
    let mut saved: BTreeMap<String, BTreeMap<String, u64>> = std::fs::read(store())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    for (ct, r) in rows {
        let entry = saved.entry(ct.clone()).or_default();
        for (res, b) in Resource::ALL.iter().zip(r).filter(|(res, _)| !res.is_dummy()) {
            entry.insert(res.name().to_string(), b.failcnt);
        }
    }
    let path = store();
    let fail = |e: std::io::Error| Failure::new(ExitCode::SystemError, format!("{}: {e}", path.display()));
    std::fs::create_dir_all(path.parent().expect("has a parent")).map_err(fail)?;
    // Atomic, like every file tally writes.
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&saved).expect("serializable")).map_err(fail)?;
    std::fs::rename(&tmp, &path).map_err(fail)?;
    Ok(())
}
