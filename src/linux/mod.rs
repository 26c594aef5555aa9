//! One file per kernel facility. Nothing here knows about the container lifecycle:
//! each function does one kernel-level thing and reports failures with the errno.

pub mod caps;
pub mod fds;
pub mod fs;
pub mod lsm;
pub mod mounts;
pub mod namespaces;
pub mod proc;
pub mod rlimits;
pub mod rootfs;
pub mod seccomp;
pub mod tty;
pub mod user;

use nix::errno::Errno;

/// A failed system call: what was being done (with the spec field or path) and the errno.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {errno}")]
pub struct SysError {
    pub what: String,
    pub errno: Errno,
}

pub type Result<T> = std::result::Result<T, SysError>;

/// Attach "what was being done" to a failing call.
pub trait Ctx<T> {
    fn ctx<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T>;
}

impl<T> Ctx<T> for nix::Result<T> {
    fn ctx<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|errno| SysError {
            what: what().into(),
            errno,
        })
    }
}

impl<T> Ctx<T> for std::io::Result<T> {
    fn ctx<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| SysError {
            what: what().into(),
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })
    }
}

/// An error that is not a failed syscall but a refusal (errno EINVAL).
pub fn refuse<T>(what: impl Into<String>) -> Result<T> {
    Err(invalid(what))
}

pub fn invalid(what: impl Into<String>) -> SysError {
    SysError {
        what: what.into(),
        errno: Errno::EINVAL,
    }
}
