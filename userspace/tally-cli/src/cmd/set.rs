//! `tally set CTID --numproc 20:20 --ram 512M --swap 1G ...`

use tally::api::{Client, ContainerView, ExitCode, SetLimits};

use crate::{rows::RowLimits, Failure};

#[derive(clap::Args, Debug)]
pub struct Args {
    ctid: String,
    #[command(flatten)]
    limits: RowLimits,
    /// VSwap: the RAM (physpages 0:SIZE), e.g. 512M.
    #[arg(long, value_name = "SIZE")]
    ram: Option<String>,
    /// VSwap: the swap (swappages 0:SIZE), e.g. 1G.
    #[arg(long, value_name = "SIZE")]
    swap: Option<String>,
    /// CPU weight relative to other containers (OpenVZ CPUUNITS, 8..500000; default 1000).
    #[arg(long, value_name = "UNITS")]
    cpuunits: Option<String>,
    /// CPU cap in percent of one CPU (200 = two CPUs' worth); 0 lifts it.
    #[arg(long, value_name = "PERCENT")]
    cpulimit: Option<String>,
    /// CPU cap in whole CPUs; 0 lifts it.
    #[arg(long, value_name = "N")]
    cpus: Option<String>,
    /// Also save the values in the container's config (they apply again at every start).
    #[arg(long)]
    save: bool,
}

pub async fn run(client: &Client, args: Args) -> Result<i32, Failure> {
    let mut limits: std::collections::BTreeMap<String, String> = args.limits.0.into_iter().collect();
    for (row, size) in [("physpages", &args.ram), ("swappages", &args.swap)] {
        if let Some(size) = size {
            if limits.insert(row.to_string(), format!("0:{size}")).is_some() {
                let flag = if row == "physpages" { "--ram" } else { "--swap" };
                return Err(Failure::new(
                    ExitCode::BadArgument,
                    format!("{flag} and --{row} both set {row}"),
                ));
            }
        }
    }
    let settings: std::collections::BTreeMap<String, String> = [
        ("CPUUNITS", &args.cpuunits),
        ("CPULIMIT", &args.cpulimit),
        ("CPUS", &args.cpus),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v)))
    .collect();
    if limits.is_empty() && settings.is_empty() {
        return Err(Failure::new(
            ExitCode::BadArgument,
            "nothing to set: give at least one --<row> B[:L], --ram, --swap, --cpuunits, --cpulimit or --cpus",
        ));
    }
    let ct = crate::ctid(&args.ctid)?;
    let _: ContainerView = client
        .put(
            &format!("/v1/containers/{ct}/limits"),
            &SetLimits {
                limits,
                settings,
                save: args.save,
            },
        )
        .await?;
    Ok(0)
}
