//! `kill`: a signal to the init (or, with --all, to every process of the container),
//! sent through a pidfd so a recycled pid is never signalled.

use super::{Error, Result, pidfd};
use crate::state::{Status, Store};
use nix::sys::signal::Signal;
use std::os::fd::AsRawFd;
use std::str::FromStr;

/// "KILL", "SIGKILL", "kill", "9" -> SIGKILL. Real-time signals as "RTMIN+n" or numbers.
pub fn parse_signal(s: &str) -> std::result::Result<i32, String> {
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=libc::SIGRTMAX()).contains(&n) {
            Ok(n)
        } else {
            Err(format!("unknown signal {s:?}"))
        };
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") { up.clone() } else { format!("SIG{up}") };
    if let Ok(sig) = Signal::from_str(&name) {
        return Ok(sig as i32);
    }
    if let Some(rest) = name.strip_prefix("SIGRTMIN") {
        let off = rt_offset(rest, '+').ok_or(format!("unknown signal {s:?}"))?;
        if let Some(n) = libc::SIGRTMIN().checked_add(off)
            && n <= libc::SIGRTMAX()
        {
            return Ok(n);
        }
    }
    if let Some(rest) = name.strip_prefix("SIGRTMAX") {
        let off = rt_offset(rest, '-').ok_or(format!("unknown signal {s:?}"))?;
        if let Some(n) = libc::SIGRTMAX().checked_sub(off)
            && n >= libc::SIGRTMIN()
        {
            return Ok(n);
        }
    }
    Err(format!("unknown signal {s:?}"))
}

/// The n of "RTMIN+n" / "RTMAX-n": empty is 0, else `sign` and decimal digits only (so
/// "RTMIN+-5" and "RTMAX--5" cannot name a signal outside the real-time range).
fn rt_offset(rest: &str, sign: char) -> Option<i32> {
    if rest.is_empty() {
        return Some(0);
    }
    let digits = rest.strip_prefix(sign)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub fn kill(store: &Store, id: &str, sig: i32, all: bool) -> Result<()> {
    let st = store.read(id)?;
    let status = st.status();
    if status == Status::Stopped {
        return Err(Error::Status(format!("cannot kill container {id}: container not running")));
    }
    let pid = st.pid.unwrap_or(0);
    let Some(fd) = pidfd(pid, st.pid_start) else {
        return Err(Error::Status(format!("cannot kill container {id}: container not running")));
    };
    if all {
        for p in container_processes(&st) {
            if p != pid {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), Signal::try_from(sig).ok());
            }
        }
    }
    send(&fd, sig).map_err(|e| {
        crate::linux::SysError {
            what: format!("kill {pid} with signal {sig}"),
            errno: e,
        }
        .into()
    })
}

pub(super) fn send(fd: &impl AsRawFd, sig: i32) -> nix::Result<()> {
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 { Err(nix::errno::Errno::last()) } else { Ok(()) }
}

/// Every process of the container: its cgroup's list, and (for a container whose cgroup
/// cannot be read) the processes sharing the init's own pid namespace.
pub(super) fn container_processes(st: &crate::state::State) -> Vec<i32> {
    let mut procs = st.cgroup.procs();
    if let Some(init) = st.pid {
        procs.extend(pidns_processes(init).into_iter().filter(|p| !procs.contains(p)).collect::<Vec<_>>());
    }
    procs
}

fn pidns_processes(init: i32) -> Vec<i32> {
    let ns = |p: i32| {
        std::fs::metadata(format!("/proc/{p}/ns/pid"))
            .ok()
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
    };
    let (Some(theirs), Some(ours)) = (ns(init), ns(std::process::id() as i32)) else {
        return vec![init];
    };
    if theirs == ours {
        return vec![init];
    }
    let Ok(dir) = std::fs::read_dir("/proc") else { return vec![init] };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| ns(*p) == Some(theirs))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_signal;

    #[test]
    fn signals() {
        assert_eq!(parse_signal("KILL"), Ok(9));
        assert_eq!(parse_signal("SIGKILL"), Ok(9));
        assert_eq!(parse_signal("term"), Ok(15));
        assert_eq!(parse_signal("9"), Ok(9));
        assert_eq!(parse_signal("10"), Ok(10));
        assert_eq!(parse_signal("RTMIN+1"), Ok(libc::SIGRTMIN() + 1));
        assert!(parse_signal("FOO").is_err());
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("99").is_err());
        assert_eq!(parse_signal("RTMAX-1"), Ok(libc::SIGRTMAX() - 1));
        assert_eq!(parse_signal("SIGRTMAX"), Ok(libc::SIGRTMAX()));
        // Found by the cli_values fuzzer: these overflowed i32 (a panic in debug builds).
        assert!(parse_signal("RTMIN+2147483647").is_err());
        assert!(parse_signal("RTMAX--2147483647").is_err());
        // ... and these named signals outside the real-time range.
        assert!(parse_signal("RTMIN+-5").is_err());
        assert!(parse_signal("RTMAX--5").is_err());
        assert!(parse_signal("RTMIN++1").is_err());
        assert!(parse_signal("RTMAX-99").is_err());
    }
}
