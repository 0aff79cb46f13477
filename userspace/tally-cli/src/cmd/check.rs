//! `tally check [--json]`: the probe's report. Exit 0 when tally can run here, 5 otherwise.

use tally::{
    api::ExitCode,
    kernel::{probe, Tier},
};

use crate::Failure;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Show how each row would be kept in this tier on this host (default: the tier it gets).
    #[arg(long, value_parser = ["full", "fallback"])]
    tier: Option<String>,
}

pub fn run(args: Args) -> Result<i32, Failure> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Failure::new(
            ExitCode::PermissionDenied,
            "check loads BPF programs: run it as root",
        ));
    }
    let mut r = probe::probe();
    match (args.tier.as_deref(), r.tier) {
        (Some("full"), Some(Tier::Fallback)) => {
            return Err(Failure::new(
                ExitCode::KernelUnsupported,
                format!("no full tier on this host: {}", r.reason),
            ));
        }
        (Some(asked), Some(_)) => {
            let tier = if asked == "full" { Tier::Full } else { Tier::Fallback };
            r.rows = probe::row_plans(tier);
            r.statistics = probe::statistic_plans(tier);
        }
        _ => {}
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&r).map_err(|e| Failure::new(ExitCode::SystemError, e))?
        );
    } else {
        let mark = |ok: bool| if ok { "ok  " } else { "no  " };
        println!("kernel       {}", r.kernel);
        match r.tier {
            Some(t) => println!("tier         {t}"),
            None => println!("tier         none: tally cannot run here"),
        }
        println!("why          {}", r.reason);
        println!();
        println!("{}BTF          {}", mark(r.btf.ok), r.btf.detail);
        println!("{}LSM list     {}", mark(r.lsm_list.ok), r.lsm_list.detail);
        println!("{}bpffs        {}", mark(r.bpffs.ok), r.bpffs.detail);
        for (kind, c) in &r.programs {
            println!("{}{:<12} {}", mark(c.ok), kind, c.detail);
        }
        let unified = r
            .cgroups
            .unified
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "none".into());
        println!("    cgroups      {:?}; cgroup2 at {unified}", r.cgroups.kind);
        for (c, (path, flavor)) in &r.cgroups.controllers {
            println!("      {:<10} {:?} at {}", c.to_string(), flavor, path.display());
        }
        if !r.rows.is_empty() {
            println!();
            println!("{:<13} {:<9} how", "row", "status");
            for row in r.rows.iter().chain(&r.statistics) {
                println!("{:<13} {:<9} {}", row.resource, row.status, row.how);
            }
        }
    }
    Ok(if r.tier.is_some() {
        0
    } else {
        ExitCode::KernelUnsupported.number()
    })
}
