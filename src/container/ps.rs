//! `ps`: the container's processes (pids as the host sees them), as JSON or as the host's
//! `ps` table filtered to them, like runc.

use super::{Error, Result};
use crate::state::Store;

pub fn pids(store: &Store, id: &str) -> Result<Vec<i32>> {
    let st = store.read(id)?;
    let mut p = super::kill::container_processes(&st);
    if st.live_pid().is_none() {
        p.retain(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
    p.sort_unstable();
    p.dedup();
    Ok(p)
}

/// Run the host's `ps` with `args` (default `-ef`) and keep the header and the container's rows.
pub fn table(store: &Store, id: &str, args: &[String]) -> Result<String> {
    let pids = pids(store, id)?;
    let args: Vec<String> = if args.is_empty() { vec!["-ef".into()] } else { args.to_vec() };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .map_err(|e| Error::Usage(format!("running ps: {e}")))?;
    if !out.status.success() {
        return Err(Error::Usage(format!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    let Some(col) = header.split_whitespace().position(|h| h == "PID") else {
        return Err(Error::Usage(format!("ps {}: no PID column in its output", args.join(" "))));
    };
    let mut res = format!("{header}\n");
    for l in lines {
        if l.split_whitespace()
            .nth(col)
            .and_then(|p| p.parse::<i32>().ok())
            .is_some_and(|p| pids.contains(&p))
        {
            res += l;
            res.push('\n');
        }
    }
    Ok(res)
}
