//! The process model. `tinyrt create` (the parent) forks an intermediate process that
//! enters the namespaces given by path, creates the user namespace (the parent writes its
//! id maps), unshares the other namespaces and forks the container's init, which becomes
//! PID 1 of a new pid namespace. When there is nothing for an intermediate to do first (no
//! namespace joined by path, no time namespace, whose offsets must be written before any
//! process is in it), the parent clones the init straight into its new namespaces instead
//! (writing the id maps of a new user namespace right after), which saves a process. Parent and children talk over one socketpair with typed
//! messages ([`channel::Msg`]); every failure in a child travels back as `Msg::Error` and
//! is printed by the parent. Forks happen only from single-threaded processes.

pub mod channel;
pub mod exec;
pub mod init;

use crate::linux::namespaces::{NsPlan, write_id_maps, write_time_offsets};
use crate::linux::{Ctx, SysError};
use crate::spec::Bundle;
use channel::{Channel, ChannelError, Msg};
use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork};
use std::os::fd::{AsRawFd, OwnedFd};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Sys(#[from] SysError),
    #[error(transparent)]
    Channel(#[from] ChannelError),
}

/// What the container's first process needs; the children see it through fork.
pub struct InitConfig<'a> {
    pub bundle: &'a Bundle,
    pub ns: NsPlan,
    /// An O_PATH fd of the exec fifo `start` opens to release the container. Opened by the
    /// parent: the container's user may not be able to walk the path to the state dir.
    pub fifo: OwnedFd,
    /// Connected --console-socket, when process.terminal is set.
    pub console: Option<OwnedFd>,
    pub preserve_fds: u32,
    pub no_pivot: bool,
    /// Keep the caller's session keyring instead of a new one (--no-new-keyring).
    pub no_new_keyring: bool,
    /// linux.seccomp, built (and so checked) before the fork.
    pub seccomp: Option<crate::linux::seccomp::Filter>,
}

impl InitConfig<'_> {
    /// Whether init stops before pivot_root for prestart/createRuntime hooks.
    pub fn has_create_hooks(&self) -> bool {
        self.bundle.spec.hooks().as_ref().is_some_and(|h| {
            [h.prestart(), h.create_runtime(), h.create_container()]
                .iter()
                .any(|l| l.as_ref().is_some_and(|v| !v.is_empty()))
        })
    }
}

/// A container init that exists and waits for the parent's next message.
pub struct Launch {
    pub chan: Channel,
    pub pid: i32,
}

impl Launch {
    /// Kill the half-made container (used when create fails after the fork).
    pub fn abort(&self) {
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        // The caller is a subreaper: init was reparented to us when the intermediate exited.
        let _ = waitpid(Pid::from_raw(self.pid), None);
    }
}

/// Fork the intermediate process (or clone the init directly) and return once the
/// container's init exists.
pub fn launch(cfg: &InitConfig) -> Result<Launch, ProcessError> {
    let time = CloneFlags::from_bits_retain(libc::CLONE_NEWTIME);
    if cfg.ns.join.is_empty() && !cfg.ns.new.intersects(time) {
        return launch_direct(cfg);
    }
    let (parent, child) = Channel::pair()?;
    match unsafe { fork() }.ctx(|| "fork")? {
        ForkResult::Child => {
            drop(parent);
            close_inherited(cfg, &child);
            intermediate(cfg, child)
        }
        ForkResult::Parent { child: mid } => {
            drop(child);
            let res = drive_intermediate(cfg, &parent, mid.as_raw());
            let _ = waitpid(mid, None);
            match res {
                Ok(pid) => Ok(Launch { chan: parent, pid }),
                Err(e) => {
                    let _ = kill(mid, Signal::SIGKILL);
                    Err(e)
                }
            }
        }
    }
}

/// The fds a container's first process keeps from its parent: the channel, the fifo, the
/// console, the exec trampoline, and the --preserve-fds range (3..3+N).
fn close_inherited(cfg: &InitConfig, chan: &Channel) {
    let mut keep = vec![chan.as_raw_fd(), cfg.fifo.as_raw_fd()];
    keep.extend(cfg.console.as_ref().map(|c| c.as_raw_fd()));
    keep.extend(crate::linux::exec_stub::fd());
    crate::linux::fds::close_from_except(3 + cfg.preserve_fds as i32, &keep);
}

/// The container starts with no signal blocked (`run` blocks some to wait for them).
fn unblock_signals() {
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
}

