//! `tally start CTID [--wait]` and `tally restart CTID`

use tally::api::{Client, ContainerView};

use crate::Failure;

#[derive(clap::Args, Debug)]
pub struct Args {
    ctid: String,
    /// Return once the init is running (it always does; accepted for vzctl's scripts).
    #[arg(long)]
    wait: bool,
}

pub async fn run(client: &Client, args: Args, restart: bool) -> Result<i32, Failure> {
    let ct = crate::ctid(&args.ctid)?;
    let _ = args.wait;
    let route = if restart { "restart" } else { "start" };
    let view: ContainerView = client
        .post(&format!("/v1/containers/{ct}/{route}"), &serde_json::json!({}))
        .await?;
    println!(
        "Container {ct} {} (init pid {})",
        if restart { "restarted" } else { "started" },
        view.status.init_pid.map_or("?".to_string(), |p| p.to_string())
    );
    Ok(0)
}
