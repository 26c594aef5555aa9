//! linux.resources written into the container's cgroup, at create and by `update`: the v1
//! files of each controller's own hierarchy, or the cgroup2 files (with runc's conversions
//! from v1 values) where the controller lives on cgroup2. A value the host refuses or cannot
//! apply is an error naming the spec field and the file.

use super::{Cgroup, CgroupError, Result};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};
use std::path::{Path, PathBuf};

/// runc's shares (2..262144) to cgroup2 cpu.weight (1..10000).
pub fn cpu_weight_from_shares(shares: u64) -> u64 {
    if shares == 0 {
        0
    } else {
        1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142
    }
}

/// runc's blkio weight (10..1000) to cgroup2 io.weight (1..10000).
pub fn io_weight_from_blkio(w: u16) -> u64 {
    if w == 0 {
        0
    } else {
        1 + ((w.clamp(10, 1000) as u64 - 10) * 9999) / 990
    }
}

/// Where a controller lives for this container.
enum At<'a> {
    V1(&'a Path),
    V2(&'a Path),
}

fn locate<'a>(cg: &'a Cgroup, controller: &str) -> Option<At<'a>> {
    for (leaf, ctl) in cg.leaves.iter().zip(&cg.controllers) {
        if ctl.split(',').any(|c| c == controller) {
            return Some(At::V1(leaf));
        }
    }
    let v2 = cg.leaves.iter().zip(&cg.controllers).find(|(_, c)| c.is_empty())?.0;
    // The highest cgroup of the path says what can be enabled down to us (enable_v2 does it).
    let top = v2
        .ancestors()
        .skip(1)
        .take_while(|p| p.join("cgroup.controllers").exists())
        .last()?;
    let avail = std::fs::read_to_string(top.join("cgroup.controllers")).unwrap_or_default();
    avail.split_whitespace().any(|c| c == controller).then_some(At::V2(v2))
}

fn write(field: &str, dir: &Path, file: &str, value: impl ToString) -> Result<()> {
    let path = dir.join(file);
    let value = value.to_string();
    std::fs::write(&path, &value).map_err(|err| CgroupError::Write {
        field: field.into(),
        file: path,
        value,
        err,
    })
}

fn unsupported<T>(field: &str, msg: impl Into<String>) -> Result<T> {
    Err(CgroupError::Unsupported {
        field: field.into(),
        msg: msg.into(),
    })
}

fn need<'a>(cg: &'a Cgroup, controller: &str, field: &str) -> Result<At<'a>> {
    match locate(cg, controller) {
        Some(a) => Ok(a),
        None => unsupported(field, format!("the host has no {controller} cgroup controller for this container")),
    }
}

/// Turn on `controller` in cgroup.subtree_control of every parent of a cgroup2 leaf, from
/// the highest cgroup tinyrt made (or the leaf's parent) down.
pub(super) fn enable_v2(cg: &Cgroup, leaf: &Path, controller: &str) -> Result<()> {
    let mut parents: Vec<PathBuf> = leaf
        .ancestors()
        .skip(1)
        .take_while(|p| p.join("cgroup.subtree_control").exists())
        .map(Path::to_path_buf)
        .collect();
    parents.reverse();
    // Start at the parent of the first directory we made: never reconfigure above it.
    let first_made = cg.created.iter().find(|c| leaf.starts_with(c));
    for p in parents {
        if first_made.is_some_and(|f| !f.starts_with(&p) && !p.starts_with(f.parent().unwrap_or(f))) {
            continue;
        }
        let on = std::fs::read_to_string(p.join("cgroup.subtree_control")).unwrap_or_default();
        if !on.split_whitespace().any(|c| c == controller) {
            write(
                &format!("(enabling {controller})"),
                &p,
                "cgroup.subtree_control",
                format!("+{controller}"),
            )?;
        }
    }
    Ok(())
}

