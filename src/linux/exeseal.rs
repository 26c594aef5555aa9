//! The runtime binary out of the container's reach (runc CVE-2019-5736). A container process
//! that executes /proc/self/exe while tinyrt is still its image (a `#!/proc/self/exe` script
//! as the program, or an ELF whose interpreter is /proc/self/exe) runs tinyrt inside the
//! container, where /proc/<pid>/exe gives the container the host's binary to hold open and,
//! once that process has exited, to overwrite. Refusing such programs cannot be complete (the
//! container can swap the file between the check and the exec), so the verbs that put a
//! process into a container re-execute tinyrt, before anything else, from a file nobody can
//! write: the binary seen through a read-only overlayfs of its own directory (no copy; an
//! overlay without an upper layer cannot be made writable, even by remounting it), or where
//! that cannot be mounted, a sealed memfd copy.

use nix::errno::Errno;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

/// In the environment of the re-executed tinyrt (and taken out of it at once).
const SEALED_ENV: &str = "_TINYRT_SEALED_EXE";

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FD: libc::c_uint = 5;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: libc::c_uint = 1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 2;
const MOUNT_ATTR_NODEV: libc::c_uint = 4;

/// Re-execute from a sealed binary unless this process already runs from one. Returns only
/// when it does (or with the reason it could not).
pub fn ensure_sealed() -> Result<(), String> {
    if std::env::var_os(SEALED_ENV).is_some() {
        // SAFETY: first thing in main, before any thread exists.
        unsafe { std::env::remove_var(SEALED_ENV) };
        return if is_sealed() {
            Ok(())
        } else {
            Err("re-executed, yet /proc/self/exe is still writable".into())
        };
    }
    let exe = overlay_view().or_else(|e| memfd_copy().map_err(|e2| format!("{e}; {e2}")))?;
    reexec(&exe)
}

/// /proc/self/exe is a sealed memfd, or on a read-only overlayfs.
pub fn is_sealed() -> bool {
    let Ok(f) = std::fs::File::open("/proc/self/exe") else {
        return false;
    };
    let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    if seals >= 0 && seals & libc::F_SEAL_WRITE != 0 {
        return true;
    }
    use nix::sys::{statfs, statvfs};
    statfs::fstatfs(&f).is_ok_and(|s| s.filesystem_type() == statfs::OVERLAYFS_SUPER_MAGIC)
        && statvfs::fstatvfs(&f).is_ok_and(|s| s.flags().contains(statvfs::FsFlags::ST_RDONLY))
}

fn fd_or(r: libc::c_long, what: &str) -> Result<OwnedFd, String> {
    if r < 0 {
        return Err(format!("{what}: {}", Errno::last()));
    }
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// A detached mount of a new `fstype` superblock: `layers` (fds) as its `lowerdir+`s.
fn detached_mount(fstype: &std::ffi::CStr, layers: &[&OwnedFd], attrs: libc::c_uint) -> Result<OwnedFd, String> {
    let what = fstype.to_string_lossy();
    let ctx = fd_or(
        unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) },
        &format!("fsopen {what}"),
    )?;
    for l in layers {
        let r = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                ctx.as_raw_fd(),
                FSCONFIG_SET_FD,
                c"lowerdir+".as_ptr(),
                std::ptr::null::<u8>(),
                l.as_raw_fd(),
            )
        };
        if r < 0 {
            return Err(format!("{what}: lowerdir+: {}", Errno::last()));
        }
    }
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            ctx.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<u8>(),
            std::ptr::null::<u8>(),
            0,
        )
    };
    if r < 0 {
        return Err(format!("{what}: create: {}", Errno::last()));
    }
    fd_or(
        unsafe { libc::syscall(libc::SYS_fsmount, ctx.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) },
        &format!("fsmount {what}"),
    )
}

/// The binary through a read-only overlayfs whose layers are its directory and an empty
/// tmpfs (an overlay without an upper layer needs two), the layers given as fds (a recent
/// kernel: older ones refuse `lowerdir+` by fd, and the memfd copy is used).
fn overlay_view() -> Result<OwnedFd, String> {
    let path = std::fs::read_link("/proc/self/exe").map_err(|e| format!("readlink /proc/self/exe: {e}"))?;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(format!("{}: no directory", path.display()));
    };
    let dir = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("open {}: {e}", dir.display()))?;
    let empty = detached_mount(c"tmpfs", &[], 0)?;
    let ovl = detached_mount(
        c"overlay",
        &[&dir, &empty],
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
    )?;
    let exe = nix::fcntl::openat(
        ovl.as_fd(),
        name,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("opening {} in the overlay: {e}", name.display()))?;
    // The file at that path is still the one running (not replaced since, say by an upgrade).
    let (a, b) = (
        nix::sys::stat::fstat(&exe).map_err(|e| format!("fstat: {e}"))?,
        nix::sys::stat::stat("/proc/self/exe").map_err(|e| format!("stat /proc/self/exe: {e}"))?,
    );
    if (a.st_size, a.st_mtime, a.st_mtime_nsec) != (b.st_size, b.st_mtime, b.st_mtime_nsec) {
        return Err(format!("{} is no longer the running binary", path.display()));
    }
    Ok(exe)
}

