//! `run`: create + start, then (unless --detach) wait for the container's init, forwarding
//! signals to it, and delete the container when it exits (unless --keep). Signals are
//! blocked before the container exists, so its exit can never be missed.

use super::{CreateOpts, Result, create, delete, start};
use crate::state::Store;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

#[derive(Debug, Clone, Default)]
pub struct RunOpts {
    pub create: CreateOpts,
    pub detach: bool,
    pub keep: bool,
}

/// Signals `run` forwards to the container's init.
const FORWARD: [Signal; 8] = [
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
    let pid = create(store, &copts)?;
    if let Err(e) = start(store, &o.create.id) {
        let _ = delete(store, &o.create.id, true);
        return Err(e);
    }
    if o.detach {
        return Ok(0);
    }
    let code = wait_for(pid, &set);
    if !o.keep {
        delete(store, &o.create.id, true)?;
    }
    Ok(code)
}

fn wait_for(init: i32, set: &SigSet) -> i32 {
    loop {
        // Reap everything that has exited (orphans of the container come to us too).
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(p, c)) if p.as_raw() == init => return c,
                Ok(WaitStatus::Signaled(p, s, _)) if p.as_raw() == init => return 128 + s as i32,
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
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
