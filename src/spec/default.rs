//! The config.json that `tinyrt spec` writes: the same defaults as `runc spec`, so a
//! user moving from runc gets the bundle they know.

use serde_json::{Value, json};

const CAPS: [&str; 3] = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];

/// runc's default spec; `rootless` adapts it like `runc spec --rootless`
/// (a user namespace mapping the caller's ids, no network namespace, no cgroup mount).
pub fn default_spec(rootless: bool, uid: u32, gid: u32) -> Value {
    let mut spec = json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": true,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": CAPS, "effective": CAPS, "permitted": CAPS},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "tinyrt",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    });
    if rootless {
        let linux = &mut spec["linux"];
        linux["resources"] = json!({});
        linux["namespaces"] = json!([
            {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
            {"type": "cgroup"}, {"type": "user"}
        ]);
        linux["uidMappings"] = json!([{"containerID": 0, "hostID": uid, "size": 1}]);
        linux["gidMappings"] = json!([{"containerID": 0, "hostID": gid, "size": 1}]);
        let mounts = spec["mounts"].as_array_mut().expect("mounts is an array");
        mounts.retain(|m| m["type"] != "cgroup");
        for m in mounts.iter_mut() {
            if m["destination"] == "/dev/pts"
                && let Some(opts) = m["options"].as_array_mut()
            {
                opts.retain(|o| o != "gid=5");
            }
            if m["destination"] == "/sys" {
                *m = json!({"destination": "/sys", "type": "none", "source": "/sys",
                            "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]});
            }
        }
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_parses_and_validates_shape() {
        for rootless in [false, true] {
            let v = default_spec(rootless, 1000, 1000);
            let s: oci_spec::runtime::Spec = serde_json::from_value(v).unwrap();
            assert_eq!(s.process().as_ref().unwrap().args().as_ref().unwrap(), &["sh"]);
        }
    }
}
