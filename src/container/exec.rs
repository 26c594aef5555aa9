//! `exec`: run another process in a running (or created) container, from a process.json
//! (`--process`, what the shims pass) or from the command line on top of the container's
//! own process (env, user, capabilities...), as runc builds it.

use super::{Error, Result};
use crate::process::exec::{ExecConfig, launch};
use crate::state::{Status, Store};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use oci_spec::runtime::{Capability, Process};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::str::FromStr;

#[derive(Debug, Clone, Default)]
pub struct ExecOpts {
    pub id: String,
    /// A process.json; otherwise `args` and the flags below.
    pub process: Option<PathBuf>,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: Option<String>,
    pub user: Option<String>,
    pub additional_gids: Vec<u32>,
    pub caps: Vec<String>,
    pub tty: bool,
    pub no_new_privs: bool,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub detach: bool,
    pub preserve_fds: u32,
    /// `--cgroup [controller:]path`: a sub-cgroup of the container's to run in.
    pub cgroup: Vec<String>,
    pub ignore_paused: bool,
    pub apparmor: Option<String>,
    pub process_label: Option<String>,
}

fn usage<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::Usage(msg.into()))
}

/// The process to run: from process.json, or the container's process changed by the flags.
fn build_process(o: &ExecOpts, base: Option<&Process>) -> Result<Process> {
    if let Some(path) = &o.process {
        let text = std::fs::read(path).map_err(|e| Error::Usage(format!("--process {}: {e}", path.display())))?;
        let p: Process = crate::spec::parse_json(&text, path)?;
        return Ok(p);
    }
    if o.args.is_empty() {
        return usage("exec needs a command (or --process FILE)");
    }
    let mut p = base.cloned().unwrap_or_default();
    p.set_args(Some(o.args.clone()));
    p.set_terminal(Some(o.tty));
    let mut env = p.env().clone().unwrap_or_default();
    for e in &o.env {
        let key = e.split('=').next().unwrap_or("");
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    p.set_env(Some(env));
    if let Some(cwd) = &o.cwd {
        p.set_cwd(PathBuf::from(cwd));
    }
    if let Some(u) = &o.user {
        let (uid, gid) = u.split_once(':').unwrap_or((u, "0"));
        let (Ok(uid), Ok(gid)) = (uid.parse::<u32>(), gid.parse::<u32>()) else {
            return usage(format!("--user {u:?}: expected UID[:GID] as numbers"));
        };
        let mut user = p.user().clone();
        user.set_uid(uid);
        user.set_gid(gid);
        p.set_user(user);
    }
    if !o.additional_gids.is_empty() {
        let mut user = p.user().clone();
        user.set_additional_gids(Some(o.additional_gids.clone()));
        p.set_user(user);
    }
    if !o.caps.is_empty() {
        let mut c = p.capabilities().clone().unwrap_or_default();
        for name in &o.caps {
            let stem = name.strip_prefix("CAP_").unwrap_or(name);
            let Ok(cap) = Capability::from_str(stem) else {
                return usage(format!("--cap {name:?}: unknown capability"));
            };
            let add = |set: &Option<oci_spec::runtime::Capabilities>| {
                let mut s = set.clone().unwrap_or_default();
                s.insert(cap);
                s
            };
            c.set_bounding(Some(add(c.bounding())));
            c.set_effective(Some(add(c.effective())));
            c.set_permitted(Some(add(c.permitted())));
        }
        p.set_capabilities(Some(c));
    }
    if o.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if let Some(a) = &o.apparmor {
        p.set_apparmor_profile(Some(a.clone()));
    }
    if let Some(l) = &o.process_label {
        p.set_selinux_label(Some(l.clone()));
    }
    Ok(p)
}

fn check_process(p: &Process) -> Result<()> {
    if p.args().as_ref().is_none_or(|a| a.is_empty() || a[0].is_empty()) {
        return usage("process.args: must not be empty");
    }
    if !p.cwd().is_absolute() {
        return usage(format!("process.cwd: {:?} is not an absolute path", p.cwd()));
    }
    if let Err((field, msg)) = crate::linux::lsm::check(p.apparmor_profile().as_deref(), p.selinux_label().as_deref()) {
        return usage(format!("{field}: {msg}"));
    }
    Ok(())
}

/// Runs the process; returns tinyrt's exit code (the process's own without --detach).
pub fn exec(store: &Store, o: &ExecOpts) -> Result<i32> {
    let st = store.read(&o.id)?;
    match st.status() {
        Status::Running | Status::Created => {}
        Status::Paused if o.ignore_paused => {}
        Status::Paused => {
            return Err(Error::Status(format!(
                "cannot exec in a paused container {} (use --ignore-paused)",
                o.id
            )));
        }
        s => return Err(Error::Status(format!("cannot exec in a {s} container {}", o.id))),
    }
    let saved = super::delete::saved_exec_parts(store, &o.id);
    let process = build_process(o, saved.process.as_ref())?;
    check_process(&process)?;
    crate::linux::exec_stub::labelled(process.apparmor_profile().as_deref(), process.selinux_label().as_deref())
        .map_err(|e| Error::Usage(format!("protecting the runtime binary: {e}")))?;
    let terminal = process.terminal().unwrap_or(false);
    let (console, relay_end) = match (&o.console_socket, terminal) {
        (Some(path), true) => {
            let s = UnixStream::connect(path).map_err(|e| Error::Usage(format!("--console-socket {}: {e}", path.display())))?;
            (Some(OwnedFd::from(s)), None)
        }
        (None, true) if o.detach => return usage("a terminal with --detach needs --console-socket"),
        (None, true) => {
            let (mine, theirs) = UnixStream::pair().map_err(|e| Error::Usage(format!("socketpair: {e}")))?;
            (Some(OwnedFd::from(theirs)), Some(mine))
        }
        (Some(_), false) => return usage("--console-socket given but the process has no terminal"),
        (None, false) => (None, None),
    };
    let cgroup_dirs = sub_cgroups(&st.cgroup, &o.cgroup)?;

    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    if !o.detach {
        for s in super::run::FORWARD {
            set.add(s);
        }
    }
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };

    let init_pid = st
        .live_pid()
        .ok_or_else(|| Error::Status(format!("container {} is not running", o.id)))?;
    let seccomp = saved.linux.seccomp.as_ref();
    let filter = super::create::seccomp_filter(seccomp)?;
    let cfg = ExecConfig {
        init_pid,
        process: &process,
        console,
        preserve_fds: o.preserve_fds,
        seccomp: filter.as_ref(),
    };
    let child = launch(&cfg)?;
    let started = (|| -> Result<()> {
        for d in &cgroup_dirs {
            std::fs::write(d.join("cgroup.procs"), child.pid.to_string())
                .map_err(|e| Error::Usage(format!("adding the exec process to {}: {e}", d.display())))?;
        }
        let pid = child.pid;
        child.proceed(|fd| {
            super::create::send_seccomp_fd(seccomp, super::hook_state(&st, "running"), pid, &fd)
                .map_err(|e| crate::process::ProcessError::Sys(crate::linux::invalid(e.to_string())))
        })?;
        Ok(())
    })();
    if let Err(e) = started {
        child.abort();
        return Err(e);
    }
    drop(cfg);
    if let Some(p) = &o.pid_file {
        super::create::write_pid_file(p, child.pid)?;
    }
    if o.detach {
        return Ok(0);
    }
    Ok(match relay_end {
        Some(s) => {
            let master = crate::linux::tty::recv_fd(s.as_raw_fd())?;
            super::console::relay(master, child.pid, &set)
        }
        None => super::run::wait_for(child.pid, &set),
    })
}

