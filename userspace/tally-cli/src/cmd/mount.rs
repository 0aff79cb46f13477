//! `tally mount CTID` and `tally umount CTID`: the container's root (VE_ROOT) on the host.

use tally::api::{Client, Status};

use crate::Failure;

#[derive(clap::Args, Debug)]
pub struct Args {
    ctid: String,
}

pub async fn run(client: &Client, args: Args, mount: bool) -> Result<i32, Failure> {
    let ct = crate::ctid(&args.ctid)?;
    let route = if mount { "mount" } else { "umount" };
    let _: Status = client
        .post(&format!("/v1/containers/{ct}/{route}"), &serde_json::json!({}))
        .await?;
    println!("Container {ct} {}", if mount { "mounted" } else { "unmounted" });
    Ok(0)
}
