//! `events`: statistics in runc's JSON (`--stats` once, otherwise every `--interval`) and
//! OOM notifications, until the container stops.

use super::{Error, Result};
use crate::state::{Status, Store};
use serde_json::json;
use std::io::Write;
use std::time::Duration;

/// Go-style durations as runc takes them: "5s", "500ms", "1m", "1h", "2m30s".
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(format!("invalid duration {s:?}"));
    }
    while !rest.is_empty() {
        let n_end = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let n: f64 = rest[..n_end].parse().map_err(|_| format!("invalid duration {s:?}"))?;
        rest = &rest[n_end..];
        let u_end = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..u_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(format!("invalid duration {s:?}")),
        };
        rest = &rest[u_end..];
        let part = Duration::try_from_secs_f64(n * unit).map_err(|_| format!("invalid duration {s:?}: out of range"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("invalid duration {s:?}: out of range"))?;
    }
    Ok(total)
}

pub fn events(store: &Store, id: &str, interval: Duration, stats_once: bool) -> Result<()> {
    let st = store.read(id)?;
    if st.status() == Status::Stopped {
        return Err(Error::Status(format!("container {id} is not running")));
    }
    let mut out = std::io::stdout().lock();
    let mut emit = |v: serde_json::Value| -> bool { writeln!(out, "{v}").and_then(|_| out.flush()).is_ok() };
    if stats_once {
        emit(json!({"type": "stats", "id": id, "data": crate::cgroups::stats(&st.cgroup)}));
        return Ok(());
    }
    let mut ooms = crate::cgroups::oom_kills(&st.cgroup);
    let tick = Duration::from_millis(100).min(interval.max(Duration::from_millis(1)));
    let mut waited = interval;
    loop {
        // Status first, then OOM kills: an OOM kill that ends the container is still reported.
        let stopped = st.status() == Status::Stopped;
        let now = crate::cgroups::oom_kills(&st.cgroup);
        if now > ooms && !emit(json!({"type": "oom", "id": id})) {
            return Ok(());
        }
        ooms = now;
        if stopped {
            return Ok(());
        }
        if waited >= interval {
            waited = Duration::ZERO;
            if !emit(json!({"type": "stats", "id": id, "data": crate::cgroups::stats(&st.cgroup)})) {
                return Ok(());
            }
        }
        std::thread::sleep(tick);
        waited += tick;
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m30s"), Ok(Duration::from_secs(150)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("").is_err());
        // Found by the cli_values fuzzer: Duration::from_secs_f64 panicked past u64::MAX seconds.
        assert!(parse_duration("0328888888888888888888888888h45m704").is_err());
        assert!(parse_duration("18446744073709549568s18446744073709549568s").is_err());
    }
}
