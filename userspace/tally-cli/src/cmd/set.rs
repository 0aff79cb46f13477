//! `tally set CTID --numproc 20:20 ...`

use tally::api::{Client, ContainerView, ExitCode, SetLimits};

use crate::{rows::RowLimits, Failure};

#[derive(clap::Args, Debug)]
pub struct Args {
    ctid: String,
    #[command(flatten)]
    limits: RowLimits,
}

pub async fn run(client: &Client, args: Args) -> Result<i32, Failure> {
    if args.limits.0.is_empty() {
        return Err(Failure::new(
            ExitCode::BadArgument,
            "nothing to set: give at least one --<row> B[:L]",
        ));
    }
    let body = SetLimits {
        limits: args.limits.0.into_iter().collect(),
    };
    let ct = crate::ctid(&args.ctid)?;
    let _: ContainerView = client.put(&format!("/v1/containers/{ct}/limits"), &body).await?;
    Ok(0)
}
