//! `tally events [CTID...] [--follow] [--json]`: limit-hit events, as tallyd logged them.

use std::time::{Duration, UNIX_EPOCH};

use tally::api::{Client, EventView};

use crate::Failure;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only these containers.
    ctids: Vec<String>,
    /// Keep printing new events as they come, until interrupted.
    #[arg(short, long)]
    follow: bool,
    /// One JSON object per event.
    #[arg(long)]
    json: bool,
}

pub async fn run(client: &Client, args: Args) -> Result<i32, Failure> {
    let wanted: Vec<tally::ct::CtId> = args.ctids.iter().map(|c| crate::ctid(c)).collect::<Result<_, _>>()?;
    let mut after = 0;
    loop {
        let events: Vec<EventView> = client.get(&format!("/v1/events?after={after}")).await?;
        for e in &events {
            after = after.max(e.id);
            if !wanted.is_empty() && !e.ctid.as_ref().is_some_and(|c| wanted.contains(c)) {
                continue;
            }
            if args.json {
                println!("{}", serde_json::to_string(e).expect("serializable"));
            } else {
                let when = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(e.time_ms));
                let who = e
                    .ctid
                    .as_ref()
                    .map_or_else(|| format!("cgroup {}", e.cgroup_id), |c| format!("CT {c}"));
                println!(
                    "{when} resource shortage: {}, {who} (held {}, barrier {}, failcnt {})",
                    e.resource, e.held, e.barrier, e.failcnt
                );
            }
        }
        if !args.follow {
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
