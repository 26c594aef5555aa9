//! The validation pass: every check that can be made on config.json alone (plus the
//! existence of the paths it names) happens here, before the runtime touches anything.

use super::{Result, SpecError};
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, LinuxResources, Spec};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn bad<T>(field: impl Into<String>, msg: impl Into<String>) -> Result<T> {
    Err(SpecError::invalid(field, msg))
}

/// Check `spec` and return the absolute rootfs path.
pub fn validate(spec: &Spec, bundle: &Path) -> Result<PathBuf> {
    check_version(spec.version())?;
    let rootfs = check_root(spec, bundle)?;
    check_process(spec)?;
    let namespaces = check_namespaces(spec)?;
    check_id_mappings(spec, &namespaces)?;
    check_mounts(spec)?;
    check_hooks(spec)?;
    check_linux_paths(spec)?;
    check_sysctl_and_names(spec, &namespaces)?;
    if let Some(r) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
        check_resources(r)?;
    }
    Ok(rootfs)
}

/// ociVersion 1.0.0 up to 1.3.x (pre-release suffixes such as `-dev` allowed).
fn check_version(v: &str) -> Result<()> {
    let core = v.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    let nums: Option<Vec<u64>> = parts.iter().map(|p| p.parse().ok()).collect();
    match nums.as_deref() {
        Some([1, minor, _patch]) if *minor <= 3 => Ok(()),
        Some([_, _, _]) => bad("ociVersion", format!("unsupported version {v:?} (tinyrt supports 1.0.0 to 1.3.x)")),
        _ => bad("ociVersion", format!("{v:?} is not a semantic version")),
    }
}

fn check_root(spec: &Spec, bundle: &Path) -> Result<PathBuf> {
    let Some(root) = spec.root() else {
        return bad("root", "missing: a Linux container needs root.path");
    };
    if root.path().as_os_str().is_empty() {
        return bad("root.path", "must not be empty");
    }
    let path = bundle.join(root.path());
    match std::fs::metadata(&path) {
        Ok(m) if m.is_dir() => Ok(path),
        Ok(_) => bad("root.path", format!("{} is not a directory", path.display())),
        Err(e) => bad("root.path", format!("{}: {e}", path.display())),
    }
}

fn check_process(spec: &Spec) -> Result<()> {
    let Some(p) = spec.process() else {
        return bad("process", "missing: create needs a process to run");
    };
    match p.args() {
        Some(a) if !a.is_empty() && !a[0].is_empty() => {}
        _ => return bad("process.args", "must not be empty"),
    }
    if !p.cwd().is_absolute() {
        return bad("process.cwd", format!("{:?} is not an absolute path", p.cwd()));
    }
    for (i, e) in p.env().iter().flatten().enumerate() {
        if !e.contains('=') || e.starts_with('=') {
            return bad(format!("process.env[{i}]"), format!("{e:?} is not KEY=value"));
        }
    }
    let mut seen = HashSet::new();
    for (i, r) in p.rlimits().iter().flatten().enumerate() {
        if !seen.insert(r.typ().to_string()) {
            return bad(format!("process.rlimits[{i}].type"), format!("{:?} given twice", r.typ()));
        }
        if r.soft() > r.hard() {
            return bad(
                format!("process.rlimits[{i}]"),
                format!("soft {} exceeds hard {}", r.soft(), r.hard()),
            );
        }
    }
    if let Some(adj) = p.oom_score_adj()
        && !(-1000..=1000).contains(&adj)
    {
        return bad("process.oomScoreAdj", format!("{adj} is outside -1000..1000"));
    }
    if let Some(cs) = p.console_size()
        && !p.terminal().unwrap_or(false)
    {
        let _ = cs;
        return bad("process.consoleSize", "set but process.terminal is false");
    }
    if let Err((field, msg)) = crate::linux::lsm::check(p.apparmor_profile().as_deref(), p.selinux_label().as_deref()) {
        return bad(field, msg);
    }
    if let Some(u) = p.user().umask()
        && u > 0o777
    {
        return bad("process.user.umask", format!("{u:o} is not a file mode mask"));
    }
    Ok(())
}

