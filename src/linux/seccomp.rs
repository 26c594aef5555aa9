//! linux.seccomp: a filter built with libseccomp (Debian's, through the `libseccomp`
//! crate: it covers every action, operator, architecture and flag of the spec). The filter
//! is built in the parent before anything is made, so a bad profile (an unknown syscall, a
//! bad architecture) is refused up front, and loaded by the container's process last,
//! just before exec.

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction as A, LinuxSeccompFilterFlag as F, LinuxSeccompOperator as Op};
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
#[error("{field}: {msg}")]
pub struct SeccompError {
    pub field: String,
    pub msg: String,
}

fn err<T>(field: impl Into<String>, msg: impl ToString) -> Result<T, SeccompError> {
    Err(SeccompError {
        field: field.into(),
        msg: msg.to_string(),
    })
}

/// What `features` reports; the tests check each one parses and maps.
pub const ACTIONS: [&str; 9] = [
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_LOG",
    "SCMP_ACT_NOTIFY",
];
pub const OPERATORS: [&str; 7] = [
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
];
pub const ARCHES: [&str; 18] = [
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_LOONGARCH64",
];
pub const FLAGS: [&str; 4] = [
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_TSYNC",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
];

fn action(a: A, errno: Option<u32>) -> ScmpAction {
    let e = errno.map(|e| e as i32).unwrap_or(libc::EPERM);
    match a {
        A::ScmpActKill | A::ScmpActKillThread => ScmpAction::KillThread,
        A::ScmpActKillProcess => ScmpAction::KillProcess,
        A::ScmpActTrap => ScmpAction::Trap,
        A::ScmpActErrno => ScmpAction::Errno(e),
        A::ScmpActTrace => ScmpAction::Trace(e as u16),
        A::ScmpActAllow => ScmpAction::Allow,
        A::ScmpActLog => ScmpAction::Log,
        A::ScmpActNotify => ScmpAction::Notify,
    }
}

fn compare(op: Op, v: u64, v2: Option<u64>) -> ScmpCompareOp {
    match op {
        Op::ScmpCmpNe => ScmpCompareOp::NotEqual,
        Op::ScmpCmpLt => ScmpCompareOp::Less,
        Op::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        Op::ScmpCmpEq => ScmpCompareOp::Equal,
        Op::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        Op::ScmpCmpGt => ScmpCompareOp::Greater,
        // valueTwo is the value the masked argument must equal; value is the mask.
        Op::ScmpCmpMaskedEq => {
            let _ = v2;
            ScmpCompareOp::MaskedEqual(v)
        }
    }
}

/// A built filter, ready to load.
pub struct Filter {
    ctx: ScmpFilterContext,
    pub notify: bool,
}

// The context is only used by the single thread that built or inherited it.
unsafe impl Send for Filter {}

pub fn build(s: &LinuxSeccomp) -> Result<Filter, SeccompError> {
    let default = action(s.default_action(), s.default_errno_ret());
    let mut ctx = match ScmpFilterContext::new(default) {
        Ok(c) => c,
        Err(e) => return err("linux.seccomp.defaultAction", e),
    };
    for (i, a) in s.architectures().iter().flatten().enumerate() {
        let field = format!("linux.seccomp.architectures[{i}]");
        let arch = match ScmpArch::from_str(&a.to_string()) {
            Ok(x) => x,
            Err(_) => return err(field, format!("unknown architecture {a}")),
        };
        if let Err(e) = ctx.add_arch(arch) {
            return err(field, e);
        }
    }
    for f in s.flags().iter().flatten() {
        let r = match f {
            F::SeccompFilterFlagLog => ctx.set_ctl_log(true).map(|_| ()),
            F::SeccompFilterFlagTsync => ctx.set_ctl_tsync(true).map(|_| ()),
            F::SeccompFilterFlagSpecAllow => ctx.set_ctl_ssb(true).map(|_| ()),
            F::SeccompFilterFlagWaitKillableRecv => ctx.set_ctl_waitkill(true).map(|_| ()),
        };
        if let Err(e) = r {
            return err("linux.seccomp.flags", format!("{f}: {e}"));
        }
    }
    // tinyrt sets no_new_privs itself when the config asks; libseccomp must not force it.
    let _ = ctx.set_ctl_nnp(false);
    let mut notify = default == ScmpAction::Notify;
    for (i, sc) in s.syscalls().iter().flatten().enumerate() {
        let act = action(sc.action(), sc.errno_ret());
        notify |= act == ScmpAction::Notify;
        if act == default {
            continue;
        }
        let conds: Vec<ScmpArgCompare> = sc
            .args()
            .iter()
            .flatten()
            .map(|a| {
                let op = compare(a.op(), a.value(), a.value_two());
                let datum = if a.op() == Op::ScmpCmpMaskedEq {
                    a.value_two().unwrap_or(0)
                } else {
                    a.value()
                };
                ScmpArgCompare::new(a.index() as u32, op, datum)
            })
            .collect();
        if let Some(a) = sc.args().iter().flatten().find(|a| a.index() > 5) {
            return err(
                format!("linux.seccomp.syscalls[{i}].args"),
                format!("argument index {} is above 5", a.index()),
            );
        }
        let mut idx: Vec<usize> = sc.args().iter().flatten().map(|a| a.index()).collect();
        idx.sort_unstable();
        let repeated = idx.windows(2).any(|w| w[0] == w[1]);
        for (j, name) in sc.names().iter().enumerate() {
            let field = format!("linux.seccomp.syscalls[{i}].names[{j}]");
            let Ok(nr) = ScmpSyscall::from_name(name) else {
                return err(field, format!("unknown syscall {name:?}"));
            };
            let r = if conds.is_empty() {
                ctx.add_rule(act, nr).map(|_| ())
            } else if repeated {
                // Conditions on the same argument are alternatives: one rule each.
                conds.iter().try_for_each(|c| ctx.add_rule_conditional(act, nr, &[*c]).map(|_| ()))
            } else {
                ctx.add_rule_conditional(act, nr, &conds).map(|_| ())
            };
            if let Err(e) = r {
                return err(field, format!("adding the rule for {name}: {e}"));
            }
        }
    }
    if notify && s.listener_path().is_none() {
        return err("linux.seccomp.listenerPath", "SCMP_ACT_NOTIFY needs a listenerPath");
    }
    Ok(Filter { ctx, notify })
}

