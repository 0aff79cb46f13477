//! `tally reads CTID [--top N] [--json]`: the files a container read most, by bytes, from
//! tally's per-container read statistics (what each tier counts: README, `tally check`).

use std::time::Duration;

use tally::{
    api::{Client, FileReadView, DEFAULT_TOP_READS},
    kernel::reads::monotonic_now_ns,
};

use crate::Failure;

#[derive(clap::Args, Debug)]
pub struct Args {
    ctid: String,
    /// How many files.
    #[arg(long, default_value_t = DEFAULT_TOP_READS)]
    top: usize,
    /// The list as JSON (FileRead's fields and the path, when known).
    #[arg(long)]
    json: bool,
}

pub async fn run(client: &Client, args: Args) -> Result<i32, Failure> {
    let ct = crate::ctid(&args.ctid)?;
    let files: Vec<FileReadView> = client
        .get(&format!("/v1/containers/{ct}/reads?top={}", args.top))
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&files).expect("serializable"));
        return Ok(0);
    }
    let now = monotonic_now_ns();
    println!("{:>14} {:>8} {:>10}  {:<10} FILE", "BYTES", "READS", "LAST", "DEV");
    for f in &files {
        let r = &f.read;
        let ago = Duration::from_secs(now.saturating_sub(r.last_read_ns) / 1_000_000_000);
        let dev = format!("{}:{}", libc::major(r.dev), libc::minor(r.dev));
        let file = match &f.path {
            Some(p) => p.display().to_string(),
            None => format!("inode {}", r.ino),
        };
        println!(
            "{:>14} {:>8} {:>10}  {:<10} {file}",
            r.bytes,
            r.reads,
            format!("{} ago", humantime::format_duration(ago)),
            dev
        );
    }
    Ok(0)
}
