//! `delete`: stop what is left (a created container, or a running one with --force), run
//! poststop hooks, remove everything the container had. A half-made container (its create
//! was killed) is cleaned the same way.

use super::{Error, Result, hook_state, pidfd, wait_pidfd};
use crate::hooks;
use crate::state::{StateError, Status, Store};
use oci_spec::runtime::Spec;
use std::time::Duration;

/// The spec saved at create, if it is there and whole.
pub(super) fn saved_spec(store: &Store, id: &str) -> Option<Spec> {
    let text = std::fs::read(store.path_of(id).join("config.json")).ok()?;
    serde_json::from_slice(&text).ok()
}

pub fn delete(store: &Store, id: &str, force: bool) -> Result<()> {
    let dir = match store.open(id) {
        Ok(d) => d,
        // runc: deleting a container that does not exist is fine with --force.
        Err(StateError::NotFound(_)) if force => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let st = match dir.read_state() {
        Ok(s) => Some(s),
        // No state.json: create died before writing it; nothing ran.
        Err(StateError::NotFound(_) | StateError::Corrupt { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(st) = &st {
        let status = st.status();
        match status {
            Status::Stopped => {}
            Status::Running | Status::Paused if !force => {
                return Err(Error::Status(format!("cannot delete container {id} that is not stopped: {status}")));
            }
            _ => {
                let pid = st.pid.unwrap_or(0);
                if let Some(fd) = pidfd(pid, st.pid_start) {
                    for p in super::kill::container_processes(st) {
                        if p != pid {
                            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
                        }
                    }
                    let _ = super::kill::send(&fd, libc::SIGKILL);
                    // Frozen processes cannot die: thaw them once the signal is pending.
                    if status == Status::Paused {
                        let _ = st.cgroup.freeze(false);
                    }
                    if !wait_pidfd(&fd, Duration::from_secs(10)) {
                        return Err(Error::Status(format!("container {id}: init {pid} did not die after SIGKILL")));
                    }
                }
            }
        }
        if st.status != Status::Creating
            && let Some(spec) = saved_spec(store, id)
            && let Some(h) = spec.hooks().as_ref().and_then(|h| h.poststop().as_ref())
            && let Err(e) = hooks::run_all("poststop", h, &hook_state(st, "stopped"))
        {
            // The spec: a failing poststop hook is logged, and the delete goes on.
            crate::cli::warn(&e.to_string());
        }
        // Both cleanups run whatever the other did; the state dir stays for a retry on error.
        let cgroups = st.cgroup.remove();
        let rootfs = crate::image::overlay::unmount_rootfs(&st.annotations, &st.rootfs, dir.path());
        cgroups?;
        rootfs.map_err(|e| Error::Usage(format!("unmounting the rootfs: {e}")))?;
    }
    dir.remove()?;
    Ok(())
}
