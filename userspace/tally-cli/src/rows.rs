//! `--numproc B[:L]`-style options, one per beancounter row, generated from the model so that
//! every row vzctl knows is accepted and listed in --help.

use clap::{Arg, ArgMatches, Args, FromArgMatches};
use tally::ubc::Resource;

/// Row name -> the value as typed; checked by tallyd with the same parser as config files.
#[derive(Debug, Default, Clone)]
pub struct RowLimits(pub Vec<(String, String)>);

fn rows() -> impl Iterator<Item = Resource> {
    Resource::ALL.into_iter().filter(|r| !r.is_dummy())
}

impl FromArgMatches for RowLimits {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(RowLimits(
            rows()
                .filter_map(|r| m.get_one::<String>(r.name()).map(|v| (r.name().to_string(), v.clone())))
                .collect(),
        ))
    }
    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for RowLimits {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        rows().fold(cmd, |cmd, r| {
            cmd.arg(Arg::new(r.name()).long(r.name()).value_name("B[:L]").help(format!(
                "{} barrier[:limit] ('unlimited', suffixes where the unit allows)",
                r.name()
            )))
        })
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}
