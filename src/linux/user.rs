//! process.user: groups, gid, uid, umask; and HOME from the container's /etc/passwd.

use super::{Ctx, Result};
use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};
use oci_spec::runtime::User;

/// Switch to the configured ids, keeping the permitted capabilities (they are set right after).
pub fn switch(u: &User, allow_setgroups: bool) -> Result<()> {
    if allow_setgroups {
        let groups: Vec<Gid> = u.additional_gids().iter().flatten().map(|g| Gid::from_raw(*g)).collect();
        setgroups(&groups).ctx(|| "process.user.additionalGids: setgroups")?;
    }
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    let gid = Gid::from_raw(u.gid());
    setresgid(gid, gid, gid).ctx(|| format!("process.user.gid: setresgid {}", u.gid()))?;
    let uid = Uid::from_raw(u.uid());
    setresuid(uid, uid, uid).ctx(|| format!("process.user.uid: setresuid {}", u.uid()))?;
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    if let Some(m) = u.umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(m));
    }
    Ok(())
}

/// Give the container's user its stdio (pipes from the engine belong to root), so it can
/// reopen /dev/stdout and friends, as runc does. /dev/null and ttys are left alone.
pub fn chown_stdio(uid: u32, gid: u32) -> Result<()> {
    for fd in 0..3 {
        let Ok(st) = nix::sys::stat::fstat(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }) else {
            continue;
        };
        if st.st_uid == uid || st.st_mode & libc::S_IFMT == libc::S_IFCHR {
            continue;
        }
        if unsafe { libc::fchown(fd, uid, gid) } != 0 {
            let e = nix::errno::Errno::last();
            // A file we may not change (say, on a read-only or foreign mount) stays as it is.
            if e != nix::errno::Errno::EINVAL && e != nix::errno::Errno::EPERM && e != nix::errno::Errno::EROFS {
                return Err(e).ctx(|| format!("chown of stdio fd {fd} to {uid}:{gid}"));
            }
        }
    }
    Ok(())
}

/// The home directory of `uid` in the (already pivoted) root's /etc/passwd, or "/".
pub fn home_of(uid: u32) -> String {
    let text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    parse_home(&text, uid).unwrap_or_else(|| "/".into())
}

fn parse_home(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 6 && f[2].parse() == Ok(uid)).then(|| f[5].to_string())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn home() {
        let p = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/false\n";
        assert_eq!(super::parse_home(p, 0).as_deref(), Some("/root"));
        assert_eq!(super::parse_home(p, 65534).as_deref(), Some("/nonexistent"));
        assert_eq!(super::parse_home(p, 5), None);
    }
}
