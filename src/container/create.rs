//! `create`: validate the bundle, record intent, launch the init, run the create-time hooks,
//! and return once the container waits for `start`. Any failure removes what was made.

use super::{Error, Result, hook_state};
use crate::cgroups;
use crate::hooks;
use crate::linux::namespaces::NsPlan;
use crate::process::channel::Msg;
use crate::process::{self, InitConfig, Launch};
use crate::spec::{self, Bundle};
use crate::state::{ContainerDir, State, Status, Store, rfc3339, write_volatile};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default)]
pub struct CreateOpts {
    pub id: String,
    pub bundle: PathBuf,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub preserve_fds: u32,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    /// `run` in the foreground owns the stdio: no console socket needed then.
    pub detached: bool,
    /// Read linux.cgroupsPath as systemd's slice:prefix:name (--systemd-cgroup).
    pub systemd_cgroup: bool,
}

/// Create the container; returns the pid of its init.
pub fn create(store: &Store, o: &CreateOpts) -> Result<i32> {
    crate::state::check_id(&o.id)?;
    let bundle = spec::load_bundle(&o.bundle)?;
    create_loaded(store, o, &bundle, None)
}

/// Whether the bundle asks for a terminal.
pub(super) fn wants_terminal(bundle: &Bundle) -> bool {
    bundle.spec.process().as_ref().and_then(|p| p.terminal()).unwrap_or(false)
}

/// Create from a loaded bundle, optionally with the console already connected (`run`
/// relays the terminal itself).
pub(super) fn create_loaded(store: &Store, o: &CreateOpts, bundle: &Bundle, console: Option<OwnedFd>) -> Result<i32> {
    if let Some(p) = bundle.spec.process() {
        crate::linux::exec_stub::labelled(p.apparmor_profile().as_deref(), p.selinux_label().as_deref())
            .map_err(|e| Error::Usage(format!("protecting the runtime binary: {e}")))?;
    }
    let console = match console {
        Some(c) => Some(c),
        None => connect_console(bundle, o)?,
    };
    let dir = store.create(&o.id)?;
    match create_in(&dir, bundle, o, console) {
        Ok(pid) => Ok(pid),
        Err(e) => {
            let _ = dir.remove();
            Err(e)
        }
    }
}

fn connect_console(bundle: &Bundle, o: &CreateOpts) -> Result<Option<OwnedFd>> {
    let terminal = bundle.spec.process().as_ref().and_then(|p| p.terminal()).unwrap_or(false);
    match (&o.console_socket, terminal) {
        (Some(path), true) => {
            let s = std::os::unix::net::UnixStream::connect(path)
                .map_err(|e| Error::Usage(format!("--console-socket {}: {e}", path.display())))?;
            Ok(Some(OwnedFd::from(s)))
        }
        (None, true) if o.detached => Err(Error::Usage("process.terminal is true: --console-socket is required".into())),
        (None, true) => Err(Error::Usage(
            "process.terminal is true: tinyrt run needs --console-socket for a terminal".into(),
        )),
        (Some(_), false) => Err(Error::Usage("--console-socket given but process.terminal is false".into())),
        (None, false) => Ok(None),
    }
}

fn create_in(dir: &ContainerDir, bundle: &Bundle, o: &CreateOpts, console: Option<OwnedFd>) -> Result<i32> {
    let mut state = State {
        oci_version: bundle.spec.version().clone(),
        id: o.id.clone(),
        status: Status::Creating,
        pid: None,
        pid_start: None,
        bundle: bundle.dir.clone(),
        rootfs: bundle.rootfs.clone(),
        created: rfc3339(std::time::SystemTime::now()),
        annotations: bundle.spec.annotations().clone().unwrap_or_default(),
        cgroup: Default::default(),
    };
    let cgroups_path = bundle.spec.linux().as_ref().and_then(|l| l.cgroups_path().as_deref());
    state.cgroup = cgroups::resolve(cgroups_path, &o.id, o.systemd_cgroup)?;
    state.cgroup.plan();
    // Intent first: a crash from here on leaves a dir that `delete --force` understands.
    dir.write_state(&state)?;
    // An image bundle's rootfs is an overlay of its layers, mounted here, per container.
    crate::image::overlay::mount_rootfs(&state.annotations, &bundle.rootfs, dir.path())
        .map_err(|e| Error::Usage(format!("root.path: {e}")))?;
    let res = launch_and_finish(dir, bundle, o, console, &mut state);
    if res.is_err() {
        let _ = state.cgroup.remove();
        let _ = crate::image::overlay::unmount_rootfs(&state.annotations, &bundle.rootfs, dir.path());
    }
    res
}