/// Returns the set of namespace types the container has (new or joined).
fn check_namespaces(spec: &Spec) -> Result<HashSet<LinuxNamespaceType>> {
    let mut set = HashSet::new();
    let Some(linux) = spec.linux() else { return Ok(set) };
    for (i, ns) in linux.namespaces().iter().flatten().enumerate() {
        if !set.insert(ns.typ()) {
            return bad(format!("linux.namespaces[{i}].type"), format!("{} given twice", ns.typ()));
        }
        if let Some(path) = ns.path() {
            if !path.is_absolute() {
                return bad(format!("linux.namespaces[{i}].path"), format!("{path:?} is not absolute"));
            }
            if let Err(e) = std::fs::metadata(path) {
                return bad(format!("linux.namespaces[{i}].path"), format!("{}: {e}", path.display()));
            }
        }
    }
    if let Some(offsets) = linux.time_offsets() {
        if !set.contains(&LinuxNamespaceType::Time) {
            return bad("linux.timeOffsets", "set without a time namespace");
        }
        for k in offsets.keys() {
            if k != "monotonic" && k != "boottime" {
                return bad(format!("linux.timeOffsets.{k}"), "only monotonic and boottime clocks have offsets");
            }
        }
    }
    Ok(set)
}

fn check_map(field: &str, maps: &[LinuxIdMapping]) -> Result<()> {
    for (i, m) in maps.iter().enumerate() {
        if m.size() == 0 {
            return bad(format!("{field}[{i}].size"), "must not be 0");
        }
        let end_c = m.container_id() as u64 + m.size() as u64;
        let end_h = m.host_id() as u64 + m.size() as u64;
        if end_c > u32::MAX as u64 + 1 || end_h > u32::MAX as u64 + 1 {
            return bad(format!("{field}[{i}]"), "range overflows 32-bit ids");
        }
        for (j, o) in maps.iter().enumerate().take(i) {
            let overlap = |a: u32, b: u32, sa: u32, sb: u32| (a as u64) < b as u64 + sb as u64 && (b as u64) < a as u64 + sa as u64;
            if overlap(m.container_id(), o.container_id(), m.size(), o.size()) {
                return bad(format!("{field}[{i}]"), format!("containerID range overlaps {field}[{j}]"));
            }
            if overlap(m.host_id(), o.host_id(), m.size(), o.size()) {
                return bad(format!("{field}[{i}]"), format!("hostID range overlaps {field}[{j}]"));
            }
        }
    }
    if maps.len() > 340 {
        return bad(field, "the kernel accepts at most 340 ranges");
    }
    Ok(())
}

fn check_id_mappings(spec: &Spec, ns: &HashSet<LinuxNamespaceType>) -> Result<()> {
    let Some(linux) = spec.linux() else { return Ok(()) };
    let uid = linux.uid_mappings().as_deref().unwrap_or(&[]);
    let gid = linux.gid_mappings().as_deref().unwrap_or(&[]);
    check_map("linux.uidMappings", uid)?;
    check_map("linux.gidMappings", gid)?;
    let userns = linux.namespaces().iter().flatten().find(|n| n.typ() == LinuxNamespaceType::User);
    match userns {
        Some(u) if u.path().is_none() => {
            if uid.is_empty() {
                return bad("linux.uidMappings", "a new user namespace needs uid mappings");
            }
            if gid.is_empty() {
                return bad("linux.gidMappings", "a new user namespace needs gid mappings");
            }
        }
        Some(_) => {}
        None if !uid.is_empty() || !gid.is_empty() => {
            return bad("linux.uidMappings", "id mappings given without a user namespace");
        }
        None => {}
    }
    let _ = ns;
    Ok(())
}

