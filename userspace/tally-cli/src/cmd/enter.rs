//! `tally enter CTID`: a login shell inside the running container on a terminal of its own.
//! The pty is opened inside the container (its private devpts), so the shell's terminal is
//! the container's and no host terminal is reachable from it; this process relays between
//! its own terminal (in raw mode) and the pty's master.

use std::ffi::CString;

use tally::api::Client;

use crate::Failure;

#[derive(clap::Args, Debug)]
pub struct Args {
    ctid: String,
}

pub fn run(client: &Client, args: Args) -> Result<i32, Failure> {
    let ct = crate::ctid(&args.ctid)?;
    let argv = [c"/bin/sh".to_owned(), CString::new("-l").expect("no NUL")];
    super::exec::run_inside(client, &ct, &argv, true)
}
