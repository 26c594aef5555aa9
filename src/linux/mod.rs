//! One file per kernel facility. Nothing here knows about the container lifecycle:
//! each function does one kernel-level thing and reports failures with the errno.

pub mod caps;
pub mod exec_stub;
pub mod exeseal;
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

/// An errno as tinyrt prints it: the name, then the description in lower case as Go (and so
/// runc) spells it ("ENOENT: no such file or directory"). Engines match on that text: dockerd
/// turns "no such file or directory" into exit 127 and "permission denied" into 126.
pub fn errno_text(errno: Errno) -> String {
    let full = errno.to_string();
    match full.split_once(": ") {
        Some((name, desc)) => {
            let mut c = desc.chars();
            let lower = c.next().map(|f| f.to_lowercase().chain(c).collect::<String>()).unwrap_or_default();
            format!("{name}: {lower}")
        }
        None => full,
    }
}

/// A failed system call: what was being done (with the spec field or path) and the errno.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {}", errno_text(*errno))]
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

#[cfg(test)]
mod tests {
    #[test]
    fn errno_text_is_lower_case_like_go() {
        assert_eq!(super::errno_text(nix::errno::Errno::ENOENT), "ENOENT: no such file or directory");
        assert_eq!(super::errno_text(nix::errno::Errno::EACCES), "EACCES: permission denied");
    }
}
