//! The verbs beyond the lifecycle and the config sections they serve: exec, ps, pause and
//! resume, update and linux.resources, events, seccomp, features; and their bad input.

use crate::harness::*;
use serde_json::{Value, json};
use std::time::Duration;

fn cgroup_file(id: &str, controller: &str, file: &str) -> String {
    let dir = cgroup_dirs(id)
        .into_iter()
        .find(|d| {
            d.to_str()
                .is_some_and(|s| s.contains(&format!("/{controller}/")) || s.contains(&format!(",{controller}/")))
        })
        .unwrap_or_else(|| panic!("no {controller} cgroup for {id}"));
    read(&dir.join(file)).trim().to_string()
}

pub fn exec_joins_the_container() {
    let env = Env::new("exec_joins");
    let (id, pid, _) = sleeper(&env, |_| {});
    let out = env.rt(&[
        "exec",
        &id,
        "sh",
        "-c",
        "echo $$; hostname; readlink /proc/self/ns/pid; ls /proc/self/fd | tr '\\n' ' '",
    ]);
    out.expect_ok("exec");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_ne!(lines[0], "1", "exec'd process is not the init");
    assert_eq!(lines[2], ns_link(&pid.to_string(), "pid"), "same pid namespace as the init");
    assert_eq!(
        lines[3].split_whitespace().collect::<Vec<_>>(),
        ["0", "1", "2", "3"],
        "no leaked fd: {}",
        lines[3]
    );
    // Exit status propagates; -u, -e, --cwd apply.
    assert_eq!(env.rt(&["exec", &id, "sh", "-c", "exit 5"]).code, 5);
    let out = env.rt(&[
        "exec",
        "-u",
        "1000:1001",
        "-e",
        "FOO=bar",
        "--cwd",
        "/etc",
        &id,
        "sh",
        "-c",
        "id -u; id -g; echo $FOO; pwd",
    ]);
    assert_eq!(out.expect_ok("exec -u -e --cwd").stdout, "1000\n1001\nbar\n/etc\n");
    // The process joined the container's cgroup.
    let out = env.rt(&["exec", &id, "cat", "/proc/self/cgroup"]);
    assert!(out.expect_ok("exec cat").stdout.contains("pids:/"), "{}", out.stdout);
}

pub fn exec_process_json_and_detach() {
    let env = Env::new("exec_process_json");
    let (id, _, _) = sleeper(&env, |_| {});
    let p = env.dir.join("process.json");
    std::fs::write(
        &p,
        json!({"args": ["sh", "-c", "echo from-json $X"], "env": ["X=1", "PATH=/bin"], "cwd": "/tmp", "user": {"uid": 0, "gid": 0}})
            .to_string(),
    )
    .unwrap();
    let out = env.rt(&["exec", "--process", p.to_str().unwrap(), &id]);
    assert_eq!(out.expect_ok("exec --process").stdout, "from-json 1\n");
    let pidf = env.dir.join("exec.pid");
    env.rt(&["exec", "--detach", "--pid-file", pidf.to_str().unwrap(), &id, "sleep", "3600"])
        .expect_ok("exec --detach");
    let epid: i32 = read(&pidf).trim().parse().unwrap();
    env.adopt(epid);
    let ps = env.rt(&["ps", "--format", "json", &id]);
    let pids: Vec<i32> = serde_json::from_str(&ps.expect_ok("ps").stdout).unwrap();
    assert!(pids.contains(&epid), "ps {pids:?} lacks the exec'd {epid}");
}

pub fn exec_bad_input() {
    let env = Env::new("exec_bad_input");
    // Into a stopped container.
    let b = env.bundle(&env.config(&["true"]));
    let id = env.id();
    env.rt(&["run", "--keep", "--bundle", b.to_str().unwrap(), &id])
        .expect_ok("run --keep");
    env.rt(&["exec", &id, "true"])
        .expect_err("exec into a stopped container", "stopped");
    env.rt(&["exec", "no-such-container", "true"])
        .expect_err("exec into nothing", "does not exist");
    let (id, _, _) = sleeper(&env, |_| {});
    env.rt(&["exec", &id, "no-such-binary"])
        .expect_err("missing binary", "no-such-binary");
    env.rt(&["exec", "-u", "root", &id, "true"])
        .expect_err("non-numeric user", "--user");
}

