//! `tally destroy CTID`

use tally::api::Client;

use crate::Failure;

#[derive(clap::Args, Debug)]
pub struct Args {
    ctid: String,
}

pub async fn run(client: &Client, args: Args) -> Result<i32, Failure> {
    let ct = crate::ctid(&args.ctid)?;
    let _: serde_json::Value = client.delete(&format!("/v1/containers/{ct}")).await?;
    Ok(0)
}