/// A copy of the binary in a memfd sealed against any write, shrink or growth.
pub fn memfd_copy() -> Result<OwnedFd, String> {
    let mut src = std::fs::File::open("/proc/self/exe").map_err(|e| format!("open /proc/self/exe: {e}"))?;
    sealed_memfd(c"tinyrt-sealed-exe", |copy| {
        std::io::copy(&mut src, copy)
            .map(drop)
            .map_err(|e| format!("copying the binary into a memfd: {e}"))
    })
}

/// An executable memfd named `name`, filled by `fill`, then sealed against any write, shrink
/// or growth, and returned as a read-only fd (an open writable one would make execve fail
/// with ETXTBSY). Also what the exec trampoline (linux/exec_stub.rs) runs from.
pub(crate) fn sealed_memfd(name: &std::ffi::CStr, fill: impl FnOnce(&mut std::fs::File) -> Result<(), String>) -> Result<OwnedFd, String> {
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    let mut fd = unsafe { libc::memfd_create(name.as_ptr(), flags | libc::MFD_EXEC) };
    if fd < 0 && Errno::last() == Errno::EINVAL {
        // Before Linux 6.3, no MFD_EXEC (and a memfd is always executable).
        fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    }
    let mut file = std::fs::File::from(fd_or(fd as libc::c_long, "memfd_create")?);
    fill(&mut file)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(format!("sealing the memfd: {}", Errno::last()));
    }
    nix::fcntl::open(
        format!("/proc/self/fd/{}", file.as_raw_fd()).as_str(),
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("reopening the memfd: {e}"))
}

fn reexec(exe: &OwnedFd) -> Result<(), String> {
    let cstr = |b: &[u8]| CString::new(b).map_err(|_| "a NUL byte in an argument or variable".to_string());
    let argv = std::env::args_os().map(|a| cstr(a.as_bytes())).collect::<Result<Vec<_>, _>>()?;
    let mut envp = std::env::vars_os()
        .map(|(k, v)| cstr(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
        .collect::<Result<Vec<_>, _>>()?;
    envp.push(cstr(format!("{SEALED_ENV}=1").as_bytes())?);
    let e = nix::unistd::execveat(exe, c"", &argv, &envp, nix::fcntl::AtFlags::AT_EMPTY_PATH).unwrap_err();
    Err(format!("re-executing the sealed binary: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, Write};

    #[test]
    fn memfd_copy_is_sealed_against_writes() {
        let fd = memfd_copy().unwrap();
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        assert_eq!(seals & libc::F_SEAL_WRITE, libc::F_SEAL_WRITE);
        // Even reopened read-write (as the attack does through /proc/PID/exe), no write lands.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .unwrap();
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        assert_eq!(f.write(b"PWNED").unwrap_err().raw_os_error(), Some(libc::EPERM));
        assert!(f.set_len(0).is_err());
    }

    /// The fallback runs: the sealed copy of this test binary execs (and lists its tests).
    #[test]
    fn memfd_copy_executes() {
        let fd = memfd_copy().unwrap();
        let argv = [c"exeseal-test", c"--list", c"--exact", c"no-such-test"];
        let envp: [&std::ffi::CStr; 0] = [];
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let devnull = std::fs::OpenOptions::new().write(true).open("/dev/null").unwrap();
                unsafe { libc::dup2(devnull.as_raw_fd(), 1) };
                let _ = nix::unistd::execveat(&fd, c"", &argv, &envp, nix::fcntl::AtFlags::AT_EMPTY_PATH);
                unsafe { libc::_exit(99) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let st = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }

    /// Where the read-only overlay can be made (root, a recent kernel), nothing opens the
    /// binary for writing through it.
    #[test]
    fn overlay_view_is_read_only() {
        let Ok(fd) = overlay_view() else {
            eprintln!("no read-only overlay here (not root, or an older kernel): skipped");
            return;
        };
        let e = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    }
}
