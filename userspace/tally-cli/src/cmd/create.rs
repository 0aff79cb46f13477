//! `tally create CTID [--ostemplate busybox] [--hostname H] [--ipadd A]... [--config SAMPLE]`

use tally::api::{Client, ContainerView, CreateRequest};

use crate::Failure;

#[derive(clap::Args, Debug)]
pub struct Args {
    ctid: String,
    /// OS template (`tally template list`); default: busybox.
    #[arg(long)]
    ostemplate: Option<String>,
    /// Hostname inside the container; default: ctCTID.
    #[arg(long)]
    hostname: Option<String>,
    /// A routed IPv4 address (venet style); may be given more than once.
    #[arg(long, value_name = "ADDR")]
    ipadd: Vec<String>,
    /// Sample config to start from: basic, unlimited, or ROOT/conf/ve-NAME.conf-sample.
    #[arg(long, value_name = "SAMPLE")]
    config: Option<String>,
}

pub async fn run(client: &Client, args: Args) -> Result<i32, Failure> {
    let ct = crate::ctid(&args.ctid)?;
    let request = CreateRequest {
        ostemplate: args.ostemplate,
        hostname: args.hostname,
        ipadd: args.ipadd,
        config: args.config,
        import: None,
    };
    let view: ContainerView = client.post(&format!("/v1/containers/{ct}"), &request).await?;
    println!("Container {ct} created from template {}", view.ostemplate);
    Ok(0)
}