/// The cgroup directories to put the process in: the container's, or with `--cgroup` a
/// sub-cgroup of it (`path` for all hierarchies, `controller:path` for one).
fn sub_cgroups(cg: &crate::cgroups::Cgroup, specs: &[String]) -> Result<Vec<PathBuf>> {
    let mut dirs = cg.leaves.clone();
    for s in specs {
        let (ctl, sub) = s.split_once(':').map(|(c, p)| (Some(c), p)).unwrap_or((None, s.as_str()));
        if sub.split('/').any(|c| c == "..") {
            return usage(format!("--cgroup {s:?}: '..' is not allowed"));
        }
        let mut matched = false;
        for d in dirs.iter_mut() {
            let hier = cg.leaves.iter().find(|l| d.starts_with(l)).cloned().unwrap_or_else(|| d.clone());
            let name = hier.iter().nth(4).and_then(|n| n.to_str()).unwrap_or("");
            if ctl.is_none_or(|c| name.split(',').any(|n| n == c) || (c.is_empty() && name == "unified")) {
                *d = hier.join(sub.trim_start_matches('/'));
                matched = true;
            }
        }
        if !matched {
            return usage(format!("--cgroup {s:?}: no such controller in the container's cgroups"));
        }
        if let Some(missing) = dirs.iter().find(|d| !d.exists()) {
            return usage(format!("--cgroup {s:?}: {} does not exist", missing.display()));
        }
    }
    Ok(dirs)
}