pub fn apply(cg: &Cgroup, r: &LinuxResources) -> Result<()> {
    if let Some(m) = r.memory() {
        memory(cg, m)?;
    }
    if let Some(c) = r.cpu() {
        cpu(cg, c)?;
    }
    if let Some(p) = r.pids() {
        let v = if p.limit() > 0 { p.limit().to_string() } else { "max".into() };
        match need(cg, "pids", "linux.resources.pids.limit")? {
            At::V1(d) => write("linux.resources.pids.limit", d, "pids.max", v)?,
            At::V2(d) => {
                enable_v2(cg, d, "pids")?;
                write("linux.resources.pids.limit", d, "pids.max", v)?
            }
        }
    }
    if let Some(b) = r.block_io() {
        blkio(cg, b)?;
    }
    for (i, h) in r.hugepage_limits().iter().flatten().enumerate() {
        let field = format!("linux.resources.hugepageLimits[{i}]");
        match need(cg, "hugetlb", &field)? {
            At::V1(d) => write(&field, d, &format!("hugetlb.{}.limit_in_bytes", h.page_size()), h.limit())?,
            At::V2(d) => {
                enable_v2(cg, d, "hugetlb")?;
                write(&field, d, &format!("hugetlb.{}.max", h.page_size()), h.limit())?
            }
        }
    }
    if let Some(n) = r.network() {
        if let Some(id) = n.class_id() {
            match need(cg, "net_cls", "linux.resources.network.classID")? {
                At::V1(d) => write("linux.resources.network.classID", d, "net_cls.classid", id)?,
                At::V2(_) => return unsupported("linux.resources.network.classID", "net_cls does not exist on cgroup2"),
            }
        }
        for (i, p) in n.priorities().iter().flatten().enumerate() {
            let field = format!("linux.resources.network.priorities[{i}]");
            match need(cg, "net_prio", &field)? {
                At::V1(d) => write(&field, d, "net_prio.ifpriomap", format!("{} {}", p.name(), p.priority()))?,
                At::V2(_) => return unsupported(&field, "net_prio does not exist on cgroup2"),
            }
        }
    }
    if let Some(devs) = r.devices() {
        devices(cg, devs)?;
    }
    for (k, v) in r.unified().iter().flatten() {
        let field = format!("linux.resources.unified.{k}");
        if k.contains('/') || k.starts_with('.') || !k.contains('.') {
            return unsupported(&field, "not a cgroup2 interface file name");
        }
        let Some(v2) = cg.leaves.iter().zip(&cg.controllers).find(|(_, c)| c.is_empty()).map(|(l, _)| l) else {
            return unsupported(&field, "the host has no cgroup2 hierarchy");
        };
        if let Some(ctl) = k.split('.').next()
            && ctl != "cgroup"
        {
            enable_v2(cg, v2, ctl)?;
        }
        write(&field, v2, k, v)?;
    }
    Ok(())
}

fn memory(cg: &Cgroup, m: &oci_spec::runtime::LinuxMemory) -> Result<()> {
    let f = |n: &str| format!("linux.resources.memory.{n}");
    // A limit of 0 is "not set", as runc reads it (engines send 0 for "no limit"); written,
    // it would have the kernel kill the container's first process.
    let limit = m.limit().filter(|l| *l != 0);
    match need(cg, "memory", &f("limit"))? {
        At::V1(d) => {
            if let Some(res) = m.reservation() {
                write(&f("reservation"), d, "memory.soft_limit_in_bytes", res)?;
            }
            let has_swap_file = d.join("memory.memsw.limit_in_bytes").exists();
            match (limit, m.swap()) {
                (Some(limit), Some(swap)) if swap != 0 => {
                    if !has_swap_file {
                        return unsupported(&f("swap"), "the host has no swap accounting (memory.memsw.limit_in_bytes)");
                    }
                    // memsw must never be below the limit: order the two writes accordingly.
                    let cur_memsw: i64 = std::fs::read_to_string(d.join("memory.memsw.limit_in_bytes"))
                        .ok()
                        .and_then(|s| s.trim().parse().ok())
                        .unwrap_or(-1);
                    if swap == -1 || cur_memsw == -1 || swap > cur_memsw {
                        write(&f("swap"), d, "memory.memsw.limit_in_bytes", swap)?;
                        write(&f("limit"), d, "memory.limit_in_bytes", limit)?;
                    } else {
                        write(&f("limit"), d, "memory.limit_in_bytes", limit)?;
                        write(&f("swap"), d, "memory.memsw.limit_in_bytes", swap)?;
                    }
                }
                (Some(limit), _) => {
                    if has_swap_file && limit == -1 {
                        write(&f("swap"), d, "memory.memsw.limit_in_bytes", -1)?;
                    }
                    write(&f("limit"), d, "memory.limit_in_bytes", limit)?;
                    // Without a swap value, runc lets the container swap as much as it uses memory.
                    if has_swap_file && limit > 0 {
                        let _ = write(&f("swap"), d, "memory.memsw.limit_in_bytes", limit.saturating_mul(2));
                    }
                }
                (None, Some(swap)) if swap != 0 => {
                    if !has_swap_file {
                        return unsupported(&f("swap"), "the host has no swap accounting (memory.memsw.limit_in_bytes)");
                    }
                    write(&f("swap"), d, "memory.memsw.limit_in_bytes", swap)?;
                }
                _ => {}
            }
            if let Some(s) = m.swappiness() {
                if s > 100 {
                    return unsupported(&f("swappiness"), format!("{s} is above 100"));
                }
                write(&f("swappiness"), d, "memory.swappiness", s)?;
            }
            if m.disable_oom_killer() == Some(true) {
                write(&f("disableOOMKiller"), d, "memory.oom_control", 1)?;
            }
            if let Some(k) = m.kernel_tcp() {
                write(&f("kernelTCP"), d, "memory.kmem.tcp.limit_in_bytes", k)?;
            }
        }
        At::V2(d) => {
            enable_v2(cg, d, "memory")?;
            let max = |v: i64| if v < 0 { "max".to_string() } else { v.to_string() };
            if let Some(res) = m.reservation() {
                write(&f("reservation"), d, "memory.low", max(res))?;
            }
            if let Some(limit) = limit {
                write(&f("limit"), d, "memory.max", max(limit))?;
            }
            if let Some(swap) = m.swap() {
                // OCI's swap is memory+swap; cgroup2's memory.swap.max is swap alone.
                let v = match (swap, limit) {
                    (-1, _) => "max".to_string(),
                    (s, Some(l)) if l > 0 && s >= l => (s - l).to_string(),
                    (s, Some(l)) if l > 0 => return unsupported(&f("swap"), format!("{s} is below memory.limit {l}")),
                    (s, _) => s.to_string(),
                };
                if d.join("memory.swap.max").exists() {
                    write(&f("swap"), d, "memory.swap.max", v)?;
                } else if swap != 0 {
                    return unsupported(&f("swap"), "the host has no swap accounting (memory.swap.max)");
                }
            }
            if m.disable_oom_killer() == Some(true) {
                return unsupported(&f("disableOOMKiller"), "cgroup2 cannot disable the OOM killer");
            }
            if let Some(s) = m.swappiness()
                && s != 0
            {
                return unsupported(&f("swappiness"), "cgroup2 has no per-cgroup swappiness");
            }
        }
    }
    Ok(())
}

