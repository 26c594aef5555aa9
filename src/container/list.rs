//! `list`: every container under the root, never failing because one came or went.

use super::Result;
use crate::state::Store;

/// One row: id, pid, status, bundle, created. Half-made containers show as "creating".
pub fn list(store: &Store) -> Result<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    for (id, st) in store.list()? {
        out.push(match st {
            Some(s) => s.to_output(),
            None => serde_json::json!({"ociVersion": "", "id": id, "pid": 0, "status": "creating", "bundle": "", "rootfs": "", "created": "", "owner": ""}),
        });
    }
    Ok(out)
}
