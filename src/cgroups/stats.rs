//! Statistics of the container's cgroup in the JSON shape of runc's `events --stats`
//! (containerd decodes it): cpu, memory, pids, blkio, hugetlb, read from v1 or cgroup2 files.

use super::Cgroup;
use serde_json::{Map, Value, json};
use std::path::Path;

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

fn num(dir: &Path, file: &str) -> u64 {
    read(dir, file).and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

/// "key value" lines as a map.
fn kv(dir: &Path, file: &str) -> Map<String, Value> {
    read(dir, file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), Value::from(it.next()?.parse::<u64>().ok()?)))
        })
        .collect()
}

fn leaf<'a>(cg: &'a Cgroup, controller: &str) -> Option<&'a Path> {
    cg.leaves
        .iter()
        .zip(&cg.controllers)
        .find(|(_, c)| c.split(',').any(|x| x == controller))
        .map(|(l, _)| l.as_path())
}

fn v2(cg: &Cgroup) -> Option<&Path> {
    cg.leaves
        .iter()
        .zip(&cg.controllers)
        .find(|(_, c)| c.is_empty())
        .map(|(l, _)| l.as_path())
}

/// Clock ticks (USER_HZ) to nanoseconds.
fn ticks_ns(t: u64) -> u64 {
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    t * (1_000_000_000 / hz)
}

pub fn stats(cg: &Cgroup) -> Value {
    let mut data = Map::new();
    let v2dir = v2(cg).filter(|d| d.join("cpu.stat").exists() || d.join("memory.current").exists());
    // cpu
    if let Some(d) = leaf(cg, "cpuacct") {
        let stat = kv(d, "cpuacct.stat");
        let percpu: Vec<u64> = read(d, "cpuacct.usage_percpu")
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        let mut cpu = json!({"usage": {
            "total": num(d, "cpuacct.usage"), "percpu": percpu,
            "kernel": ticks_ns(stat.get("system").and_then(Value::as_u64).unwrap_or(0)),
            "user": ticks_ns(stat.get("user").and_then(Value::as_u64).unwrap_or(0)),
        }});
        if let Some(c) = leaf(cg, "cpu") {
            let t = kv(c, "cpu.stat");
            cpu["throttling"] = json!({"periods": t.get("nr_periods"), "throttled_periods": t.get("nr_throttled"), "throttled_time": t.get("throttled_time")});
        }
        data.insert("cpu".into(), cpu);
    } else if let Some(d) = v2dir.filter(|d| d.join("cpu.stat").exists()) {
        let t = kv(d, "cpu.stat");
        let us = |k: &str| t.get(k).and_then(Value::as_u64).unwrap_or(0) * 1000;
        data.insert(
            "cpu".into(),
            json!({"usage": {"total": us("usage_usec"), "kernel": us("system_usec"), "user": us("user_usec")},
                   "throttling": {"periods": t.get("nr_periods"), "throttled_periods": t.get("nr_throttled"), "throttled_time": us("throttled_usec")}}),
        );
    }
    // memory
    if let Some(d) = leaf(cg, "memory") {
        let entry = |p: &str| json!({"limit": num(d, &format!("{p}limit_in_bytes")), "usage": num(d, &format!("{p}usage_in_bytes")), "max": num(d, &format!("{p}max_usage_in_bytes")), "failcnt": num(d, &format!("{p}failcnt"))});
        data.insert("memory".into(), json!({"usage": entry("memory."), "swap": entry("memory.memsw."), "kernel": entry("memory.kmem."), "raw": kv(d, "memory.stat")}));
    } else if let Some(d) = v2dir.filter(|d| d.join("memory.current").exists()) {
        let max = read(d, "memory.max").and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(u64::MAX);
        let swap_max = read(d, "memory.swap.max")
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(u64::MAX);
        data.insert(
            "memory".into(),
            json!({"usage": {"usage": num(d, "memory.current"), "limit": max, "max": num(d, "memory.peak"), "failcnt": kv(d, "memory.events").get("max")},
                   "swap": {"usage": num(d, "memory.swap.current"), "limit": swap_max},
                   "raw": kv(d, "memory.stat")}),
        );
    }
    // pids
    let pids_dir = leaf(cg, "pids").or_else(|| v2dir.filter(|d| d.join("pids.current").exists()));
    if let Some(d) = pids_dir {
        let limit = read(d, "pids.max").and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(0);
        data.insert("pids".into(), json!({"current": num(d, "pids.current"), "limit": limit}));
    }
    // blkio
    if let Some(d) = leaf(cg, "blkio") {
        let entries = |file: &str| -> Vec<Value> {
            read(d, file)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    let (maj, min) = f.first()?.split_once(':')?;
                    let (op, v) = if f.len() == 3 { (f[1], f[2]) } else { ("", *f.get(1)?) };
                    Some(json!({"major": maj.parse::<u64>().ok()?, "minor": min.parse::<u64>().ok()?, "op": op, "value": v.parse::<u64>().ok()?}))
                })
                .collect()
        };
        data.insert(
            "blkio".into(),
            json!({"ioServiceBytesRecursive": entries("blkio.throttle.io_service_bytes_recursive"), "ioServicedRecursive": entries("blkio.throttle.io_serviced_recursive")}),
        );
    }
    // hugetlb (v1 or, as on hybrid hosts, cgroup2)
    let huge_dir = leaf(cg, "hugetlb").or_else(|| v2(cg));
    if let Some(d) = huge_dir {
        let mut h = Map::new();
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let size = name
                .strip_prefix("hugetlb.")
                .and_then(|r| r.strip_suffix(".usage_in_bytes").or_else(|| r.strip_suffix(".current")));
            if let Some(size) = size {
                h.insert(size.to_string(), json!({"usage": num(d, &name)}));
            }
        }
        if !h.is_empty() {
            data.insert("hugetlb".into(), Value::Object(h));
        }
    }
    Value::Object(data)
}

/// The number of OOM kills the cgroup has seen (v1 memory.oom_control, cgroup2 memory.events).
pub fn oom_kills(cg: &Cgroup) -> u64 {
    if let Some(d) = leaf(cg, "memory") {
        return kv(d, "memory.oom_control").get("oom_kill").and_then(Value::as_u64).unwrap_or(0);
    }
    v2(cg)
        .map(|d| kv(d, "memory.events").get("oom_kill").and_then(Value::as_u64).unwrap_or(0))
        .unwrap_or(0)
}
