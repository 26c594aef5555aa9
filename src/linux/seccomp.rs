//! linux.seccomp: a filter built with libseccomp (Debian's, through the `libseccomp`
//! crate: it covers every action, operator, architecture and flag of the spec). The filter
//! is built in the parent before anything is made, so a bad profile (an unknown syscall, a
//! bad architecture) is refused up front, and loaded by the container's process last,
//! just before exec.
//!
//! Building is costly for a large profile: Docker's default one takes libseccomp about 15 ms
//! (a transaction per rule, then the BPF generation), on every create and exec. So the
//! compiled program (libseccomp's BPF export) is kept in a cache, `/run/tinyrt-cache/seccomp/`
//! (root's, mode 0700; /run is emptied at boot), under a hash of the profile, the libseccomp
//! and kernel versions and this binary; the container's process loads it with seccomp(2) and
//! the flags libseccomp would have used. A profile reaches the cache only once it built.

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

/// A built filter, ready to load: the BPF program and the seccomp(2) flags.
pub struct Filter {
    bpf: Vec<libc::sock_filter>,
    flags: libc::c_ulong,
    pub notify: bool,
}

const SECCOMP_FILTER_FLAG_TSYNC: libc::c_ulong = 1;
const SECCOMP_FILTER_FLAG_LOG: libc::c_ulong = 2;
const SECCOMP_FILTER_FLAG_SPEC_ALLOW: libc::c_ulong = 4;
const SECCOMP_FILTER_FLAG_NEW_LISTENER: libc::c_ulong = 8;
const SECCOMP_FILTER_FLAG_TSYNC_ESRCH: libc::c_ulong = 16;
const SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV: libc::c_ulong = 32;

const CACHE_DIR: &str = "/run/tinyrt-cache/seccomp";

/// Build `s` (from the cache when it was built before).
pub fn build(s: &LinuxSeccomp) -> Result<Filter, SeccompError> {
    let default = action(s.default_action(), s.default_errno_ret());
    let notify = default == ScmpAction::Notify
        || s.syscalls()
            .iter()
            .flatten()
            .any(|sc| action(sc.action(), sc.errno_ret()) == ScmpAction::Notify);
    if notify && s.listener_path().is_none() {
        return err("linux.seccomp.listenerPath", "SCMP_ACT_NOTIFY needs a listenerPath");
    }
    let mut flags = if notify { SECCOMP_FILTER_FLAG_NEW_LISTENER } else { 0 };
    for f in s.flags().iter().flatten() {
        flags |= match f {
            F::SeccompFilterFlagLog => SECCOMP_FILTER_FLAG_LOG,
            F::SeccompFilterFlagTsync => SECCOMP_FILTER_FLAG_TSYNC,
            F::SeccompFilterFlagSpecAllow => SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            F::SeccompFilterFlagWaitKillableRecv => SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
        };
    }
    if flags & SECCOMP_FILTER_FLAG_TSYNC != 0 && notify {
        // As libseccomp: with a listener, a thread that cannot sync is ESRCH, not its tid.
        flags |= SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
    }
    let key = cache_key(s);
    if let Some(bpf) = key.as_deref().and_then(cache_get) {
        return Ok(Filter { bpf, flags, notify });
    }
    let ctx = build_ctx(s)?;
    let bpf = export(&ctx)?;
    if let Some(k) = key {
        cache_put(&k, &bpf);
    }
    Ok(Filter { bpf, flags, notify })
}

/// The cache key: the profile as tinyrt reads it, libseccomp's and the kernel's versions, and
/// this binary (its size, mtime and inode: a rebuilt tinyrt builds anew). None: no caching
/// (not root, or something could not be read).
fn cache_key(s: &LinuxSeccomp) -> Option<String> {
    use sha2::Digest;
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let v = libseccomp::ScmpVersion::current().ok()?;
    let uname = nix::sys::utsname::uname().ok()?;
    let exe = std::fs::metadata("/proc/self/exe").ok()?;
    let mut h = sha2::Sha256::new();
    h.update(serde_json::to_vec(s).ok()?);
    h.update(format!(
        "\0{}.{}.{}\0{:?}\0{}\0{} {} {} {}",
        v.major,
        v.minor,
        v.micro,
        uname.release(),
        env!("CARGO_PKG_VERSION"),
        exe.size(),
        exe.mtime(),
        exe.mtime_nsec(),
        exe.ino()
    ));
    Some(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn cache_get(key: &str) -> Option<Vec<libc::sock_filter>> {
    use std::os::unix::fs::MetadataExt;
    let dir = std::fs::metadata(CACHE_DIR).ok()?;
    // Only a cache nobody but root can have written.
    if dir.uid() != 0 || dir.mode() & 0o022 != 0 {
        return None;
    }
    let f = std::fs::File::open(format!("{CACHE_DIR}/{key}")).ok()?;
    let m = f.metadata().ok()?;
    if m.uid() != 0 || m.mode() & 0o022 != 0 {
        return None;
    }
    let bytes = std::fs::read(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&f))).ok()?;
    from_bytes(&bytes)
}

