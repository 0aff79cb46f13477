//! `tally cache status|stats|promote|gc|drop`: the dedup file cache (pfcache).

use tally::{
    api::Client,
    api::{CacheStatus, GcReport},
};

use crate::Failure;

#[derive(clap::Subcommand, Debug)]
pub enum Args {
    /// Settings, counters, and the files linked or pending per container.
    Status {
        #[arg(short, long)]
        json: bool,
    },
    /// The counters alone: objects, bytes, promotions, evictions, page cache saved.
    Stats {
        #[arg(short, long)]
        json: bool,
    },
    /// Promote now what several containers read of their own copies (tallyd also does this
    /// on its own); the links take effect at each container's next start.
    Promote,
    /// Check every object (a corrupt one is dropped) and evict down to the cap.
    Gc,
    /// Remove every object (containers keep the links they have).
    Drop,
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

pub async fn run(client: &Client, args: Args) -> Result<i32, Failure> {
    match args {
        Args::Status { json } | Args::Stats { json } if json => {
            let s: CacheStatus = client.get("/v1/cache").await?;
            let value = if matches!(args, Args::Stats { .. }) {
                serde_json::to_value(&s.stats)
            } else {
                serde_json::to_value(&s)
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&value.expect("serializable")).expect("serializable")
            );
        }
        Args::Status { .. } | Args::Stats { .. } => {
            let s: CacheStatus = client.get("/v1/cache").await?;
            let st = &s.stats;
            println!("objects             {}", st.objects);
            println!("bytes               {} of {} (cap)", mib(st.bytes), mib(st.cap));
            println!("promotions          {}", st.promotions);
            println!("evictions           {}", st.evictions);
            println!("corrupt dropped     {}", st.corrupt_dropped);
            println!("page cache saved    {}", mib(st.page_cache_saved_bytes));
            if matches!(args, Args::Status { .. }) {
                let includes: Vec<String> = s.includes.iter().map(|p| p.display().to_string()).collect();
                println!("includes            {}", includes.join(" "));
                println!("file sizes          {} to {}", s.min_size, s.max_size);
                println!("read in at least    {} containers", s.min_containers);
                for (ct, n) in &s.linked {
                    println!("CT {ct}: {n} files linked");
                }
                for (ct, n) in &s.pending {
                    println!("CT {ct}: {n} files linked at its next start");
                }
            }
        }
        Args::Promote => {
            let v: serde_json::Value = client.post("/v1/cache/promote", &serde_json::json!({})).await?;
            println!(
                "{} container copies promoted (linked at each container's next start)",
                v["promoted"]
            );
        }
        Args::Gc => {
            let r: GcReport = client.post("/v1/cache/gc", &serde_json::json!({})).await?;
            println!(
                "{} objects checked, {} corrupt dropped, {} evicted",
                r.checked, r.corrupt_dropped, r.evicted
            );
        }
        Args::Drop => {
            let v: serde_json::Value = client.post("/v1/cache/drop", &serde_json::json!({})).await?;
            println!("{} objects dropped", v["dropped"]);
        }
    }
    Ok(0)
}