fn cpu(cg: &Cgroup, c: &oci_spec::runtime::LinuxCpu) -> Result<()> {
    let f = |n: &str| format!("linux.resources.cpu.{n}");
    let wants_cpu = c.shares().is_some()
        || c.quota().is_some()
        || c.period().is_some()
        || c.burst().is_some()
        || c.realtime_runtime().is_some()
        || c.realtime_period().is_some();
    if wants_cpu {
        match need(cg, "cpu", &f("shares"))? {
            At::V1(d) => {
                if let Some(s) = c.shares().filter(|s| *s != 0) {
                    write(&f("shares"), d, "cpu.shares", s)?;
                }
                if let Some(p) = c.period().filter(|p| *p != 0) {
                    write(&f("period"), d, "cpu.cfs_period_us", p)?;
                }
                if let Some(q) = c.quota().filter(|q| *q != 0) {
                    write(&f("quota"), d, "cpu.cfs_quota_us", q)?;
                }
                if let Some(b) = c.burst() {
                    write(&f("burst"), d, "cpu.cfs_burst_us", b)?;
                }
                if let Some(p) = c.realtime_period().filter(|p| *p != 0) {
                    write(&f("realtimePeriod"), d, "cpu.rt_period_us", p)?;
                }
                if let Some(r) = c.realtime_runtime().filter(|r| *r != 0) {
                    write(&f("realtimeRuntime"), d, "cpu.rt_runtime_us", r)?;
                }
            }
            At::V2(d) => {
                enable_v2(cg, d, "cpu")?;
                if let Some(s) = c.shares().filter(|s| *s != 0) {
                    write(&f("shares"), d, "cpu.weight", cpu_weight_from_shares(s))?;
                }
                if c.quota().is_some_and(|q| q != 0) || c.period().is_some_and(|p| p != 0) {
                    let period = c.period().filter(|p| *p != 0).unwrap_or(100_000);
                    let quota = match c.quota() {
                        Some(q) if q > 0 => q.to_string(),
                        _ => "max".into(),
                    };
                    write(&f("quota"), d, "cpu.max", format!("{quota} {period}"))?;
                }
                if let Some(b) = c.burst() {
                    write(&f("burst"), d, "cpu.max.burst", b)?;
                }
                if c.realtime_runtime().is_some_and(|r| r != 0) || c.realtime_period().is_some_and(|p| p != 0) {
                    return unsupported(&f("realtimeRuntime"), "cgroup2 has no realtime CPU limits");
                }
            }
        }
    }
    for (name, file, val) in [("cpus", "cpuset.cpus", c.cpus()), ("mems", "cpuset.mems", c.mems())] {
        let Some(v) = val.as_deref().filter(|v| !v.is_empty()) else {
            continue;
        };
        match need(cg, "cpuset", &f(name))? {
            At::V1(d) => write(&f(name), d, file, v)?,
            At::V2(d) => {
                enable_v2(cg, d, "cpuset")?;
                write(&f(name), d, file, v)?
            }
        }
    }
    Ok(())
}

