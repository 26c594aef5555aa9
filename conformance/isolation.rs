//! Namespaces, checked from inside the container with busybox and against the host's links.

use crate::harness::*;
use serde_json::json;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

/// The container's link for `ns` (printed by readlink inside) differs from the host's.
#[track_caller]
fn own_ns(env: &Env, ns: &str) -> String {
    let inside = env.sh(&format!("readlink /proc/self/ns/{ns}"), |_| {});
    let inside = inside.trim().to_string();
    assert!(inside.starts_with(&format!("{ns}:[")), "{inside}");
    assert_ne!(inside, ns_link("self", ns), "the container shares the host's {ns} namespace");
    inside
}

pub fn ns_pid() {
    let env = Env::new("ns_pid");
    assert_eq!(env.sh("echo $$; ps -o pid= 2>/dev/null | wc -l", |_| {}).lines().next(), Some("1"));
    own_ns(&env, "pid");
    // Only the container's processes are visible.
    let n = env.sh("ls -d /proc/[0-9]* | wc -l", |_| {});
    // sh, ls and wc.
    assert!(n.trim().parse::<u32>().unwrap() <= 3, "{n}");
}

pub fn ns_uts() {
    let env = Env::new("ns_uts");
    let out = env.sh("hostname", |c| c["hostname"] = json!("conformance-host"));
    assert_eq!(out, "conformance-host\n");
    own_ns(&env, "uts");
    assert_ne!(nix::unistd::gethostname().unwrap().to_str(), Some("conformance-host"));
}

pub fn ns_ipc() {
    let env = Env::new("ns_ipc");
    own_ns(&env, "ipc");
    // A fresh ipc namespace has no System V objects.
    let out = env.sh("cat /proc/sysvipc/shm | wc -l", |_| {});
    assert_eq!(out.trim(), "1", "only the header line: {out}");
}

pub fn ns_net() {
    let env = Env::new("ns_net");
    own_ns(&env, "net");
    let out = env.sh("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '", |_| {});
    assert_eq!(out, "lo\n", "interfaces inside: {out}");
    let out = env.sh("ls /sys/class/net", |_| {});
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["lo"]);
}

pub fn ns_mount() {
    let env = Env::new("ns_mount");
    own_ns(&env, "mnt");
    let before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let out = env.sh("cat /proc/self/mountinfo", |_| {});
    // The container's root is the rootfs, and /proc is its own.
    assert!(mountinfo_line(&out, "/").is_some(), "{out}");
    assert!(mountinfo_line(&out, "/proc").is_some_and(|l| l.contains(" - proc ")), "{out}");
    // None of it reached the host.
    let after = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let new: Vec<&str> = after
        .lines()
        .filter(|l| !before.contains(l))
        .filter(|l| l.contains(env.dir.to_str().unwrap()) || l.contains(rootfs().to_str().unwrap()))
        .collect();
    assert!(new.is_empty(), "host mounts appeared: {new:?}");
}

pub fn ns_cgroup() {
    let env = Env::new("ns_cgroup");
    own_ns(&env, "cgroup");
    let out = env.sh("cat /proc/self/cgroup", |_| {});
    for l in out.lines() {
        assert!(l.ends_with(":/"), "the container should see its cgroup as the root: {l}");
    }
}

pub fn ns_user() {
    let env = Env::new("ns_user");
    let out = env.sh(
        "cat /proc/self/uid_map /proc/self/gid_map; id -u; readlink /proc/self/ns/user",
        |c| {
            c["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "user"}));
            c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
            c["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
        },
    );
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines[0], ["0", "100000", "65536"], "{out}");
    assert_eq!(lines[1], ["0", "200000", "65536"], "{out}");
    assert_eq!(lines[2], ["0"], "{out}");
    assert_ne!(lines[3][0], ns_link("self", "user"));
}

pub fn ns_time() {
    let env = Env::new("ns_time");
    let out = env.sh("cat /proc/self/timens_offsets; cut -d. -f1 /proc/uptime", |c| {
        c["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "time"}));
        c["linux"]["timeOffsets"] = json!({"monotonic": {"secs": 864000, "nanosecs": 0}, "boottime": {"secs": 1728000, "nanosecs": 0}});
    });
    let mono = out.lines().find(|l| l.starts_with("monotonic")).expect("monotonic line");
    assert_eq!(mono.split_whitespace().collect::<Vec<_>>(), ["monotonic", "864000", "0"], "{out}");
    let boot = out.lines().find(|l| l.starts_with("boottime")).expect("boottime line");
    assert_eq!(boot.split_whitespace().collect::<Vec<_>>(), ["boottime", "1728000", "0"], "{out}");
    // /proc/uptime follows the boottime clock.
    let up: u64 = out.lines().last().unwrap().trim().parse().unwrap();
    let host_up: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(up >= 1728000 + host_up as u64 - 5, "uptime inside {up}, host {host_up}");
    assert!(ns_link("self", "time").starts_with("time:["));
}

pub fn ns_join_by_path() {
    let env = Env::new("ns_join");
    let b1 = env.bundle(&env.config(&["sleep", "100"]));
    let id1 = env.id();
    let pid1 = env.create(&b1, &id1);
    let want = ns_link(&pid1.to_string(), "net");
    assert_ne!(want, ns_link("self", "net"));
    let uts1 = ns_link(&pid1.to_string(), "uts");
    let out = env.sh("readlink /proc/self/ns/net; readlink /proc/self/ns/uts", |c| {
        for n in c["linux"]["namespaces"].as_array_mut().unwrap() {
            if n["type"] == "network" {
                n["path"] = json!(format!("/proc/{pid1}/ns/net"));
            }
        }
    });
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], want, "the second container is not in the first's net namespace");
    assert_ne!(lines[1], uts1, "only the network namespace should be shared");
    env.rt(&["delete", &id1]).expect_ok("delete");
    env.wait_exit(pid1, T);
}

/// Without a cgroup namespace the cgroup mount binds the container's own cgroup directories
/// (read-only): the container lists its own processes there, not the host's.
pub fn cgroup_mount_without_namespace() {
    let env = Env::new("cgroup_mount_no_ns");
    let out = env.sh(
        "cat /sys/fs/cgroup/pids/cgroup.procs | wc -l; touch /sys/fs/cgroup/pids/x 2>/dev/null && echo writable || echo read-only",
        |c| {
            drop_ns(c, "cgroup");
        },
    );
    let lines: Vec<&str> = out.lines().collect();
    let n: usize = lines[0].trim().parse().unwrap();
    assert!((1..10).contains(&n), "the container sees {n} processes in its pids cgroup: {out}");
    assert_eq!(lines[1], "read-only", "{out}");
}