pub fn pause_resume() {
    let env = Env::new("pause_resume");
    let (id, _, _) = sleeper(&env, |_| {});
    env.rt(&["pause", &id]).expect_ok("pause");
    assert_eq!(env.status(&id), "paused");
    assert_eq!(cgroup_file(&id, "freezer", "freezer.state"), "FROZEN");
    env.rt(&["exec", &id, "true"]).expect_err("exec into paused", "paused");
    env.rt(&["delete", &id]).expect_err("delete paused", "not stopped");
    env.rt(&["resume", &id]).expect_ok("resume");
    assert_eq!(env.status(&id), "running");
    env.rt(&["resume", &id]).expect_err("resume running", "not paused");
    // delete --force of a paused container works (it is thawed to die).
    env.rt(&["pause", &id]).expect_ok("pause again");
    env.rt(&["delete", "--force", &id]).expect_ok("delete --force paused");
}

pub fn resources_and_update() {
    let env = Env::new("resources_update");
    let (id, _, _) = sleeper(&env, |c| {
        c["linux"]["resources"] =
            json!({"memory": {"limit": 64 << 20}, "cpu": {"shares": 512, "quota": 50000, "period": 100000}, "pids": {"limit": 20}});
    });
    assert_eq!(cgroup_file(&id, "memory", "memory.limit_in_bytes"), (64u64 << 20).to_string());
    assert_eq!(cgroup_file(&id, "cpu", "cpu.shares"), "512");
    assert_eq!(cgroup_file(&id, "cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(cgroup_file(&id, "pids", "pids.max"), "20");
    // Docker's form: the resources JSON on stdin.
    let mut c = env.cmd(&["update", "--resources", "-", &id]);
    let f = env.dir.join("res.json");
    std::fs::write(&f, r#"{"memory":{"limit":134217728},"pids":{"limit":50}}"#).unwrap();
    c.stdin(std::fs::File::open(&f).unwrap());
    let out = c.output().unwrap();
    assert!(out.status.success(), "update -: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(cgroup_file(&id, "memory", "memory.limit_in_bytes"), "134217728");
    assert_eq!(cgroup_file(&id, "pids", "pids.max"), "50");
    env.rt(&["update", "--memory", "32m", "--pids-limit", "7", &id])
        .expect_ok("update flags");
    assert_eq!(cgroup_file(&id, "memory", "memory.limit_in_bytes"), (32u64 << 20).to_string());
    assert_eq!(cgroup_file(&id, "pids", "pids.max"), "7");
    // The pids limit is enforced.
    let out = env.rt(&[
        "exec",
        &id,
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8 9; do sleep 30 & done; echo spawned",
    ]);
    assert!(
        out.stderr.contains("fork") || out.stdout.contains("can't fork") || !out.ok(),
        "pids.max 7 not enforced: {} {}",
        out.stdout,
        out.stderr
    );
    env.rt(&["update", "--resources", "/nonexistent.json", &id])
        .expect_err("missing file", "/nonexistent.json");
}

pub fn resources_bad_value() {
    let env = Env::new("resources_bad_value");
    let mut c = env.config(&["true"]);
    c["linux"]["resources"] = json!({"memory": {"swappiness": 200}});
    let b = env.bundle(&c);
    let id = env.id();
    env.rt(&["create", "--bundle", b.to_str().unwrap(), &id])
        .expect_err("swappiness 200", "linux.resources.memory.swappiness");
    env.assert_nothing_left(&id, &b);
    let mut c = env.config(&["true"]);
    c["linux"]["resources"] = json!({"cpu": {"cpus": "999"}});
    let b = env.bundle(&c);
    let id = env.id();
    env.rt(&["create", "--bundle", b.to_str().unwrap(), &id])
        .expect_err("cpuset 999", "linux.resources.cpu.cpus");
    env.assert_nothing_left(&id, &b);
}

pub fn devices_cgroup_denies() {
    let env = Env::new("devices_cgroup");
    // runc's default spec denies every device but the defaults: a node made for another
    // device (10:200, the tun device) exists in the container but cannot be opened.
    let script = "head -c1 /dev/zero | wc -c; (: < /dev/mytun) 2>/dev/null && echo tun-open || echo tun-denied";
    let tun = json!([{"path": "/dev/mytun", "type": "c", "major": 10, "minor": 200, "fileMode": 438}]);
    let out = env.sh(script, |c| {
        c["linux"]["devices"] = tun.clone();
        c["linux"]["resources"] = json!({"devices": [{"allow": false, "access": "rwm"}]});
    });
    assert_eq!(out, "1\ntun-denied\n");
    // Allowed by a later rule: it opens.
    let out = env.sh(script, |c| {
        c["linux"]["devices"] = tun.clone();
        c["linux"]["resources"] = json!({"devices": [{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 10, "minor": 200, "access": "rw"}]});
    });
    assert_eq!(out, "1\ntun-open\n");
}

pub fn seccomp_enforced() {
    let env = Env::new("seccomp_enforced");
    let out = env.sh("mkdir /tmp/x 2>&1; echo rc=$?; grep Seccomp: /proc/self/status", |c| {
        with_tmp(c);
        c["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]});
    });
    assert!(out.contains("Operation not permitted") && out.contains("rc=1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    // Without noNewPrivileges too (loaded while the process still has CAP_SYS_ADMIN).
    let out = env.sh("mkdir /tmp/x 2>&1; echo rc=$?", |c| {
        with_tmp(c);
        c["process"]["noNewPrivileges"] = json!(false);
        c["linux"]["seccomp"] =
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdirat", "mkdir"], "action": "SCMP_ACT_ERRNO"}]});
    });
    assert!(out.contains("rc=1"), "{out}");
}

pub fn seccomp_bad_input() {
    let env = Env::new("seccomp_bad_input");
    for (profile, needle) in [
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read", "nosuchcall"], "action": "SCMP_ACT_ERRNO"}]}),
            "linux.seccomp.syscalls[0].names[1]",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/nonexistent/agent.sock", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}),
            "linux.seccomp.listenerPath",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}),
            "linux.seccomp.listenerPath",
        ),
    ] {
        let mut c = env.config(&["true"]);
        c["linux"]["seccomp"] = profile;
        let b = env.bundle(&c);
        let id = env.id();
        env.rt(&["create", "--bundle", b.to_str().unwrap(), &id])
            .expect_err("bad seccomp", needle);
        env.assert_nothing_left(&id, &b);
    }
}

pub fn events_stats() {
    let env = Env::new("events_stats");
    let (id, _, _) = sleeper(&env, |c| c["linux"]["resources"] = json!({"pids": {"limit": 33}}));
    let out = env.rt(&["events", "--stats", &id]);
    let v: Value = serde_json::from_str(out.expect_ok("events --stats").stdout.trim()).unwrap();
    assert_eq!(v["type"], "stats");
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["data"]["pids"]["limit"], 33);
    assert!(v["data"]["pids"]["current"].as_u64().unwrap() >= 1);
    assert!(v["data"]["memory"]["usage"]["usage"].as_u64().unwrap() > 0, "{v}");
    assert!(v["data"]["cpu"]["usage"]["total"].as_u64().is_some(), "{v}");
    env.rt(&["events", "--interval", "nonsense", &id])
        .expect_err("bad interval", "--interval");
}

pub fn features_document() {
    let env = Env::new("features_document");
    let out = env.rt(&["features"]);
    let v: Value = serde_json::from_str(&out.expect_ok("features").stdout).unwrap();
    assert_eq!(v["ociVersionMin"], "1.0.0");
    assert_eq!(v["hooks"].as_array().unwrap().len(), 6);
    assert_eq!(v["linux"]["seccomp"]["enabled"], true);
    assert!(
        v["linux"]["seccomp"]["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "SCMP_ACT_NOTIFY")
    );
    assert!(v["linux"]["namespaces"].as_array().unwrap().iter().any(|n| n == "time"));
    assert_eq!(v["linux"]["cgroup"]["v2"], true);
    let _ = Duration::ZERO;
}
