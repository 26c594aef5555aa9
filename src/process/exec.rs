//! A new process in a running container (`exec`): an intermediate joins every namespace of
//! the container's init (user first), forks the process (so it is inside the pid and time
//! namespaces too), which waits until the parent has put it in the container's cgroup,
//! takes on the process attributes and execs. Its end of the channel is close-on-exec:
//! end of file means the exec happened, a message means it failed and says why.

use super::channel::{Channel, ChannelError, Msg};
use super::init::{become_process, terminal};
use super::{ProcessError, child_fail};
use crate::linux::Ctx;
use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork};
use oci_spec::runtime::Process;
use std::os::fd::{AsRawFd, OwnedFd};

pub struct ExecConfig<'a> {
    pub init_pid: i32,
    pub process: &'a Process,
    pub console: Option<OwnedFd>,
    pub preserve_fds: u32,
    /// The container's seccomp filter, applied to this process too.
    pub seccomp: Option<&'a crate::linux::seccomp::Filter>,
}

/// The new process, forked and waiting for [`ExecLaunch::proceed`].
pub struct ExecLaunch {
    chan: Channel,
    pub pid: i32,
}

impl ExecLaunch {
    /// Let it exec; Ok once the exec happened.
    pub fn proceed(&self, mut on_notify_fd: impl FnMut(OwnedFd) -> Result<(), ProcessError>) -> Result<(), ProcessError> {
        self.chan.send(&Msg::Proceed { state: String::new() })?;
        loop {
            match self.chan.recv_with_fd() {
                Err(ChannelError::Eof(_)) => return Ok(()),
                Err(e) => return Err(e.into()),
                Ok((Msg::SeccompFd, Some(fd))) => on_notify_fd(fd)?,
                Ok((m, _)) => {
                    return Err(ChannelError::Unexpected {
                        got: format!("{m:?}"),
                        want: "end of file",
                    }
                    .into());
                }
            }
        }
    }

    pub fn abort(&self) {
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(self.pid), None);
    }
}

/// The namespaces of a process, in the order to enter them (user first).
const NAMESPACES: [(&str, CloneFlags); 8] = [
    ("user", CloneFlags::CLONE_NEWUSER),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("time", CloneFlags::from_bits_retain(libc::CLONE_NEWTIME)),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

pub fn launch(cfg: &ExecConfig) -> Result<ExecLaunch, ProcessError> {
    let (parent, child) = Channel::pair()?;
    match unsafe { fork() }.ctx(|| "fork")? {
        ForkResult::Child => {
            drop(parent);
            let mut keep = vec![child.as_raw_fd()];
            keep.extend(cfg.console.as_ref().map(|c| c.as_raw_fd()));
            keep.extend(crate::linux::exec_stub::fd());
            crate::linux::fds::close_from_except(3 + cfg.preserve_fds as i32, &keep);
            let _ = nix::sys::signal::sigprocmask(
                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                Some(&nix::sys::signal::SigSet::empty()),
                None,
            );
            match enter(cfg, &child) {
                Ok(pid) => {
                    let _ = child.send(&Msg::InitPid(pid));
                    unsafe { libc::_exit(0) }
                }
                Err(e) => child_fail(&child, e),
            }
        }
        ForkResult::Parent { child: mid } => {
            drop(child);
            let res = parent.recv();
            let _ = waitpid(mid, None);
            match res? {
                Msg::InitPid(pid) => Ok(ExecLaunch { chan: parent, pid }),
                m => Err(ChannelError::Unexpected {
                    got: format!("{m:?}"),
                    want: "InitPid",
                }
                .into()),
            }
        }
    }
}

fn enter(cfg: &ExecConfig, chan: &Channel) -> Result<i32, ProcessError> {
    // Open them all first: after entering the mount namespace /proc is the container's.
    let mut fds = Vec::new();
    for (name, flag) in NAMESPACES {
        let theirs = format!("/proc/{}/ns/{name}", cfg.init_pid);
        let (Ok(a), Ok(b)) = (std::fs::metadata(&theirs), std::fs::metadata(format!("/proc/self/ns/{name}"))) else {
            continue;
        };
        if std::os::unix::fs::MetadataExt::ino(&a) == std::os::unix::fs::MetadataExt::ino(&b) {
            continue;
        }
        fds.push((name, flag, std::fs::File::open(&theirs).ctx(|| format!("opening {theirs}"))?));
    }
    for (name, flag, f) in &fds {
        nix::sched::setns(f, *flag).ctx(|| format!("joining the container's {name} namespace"))?;
    }
    // Keep the container's processes away from /proc/<pid>/exe and /mem of the runtime
    // (CVE-2019-5736): the process is born non-dumpable, visible in the container from its
    // first instruction.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    match unsafe { fork() }.ctx(|| "fork of the exec process")? {
        ForkResult::Child => run(cfg, chan),
        ForkResult::Parent { child } => Ok(child.as_raw()),
    }
}

fn run(cfg: &ExecConfig, chan: &Channel) -> ! {
    let res = (|| -> Result<super::init::Exe, ProcessError> {
        match chan.recv()? {
            Msg::Proceed { .. } => {}
            m => {
                return Err(ChannelError::Unexpected {
                    got: format!("{m:?}"),
                    want: "Proceed",
                }
                .into());
            }
        }
        if cfg.process.terminal().unwrap_or(false) {
            let Some(sock) = &cfg.console else {
                return Err(crate::linux::invalid("process.terminal is set but no console was given").into());
            };
            nix::unistd::setsid().ctx(|| "setsid")?;
            terminal(sock, cfg.process, false)?;
        }
        become_process(cfg.process, cfg.preserve_fds, cfg.seccomp)
    })();
    let res = res.and_then(|mut exe| {
        if let Some(fd) = exe.notify_fd.take() {
            chan.send_fd(&Msg::SeccompFd, fd.as_raw_fd())?;
        }
        Ok(exe)
    });
    match res.and_then(|exe| exe.exec(cfg.seccomp, chan.as_raw_fd())) {
        Ok(never) => match never {},
        Err(e) => child_fail(chan, e),
    }
}