fn check_mounts(spec: &Spec) -> Result<()> {
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let d = m.destination();
        if !d.is_absolute() {
            return bad(format!("mounts[{i}].destination"), format!("{d:?} is not an absolute path"));
        }
        if let Some(opts) = m.options() {
            for o in opts {
                if let Err(msg) = crate::linux::mounts::check_option(o) {
                    return bad(format!("mounts[{i}].options"), msg);
                }
            }
        }
        let typ = m.typ().as_deref().unwrap_or("");
        let is_bind = typ == "bind" || m.options().iter().flatten().any(|o| o == "bind" || o == "rbind");
        if is_bind {
            match m.source() {
                None => return bad(format!("mounts[{i}].source"), "a bind mount needs a source"),
                Some(s) if s.is_absolute() && std::fs::symlink_metadata(s).is_err() => {
                    return bad(format!("mounts[{i}].source"), format!("{} does not exist", s.display()));
                }
                _ => {}
            }
        } else if typ.is_empty() {
            return bad(format!("mounts[{i}].type"), "missing (only bind mounts may omit it)");
        }
    }
    Ok(())
}

/// The hook kinds tinyrt runs (also reported by `features`).
pub const HOOK_KINDS: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

fn check_hooks(spec: &Spec) -> Result<()> {
    let Some(h) = spec.hooks() else { return Ok(()) };
    let kinds: [(&str, _); HOOK_KINDS.len()] = [
        ("prestart", h.prestart()),
        ("createRuntime", h.create_runtime()),
        ("createContainer", h.create_container()),
        ("startContainer", h.start_container()),
        ("poststart", h.poststart()),
        ("poststop", h.poststop()),
    ];
    for (name, list) in kinds {
        for (i, hook) in list.iter().flatten().enumerate() {
            if !hook.path().is_absolute() {
                return bad(
                    format!("hooks.{name}[{i}].path"),
                    format!("{:?} is not an absolute path", hook.path()),
                );
            }
            if let Some(t) = hook.timeout()
                && t <= 0
            {
                return bad(format!("hooks.{name}[{i}].timeout"), format!("{t} must be positive"));
            }
        }
    }
    Ok(())
}

fn check_linux_paths(spec: &Spec) -> Result<()> {
    let Some(linux) = spec.linux() else { return Ok(()) };
    for (name, list) in [("maskedPaths", linux.masked_paths()), ("readonlyPaths", linux.readonly_paths())] {
        for (i, p) in list.iter().flatten().enumerate() {
            if !p.starts_with('/') {
                return bad(format!("linux.{name}[{i}]"), format!("{p:?} is not an absolute path"));
            }
        }
    }
    for (i, d) in linux.devices().iter().flatten().enumerate() {
        if !d.path().starts_with("/dev/") {
            return bad(format!("linux.devices[{i}].path"), format!("{:?} is not under /dev", d.path()));
        }
        if matches!(d.typ(), oci_spec::runtime::LinuxDeviceType::A) {
            return bad(format!("linux.devices[{i}].type"), "must be c, b, u or p");
        }
    }
    if let Some(p) = linux.rootfs_propagation()
        && !matches!(
            p.as_str(),
            "private" | "rprivate" | "slave" | "rslave" | "shared" | "rshared" | "unbindable" | "runbindable"
        )
    {
        return bad("linux.rootfsPropagation", format!("unknown propagation {p:?}"));
    }
    Ok(())
}

/// The resource values no kernel takes, refused before a cgroup is made (as runc refuses them,
/// though only once it has written them). 0 means "not set" where runc reads it so; -1 is
/// "unlimited"; anything below is an error. Values in range are left to the kernel.
pub fn check_resources(r: &LinuxResources) -> Result<()> {
    let f = |n: &str| format!("linux.resources.{n}");
    if let Some(m) = r.memory() {
        for (name, v) in [("limit", m.limit()), ("reservation", m.reservation()), ("swap", m.swap())] {
            if let Some(v) = v.filter(|v| *v < -1) {
                return bad(f(&format!("memory.{name}")), format!("{v} is negative (-1 means unlimited)"));
            }
        }
    }
    if let Some(c) = r.cpu() {
        if let Some(s) = c.shares().filter(|s| *s != 0 && !(2..=262_144).contains(s)) {
            return bad(f("cpu.shares"), format!("{s} is outside 2..262144"));
        }
        if let Some(q) = c.quota().filter(|q| *q < -1) {
            return bad(f("cpu.quota"), format!("{q} is negative (-1 means unlimited)"));
        }
    }
    if let Some(p) = r.pids().as_ref().filter(|p| p.limit() < -1) {
        return bad(f("pids.limit"), format!("{} is negative (-1 or 0 mean unlimited)", p.limit()));
    }
    if let Some(b) = r.block_io() {
        let weights = [
            ("blockIO.weight".to_string(), b.weight()),
            ("blockIO.leafWeight".to_string(), b.leaf_weight()),
        ]
        .into_iter()
        .chain(b.weight_device().iter().flatten().enumerate().flat_map(|(i, d)| {
            [
                (format!("blockIO.weightDevice[{i}].weight"), d.weight()),
                (format!("blockIO.weightDevice[{i}].leafWeight"), d.leaf_weight()),
            ]
        }));
        for (name, w) in weights {
            if let Some(w) = w.filter(|w| *w > 1000) {
                return bad(f(&name), format!("{w} is above 1000"));
            }
        }
    }
    Ok(())
}

