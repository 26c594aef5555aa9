//! `start`: open the exec fifo, which releases the waiting init; read back its verdict
//! (an error text if the exec or a startContainer hook failed); run poststart hooks.

use super::{Error, Result, hook_state, pidfd};
use crate::hooks;
use crate::state::{Status, Store};
use nix::fcntl::{OFlag, open};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::stat::Mode;
use std::io::Read;
use std::os::fd::AsFd;

pub fn start(store: &Store, id: &str) -> Result<()> {
    let dir = store.open(id)?;
    let mut st = dir.read_state()?;
    match st.status() {
        Status::Created => {}
        Status::Stopped => return Err(Error::Status(format!("cannot start a container that has stopped: {id}"))),
        s => return Err(Error::Status(format!("cannot start container {id}: it is {s}, not created"))),
    }
    // The pidfd first: opening the fifo releases the init, which may exec and exit at once.
    let pid = st.pid.unwrap_or(0);
    let Some(pfd) = pidfd(pid, st.pid_start) else {
        return Err(Error::Status(format!("container {id}: its init process is gone")));
    };
    let fifo_path = dir.path().join("exec.fifo");
    let fifo =
        open(&fifo_path, OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC, Mode::empty()).map_err(|e| crate::linux::SysError {
            what: format!("opening {}", fifo_path.display()),
            errno: e,
        })?;
    // Wait for the init's "0" (it opened its end), or for the init to die.
    let mut fds = [
        PollFd::new(fifo.as_fd(), PollFlags::POLLIN),
        PollFd::new(pfd.as_fd(), PollFlags::POLLIN),
    ];
    loop {
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                return Err(crate::linux::SysError {
                    what: "poll on the exec fifo".into(),
                    errno: e,
                }
                .into());
            }
            Ok(_) => break,
        }
    }
    let ready = fds[0]
        .revents()
        .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP));
    if !ready {
        return Err(Error::Status(format!("container {id}: its init process exited before start")));
    }
    // Now blocking: read until the init's exec closes the write end.
    nix::fcntl::fcntl(&fifo, nix::fcntl::FcntlArg::F_SETFL(OFlag::empty())).ok();
    let mut text = Vec::new();
    let _ = std::fs::File::from(fifo).read_to_end(&mut text);
    let _ = std::fs::remove_file(&fifo_path);
    match text.split_first() {
        Some((b'0', [])) => {}
        Some((b'0', rest)) => {
            st.status = Status::Stopped;
            dir.write_state(&st)?;
            return Err(Error::Status(format!("starting container {id}: {}", exec_failure(rest))));
        }
        _ => return Err(Error::Status(format!("container {id}: its init process exited before start"))),
    }
    st.status = Status::Running;
    dir.write_state(&st)?;
    drop(dir);
    let hooks = super::delete::saved_hooks(store, id);
    if let Some(h) = hooks.as_ref().and_then(|h| h.poststart().as_ref()) {
        // A failing poststart hook is a warning: the container runs on.
        if let Err(e) = hooks::run_all("poststart", h, &hook_state(&st, "running")) {
            crate::cli::warn(&e.to_string());
        }
    }
    Ok(())
}

/// The init's failure as written into the fifo: its own text, or the exec trampoline's
/// JSON error message (linux/exec_stub.rs), written as the init would have.
fn exec_failure(text: &[u8]) -> String {
    match serde_json::from_slice(text) {
        Ok(crate::process::channel::Msg::Error { what, errno }) => {
            format!("{what}: {}", crate::linux::errno_text(nix::errno::Errno::from_raw(errno)))
        }
        _ => String::from_utf8_lossy(text).into_owned(),
    }
}