/// clone(2) the init into its new namespaces from this (single-threaded) process: like fork,
/// the child runs on a copy of our stack. With a user namespace, the other new namespaces
/// are owned by it (as after unshare(USER) then unshare(rest)); the child waits for the id
/// maps the parent writes, then becomes root in it. The cgroup namespace is still unshared by
/// the init itself, once it is in its cgroup.
fn launch_direct(cfg: &InitConfig) -> Result<Launch, ProcessError> {
    let (parent, child) = Channel::pair()?;
    let userns = cfg.ns.new.contains(CloneFlags::CLONE_NEWUSER);
    let flags = cfg.ns.new.bits() & !CloneFlags::CLONE_NEWCGROUP.bits();
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        let errno = nix::errno::Errno::last();
        return Err(SysError {
            what: format!(
                "clone of the container init with namespaces {:?}",
                CloneFlags::from_bits_retain(flags)
            ),
            errno,
        }
        .into());
    }
    if pid == 0 {
        drop(parent);
        close_inherited(cfg, &child);
        unblock_signals();
        if userns
            && let Err(e) = child
                .expect(Msg::MapsWritten)
                .map_err(ProcessError::from)
                .and_then(|()| root_in_userns())
        {
            child_fail(&child, e)
        }
        init::run(cfg, &child)
    }
    drop(child);
    let launch = Launch {
        chan: parent,
        pid: pid as i32,
    };
    if userns {
        let linux = cfg.bundle.spec.linux().as_ref().expect("a user namespace implies a linux section");
        if let Err(e) = write_id_maps(launch.pid, linux)
            .map_err(ProcessError::from)
            .and_then(|()| launch.chan.send(&Msg::MapsWritten).map_err(Into::into))
        {
            launch.abort();
            return Err(e);
        }
    }
    Ok(launch)
}

/// In a new user namespace whose maps are written: become its root (uid and gid 0).
fn root_in_userns() -> Result<(), ProcessError> {
    let root = (nix::unistd::Gid::from_raw(0), nix::unistd::Uid::from_raw(0));
    nix::unistd::setresgid(root.0, root.0, root.0).ctx(|| "setresgid 0 in the user namespace (is 0 mapped in linux.gidMappings?)")?;
    nix::unistd::setresuid(root.1, root.1, root.1).ctx(|| "setresuid 0 in the user namespace (is 0 mapped in linux.uidMappings?)")?;
    // Changing ids made us non-dumpable, so /proc/self belongs to the host's root (and
    // timens_offsets could not be written). Nothing else lives in this user namespace yet.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
    Ok(())
}

fn drive_intermediate(cfg: &InitConfig, chan: &Channel, mid: i32) -> Result<i32, ProcessError> {
    loop {
        match chan.recv()? {
            Msg::UserNsReady => {
                let linux = cfg.bundle.spec.linux().as_ref().expect("a user namespace implies a linux section");
                write_id_maps(mid, linux)?;
                chan.send(&Msg::MapsWritten)?;
            }
            Msg::InitPid(pid) => return Ok(pid),
            other => {
                return Err(ChannelError::Unexpected {
                    got: format!("{other:?}"),
                    want: "InitPid",
                }
                .into());
            }
        }
    }
}

/// Report a child's failure to the parent and exit.
pub(crate) fn child_fail(chan: &Channel, e: ProcessError) -> ! {
    let msg = match e {
        ProcessError::Sys(s) => Msg::Error {
            what: s.what,
            errno: s.errno as i32,
        },
        ProcessError::Channel(c) => Msg::Error {
            what: c.to_string(),
            errno: 0,
        },
    };
    let _ = chan.send(&msg);
    unsafe { libc::_exit(1) }
}

fn intermediate(cfg: &InitConfig, chan: Channel) -> ! {
    match intermediate_steps(cfg, &chan) {
        Ok(init_pid) => {
            let _ = chan.send(&Msg::InitPid(init_pid));
            unsafe { libc::_exit(0) }
        }
        Err(e) => child_fail(&chan, e),
    }
}

fn intermediate_steps(cfg: &InitConfig, chan: &Channel) -> Result<i32, ProcessError> {
    unblock_signals();
    crate::linux::namespaces::join_all(&cfg.ns)?;
    if cfg.ns.new.contains(CloneFlags::CLONE_NEWUSER) {
        nix::sched::unshare(CloneFlags::CLONE_NEWUSER).ctx(|| "linux.namespaces (user): unshare")?;
        chan.send(&Msg::UserNsReady)?;
        chan.expect(Msg::MapsWritten)?;
        root_in_userns()?;
    }
    // Raw bits: CLONE_NEWTIME is not a named CloneFlags bit, and `!` would drop it.
    let rest = CloneFlags::from_bits_retain(cfg.ns.new.bits() & !(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWCGROUP).bits());
    if !rest.is_empty() {
        nix::sched::unshare(rest).ctx(|| format!("unsharing namespaces {rest:?}"))?;
    }
    if rest.contains(CloneFlags::from_bits_retain(libc::CLONE_NEWTIME))
        && let Some(linux) = cfg.bundle.spec.linux()
    {
        write_time_offsets(linux)?;
    }
    match unsafe { fork() }.ctx(|| "fork of the container init")? {
        ForkResult::Child => init::run(cfg, chan),
        ForkResult::Parent { child } => Ok(child.as_raw()),
    }
}
