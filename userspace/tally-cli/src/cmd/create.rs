//! `tally create CTID [--ostemplate busybox] [--hostname H] [--ipadd A]... [--bridge [BR]] [--config SAMPLE]`

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
    /// Bridged instead of routed: eth0's host end joins BRIDGE (default tallybr0, which tally
    /// makes with 10.77.0.1/16 on it), and the addresses sit on the bridge's subnet.
    #[arg(long, value_name = "BRIDGE", num_args = 0..=1, default_missing_value = tally::ct::net::DEFAULT_BRIDGE)]
    bridge: Option<String>,
    /// No user namespace: the container's root is the host's root (bounded by the capability
    /// set and the syscall filter). By default its root is an unprivileged host id range.
    #[arg(long)]
    privileged: bool,
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
        bridge: args.bridge,
        privileged: args.privileged,
        config: args.config,
        import: None,
    };
    let view: ContainerView = client.post(&format!("/v1/containers/{ct}"), &request).await?;
    println!("Container {ct} created from template {}", view.ostemplate);
    Ok(0)
}
