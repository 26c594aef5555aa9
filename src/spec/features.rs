//! `features`: the runtime-spec features document, built from the tables the code itself
//! uses (mount options, hook kinds, namespaces, capabilities), so it cannot drift.

use crate::linux::mounts::{FLAGS, PROPAGATION};
use crate::linux::{lsm, seccomp};
use serde_json::{Value, json};

/// Namespace types tinyrt creates and joins (see linux::namespaces::clone_flag).
const NAMESPACES: [&str; 8] = ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"];

pub fn features() -> Value {
    let mut mount_options: Vec<&str> = FLAGS
        .iter()
        .map(|(n, _, _)| *n)
        .chain(PROPAGATION.iter().map(|(n, _)| *n))
        .collect();
    mount_options.sort_unstable();
    let mut caps: Vec<String> = caps::all().into_iter().map(|c| c.to_string()).collect();
    caps.sort();
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.3.0",
        "hooks": super::validate::HOOK_KINDS,
        "mountOptions": mount_options,
        "linux": {
            "namespaces": NAMESPACES,
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false},
            "seccomp": {
                "enabled": true,
                "actions": seccomp::ACTIONS,
                "operators": seccomp::OPERATORS,
                "archs": seccomp::ARCHES,
                "knownFlags": seccomp::FLAGS,
                "supportedFlags": seccomp::FLAGS,
            },
            "apparmor": {"enabled": lsm::apparmor_enabled()},
            "selinux": {"enabled": lsm::selinux_enabled()},
            "intelRdt": {"enabled": false},
            "mountExtensions": {"idmap": {"enabled": false}}
        },
        "annotations": {
            "io.github.tinyrt.version": env!("CARGO_PKG_VERSION")
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn shape() {
        let f = super::features();
        assert!(f["mountOptions"].as_array().unwrap().iter().any(|o| o == "rbind"));
        assert!(f["linux"]["capabilities"].as_array().unwrap().iter().any(|c| c == "CAP_SYS_ADMIN"));
        assert_eq!(f["hooks"].as_array().unwrap().len(), 6);
    }
}
