//! The container's init, step by step: from a forked copy of tinyrt to the user's program.
//! Until `Ready` every failure goes back over the channel; after it (waiting for `start`),
//! failures are written into the exec fifo, where `start` reads them.

use super::channel::{Channel, Msg};
use super::{InitConfig, ProcessError, child_fail};
use crate::hooks;
use crate::linux::caps::{self, CapSets};
use crate::linux::namespaces::clone_flag;
use crate::linux::rootfs::{self, RootfsCtx};
use crate::linux::seccomp::Filter;
use crate::linux::{Ctx, fds, tty, user};
use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;
use oci_spec::runtime::{LinuxNamespaceType as T, Process};
use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub fn run(cfg: &InitConfig, chan: &Channel) -> ! {
    match setup(cfg, chan) {
        Ok((exe, state)) => wait_and_exec(cfg, exe, &state),
        Err(e) => child_fail(chan, e),
    }
}

/// Everything up to `Ready`. Returns the program to run and the state for hooks.
fn setup(cfg: &InitConfig, chan: &Channel) -> Result<(Exe, String), ProcessError> {
    // Nobody in the container may open /proc/<init>/exe (the runtime binary) while we set up.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let spec = &cfg.bundle.spec;
    let process = spec.process().as_ref().expect("validated: process present");
    // The parent makes the cgroups and puts us in them while we mount what needs no cgroup;
    // `Proceed` (with the state for hooks) says we are in. Only then the cgroup namespace,
    // rooted at our cgroup.
    let proceeded: std::cell::RefCell<Option<String>> = std::cell::RefCell::new(None);
    let enter_cgroup = || -> crate::linux::Result<()> {
        if proceeded.borrow().is_some() {
            return Ok(());
        }
        let state = match chan.recv() {
            Ok(Msg::Proceed { state }) => state,
            Ok(other) => {
                return Err(crate::linux::invalid(format!(
                    "unexpected message from the parent: {other:?} (wanted Proceed)"
                )));
            }
            Err(e) => return Err(crate::linux::invalid(format!("waiting for the parent: {e}"))),
        };
        if cfg.ns.creates(T::Cgroup) {
            nix::sched::unshare(clone_flag(T::Cgroup)).ctx(|| "linux.namespaces (cgroup): unshare")?;
        }
        *proceeded.borrow_mut() = Some(state);
        Ok(())
    };
    nix::unistd::setsid().ctx(|| "setsid")?;
    if !cfg.no_new_keyring {
        join_session_keyring(&cfg.bundle.spec)?;
    }
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string()).ctx(|| format!("process.oomScoreAdj: writing {adj}"))?;
    }

    let cx = RootfsCtx {
        spec,
        rootfs: &cfg.bundle.rootfs,
        bundle: &cfg.bundle.dir,
        userns: cfg.ns.has(T::User),
        cgroupns: cfg.ns.has(T::Cgroup),
        enter_cgroup: &enter_cgroup,
    };
    let _root = rootfs::prepare(&cx)?;
    enter_cgroup()?;
    let state = proceeded.take().expect("entered the cgroup");

    if cfg.has_create_hooks() {
        chan.send(&Msg::RunCreateHooks)?;
        chan.expect(Msg::CreateHooksDone)?;
        if let Some(h) = spec.hooks().as_ref().and_then(|h| h.create_container().as_ref()) {
            hooks::run_all("createContainer", h, &state).map_err(|e| hook_err(&e))?;
        }
    }
    drop(_root);
    rootfs::pivot(&cfg.bundle.rootfs, cfg.no_pivot)?;

    if process.terminal().unwrap_or(false) {
        setup_terminal(cfg, process)?;
    }
    if let Some(h) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        nix::unistd::sethostname(h).ctx(|| "hostname: sethostname")?;
    }
    if let Some(d) = spec.domainname().as_deref().filter(|h| !h.is_empty())
        && unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) } != 0
    {
        return Err(nix::errno::Errno::last())
            .ctx(|| "domainname: setdomainname")
            .map_err(Into::into);
    }
    for (k, v) in spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()).into_iter().flatten() {
        let path = format!("/proc/sys/{}", k.replace('.', "/"));
        std::fs::write(&path, v).ctx(|| format!("linux.sysctl.{k}: writing {path}"))?;
    }
    rootfs::finish(spec)?;

    let mut exe = become_process(process, cfg.preserve_fds, cfg.seccomp.as_ref())?;
    if let Some(fd) = exe.notify_fd.take() {
        chan.send_fd(&Msg::SeccompFd, fd.as_raw_fd())?;
    }
    chan.send(&Msg::Ready)?;
    Ok((exe, state))
}

