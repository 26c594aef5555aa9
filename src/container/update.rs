//! `update`: change the resource limits of a running container, from a resources JSON
//! (`--resources FILE`, `-` for stdin, what Docker and podman pass) or single-value flags.

use super::{Error, Result};
use crate::state::{Status, Store};
use oci_spec::runtime::LinuxResources;
use std::io::Read;

/// The flag form of update, each value optional.
#[derive(Debug, Clone, Default)]
pub struct UpdateFlags {
    pub blkio_weight: Option<u16>,
    pub cpu_period: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_rt_period: Option<u64>,
    pub cpu_rt_runtime: Option<i64>,
    pub cpu_share: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub memory: Option<i64>,
    pub memory_reservation: Option<i64>,
    pub memory_swap: Option<i64>,
    pub pids_limit: Option<i64>,
}

/// Parse sizes as runc does: plain bytes, or with k/m/g (binary) suffixes; -1 for unlimited.
pub fn parse_size(s: &str) -> std::result::Result<i64, String> {
    let t = s.trim();
    if t == "-1" {
        return Ok(-1);
    }
    let lower = t.to_ascii_lowercase();
    let (num, mult) = match lower.trim_end_matches('b').chars().last() {
        Some('k') => (&lower[..lower.trim_end_matches('b').len() - 1], 1i64 << 10),
        Some('m') => (&lower[..lower.trim_end_matches('b').len() - 1], 1 << 20),
        Some('g') => (&lower[..lower.trim_end_matches('b').len() - 1], 1 << 30),
        Some('t') => (&lower[..lower.trim_end_matches('b').len() - 1], 1 << 40),
        _ => (lower.trim_end_matches('b'), 1),
    };
    let n: f64 = num.trim().parse().map_err(|_| format!("invalid size {s:?}"))?;
    // "nan" and "inf" parse as f64; `as i64` would quietly make them 0 and i64::MAX.
    let bytes = n * mult as f64;
    if !bytes.is_finite() || n < 0.0 || bytes >= i64::MAX as f64 {
        return Err(format!("invalid size {s:?}"));
    }
    Ok(bytes as i64)
}

fn from_flags(f: &UpdateFlags) -> Result<LinuxResources> {
    let mut v = serde_json::json!({});
    let mut put = |path: &[&str], val: serde_json::Value| {
        let mut cur = &mut v;
        for k in &path[..path.len() - 1] {
            cur = cur
                .as_object_mut()
                .expect("object")
                .entry(k.to_string())
                .or_insert(serde_json::json!({}));
        }
        cur[path[path.len() - 1]] = val;
    };
    if let Some(x) = f.blkio_weight {
        put(&["blockIO", "weight"], x.into());
    }
    if let Some(x) = f.cpu_period {
        put(&["cpu", "period"], x.into());
    }
    if let Some(x) = f.cpu_quota {
        put(&["cpu", "quota"], x.into());
    }
    if let Some(x) = f.cpu_rt_period {
        put(&["cpu", "realtimePeriod"], x.into());
    }
    if let Some(x) = f.cpu_rt_runtime {
        put(&["cpu", "realtimeRuntime"], x.into());
    }
    if let Some(x) = f.cpu_share {
        put(&["cpu", "shares"], x.into());
    }
    if let Some(x) = &f.cpuset_cpus {
        put(&["cpu", "cpus"], x.clone().into());
    }
    if let Some(x) = &f.cpuset_mems {
        put(&["cpu", "mems"], x.clone().into());
    }
    if let Some(x) = f.memory {
        put(&["memory", "limit"], x.into());
    }
    if let Some(x) = f.memory_reservation {
        put(&["memory", "reservation"], x.into());
    }
    if let Some(x) = f.memory_swap {
        put(&["memory", "swap"], x.into());
    }
    if let Some(x) = f.pids_limit {
        put(&["pids", "limit"], x.into());
    }
    serde_json::from_value(v).map_err(|e| Error::Usage(format!("update: {e}")))
}

/// `resources`: a path, `-` for stdin, or None to use the flags.
pub fn update(store: &Store, id: &str, resources: Option<&str>, flags: &UpdateFlags) -> Result<()> {
    let dir = store.open(id)?;
    let st = dir.read_state()?;
    if st.status() == Status::Stopped {
        return Err(Error::Status(format!("cannot update container {id}: it is stopped")));
    }
    let r: LinuxResources = match resources {
        Some("-") => {
            let mut text = Vec::new();
            std::io::stdin()
                .read_to_end(&mut text)
                .map_err(|e| Error::Usage(format!("--resources -: reading stdin: {e}")))?;
            crate::spec::parse_json(&text, std::path::Path::new("<stdin>"))?
        }
        Some(path) => {
            let text = std::fs::read(path).map_err(|e| Error::Usage(format!("--resources {path}: {e}")))?;
            crate::spec::parse_json(&text, std::path::Path::new(path))?
        }
        None => from_flags(flags)?,
    };
    crate::spec::check_resources(&r)?;
    crate::cgroups::apply_resources(&st.cgroup, &r)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512kb"), Ok(512 << 10));
        assert_eq!(parse_size("-1"), Ok(-1));
        assert!(parse_size("x").is_err());
        assert!(parse_size("-5").is_err());
        assert!(parse_size("nan").is_err());
        assert!(parse_size("inf").is_err());
        assert!(parse_size("1e30t").is_err());
    }

    #[test]
    fn flags_to_resources() {
        let r = from_flags(&UpdateFlags {
            memory: Some(1 << 20),
            cpu_quota: Some(50_000),
            pids_limit: Some(10),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(1 << 20));
        assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(50_000));
        assert_eq!(r.pids().as_ref().unwrap().limit(), 10);
    }
}
