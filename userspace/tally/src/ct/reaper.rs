//! One thread reaps every container init tallyd launched: it polls their pidfds (a pidfd
//! polls readable when its process exits) and a pipe that wakes it for a new one. Inits are
//! tallyd's children (it is a subreaper and their launcher has exited), so their zombies are
//! tallyd's to collect; after a tallyd restart the host's init collects those of earlier
//! inits instead.

use std::{
    os::fd::{AsFd, OwnedFd},
    sync::{Arc, Mutex},
};

use nix::{
    fcntl::OFlag,
    poll::{poll, PollFd, PollFlags, PollTimeout},
    sys::wait::{waitpid, WaitPidFlag},
    unistd::Pid,
};

use super::launch::pidfd_open;

/// Inits being waited for: (pid, its pidfd).
type Waiting = Arc<Mutex<Vec<(u32, OwnedFd)>>>;

pub struct Reaper {
    waiting: Waiting,
    /// Written to when `waiting` grows, so the thread polls the new pidfd too.
    wake: OwnedFd,
}

impl Reaper {
    /// Starts the reaping thread (one per tallyd, whatever the number of containers).
    pub fn start() -> std::io::Result<Reaper> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        let waiting: Waiting = Default::default();
        let theirs = waiting.clone();
        std::thread::Builder::new()
            .name("reaper".into())
            .stack_size(64 * 1024)
            .spawn(move || reap_forever(&theirs, &read))?;
        Ok(Reaper { waiting, wake: write })
    }

    /// Reaps `pid` when it exits.
    pub fn watch(&self, pid: u32) {
        match pidfd_open(pid) {
            Ok(fd) => {
                self.waiting.lock().unwrap_or_else(|p| p.into_inner()).push((pid, fd));
                let _ = nix::unistd::write(&self.wake, &[1]);
            }
            // Already gone: collect it now.
            Err(_) => {
                let _ = waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG));
            }
        }
    }

    /// How many inits are waited for.
    #[cfg(test)]
    fn watched(&self) -> usize {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

fn reap_forever(waiting: &Waiting, wake: &OwnedFd) {
    loop {
        // Pidfds are duplicated for the poll so that `watch` never waits for it.
        let fds: Vec<(u32, OwnedFd)> = waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|(pid, fd)| Some((*pid, fd.try_clone().ok()?)))
            .collect();
        let mut polled = vec![PollFd::new(wake.as_fd(), PollFlags::POLLIN)];
        polled.extend(fds.iter().map(|(_, fd)| PollFd::new(fd.as_fd(), PollFlags::POLLIN)));
        match poll(&mut polled, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(e) => {
                log::error!("reaper: poll failed: {e}");
                std::thread::sleep(std::time::Duration::from_secs(1));
                continue;
            }
        }
        let ready = |p: &PollFd| p.revents().is_some_and(|r| !r.is_empty());
        if ready(&polled[0]) {
            let mut buf = [0u8; 64];
            while matches!(nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(wake), &mut buf), Ok(n) if n > 0) {}
        }
        let exited: Vec<u32> = fds
            .iter()
            .zip(&polled[1..])
            .filter(|(_, p)| ready(p))
            .map(|((pid, _), _)| *pid)
            .collect();
        if exited.is_empty() {
            continue;
        }
        for pid in &exited {
            let _ = waitpid(Pid::from_raw(*pid as i32), Some(WaitPidFlag::WNOHANG));
        }
        waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(pid, _)| !exited.contains(pid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_thread_reaps_children_as_they_exit() {
        let reaper = Reaper::start().unwrap();
        let mut children: Vec<std::process::Child> = (0..5)
            .map(|i| {
                std::process::Command::new("sleep")
                    .arg(format!("0.{}", i + 1))
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in &children {
            reaper.watch(c.id());
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while reaper.watched() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(reaper.watched(), 0, "every child reaped");
        for c in &mut children {
            // Reaped by the reaper already: nothing left to wait for.
            assert!(c.try_wait().is_err(), "child {} was reaped", c.id());
        }
    }
}
