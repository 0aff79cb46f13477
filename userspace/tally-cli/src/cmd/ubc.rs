//! `tally ubc [CTID...] [--json]`: the beancounters in /proc/user_beancounters' exact text.

use tally::{
    api::{Client, ContainerView},
    ubc::{render_proc, ContainerRows},
};

use crate::Failure;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Containers to show (all when none is given).
    ctids: Vec<String>,
    /// Print JSON instead of the /proc text.
    #[arg(long)]
    json: bool,
}

pub async fn run(client: &Client, args: Args) -> Result<i32, Failure> {
    let views: Vec<ContainerView> = if args.ctids.is_empty() {
        client.get("/v1/containers").await?
    } else {
        let mut v = Vec::new();
        for ct in &args.ctids {
            let ct = crate::ctid(ct)?;
            v.push(client.get(&format!("/v1/containers/{ct}")).await?);
        }
        v
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&views).expect("serializable"));
        return Ok(0);
    }
    let cts: Vec<ContainerRows> = views
        .iter()
        .map(|v| ContainerRows {
            id: v.ctid.as_str(),
            rows: &v.beancounters,
        })
        .collect();
    print!("{}", render_proc(&cts));
    Ok(0)
}