fn check_sysctl_and_names(spec: &Spec, ns: &HashSet<LinuxNamespaceType>) -> Result<()> {
    use LinuxNamespaceType as T;
    if spec.hostname().as_deref().is_some_and(|h| !h.is_empty()) && !ns.contains(&T::Uts) {
        return bad("hostname", "cannot set a hostname without a UTS namespace");
    }
    if spec.domainname().as_deref().is_some_and(|h| !h.is_empty()) && !ns.contains(&T::Uts) {
        return bad("domainname", "cannot set a domainname without a UTS namespace");
    }
    let Some(linux) = spec.linux() else { return Ok(()) };
    for key in linux.sysctl().iter().flat_map(|m| m.keys()) {
        let field = format!("linux.sysctl.{key}");
        let ipc = key.starts_with("kernel.msg")
            || key.starts_with("kernel.sem")
            || key.starts_with("kernel.shm")
            || key.starts_with("fs.mqueue.");
        let needed = if ipc {
            T::Ipc
        } else if key.starts_with("net.") {
            T::Network
        } else if key == "kernel.hostname" || key == "kernel.domainname" {
            T::Uts
        } else {
            return bad(field, "not a namespaced sysctl: it would change the host");
        };
        if !ns.contains(&needed) {
            return bad(field, format!("needs a {needed} namespace"));
        }
        if key.contains("..") || key.contains('/') {
            return bad(field, "malformed key");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    /// Validate against a bundle dir of its own (removed afterwards) holding the rootfs dir.
    fn err(json: &str) -> String {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tinyrt-validate-{}-{n}", std::process::id()));
        std::fs::create_dir_all(dir.join("tinyrt-validate-rootfs")).unwrap();
        let e = validate(&spec(json), &dir).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        e
    }

    const BASE: &str = r#""root":{"path":"tinyrt-validate-rootfs"},"process":{"cwd":"/","args":["sh"],"user":{"uid":0,"gid":0}}"#;

    #[test]
    fn versions() {
        assert!(check_version("1.0.0").is_ok());
        assert!(check_version("1.3.0").is_ok());
        assert!(check_version("1.0.2-dev").is_ok());
        assert!(check_version("1.4.0").is_err());
        assert!(check_version("2.0.0").is_err());
        assert!(check_version("x").is_err());
    }

    #[test]
    fn empty_args_named() {
        let e = err(
            r#"{"ociVersion":"1.0.0","root":{"path":"tinyrt-validate-rootfs"},"process":{"cwd":"/","args":[],"user":{"uid":0,"gid":0}}}"#,
        );
        assert_eq!(e, "process.args: must not be empty");
    }

    #[test]
    fn duplicate_namespace_named() {
        let e = err(&format!(
            r#"{{"ociVersion":"1.0.0",{BASE},"linux":{{"namespaces":[{{"type":"pid"}},{{"type":"pid"}}]}}}}"#
        ));
        assert_eq!(e, "linux.namespaces[1].type: pid given twice");
    }

    #[test]
    fn overlapping_maps() {
        let e = err(&format!(
            r#"{{"ociVersion":"1.0.0",{BASE},"linux":{{"namespaces":[{{"type":"user"}}],
            "uidMappings":[{{"containerID":0,"hostID":1000,"size":10}},{{"containerID":5,"hostID":5000,"size":10}}],
            "gidMappings":[{{"containerID":0,"hostID":1000,"size":10}}]}}}}"#
        ));
        assert!(e.starts_with("linux.uidMappings[1]: containerID range overlaps"), "{e}");
    }

    #[test]
    fn relative_hook_path() {
        let e = err(&format!(
            r#"{{"ociVersion":"1.0.0",{BASE},"hooks":{{"poststop":[{{"path":"bin/true"}}]}}}}"#
        ));
        assert!(e.starts_with("hooks.poststop[0].path:"), "{e}");
    }

    #[test]
    fn hostname_needs_uts() {
        let e = err(&format!(r#"{{"ociVersion":"1.0.0",{BASE},"hostname":"x","linux":{{}}}}"#));
        assert!(e.starts_with("hostname:"), "{e}");
    }

    #[test]
    fn host_sysctl_refused() {
        let e = err(&format!(
            r#"{{"ociVersion":"1.0.0",{BASE},"linux":{{"namespaces":[{{"type":"network"}}],"sysctl":{{"vm.swappiness":"1"}}}}}}"#
        ));
        assert!(e.starts_with("linux.sysctl.vm.swappiness:"), "{e}");
    }

    #[test]
    fn unknown_namespace_names_field() {
        let text =
            format!(r#"{{"ociVersion":"1.0.0",{BASE},"linux":{{"namespaces":[{{"type":"pid"}},{{"type":"ipc"}},{{"type":"foo"}}]}}}}"#);
        let e = crate::spec::parse_json::<Spec>(text.as_bytes(), Path::new("config.json"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("config.json: linux.namespaces[2].type: unknown variant `foo`"), "{e}");
    }

    #[test]
    fn absurd_resources_named() {
        for (res, field) in [
            (r#"{"memory":{"limit":-5}}"#, "linux.resources.memory.limit:"),
            (r#"{"memory":{"limit":1000000,"swap":-2}}"#, "linux.resources.memory.swap:"),
            (r#"{"cpu":{"shares":1099511627776}}"#, "linux.resources.cpu.shares:"),
            (r#"{"cpu":{"shares":1}}"#, "linux.resources.cpu.shares:"),
            (r#"{"cpu":{"quota":-5}}"#, "linux.resources.cpu.quota:"),
            (r#"{"pids":{"limit":-5}}"#, "linux.resources.pids.limit:"),
            (r#"{"blockIO":{"weight":2000}}"#, "linux.resources.blockIO.weight:"),
            (
                r#"{"blockIO":{"weightDevice":[{"major":8,"minor":0,"weight":1001}]}}"#,
                "linux.resources.blockIO.weightDevice[0].weight:",
            ),
        ] {
            let e = err(&format!(r#"{{"ociVersion":"1.0.0",{BASE},"linux":{{"resources":{res}}}}}"#));
            assert!(e.starts_with(field), "{res}: {e}");
        }
        // What runc takes: -1 and 0 as unlimited or unset, values in range.
        for res in [
            r#"{"memory":{"limit":-1,"swap":-1},"cpu":{"shares":0,"quota":-1},"pids":{"limit":-1}}"#,
            r#"{"memory":{"limit":0},"cpu":{"shares":2,"quota":0},"pids":{"limit":0},"blockIO":{"weight":1000}}"#,
        ] {
            let text = format!(r#"{{"ociVersion":"1.0.0",{BASE},"linux":{{"resources":{res}}}}}"#);
            assert!(
                check_resources(spec(&text).linux().as_ref().unwrap().resources().as_ref().unwrap()).is_ok(),
                "{res}"
            );
        }
    }

    #[test]
    fn missing_rootfs() {
        let e = err(
            r#"{"ociVersion":"1.0.0","root":{"path":"no-such-rootfs-dir"},"process":{"cwd":"/","args":["sh"],"user":{"uid":0,"gid":0}}}"#,
        );
        assert!(e.starts_with("root.path:"), "{e}");
    }
}
