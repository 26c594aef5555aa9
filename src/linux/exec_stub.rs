//! The exec trampoline: how the runtime's binary stays out of the container's reach
//! (CVE-2019-5736) without re-executing tinyrt on every call.
//!
//! The attack: a process that is still tinyrt when it executes a container-controlled program
//! (the init's or `exec`'s final execve) can be made to run /proc/self/exe inside the
//! container (a `#!/proc/self/exe` script, an ELF naming it as interpreter); the container then
//! holds the host binary through /proc/PID/exe and overwrites it once that process exits.
//! runc and crun re-execute themselves from a sealed copy or a read-only view before anything
//! else (src/linux/exeseal.rs does that too, as the fallback); that costs a whole execve of the
//! runtime, about 1 ms, on every create, run and exec.
//!
//! Instead, `create`, `run` and `exec` put a few-kilobyte static program (exec_stub.c, built by
//! build.rs) into a sealed memfd, and the final execve runs it: it executes the real program.
//! From the stub on, /proc/self/exe in the container is the sealed memfd, never the host file;
//! a script naming /proc/self/exe as interpreter runs the stub, which then does nothing.
//! An execve failure still reaches the runtime: the stub writes the channel's JSON error
//! message to the fd it is given (the exec fifo, or `exec`'s channel).

use nix::errno::Errno;
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

const STUB: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/exec_stub"));

static SEALED_STUB: OnceLock<OwnedFd> = OnceLock::new();

/// Set when the process gets an LSM label at its exec: no trampoline then (see [`labelled`]).
static NOT_UNDER_LABEL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Put the stub into a sealed, read-only memfd, for the final execve of this process's
/// children. Called once, in the parent, before the container's processes are made.
pub fn prepare() -> Result<(), String> {
    if STUB.is_empty() {
        return Err("no exec trampoline for this architecture".into());
    }
    let ro = crate::linux::exeseal::sealed_memfd(c"tinyrt-exec", |f| {
        std::io::Write::write_all(f, STUB).map_err(|e| format!("writing the exec trampoline: {e}"))
    })?;
    let _ = SEALED_STUB.set(ro);
    Ok(())
}

/// The trampoline's fd, which a forked child must keep open until its final execve.
pub fn fd() -> Option<RawFd> {
    SEALED_STUB.get().map(|f| f.as_raw_fd())
}

/// The container's process gets an AppArmor profile or SELinux label at its exec: the
/// trampoline would run under it, and a policy may forbid executing a memfd (runc's dmz
/// binary ran into that). Then tinyrt re-executes itself from a sealed binary instead
/// (linux/exeseal.rs), and the process execs its program directly. To be called before the
/// verb makes anything: the re-exec starts the command over.
pub fn labelled(apparmor: Option<&str>, selinux: Option<&str>) -> Result<(), String> {
    if apparmor.is_none_or(str::is_empty) && selinux.is_none_or(str::is_empty) {
        return Ok(());
    }
    NOT_UNDER_LABEL.store(true, std::sync::atomic::Ordering::Relaxed);
    crate::linux::exeseal::ensure_sealed()
}

/// Execute `path` through the trampoline when there is one, else directly. `errfd` is the
/// runtime's end for an execve failure; it is closed once the program runs. Returns only on
/// failure (the trampoline's own exec failing, e.g. a seccomp filter refusing it).
pub fn execve(errfd: RawFd, path: &CStr, argv: &[&CStr], envp: &[&CStr]) -> Errno {
    let stub = SEALED_STUB
        .get()
        .filter(|_| !NOT_UNDER_LABEL.load(std::sync::atomic::Ordering::Relaxed));
    let Some(stub) = stub else {
        return nix::unistd::execve(path, argv, envp).unwrap_err();
    };
    let fdnum = CString::new(errfd.to_string()).expect("digits");
    let mut args: Vec<&CStr> = vec![c"tinyrt-exec", &fdnum, path];
    args.extend_from_slice(argv);
    // The stub marks errfd close-on-exec itself, right before the program's execve.
    unsafe { libc::fcntl(errfd, libc::F_SETFD, 0) };
    // By path first: execve is the syscall the program's own exec needs anyway (a seccomp
    // filter may allow execve and not execveat); execveat where /proc is not mounted.
    let p = format!("/proc/self/fd/{}", stub.as_raw_fd());
    let mut e = nix::unistd::execve(CString::new(p).expect("no NUL").as_c_str(), &args, envp).unwrap_err();
    if e == Errno::ENOENT {
        e = nix::unistd::execveat(stub, c"", &args, envp, nix::fcntl::AtFlags::AT_EMPTY_PATH).unwrap_err();
    }
    unsafe { libc::fcntl(errfd, libc::F_SETFD, libc::FD_CLOEXEC) };
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No label (or empty ones): the trampoline stays in use, and nothing is re-executed.
    #[test]
    fn unlabelled_keeps_the_trampoline() {
        labelled(None, None).unwrap();
        labelled(Some(""), Some("")).unwrap();
        assert!(!NOT_UNDER_LABEL.load(std::sync::atomic::Ordering::Relaxed));
    }

    /// The stub runs a program, closes the error fd on success, and reports a failed execve
    /// as the channel's JSON error; its memfd cannot be written.
    #[test]
    fn trampoline_runs_and_reports() {
        prepare().unwrap();
        let stub = SEALED_STUB.get().unwrap();
        // Even reopened for writing (as the attack does through /proc/PID/exe), no write lands.
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{}", stub.as_raw_fd()))
            .unwrap();
        let e = std::io::Write::write(&mut w, b"PWNED").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
        drop(w);
        for (path, want_code, want_msg) in [("/bin/true", 0, ""), ("/nonexistent/x", 127, "\"errno\":2")] {
            let (r, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
            let p = CString::new(path).unwrap();
            match unsafe { nix::unistd::fork() }.unwrap() {
                nix::unistd::ForkResult::Child => {
                    drop(r);
                    let e = execve(wr.as_raw_fd(), &p, &[c"x"], &[]);
                    eprintln!("trampoline: {e}");
                    unsafe { libc::_exit(99) }
                }
                nix::unistd::ForkResult::Parent { child } => {
                    drop(wr);
                    let mut text = String::new();
                    std::io::Read::read_to_string(&mut std::fs::File::from(r), &mut text).unwrap();
                    let st = nix::sys::wait::waitpid(child, None).unwrap();
                    assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, want_code), "{path}: {text}");
                    assert!(text.contains(want_msg), "{path}: {text:?}");
                    if want_code != 0 {
                        let m: crate::process::channel::Msg = serde_json::from_str(&text).unwrap();
                        assert!(matches!(m, crate::process::channel::Msg::Error { errno: 2, .. }), "{m:?}");
                    }
                }
            }
        }
    }
}
