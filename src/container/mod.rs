//! The lifecycle, one file per verb. Each verb takes its options as a plain struct (nothing
//! here knows about clap) and owns the container's state while it holds the lock.

mod console;
mod create;
mod delete;
mod events;
mod exec;
#[cfg(test)]
mod fuzz_corpus;
mod kill;
mod list;
mod pause;
pub mod ps;
mod run;
mod start;
mod update;

pub use create::{CreateOpts, create};
pub use delete::delete;
pub use events::{events, parse_duration};
pub use exec::{ExecOpts, exec};
pub use kill::{kill, parse_signal};
pub use list::list;
pub use pause::{pause, resume};
pub use run::{RunOpts, run};
pub use start::start;
pub use update::{UpdateFlags, parse_size, update};

use crate::state::{State, Store};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Process(#[from] crate::process::ProcessError),
    #[error(transparent)]
    Sys(#[from] crate::linux::SysError),
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    /// The container is not in a status that allows the operation.
    #[error("{0}")]
    Status(String),
    #[error("{0}")]
    Usage(String),
}

impl From<crate::process::channel::ChannelError> for Error {
    fn from(e: crate::process::channel::ChannelError) -> Self {
        Error::Process(e.into())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// `state`: the container's state as the runtime spec's JSON (plus runc's extra fields).
pub fn state(store: &Store, id: &str) -> Result<serde_json::Value> {
    Ok(store.read(id)?.to_output())
}

/// The hook-facing state JSON (the spec's fields only) with a given status.
fn hook_state(s: &State, status: &str) -> String {
    serde_json::json!({
        "ociVersion": s.oci_version,
        "id": s.id,
        "status": status,
        "pid": s.pid.unwrap_or(0),
        "bundle": s.bundle,
        "annotations": s.annotations,
    })
    .to_string()
}

/// A pidfd for `pid`, only if it is still the process that started at `start`.
fn pidfd(pid: i32, start: Option<u64>) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    // Checked after opening: the pidfd pins the process, so a match now means it is ours.
    match start {
        Some(t) if crate::linux::proc::alive(pid, t) => Some(fd),
        _ => None,
    }
}

/// Wait until the process behind `fd` exits, up to `timeout`. Returns whether it did.
fn wait_pidfd(fd: &std::os::fd::OwnedFd, timeout: std::time::Duration) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut p = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let ms = PollTimeout::try_from(timeout.as_millis().min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX);
    matches!(poll(&mut p, ms), Ok(n) if n > 0)
}