impl Filter {
    /// Install the filter on the calling thread; returns the notify fd for SCMP_ACT_NOTIFY.
    pub fn load(&self) -> Result<Option<std::os::fd::RawFd>, SeccompError> {
        if let Err(e) = self.ctx.load() {
            return err("linux.seccomp", format!("loading the filter: {e}"));
        }
        if self.notify {
            return match self.ctx.get_notify_fd() {
                Ok(fd) => Ok(Some(fd)),
                Err(e) => err("linux.seccomp", format!("getting the notify fd: {e}")),
            };
        }
        Ok(None)
    }
}

/// Hand a notify fd to the seccomp agent at `listenerPath`, with the container's state, as
/// the runtime spec's ContainerProcessState: `{"ociVersion", "fds": ["seccompFd"], "pid",
/// "metadata", "state"}` and the fd as SCM_RIGHTS.
pub fn send_to_listener(
    path: &std::path::Path,
    metadata: Option<&str>,
    state: serde_json::Value,
    pid: i32,
    fd: std::os::fd::RawFd,
) -> Result<(), SeccompError> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    use std::os::fd::AsRawFd;
    let field = "linux.seccomp.listenerPath";
    let sock = match std::os::unix::net::UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) => return err(field, format!("connecting to {}: {e}", path.display())),
    };
    let msg = serde_json::json!({
        "ociVersion": "1.0.2",
        "fds": ["seccompFd"],
        "pid": pid,
        "metadata": metadata.unwrap_or(""),
        "state": state,
    })
    .to_string();
    let iov = [std::io::IoSlice::new(msg.as_bytes())];
    match sendmsg::<()>(
        sock.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&[fd])],
        MsgFlags::MSG_NOSIGNAL,
        None,
    ) {
        Ok(_) => Ok(()),
        Err(e) => err(field, format!("sending to {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn builds_and_names_bad_fields() {
        let ok = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86"],
            "syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1},
                        {"names":["personality"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"},{"index":0,"value":0,"op":"SCMP_CMP_EQ"}]},
                        {"names":["clone"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]}]}"#,
        );
        assert!(build(&ok).is_ok());
        let bad = profile(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read","nosuchcall"],"action":"SCMP_ACT_ERRNO"}]}"#);
        assert_eq!(
            build(&bad).err().unwrap().to_string(),
            "linux.seccomp.syscalls[0].names[1]: unknown syscall \"nosuchcall\""
        );
        let notify = profile(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_NOTIFY"}]}"#);
        assert!(build(&notify).err().unwrap().to_string().starts_with("linux.seccomp.listenerPath"));
    }

    #[test]
    fn feature_tables_parse_and_map() {
        for a in ACTIONS {
            let act: A = serde_json::from_value(serde_json::json!(a)).unwrap();
            let _ = action(act, None);
        }
        for o in OPERATORS {
            let _: Op = serde_json::from_value(serde_json::json!(o)).unwrap();
        }
        for a in ARCHES {
            let arch: oci_spec::runtime::Arch = serde_json::from_value(serde_json::json!(a)).unwrap();
            ScmpArch::from_str(&arch.to_string()).unwrap();
        }
        for f in FLAGS {
            let _: F = serde_json::from_value(serde_json::json!(f)).unwrap();
        }
    }
}
