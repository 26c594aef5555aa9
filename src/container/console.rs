//! `run` in the foreground with process.terminal and no --console-socket: tinyrt takes the
//! pty master itself and relays it to its own stdin/stdout (raw mode when stdin is a terminal),
//! forwarding signals and window size changes, until the container's init exits.

use crate::linux::tty;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::termios::{SetArg, Termios, cfmakeraw, tcgetattr, tcsetattr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// Restores the terminal mode when dropped.
struct RawMode(Option<Termios>);

impl RawMode {
    fn enter() -> RawMode {
        let stdin = unsafe { BorrowedFd::borrow_raw(0) };
        let Ok(orig) = tcgetattr(stdin) else { return RawMode(None) };
        let mut raw = orig.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(stdin, SetArg::TCSANOW, &raw);
        RawMode(Some(orig))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = tcsetattr(unsafe { BorrowedFd::borrow_raw(0) }, SetArg::TCSANOW, t);
        }
    }
}

fn write_all(fd: i32, mut buf: &[u8]) {
    while !buf.is_empty() {
        match nix::unistd::write(unsafe { BorrowedFd::borrow_raw(fd) }, buf) {
            Ok(n) => buf = &buf[n..],
            Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => continue,
            Err(_) => return,
        }
    }
}

/// Relay until the init exits; returns its exit code (128+n when killed by signal n).
pub fn relay(master: OwnedFd, init: i32, signals: &SigSet) -> i32 {
    let _raw = RawMode::enter();
    tty::copy_size(0, master.as_raw_fd());
    let Ok(sfd) = SignalFd::new(signals) else {
        return super::run::wait_for(init, signals);
    };
    let mut stdin_open = true;
    let mut buf = [0u8; 8192];
    let mut exit: Option<i32> = None;
    loop {
        let stdin = unsafe { BorrowedFd::borrow_raw(0) };
        let mut fds = vec![
            PollFd::new(master.as_fd(), PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
        ];
        if stdin_open {
            fds.push(PollFd::new(stdin, PollFlags::POLLIN));
        }
        // Once the init is gone, only drain what the pty still holds.
        let timeout = if exit.is_some() { PollTimeout::ZERO } else { PollTimeout::NONE };
        match poll(&mut fds, timeout) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
            Ok(0) => break,
            Ok(_) => {}
        }
        let ready = |i: usize| fds.get(i).and_then(|f| f.revents()).unwrap_or(PollFlags::empty());
        let (m, s, i) = (ready(0), ready(1), ready(2));
        if m.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            match nix::unistd::read(master.as_fd(), &mut buf) {
                Ok(n) if n > 0 => write_all(1, &buf[..n]),
                // EIO: the last holder of the slave is gone.
                _ if exit.is_some() => break,
                _ => {}
            }
        }
        if s.contains(PollFlags::POLLIN)
            && let Ok(Some(info)) = sfd.read_signal()
        {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGCHLD) => {
                    if let Some(code) = super::run::reap(init) {
                        exit = Some(code);
                    }
                }
                Ok(Signal::SIGWINCH) => tty::copy_size(0, master.as_raw_fd()),
                Ok(sig) => {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(init), sig);
                }
                Err(_) => {}
            }
        }
        if i.intersects(PollFlags::POLLIN | PollFlags::POLLHUP) {
            match nix::unistd::read(stdin, &mut buf) {
                Ok(n) if n > 0 => write_all(master.as_raw_fd(), &buf[..n]),
                _ => stdin_open = false,
            }
        }
    }
    exit.unwrap_or_else(|| super::run::wait_for(init, signals))
}