fn blkio(cg: &Cgroup, b: &oci_spec::runtime::LinuxBlockIo) -> Result<()> {
    let f = |n: &str| format!("linux.resources.blockIO.{n}");
    let throttles = [
        (
            "throttleReadBpsDevice",
            b.throttle_read_bps_device(),
            "blkio.throttle.read_bps_device",
            "rbps",
        ),
        (
            "throttleWriteBpsDevice",
            b.throttle_write_bps_device(),
            "blkio.throttle.write_bps_device",
            "wbps",
        ),
        (
            "throttleReadIOPSDevice",
            b.throttle_read_iops_device(),
            "blkio.throttle.read_iops_device",
            "riops",
        ),
        (
            "throttleWriteIOPSDevice",
            b.throttle_write_iops_device(),
            "blkio.throttle.write_iops_device",
            "wiops",
        ),
    ];
    let any = b.weight().is_some_and(|w| w != 0)
        || b.leaf_weight().is_some_and(|w| w != 0)
        || b.weight_device().as_ref().is_some_and(|v| !v.is_empty())
        || throttles.iter().any(|t| t.1.as_ref().is_some_and(|v| !v.is_empty()));
    if !any {
        return Ok(());
    }
    let (v1, dir) = match locate(cg, "blkio").or_else(|| locate(cg, "io")) {
        Some(At::V1(d)) => (true, d),
        Some(At::V2(d)) => (false, d),
        None => return unsupported(&f("weight"), "the host has no blkio/io cgroup controller for this container"),
    };
    if !v1 {
        enable_v2(cg, dir, "io")?;
    }
    if let Some(w) = b.weight().filter(|w| *w != 0) {
        if v1 {
            let file = if dir.join("blkio.weight").exists() {
                "blkio.weight"
            } else {
                "blkio.bfq.weight"
            };
            if !dir.join(file).exists() {
                return unsupported(
                    &f("weight"),
                    "the host's blkio controller has no weight file (no CFQ/BFQ scheduler)",
                );
            }
            write(&f("weight"), dir, file, w)?;
        } else {
            write(&f("weight"), dir, "io.weight", format!("default {}", io_weight_from_blkio(w)))?;
        }
    }
    if let Some(w) = b.leaf_weight().filter(|w| *w != 0) {
        if !v1 {
            return unsupported(&f("leafWeight"), "cgroup2 has no leaf weight");
        }
        write(&f("leafWeight"), dir, "blkio.leaf_weight", w)?;
    }
    for (i, wd) in b.weight_device().iter().flatten().enumerate() {
        let field = f(&format!("weightDevice[{i}]"));
        if let Some(w) = wd.weight() {
            if v1 {
                write(&field, dir, "blkio.weight_device", format!("{}:{} {w}", wd.major(), wd.minor()))?;
            } else {
                write(
                    &field,
                    dir,
                    "io.weight",
                    format!("{}:{} {}", wd.major(), wd.minor(), io_weight_from_blkio(w)),
                )?;
            }
        }
    }
    for (name, list, file, key) in throttles {
        for (i, t) in list.iter().flatten().enumerate() {
            let field = f(&format!("{name}[{i}]"));
            if v1 {
                write(&field, dir, file, format!("{}:{} {}", t.major(), t.minor(), t.rate()))?;
            } else {
                write(&field, dir, "io.max", format!("{}:{} {key}={}", t.major(), t.minor(), t.rate()))?;
            }
        }
    }
    Ok(())
}

/// The devices every container may use, as runc adds them to the configured rules.
const DEFAULT_ALLOW: [&str; 11] = [
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:8 rwm",
    "c 1:7 rwm",
    "c 5:0 rwm",
    "c 1:5 rwm",
    "c 1:9 rwm",
    "c 5:1 rwm",
    "c 136:* rwm",
    "c 5:2 rwm",
];

