//! `tally stop CTID [--fast]`

use tally::api::{Client, Status, Stop};

use crate::Failure;

#[derive(clap::Args, Debug)]
pub struct Args {
    ctid: String,
    /// Kill everything at once instead of asking the init to power off.
    #[arg(long)]
    fast: bool,
}

pub async fn run(client: &Client, args: Args) -> Result<i32, Failure> {
    let ct = crate::ctid(&args.ctid)?;
    let _: Status = client
        .post(&format!("/v1/containers/{ct}/stop"), &Stop { fast: args.fast })
        .await?;
    println!("Container {ct} stopped");
    Ok(0)
}
