//! `tally status CTID`: vzctl's line, `CTID 101 exist mounted running`.

use tally::api::{Client, Status};

use crate::Failure;

#[derive(clap::Args, Debug)]
pub struct Args {
    ctid: String,
}

pub async fn run(client: &Client, args: Args) -> Result<i32, Failure> {
    let ct = crate::ctid(&args.ctid)?;
    let status: Status = client.get(&format!("/v1/containers/{ct}/status")).await?;
    println!("{}", status.line(&ct));
    Ok(0)
}