fn rule(d: &LinuxDeviceCgroup) -> String {
    let t = match d.typ() {
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => "c",
        Some(LinuxDeviceType::B) => "b",
        Some(LinuxDeviceType::P) => "p",
        Some(LinuxDeviceType::A) | None => "a",
    };
    let n = |v: Option<i64>| v.filter(|v| *v >= 0).map(|v| v.to_string()).unwrap_or_else(|| "*".into());
    let access = d.access().clone().filter(|a| !a.is_empty()).unwrap_or_else(|| "rwm".into());
    if t == "a" {
        "a".to_string()
    } else {
        format!("{t} {}:{} {access}", n(d.major()), n(d.minor()))
    }
}

fn bpf_rule(d: &LinuxDeviceCgroup) -> super::devices_bpf::Rule {
    let kind = match d.typ() {
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => 'c',
        Some(LinuxDeviceType::B) => 'b',
        _ => 'a',
    };
    let n = |v: Option<i64>| v.filter(|v| *v >= 0).map(|v| v as u32);
    let access = d.access().as_deref().filter(|a| !a.is_empty()).unwrap_or("rwm");
    super::devices_bpf::Rule {
        kind,
        major: n(d.major()),
        minor: n(d.minor()),
        access: super::devices_bpf::access_bits(access),
        allow: d.allow(),
    }
}

/// A rule in the v1 file syntax ("c 1:3 rwm") as a BPF rule (allowing).
fn parse_rule(s: &str) -> super::devices_bpf::Rule {
    let mut it = s.split_whitespace();
    let kind = it.next().and_then(|k| k.chars().next()).unwrap_or('a');
    let (maj, min) = it.next().and_then(|n| n.split_once(':')).unwrap_or(("*", "*"));
    let access = it.next().unwrap_or("rwm");
    super::devices_bpf::Rule {
        kind,
        major: maj.parse().ok(),
        minor: min.parse().ok(),
        access: super::devices_bpf::access_bits(access),
        allow: true,
    }
}

fn devices(cg: &Cgroup, devs: &[LinuxDeviceCgroup]) -> Result<()> {
    match locate(cg, "devices") {
        Some(At::V1(d)) => {
            for (i, dev) in devs.iter().enumerate() {
                let file = if dev.allow() { "devices.allow" } else { "devices.deny" };
                write(&format!("linux.resources.devices[{i}]"), d, file, rule(dev))?;
            }
            if devs.iter().any(|d| !d.allow()) {
                for r in DEFAULT_ALLOW {
                    write("linux.resources.devices (runtime defaults)", d, "devices.allow", r)?;
                }
            }
            Ok(())
        }
        // cgroup2 filters devices with an eBPF program.
        _ => {
            let Some(v2) = cg.leaves.iter().zip(&cg.controllers).find(|(_, c)| c.is_empty()).map(|(l, _)| l) else {
                return unsupported("linux.resources.devices", "the host has neither a v1 devices hierarchy nor cgroup2");
            };
            let mut rules: Vec<super::devices_bpf::Rule> = devs.iter().map(bpf_rule).collect();
            if devs.iter().any(|d| !d.allow()) {
                rules.extend(DEFAULT_ALLOW.iter().map(|r| parse_rule(r)));
            }
            super::devices_bpf::attach(v2, &rules).map_err(|err| CgroupError::Write {
                field: "linux.resources.devices".into(),
                file: v2.clone(),
                value: "a BPF_CGROUP_DEVICE program".into(),
                err,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_conversions() {
        assert_eq!(cpu_weight_from_shares(0), 0);
        assert_eq!(cpu_weight_from_shares(2), 1);
        assert_eq!(cpu_weight_from_shares(1024), 39);
        assert_eq!(cpu_weight_from_shares(262_144), 10_000);
        assert_eq!(io_weight_from_blkio(10), 1);
        assert_eq!(io_weight_from_blkio(500), 4950);
        assert_eq!(io_weight_from_blkio(1000), 10_000);
    }

    #[test]
    fn device_rules() {
        let d: LinuxDeviceCgroup = serde_json::from_str(r#"{"allow":false,"access":"rwm"}"#).unwrap();
        assert_eq!(rule(&d), "a");
        let d: LinuxDeviceCgroup = serde_json::from_str(r#"{"allow":true,"type":"c","major":10,"minor":229,"access":"rw"}"#).unwrap();
        assert_eq!(rule(&d), "c 10:229 rw");
        let d: LinuxDeviceCgroup = serde_json::from_str(r#"{"allow":true,"type":"b","major":8}"#).unwrap();
        assert_eq!(rule(&d), "b 8:* rwm");
    }
}
