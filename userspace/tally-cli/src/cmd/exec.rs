//! `tally exec CTID -- CMD...`: asks tallyd to move this (single-threaded) process into the
//! container, then becomes CMD, so the command is charged to the container from its first
//! instruction and its exit code is the CLI's.

use std::{ffi::CString, os::unix::ffi::OsStrExt};

use tally::api::{Attach, Client, ExitCode};

use crate::{block_on, Failure};

#[derive(clap::Args, Debug)]
pub struct Args {
    ctid: String,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<std::ffi::OsString>,
}

pub fn run(client: &Client, args: Args) -> Result<i32, Failure> {
    let ct = crate::ctid(&args.ctid)?;
    let argv: Vec<CString> = args
        .command
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| Failure::new(ExitCode::BadArgument, "a command argument contains a NUL byte"))?;
    let threads = std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0);
    if threads != 1 {
        return Err(Failure::new(
            ExitCode::SystemError,
            format!("exec must run single-threaded, found {threads} threads"),
        ));
    }
    let pid = std::process::id();
    let _: serde_json::Value = block_on(client.post(&format!("/v1/containers/{ct}/attach"), &Attach { pid }))?;
    let err = nix::unistd::execvp(&argv[0], &argv).unwrap_err();
    // vzctl's "command not found" is 127 like a shell's.
    eprintln!("tally: exec {}: {err}", argv[0].to_string_lossy());
    Ok(if err == nix::errno::Errno::ENOENT { 127 } else { 126 })
}
