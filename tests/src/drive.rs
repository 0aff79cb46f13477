//! Drives a workload process line by line: it prints a JSON line when it reaches a state,
//! and moves on when it reads a line on stdin.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdout, Command, Stdio},
};

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;

pub struct Driven {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Driven {
    pub fn start(mut cmd: Command) -> Result<Driven> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting a workload")?;
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Ok(Driven { child, stdout })
    }

    /// The workload's next line, parsed.
    pub fn read<T: DeserializeOwned>(&mut self) -> Result<T> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        if line.is_empty() {
            let status = self.child.wait()?;
            bail!("the workload ended ({status}) before saying anything");
        }
        serde_json::from_str(&line).with_context(|| format!("the workload said {line:?}"))
    }

    /// Lets the workload go on to its next step.
    pub fn go_on(&mut self) -> Result<()> {
        self.child.stdin.as_mut().expect("piped").write_all(b"\n")?;
        Ok(())
    }

    /// Lets the workload finish and checks that it exited 0.
    pub fn finish(mut self) -> Result<()> {
        drop(self.child.stdin.take());
        let status = self.child.wait()?;
        if !status.success() {
            bail!("the workload exited {status}");
        }
        Ok(())
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
