//! `tally validate CTID` or `tally validate --file CTID.conf`: vzcfgvalidate's checks of a
//! container's barriers and limits. Exit 2 when there is an error, 0 otherwise.

use std::path::PathBuf;

use tally::{
    api::{Client, ContainerView, ExitCode},
    ct::CtConfig,
    ubc::{validate, Beancounter, Severity},
};

use crate::{block_on, Failure};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The container whose current limits to check.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    ctid: Option<String>,
    /// Check a config file (vzctl's CTID.conf syntax) instead; tallyd is not needed.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
}

pub fn run(client: &Client, args: Args) -> Result<i32, Failure> {
    let rows: Vec<Beancounter> = match (&args.file, &args.ctid) {
        (Some(path), _) => {
            let config = CtConfig::load(path).map_err(|e| Failure::new(ExitCode::BadValue, e))?;
            let limits = config.limits().map_err(|e| Failure::new(ExitCode::BadValue, e))?;
            let mut rows = vec![Beancounter::unlimited(); tally::ubc::Resource::ALL.len()];
            for (r, (barrier, limit)) in limits {
                rows[r.index()] = Beancounter {
                    barrier,
                    limit,
                    ..Default::default()
                };
            }
            rows
        }
        (None, Some(ct)) => {
            let ct = crate::ctid(ct)?;
            let view: ContainerView = block_on(client.get(&format!("/v1/containers/{ct}")))?;
            view.beancounters
        }
        (None, None) => unreachable!("clap requires one"),
    };
    let findings = validate(&rows);
    for f in &findings {
        println!("{f}");
    }
    if findings.is_empty() {
        println!("Validation completed: success");
    }
    Ok(if findings.iter().any(|f| f.severity == Severity::Error) {
        2
    } else {
        0
    })
}