fn launch_and_finish(dir: &ContainerDir, bundle: &Bundle, o: &CreateOpts, console: Option<OwnedFd>, state: &mut State) -> Result<i32> {
    dir.write_file("config.json", &serde_json::to_vec(&bundle.spec).expect("spec serializes"))?;
    let fifo = dir.path().join("exec.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o622)).map_err(|e| crate::linux::SysError {
        what: format!("mkfifo {}", fifo.display()),
        errno: e,
    })?;
    // Writable by whatever user the init has become (umask took the bits away).
    std::fs::set_permissions(&fifo, std::os::unix::fs::PermissionsExt::from_mode(0o622)).map_err(|e| crate::linux::SysError {
        what: format!("chmod {}", fifo.display()),
        errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)),
    })?;

    // Become the reaper of the container's init so a failure can reap it (and `run` can wait).
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let cfg = InitConfig {
        bundle,
        ns: NsPlan::from_linux(bundle.spec.linux().as_ref()),
        fifo: nix::fcntl::open(
            &fifo,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| crate::linux::SysError {
            what: format!("opening {}", fifo.display()),
            errno: e,
        })?,
        console,
        preserve_fds: o.preserve_fds,
        no_pivot: o.no_pivot,
        no_new_keyring: o.no_new_keyring,
        seccomp: seccomp_filter(seccomp_of(&bundle.spec))?,
    };
    let launch = process::launch(&cfg)?;
    match finish(dir, &cfg, &launch, state, o) {
        Ok(()) => Ok(launch.pid),
        Err(e) => {
            launch.abort();
            // The spec: a container that fails after it exists goes on to its destruction,
            // and poststop hooks run there (as runc's destroy does).
            if let Some(h) = bundle.spec.hooks().as_ref().and_then(|h| h.poststop().as_ref())
                && let Err(he) = hooks::run_all("poststop", h, &hook_state(state, "stopped"))
            {
                crate::cli::warn(&he.to_string());
            }
            Err(e)
        }
    }
}

fn finish(dir: &ContainerDir, cfg: &InitConfig, launch: &Launch, state: &mut State, o: &CreateOpts) -> Result<()> {
    state.pid = Some(launch.pid);
    state.pid_start = crate::linux::proc::stat(launch.pid).map(|(_, t)| t);
    dir.write_state(state)?;
    // The init mounts what needs no cgroup meanwhile (the second core's work), and waits for
    // Proceed before its cgroup mount, its device nodes and its cgroup namespace: it is in its
    // cgroups, with their limits, before it runs anything of the user's.
    state.cgroup.create()?;
    state.cgroup.enable_all_v2()?;
    if let Some(r) = cfg.bundle.spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
        cgroups::apply_resources(&state.cgroup, r)?;
    }
    state.cgroup.add(launch.pid)?;
    let hstate = hook_state(state, "creating");
    if let Err(e) = launch.chan.send(&Msg::Proceed { state: hstate.clone() }) {
        // The init failed before it needed its cgroup: its error is waiting on the channel.
        return Err(match launch.chan.recv() {
            Err(child @ crate::process::channel::ChannelError::Child { .. }) => child.into(),
            _ => e.into(),
        });
    }
    if cfg.has_create_hooks() {
        launch.chan.expect(Msg::RunCreateHooks)?;
        if let Some(h) = cfg.bundle.spec.hooks() {
            hooks::run_all("prestart", h.prestart().as_deref().unwrap_or(&[]), &hstate)?;
            hooks::run_all("createRuntime", h.create_runtime().as_deref().unwrap_or(&[]), &hstate)?;
        }
        launch.chan.send(&Msg::CreateHooksDone)?;
    }
    loop {
        match launch.chan.recv_with_fd()? {
            (Msg::Ready, _) => break,
            (Msg::SeccompFd, Some(fd)) => send_seccomp_fd(seccomp_of(&cfg.bundle.spec), hook_state(state, "creating"), launch.pid, &fd)?,
            (m, _) => {
                return Err(crate::process::channel::ChannelError::Unexpected {
                    got: format!("{m:?}"),
                    want: "Ready",
                }
                .into());
            }
        }
    }
    state.status = Status::Created;
    dir.write_state(state)?;
    if let Some(p) = &o.pid_file {
        write_pid_file(p, launch.pid)?;
    }
    Ok(())
}

/// linux.seccomp of a spec.
pub(super) fn seccomp_of(spec: &oci_spec::runtime::Spec) -> Option<&oci_spec::runtime::LinuxSeccomp> {
    spec.linux().as_ref().and_then(|l| l.seccomp().as_ref())
}

/// Give the seccomp agent the notify fd of a container process.
pub(super) fn send_seccomp_fd(seccomp: Option<&oci_spec::runtime::LinuxSeccomp>, state: String, pid: i32, fd: &OwnedFd) -> Result<()> {
    use std::os::fd::AsRawFd;
    let Some(s) = seccomp else {
        return Ok(());
    };
    let Some(path) = s.listener_path() else { return Ok(()) };
    let state: serde_json::Value = serde_json::from_str(&state).unwrap_or_default();
    crate::linux::seccomp::send_to_listener(path, s.listener_metadata().as_deref(), state, pid, fd.as_raw_fd())
        .map_err(|e| Error::Usage(e.to_string()))
}

/// linux.seccomp built into a filter (None without one).
pub(super) fn seccomp_filter(seccomp: Option<&oci_spec::runtime::LinuxSeccomp>) -> Result<Option<crate::linux::seccomp::Filter>> {
    match seccomp {
        Some(s) => Ok(Some(crate::linux::seccomp::build(s).map_err(|e| Error::Usage(e.to_string()))?)),
        None => Ok(None),
    }
}

/// The pid file, replaced atomically (engines poll for it).
pub(super) fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let path = std::path::absolute(path).map_err(|e| Error::Usage(format!("--pid-file {}: {e}", path.display())))?;
    write_volatile(&path, pid.to_string().as_bytes(), 0o644)?;
    Ok(())
}