fn cache_put(key: &str, bpf: &[libc::sock_filter]) {
    use std::os::unix::fs::DirBuilderExt;
    let _ = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(CACHE_DIR);
    let tmp = format!("{CACHE_DIR}/.{key}.{}", std::process::id());
    if std::fs::write(&tmp, to_bytes(bpf)).is_ok() {
        let _ = std::fs::rename(&tmp, format!("{CACHE_DIR}/{key}"));
    }
    let _ = std::fs::remove_file(&tmp);
}

fn to_bytes(bpf: &[libc::sock_filter]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bpf.len() * 8);
    for i in bpf {
        out.extend_from_slice(&i.code.to_ne_bytes());
        out.push(i.jt);
        out.push(i.jf);
        out.extend_from_slice(&i.k.to_ne_bytes());
    }
    out
}

fn from_bytes(b: &[u8]) -> Option<Vec<libc::sock_filter>> {
    // BPF_MAXINSNS: the kernel takes no longer program.
    if b.is_empty() || !b.len().is_multiple_of(8) || b.len() / 8 > 4096 {
        return None;
    }
    Some(
        b.chunks_exact(8)
            .map(|c| libc::sock_filter {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect(),
    )
}

/// libseccomp's BPF for `ctx`, through a memfd (seccomp_export_bpf writes to an fd).
fn export(ctx: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>, SeccompError> {
    use std::io::{Read, Seek};
    let fd = nix::sys::memfd::memfd_create(c"tinyrt-seccomp", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).map_err(|e| SeccompError {
        field: "linux.seccomp".into(),
        msg: format!("memfd_create: {e}"),
    })?;
    let mut f = std::fs::File::from(fd);
    if let Err(e) = ctx.export_bpf(&f) {
        return err("linux.seccomp", format!("generating the filter: {e}"));
    }
    let mut bytes = Vec::new();
    if f.rewind().and_then(|_| f.read_to_end(&mut bytes)).is_err() {
        return err("linux.seccomp", "reading the generated filter back");
    }
    match from_bytes(&bytes) {
        Some(b) => Ok(b),
        None => err(
            "linux.seccomp",
            format!("the generated filter has {} bytes, more than the kernel takes", bytes.len()),
        ),
    }
}

fn build_ctx(s: &LinuxSeccomp) -> Result<ScmpFilterContext, SeccompError> {
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
    for (i, sc) in s.syscalls().iter().flatten().enumerate() {
        let act = action(sc.action(), sc.errno_ret());
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
    Ok(ctx)
}

impl Filter {
    /// Install the filter on the calling thread (seccomp(2), as libseccomp's load does);
    /// returns the notify fd for SCMP_ACT_NOTIFY.
    pub fn load(&self) -> Result<Option<std::os::fd::RawFd>, SeccompError> {
        let prog = libc::sock_fprog {
            len: self.bpf.len() as u16,
            filter: self.bpf.as_ptr() as *mut libc::sock_filter,
        };
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if r < 0 {
            return err(
                "linux.seccomp",
                format!("loading the filter: {}", crate::linux::errno_text(nix::errno::Errno::last())),
            );
        }
        Ok(self.notify.then_some(r as std::os::fd::RawFd))
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

    /// A built profile is cached (as root) and the cached program is the one libseccomp
    /// generates; a cache file others could have written is not used.
    #[test]
    fn compiled_filter_cache() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        // A profile no other test or run has built: an errno of its own.
        let errno = 1000 + std::process::id() % 3000;
        let p = profile(&format!(
            r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{{"names":["mknod","unshare"],"action":"SCMP_ACT_ERRNO","errnoRet":{errno}}}]}}"#
        ));
        let key = cache_key(&p).unwrap();
        let path = format!("{CACHE_DIR}/{key}");
        let _ = std::fs::remove_file(&path);
        let fresh = build(&p).unwrap();
        assert_eq!(to_bytes(&fresh.bpf), to_bytes(&export(&build_ctx(&p).unwrap()).unwrap()));
        assert_eq!(std::fs::read(&path).unwrap(), to_bytes(&fresh.bpf), "the program was cached");
        let cached = build(&p).unwrap();
        assert_eq!(to_bytes(&cached.bpf), to_bytes(&fresh.bpf));
        // Group-writable: ignored (and rebuilt).
        std::fs::write(&path, [0u8; 8]).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o664)).unwrap();
        assert!(cache_get(&key).is_none());
        std::fs::remove_file(&path).unwrap();
        assert!(from_bytes(&[0u8; 7]).is_none() && from_bytes(&[]).is_none());
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
