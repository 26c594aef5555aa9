//! `run`: create + start, then (unless --detach) wait for the container's init, forwarding
//! signals to it, and delete the container when it exits (unless --keep). Signals are
//! blocked before the container exists, so its exit can never be missed.

use super::create::{create_loaded, wants_terminal};
use super::{CreateOpts, Result, delete, start};
use crate::state::Store;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

#[derive(Debug, Clone, Default)]
pub struct RunOpts {
    pub create: CreateOpts,
    pub detach: bool,
    pub keep: bool,
}

/// Signals `run` (and `exec` in the foreground) forward to the container's process.
pub(super) const FORWARD: [Signal; 8] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
];

/// Returns the exit code for tinyrt: the container's (128+n when killed by signal n).
pub fn run(store: &Store, o: &RunOpts) -> Result<i32> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    if !o.detach {
        FORWARD.iter().for_each(|s| set.add(*s));
    }
    let mut old = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)).ok();
    let mut copts = o.create.clone();
    copts.detached = o.detach;
    crate::state::check_id(&copts.id)?;
    let bundle = crate::spec::load_bundle(&copts.bundle)?;
    let terminal = copts.console_socket.is_none() && !o.detach && wants_terminal(&bundle);
    let (pid, ours) = if terminal {
        // We are the console: the init sends its pty master to our end of a socketpair.
        let (mine, theirs) = UnixStream::pair().map_err(|e| crate::linux::SysError {
            what: "socketpair for the console".into(),
            errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        })?;
        let pid = create_loaded(store, &copts, &bundle, Some(OwnedFd::from(theirs)))?;
        (pid, Some(mine))
    } else {
        (create_loaded(store, &copts, &bundle, None)?, None)
    };
    let master = match &ours {
        Some(s) => match crate::linux::tty::recv_fd(s.as_raw_fd()) {
            Ok(m) => Some(m),
            Err(e) => {
                let _ = delete(store, &o.create.id, true);
                return Err(e.into());
            }
        },
        None => None,
    };
    if let Err(e) = start(store, &o.create.id) {
        let _ = delete(store, &o.create.id, true);
        return Err(e);
    }
    if o.detach {
        return Ok(0);
    }
    let code = match master {
        Some(m) => super::console::relay(m, pid, &set),
        None => wait_for(pid, &set),
    };
    if !o.keep {
        delete(store, &o.create.id, true)?;
    }
    Ok(code)
}

/// Reap every child that has exited (orphans of the container come to us too); the init's
/// exit code if it was among them.
pub(super) fn reap(init: i32) -> Option<i32> {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, c)) if p.as_raw() == init => return Some(c),
            Ok(WaitStatus::Signaled(p, s, _)) if p.as_raw() == init => return Some(128 + s as i32),
            Ok(WaitStatus::StillAlive) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

pub(super) fn wait_for(init: i32, set: &SigSet) -> i32 {
    loop {
        if let Some(code) = reap(init) {
            return code;
        }
        match set.wait() {
            Ok(Signal::SIGCHLD) => {}
            Ok(sig) => {
                let _ = nix::sys::signal::kill(Pid::from_raw(init), sig);
            }
            Err(_) => {}
        }
    }
}