/// The process attributes, in runc's order: rlimits, stdio owner, bounding set, user,
/// capabilities, noNewPrivileges, cwd; then the program is looked up and every fd but
/// stdio and the preserved ones is marked close-on-exec. Shared by init and exec.
pub(super) fn become_process(process: &Process, preserve_fds: u32, seccomp: Option<&Filter>) -> Result<Exe, ProcessError> {
    crate::linux::rlimits::apply(process.rlimits().as_deref().unwrap_or(&[]))?;
    // Without noNewPrivileges, loading a filter needs CAP_SYS_ADMIN: do it while we have it.
    // With it, the filter goes on as late as possible, right before exec (see Exe::exec),
    // unless it has notify rules: their fd must reach the parent before we report ready.
    let nnp = process.no_new_privileges().unwrap_or(false);
    let mut notify_fd = None;
    let mut late = false;
    if let Some(f) = seccomp {
        if nnp && f.notify {
            nix::sys::prctl::set_no_new_privs().ctx(|| "process.noNewPrivileges")?;
        }
        if !nnp || f.notify {
            notify_fd = load_seccomp(f)?;
        } else {
            late = true;
        }
    }
    if !process.terminal().unwrap_or(false) {
        user::chown_stdio(process.user().uid(), process.user().gid())?;
    }
    let sets = CapSets::from_spec(process.capabilities().as_ref())?;
    caps::drop_bounding(&sets)?;
    let allow_setgroups = true;
    user::switch(process.user(), allow_setgroups)?;
    caps::apply(&sets)?;
    if process.no_new_privileges().unwrap_or(false) {
        nix::sys::prctl::set_no_new_privs().ctx(|| "process.noNewPrivileges")?;
    }
    nix::unistd::chdir(process.cwd()).ctx(|| format!("process.cwd: chdir {}", process.cwd().display()))?;
    // The cwd must be inside the container's root: a cwd reached through a leaked fd
    // (runc CVE-2024-21626) is outside it, and getcwd says "(unreachable)".
    match nix::unistd::getcwd() {
        Ok(p) if p.is_absolute() => {}
        _ => return Err(crate::linux::invalid(format!("process.cwd: {} is outside the container", process.cwd().display())).into()),
    }
    let mut exe = Exe::resolve(process)?;
    exe.late_seccomp = late;
    exe.notify_fd = notify_fd;
    crate::linux::lsm::apply_on_exec(process.apparmor_profile().as_deref(), process.selinux_label().as_deref())?;

    for fd in 3..3 + preserve_fds as i32 {
        fds::keep(fd);
    }
    fds::cloexec_from(3 + preserve_fds)?;
    Ok(exe)
}

/// Load the filter; the notify fd when it has notify rules.
fn load_seccomp(f: &Filter) -> Result<Option<OwnedFd>, ProcessError> {
    use std::os::fd::FromRawFd;
    let fd = f.load().map_err(|e| crate::linux::invalid(e.to_string()))?;
    Ok(fd.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// A new session keyring, so the container does not share the caller's keys (as runc).
fn join_session_keyring(spec: &oci_spec::runtime::Spec) -> Result<(), ProcessError> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    let name = std::ffi::CString::new(format!("_ses.{}", spec.hostname().as_deref().unwrap_or("tinyrt"))).unwrap_or_default();
    let r = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) };
    match nix::errno::Errno::last() {
        // No keyring support in this kernel, or no quota left: runc carries on too.
        _ if r >= 0 => Ok(()),
        nix::errno::Errno::ENOSYS | nix::errno::Errno::EDQUOT => Ok(()),
        e => Err(crate::linux::SysError {
            what: "joining a new session keyring".into(),
            errno: e,
        }
        .into()),
    }
}

fn hook_err(e: &hooks::HookError) -> ProcessError {
    ProcessError::Sys(crate::linux::SysError {
        what: e.to_string(),
        errno: nix::errno::Errno::EIO,
    })
}

fn setup_terminal(cfg: &InitConfig, process: &Process) -> Result<(), ProcessError> {
    let Some(sock) = &cfg.console else {
        return Err(crate::linux::invalid("process.terminal is set but no --console-socket was given").into());
    };
    terminal(sock, process, true)
}

