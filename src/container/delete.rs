//! `delete`: stop what is left (a created container, or a running one with --force), run
//! poststop hooks, remove everything the container had. A half-made container (its create
//! was killed) is cleaned the same way.

use super::{Error, Result, hook_state, pidfd, wait_pidfd};
use crate::hooks;
use crate::state::{StateError, Status, Store};
use std::time::Duration;

/// Part of the spec saved at create, as `T` (a struct naming only the fields wanted): the
/// rest of config.json is skipped by serde, not built, which is most of the cost of reading it.
fn saved<T: serde::de::DeserializeOwned>(store: &Store, id: &str) -> Option<T> {
    let text = std::fs::read(store.path_of(id).join("config.json")).ok()?;
    serde_json::from_slice(&text).ok()
}

/// `hooks` of the saved spec (all start and delete need).
pub(super) fn saved_hooks(store: &Store, id: &str) -> Option<oci_spec::runtime::Hooks> {
    #[derive(serde::Deserialize)]
    struct HooksOnly {
        hooks: Option<oci_spec::runtime::Hooks>,
    }
    saved::<HooksOnly>(store, id)?.hooks
}

/// What exec takes from the saved spec: `process` (the defaults it inherits) and
/// `linux.seccomp` (the filter it gets too).
#[derive(serde::Deserialize, Default)]
pub(super) struct ExecParts {
    pub process: Option<oci_spec::runtime::Process>,
    #[serde(default)]
    pub linux: SeccompOnly,
}

#[derive(serde::Deserialize, Default)]
pub(super) struct SeccompOnly {
    pub seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
}

pub(super) fn saved_exec_parts(store: &Store, id: &str) -> ExecParts {
    saved(store, id).unwrap_or_default()
}

/// How long `delete --force` waits for the init to die after SIGKILL.
const INIT_PATIENCE: Duration = Duration::from_secs(10);

fn kill_all(pids: &[i32]) {
    for &p in pids {
        if p > 0 {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Why the init of `st` is still there after SIGKILL, for the error: the processes left of the
/// container, and whether zombies among them hold it up. (A PID namespace's init only
/// finishes exiting once every process of its namespace is reaped, and a process `exec`
/// started is reaped by whoever ran `exec` or adopted it as their subreaper.)
fn why_alive(st: &crate::state::State, init: i32) -> String {
    let left: Vec<i32> = super::kill::container_processes(st)
        .into_iter()
        .filter(|&p| std::path::Path::new(&format!("/proc/{p}")).exists())
        .collect();
    let zombies = left
        .iter()
        .any(|&p| p != init && matches!(crate::linux::proc::stat(p), Some(('Z', _))));
    let mut msg = format!("processes remain: {}", crate::cgroups::describe_processes(&left));
    if zombies {
        msg += "; the init of a PID namespace only finishes dying once every process of the \
                namespace has been reaped: the zombies' parent must wait for them";
    }
    msg + "; the container is kept: run `delete --force` again once they are gone"
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
            Status::Stopped => {
                // The init is gone, but processes may be left in the cgroup (without a PID
                // namespace they outlive it): --force ends them, or the cgroup stays busy.
                if force {
                    kill_all(&st.cgroup.created_procs());
                }
            }
            Status::Running | Status::Paused if !force => {
                return Err(Error::Status(format!("cannot delete container {id} that is not stopped: {status}")));
            }
            _ => {
                let pid = st.pid.unwrap_or(0);
                let fd = pidfd(pid, st.pid_start);
                match &fd {
                    Some(fd) => {
                        let procs = super::kill::container_processes(st);
                        kill_all(&procs.into_iter().filter(|p| *p != pid).collect::<Vec<_>>());
                        let _ = super::kill::send(fd, libc::SIGKILL);
                    }
                    // No init (a half-made container) or it is gone, and its pid may be
                    // another process's now: only what is left in our own cgroup.
                    None => kill_all(&st.cgroup.created_procs()),
                }
                // Frozen processes cannot die: thaw them once the signal is pending.
                if status == Status::Paused {
                    let _ = st.cgroup.freeze(false);
                }
                if let Some(fd) = &fd
                    && !wait_pidfd(fd, INIT_PATIENCE)
                {
                    // Nothing is removed: the state stays, and `delete --force` can finish later.
                    return Err(Error::Status(format!(
                        "container {id}: init {pid} did not die within {}s of SIGKILL; {}",
                        INIT_PATIENCE.as_secs(),
                        why_alive(st, pid)
                    )));
                }
            }
        }
        // Also for a half-made container: its create may have been killed inside or after
        // its createRuntime hooks (the network hook's lease and veth), and poststop is where
        // they are undone, as create's own clean-up on failure does.
        if let Some(hooks) = saved_hooks(store, id)
            && let Some(h) = hooks.poststop().as_ref()
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
