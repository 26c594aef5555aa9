//! OCI hooks: each runs with the container state JSON on stdin, its own args and env, and an
//! optional timeout; its output is captured so a failure message can show it.

use oci_spec::runtime::Hook;
use std::io::{Read, Seek, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
#[error("hooks.{kind}[{index}] ({path}): {msg}")]
pub struct HookError {
    pub kind: String,
    pub index: usize,
    pub path: String,
    pub msg: String,
}

/// Run the hooks of one kind in order; the first failure stops the rest.
pub fn run_all(kind: &str, hooks: &[Hook], state: &str) -> Result<(), HookError> {
    for (i, h) in hooks.iter().enumerate() {
        run_one(h, state).map_err(|msg| HookError {
            kind: kind.into(),
            index: i,
            path: h.path().display().to_string(),
            msg,
        })?;
    }
    Ok(())
}

fn capture_file() -> Result<std::fs::File, String> {
    let fd = nix::sys::memfd::memfd_create(c"tinyrt-hook-output", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(|e| format!("memfd_create: {e}"))?;
    Ok(std::fs::File::from(fd))
}

fn run_one(h: &Hook, state: &str) -> Result<(), String> {
    let out = capture_file()?;
    let mut cmd = Command::new(h.path());
    if let Some(args) = h.args().as_deref().filter(|a| !a.is_empty()) {
        cmd.arg0(&args[0]).args(&args[1..]);
    }
    cmd.env_clear();
    for e in h.env().iter().flatten() {
        if let Some((k, v)) = e.split_once('=') {
            cmd.env(k, v);
        }
    }
    // The hook dies with the runtime that waits for it: a tinyrt killed mid-hook leaves no
    // hook running on the host (issue 8). If the runtime is gone before the prctl, exit.
    let parent = std::process::id();
    // SAFETY: prctl and getppid are async-signal-safe; nothing is allocated after the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let err_out = out.try_clone().map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::from(out.try_clone().map_err(|e| e.to_string())?))
        .stderr(Stdio::from(err_out));
    let mut child = cmd.spawn().map_err(|e| format!("cannot run: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine.
        let _ = stdin.write_all(state.as_bytes());
    }
    let status = match h.timeout() {
        None => child.wait().map_err(|e| e.to_string())?,
        Some(secs) => {
            let deadline = Instant::now() + Duration::from_secs(secs.max(1) as u64);
            let mut nap = Duration::from_micros(100);
            loop {
                if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
                    break s;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("timed out after {secs}s"));
                }
                std::thread::sleep(nap);
                nap = (nap * 2).min(Duration::from_millis(10));
            }
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut text = String::new();
    let mut out = out;
    let _ = out.rewind();
    let _ = out.take(4096).read_to_string(&mut text);
    let how = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (_, Some(s)) => format!("killed by signal {s}"),
        _ => "failed".into(),
    };
    let text = text.trim();
    Err(if text.is_empty() { how } else { format!("{how}: {text}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(json: &str) -> Hook {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn state_on_stdin_and_failure_output() {
        let ok = hook(r#"{"path":"/bin/sh","args":["sh","-c","grep -q '\"id\":\"x\"'"]}"#);
        assert!(run_all("poststart", &[ok], r#"{"id":"x"}"#).is_ok());
        let bad = hook(r#"{"path":"/bin/sh","args":["sh","-c","echo boom >&2; exit 3"]}"#);
        let e = run_all("prestart", &[bad], "{}").unwrap_err().to_string();
        assert_eq!(e, "hooks.prestart[0] (/bin/sh): exited with status 3: boom");
    }

    #[test]
    fn timeout_kills() {
        let slow = hook(r#"{"path":"/bin/sleep","args":["sleep","5"],"timeout":1}"#);
        let t = Instant::now();
        let e = run_all("poststop", &[slow], "{}").unwrap_err().to_string();
        assert!(e.ends_with("timed out after 1s"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(4));
    }

    #[test]
    fn env_is_only_the_hooks() {
        let h = hook(r#"{"path":"/bin/sh","args":["sh","-c","test \"$FOO\" = bar && test -z \"$HOME\""],"env":["FOO=bar"]}"#);
        assert!(run_all("createRuntime", &[h], "{}").is_ok());
    }
}
