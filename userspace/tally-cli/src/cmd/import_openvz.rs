//! `tally import-openvz FILE.conf [--ctid CTID] [--ostemplate T]`: creates a (stopped)
//! container from an OpenVZ container config as it is: its beancounters, CPU settings,
//! hostname and addresses. The CTID defaults to the file's name (101.conf -> 101).

use std::path::PathBuf;

use tally::api::{Client, ContainerView, CreateRequest, ExitCode};

use crate::Failure;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The OpenVZ config (e.g. /etc/vz/conf/101.conf).
    file: PathBuf,
    /// The container id (default: the file name without .conf).
    #[arg(long)]
    ctid: Option<String>,
    /// The template to use instead of the file's OSTEMPLATE (which tally may not have).
    #[arg(long)]
    ostemplate: Option<String>,
}

pub async fn run(client: &Client, args: Args) -> Result<i32, Failure> {
    let raw = match &args.ctid {
        Some(c) => c.clone(),
        None => args
            .file
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".conf"))
            .ok_or_else(|| {
                Failure::new(
                    ExitCode::BadArgument,
                    "cannot tell the CTID from the file name: give --ctid",
                )
            })?
            .to_string(),
    };
    let ct = crate::ctid(&raw)?;
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| Failure::new(ExitCode::BadArgument, format!("{}: {e}", args.file.display())))?;
    let request = CreateRequest {
        ostemplate: args.ostemplate,
        import: Some(text),
        ..Default::default()
    };
    let view: ContainerView = client.post(&format!("/v1/containers/{ct}"), &request).await?;
    println!(
        "Container {ct} imported from {} (template {})",
        args.file.display(),
        view.ostemplate
    );
    Ok(0)
}
