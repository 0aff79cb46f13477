//! The container's own terminal for `tally enter` and `tally exec -t`: the child inside opens
//! a pty on the container's devpts and sends its master back over a socket pair; this process
//! relays between its own terminal (in raw mode) and that master.

use std::{
    io::IoSlice,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
};

use nix::{
    fcntl::OFlag,
    poll::{poll, PollFd, PollFlags, PollTimeout},
    pty::{grantpt, posix_openpt, ptsname_r, unlockpt},
    sys::{
        socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags},
        termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg},
    },
};

/// The socket a child inside the container sends its pty's master through.
pub fn socket_pair() -> nix::Result<(OwnedFd, OwnedFd)> {
    nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Stream,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
}

/// In the child, inside the container: opens a pty there, sends its master over `sock`,
/// and makes the slave this process's controlling terminal and stdio.
pub fn take_pty(sock: &OwnedFd) -> nix::Result<()> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let slave_path = ptsname_r(&master)?;
    let fds = [master.as_raw_fd()];
    sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(b"m")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )?;
    drop(master);
    nix::unistd::setsid()?;
    let slave = nix::fcntl::open(slave_path.as_str(), OFlag::O_RDWR, nix::sys::stat::Mode::empty())?;
    // SAFETY: TIOCSCTTY on the slave we just opened, as a session leader without a terminal.
    unsafe { libc::ioctl(slave, libc::TIOCSCTTY, 0) };
    for fd in 0..3 {
        nix::unistd::dup2(slave, fd)?;
    }
    if slave > 2 {
        nix::unistd::close(slave)?;
    }
    Ok(())
}

/// In the parent: the master the child sent.
pub fn receive_fd(sock: &OwnedFd) -> Option<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty()).ok()?;
    let fd = msg.cmsgs().ok()?.find_map(|c| match c {
        ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
        _ => None,
    })?;
    // SAFETY: a descriptor the kernel just installed in this process for us.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Copies our stdin to the master and the master to our stdout until the shell is gone;
/// our terminal (if stdin is one) is in raw mode meanwhile, so keys reach the shell as typed.
pub fn relay(master: OwnedFd) {
    let stdin = std::io::stdin();
    let saved = tcgetattr(stdin.as_fd()).ok();
    if let Some(t) = &saved {
        let mut raw = t.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ/TIOCSWINSZ with a winsize we own.
        unsafe {
            if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
                libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
            }
        }
    }
    let mut buf = [0u8; 4096];
    let mut stdin_open = true;
    loop {
        let mut fds = vec![PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::Error::EINTR) => continue,
            Err(_) => break,
            Ok(_) => {}
        }
        let master_ready = fds[0].revents().unwrap_or(PollFlags::empty());
        let stdin_ready = fds.get(1).and_then(|f| f.revents()).unwrap_or(PollFlags::empty());
        if !master_ready.is_empty() {
            match nix::unistd::read(master.as_raw_fd(), &mut buf) {
                Ok(n) if n > 0 => {
                    let _ = nix::unistd::write(std::io::stdout(), &buf[..n]);
                }
                // EIO: the shell closed its side.
                _ => break,
            }
        }
        if !stdin_ready.is_empty() {
            match nix::unistd::read(0, &mut buf) {
                Ok(n) if n > 0 => {
                    let _ = nix::unistd::write(&master, &buf[..n]);
                }
                _ => stdin_open = false,
            }
        }
    }
    if let Some(t) = saved {
        let _ = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &t);
    }
}