/// Make a pty in the container's devpts, send its master over `sock`, and make the slave
/// our controlling terminal; `/dev/console` is bound to it for an init (as runc does).
pub(super) fn terminal(sock: &OwnedFd, process: &Process, bind_console: bool) -> Result<(), ProcessError> {
    let pty = tty::open_pty()?;
    if let Some(sz) = process.console_size() {
        tty::set_size(&pty.master, sz.height() as u16, sz.width() as u16)?;
    }
    if bind_console {
        let dev = open("/dev", OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).ctx(|| "opening /dev")?;
        let console = crate::linux::fs::resolve_create(&dev, Path::new("console"), crate::linux::fs::Make::File, 0o600)?;
        nix::mount::mount(
            Some(pty.slave_path.as_str()),
            crate::linux::fs::fd_path(&console).as_str(),
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .ctx(|| "binding the pty onto /dev/console")?;
    }
    tty::send_fd(sock.as_raw_fd(), pty.master.as_raw_fd(), &pty.slave_path)?;
    tty::make_controlling(&pty.slave)?;
    Ok(())
}

/// The program to exec: resolved path, argv, envp.
pub(super) struct Exe {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    /// The seccomp filter still has to be loaded (noNewPrivileges: right before exec).
    late_seccomp: bool,
    /// The seccomp notify fd, for the parent to hand to the listener (never exec'd with).
    pub(super) notify_fd: Option<OwnedFd>,
}

fn cstr(s: &str, field: &str) -> Result<CString, ProcessError> {
    CString::new(s).map_err(|_| crate::linux::invalid(format!("{field}: contains a NUL byte")).into())
}

impl Exe {
    /// Load the late seccomp filter (when noNewPrivileges is set), then execve, through the
    /// exec trampoline when there is one (linux/exec_stub.rs): a failure of the program's
    /// own execve is then reported on `errfd` by the trampoline. Returns only on failure.
    pub(super) fn exec(&self, seccomp: Option<&Filter>, errfd: std::os::fd::RawFd) -> Result<std::convert::Infallible, ProcessError> {
        if let Some(f) = seccomp.filter(|_| self.late_seccomp) {
            load_seccomp(f)?;
        }
        let argv: Vec<&std::ffi::CStr> = self.argv.iter().map(|c| c.as_c_str()).collect();
        let envp: Vec<&std::ffi::CStr> = self.envp.iter().map(|c| c.as_c_str()).collect();
        Err(crate::linux::SysError {
            what: format!("process.args[0]: exec {:?}", self.path),
            errno: crate::linux::exec_stub::execve(errfd, &self.path, &argv, &envp),
        }
        .into())
    }

    fn resolve(p: &Process) -> Result<Exe, ProcessError> {
        let args = p.args().as_deref().unwrap_or(&[]);
        let mut env: Vec<String> = p.env().clone().unwrap_or_default();
        if !env.iter().any(|e| e.starts_with("HOME=")) {
            env.push(format!("HOME={}", user::home_of(p.user().uid())));
        }
        let path_var = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        let path = find_program(&args[0], path_var)?;
        refuse_runtime_binary(&path)?;
        Ok(Exe {
            path: CString::new(path.as_os_str().as_bytes()).map_err(|_| crate::linux::invalid("process.args[0]: NUL byte"))?,
            argv: args.iter().map(|a| cstr(a, "process.args")).collect::<Result<_, _>>()?,
            envp: env.iter().map(|e| cstr(e, "process.env")).collect::<Result<_, _>>()?,
            late_seccomp: false,
            notify_fd: None,
        })
    }
}

/// Look `prog` up as execvp would, with the container's PATH.
fn find_program(prog: &str, path_var: &str) -> Result<PathBuf, ProcessError> {
    let executable = |p: &Path| nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok() && !p.is_dir();
    if prog.contains('/') {
        let p = PathBuf::from(prog);
        if executable(&p) {
            return Ok(p);
        }
        let errno = nix::unistd::access(p.as_path(), nix::unistd::AccessFlags::X_OK)
            .err()
            .unwrap_or(nix::errno::Errno::EACCES);
        return Err(crate::linux::SysError {
            what: format!("process.args[0]: exec {prog:?}"),
            errno,
        }
        .into());
    }
    for dir in path_var.split(':') {
        let p = Path::new(if dir.is_empty() { "." } else { dir }).join(prog);
        if executable(&p) {
            return Ok(p);
        }
    }
    Err(crate::linux::SysError {
        what: format!("process.args[0]: exec {prog:?}: executable file not found in $PATH"),
        errno: nix::errno::Errno::ENOENT,
    }
    .into())
}

/// A program that is the runtime binary itself (say through /proc/self/exe) would give the
/// container a handle on the host's tinyrt (runc CVE-2019-5736): refuse it.
fn refuse_runtime_binary(path: &Path) -> Result<(), ProcessError> {
    let (Ok(a), Ok(b)) = (nix::sys::stat::stat(path), nix::sys::stat::stat("/proc/self/exe")) else {
        return Ok(());
    };
    if a.st_dev == b.st_dev && a.st_ino == b.st_ino {
        return Err(crate::linux::invalid(format!("process.args[0]: {} is the runtime binary", path.display())).into());
    }
    Ok(())
}

/// Block until `start` opens the fifo, run startContainer hooks, exec. A failure from here on
/// is written into the fifo for `start` to print.
fn wait_and_exec(cfg: &InitConfig, exe: Exe, state: &str) -> ! {
    let w = loop {
        match open(
            format!("/proc/self/fd/{}", cfg.fifo.as_raw_fd()).as_str(),
            OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(fd) => break fd,
            Err(_) => unsafe { libc::_exit(126) },
        }
    };
    let mut w = std::fs::File::from(w);
    let _ = w.write_all(b"0");
    if let Some(h) = cfg.bundle.spec.hooks().as_ref().and_then(|h| h.start_container().as_ref()) {
        let state = state.replacen("\"status\":\"creating\"", "\"status\":\"created\"", 1);
        if let Err(e) = hooks::run_all("startContainer", h, &state) {
            let _ = write!(w, "{e}");
            unsafe { libc::_exit(1) }
        }
    }
    let Err(err) = exe.exec(cfg.seccomp.as_ref(), w.as_raw_fd());
    let _ = write!(w, "{err}");
    unsafe { libc::_exit(127) }
}
