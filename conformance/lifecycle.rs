//! The lifecycle verbs: create, start, state, kill, delete, run, list, and their errors.

use crate::harness::*;
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

pub fn create_start_state_delete() {
    let env = Env::new("lifecycle");
    let mut cfg = env.sh_config(WAIT_GO);
    with_tmp(&mut cfg);
    let b = env.bundle(&cfg);
    let id = env.id();
    let pid = env.create(&b, &id);
    let st = env.state(&id);
    assert_eq!(st["status"], "created", "{st}");
    assert_eq!(st["id"], id.as_str());
    assert!(
        pid > 0 && std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "init pid {pid} not alive"
    );
    assert_eq!(st["bundle"], b.to_str().unwrap());
    assert_eq!(st["ociVersion"], cfg["ociVersion"]);
    assert!(env.root.join(&id).is_dir());

    env.rt(&["start", &id]).expect_ok("start");
    let st = env.state(&id);
    assert_eq!(st["status"], "running", "{st}");
    assert_eq!(st["pid"], pid);

    release(pid);
    let ws = env.wait_exit(pid, T);
    assert!(matches!(ws, WaitStatus::Exited(_, 0)), "{ws:?}");
    assert_eq!(env.status(&id), "stopped");

    env.rt(&["delete", &id]).expect_ok("delete");
    env.rt(&["state", &id]).expect_err("state after delete", "does not exist");
    env.assert_nothing_left(&id, &b);
}

pub fn start_running_fails() {
    let env = Env::new("start_running");
    let b = env.bundle(&env.config(&["sleep", "100"]));
    let id = env.id();
    let pid = env.create(&b, &id);
    env.rt(&["start", &id]).expect_ok("start");
    env.rt(&["start", &id]).expect_fail("second start");
    assert_eq!(env.status(&id), "running");
    env.rt(&["delete", "--force", &id]).expect_ok("delete --force");
    env.wait_exit(pid, T);
    // Starting a stopped container fails too.
    let b2 = env.bundle(&env.config(&["true"]));
    let id2 = env.id();
    let pid2 = env.create(&b2, &id2);
    env.rt(&["start", &id2]).expect_ok("start");
    env.wait_exit(pid2, T);
    env.rt(&["start", &id2]).expect_fail("start of a stopped container");
    env.rt(&["delete", &id2]).expect_ok("delete");
}

pub fn delete_running_needs_force() {
    let env = Env::new("delete_running");
    let b = env.bundle(&env.config(&["sleep", "100"]));
    let id = env.id();
    let pid = env.create(&b, &id);
    env.rt(&["start", &id]).expect_ok("start");
    env.rt(&["delete", &id]).expect_err("delete of a running container", "not stopped");
    assert_eq!(env.status(&id), "running");
    env.rt(&["delete", "--force", &id]).expect_ok("delete --force");
    let ws = env.wait_exit(pid, T);
    assert!(matches!(ws, WaitStatus::Signaled(_, Signal::SIGKILL, _)), "{ws:?}");
    env.assert_nothing_left(&id, &b);
}

pub fn delete_created_container() {
    let env = Env::new("delete_created");
    let b = env.bundle(&env.config(&["true"]));
    let id = env.id();
    let pid = env.create(&b, &id);
    // A created (never started) container is deleted without --force, as runc does.
    env.rt(&["delete", &id]).expect_ok("delete of a created container");
    env.wait_exit(pid, T);
    env.assert_nothing_left(&id, &b);
}

pub fn create_duplicate_id_fails() {
    let env = Env::new("duplicate_id");
    let b = env.bundle(&env.config(&["sleep", "100"]));
    let id = env.id();
    let pid = env.create(&b, &id);
    let b2 = env.bundle(&env.config(&["true"]));
    env.rt(&["create", "--bundle", b2.to_str().unwrap(), &id])
        .expect_err("create with a used id", "already exists");
    let st = env.state(&id);
    assert_eq!(st["status"], "created");
    assert_eq!(st["pid"], pid);
    assert_eq!(st["bundle"], b.to_str().unwrap());
    env.rt(&["start", &id]).expect_ok("start of the first container");
    assert_eq!(env.status(&id), "running");
    env.rt(&["delete", "--force", &id]).expect_ok("delete");
    env.wait_exit(pid, T);
}

pub fn unknown_id_errors() {
    let env = Env::new("unknown_id");
    let id = "no-such-container";
    for args in [vec!["state", id], vec!["start", id], vec!["kill", id, "KILL"], vec!["delete", id]] {
        env.rt(&args).expect_err(&args.join(" "), "does not exist");
    }
    env.rt(&["delete", "--force", id]).expect_ok("delete --force of an unknown id");
    assert!(!env.root.join(id).exists());
}

pub fn invalid_ids_rejected() {
    let env = Env::new("invalid_ids");
    let b = env.bundle(&env.config(&["true"]));
    for bad in ["a/b", "..", "", "../x", "a b"] {
        env.rt(&["create", "--bundle", b.to_str().unwrap(), bad])
            .expect_err(&format!("create {bad:?}"), "invalid container id");
        env.rt(&["state", bad])
            .expect_err(&format!("state {bad:?}"), "invalid container id");
    }
    // Nothing was made anywhere: not under --root, not next to it.
    let left: Vec<_> = std::fs::read_dir(&env.root)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    assert!(!env.dir.join("b").exists() && !env.dir.join("x").exists());
}

pub fn run_returns_exit_code() {
    let env = Env::new("run_exit_code");
    let out = env.run(&env.sh_config("echo out; echo err >&2; exit 7"));
    assert_eq!(out.code, 7, "{out:?}");
    assert_eq!(out.stdout, "out\n");
    assert_eq!(out.stderr, "err\n");
    let out = env.run(&env.config(&["true"]));
    assert_eq!(out.code, 0, "{out:?}");
    // run deletes the container when it exits.
    let left: Vec<_> = std::fs::read_dir(&env.root).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "{left:?}");
}

pub fn run_killed_is_128_plus_signal() {
    let env = Env::new("run_killed");
    let b = env.bundle(&env.config(&["sleep", "100"]));
    let id = env.id();
    let bg = env.spawn(env.cmd(&["run", "--bundle", b.to_str().unwrap(), &id]));
    env.until("the container to run", T, || env.rt(&["state", &id]).stdout.contains("\"running\""));
    env.rt(&["kill", &id, "KILL"]).expect_ok("kill");
    let out = bg.wait(T);
    assert_eq!(out.code, 128 + 9, "{out:?}");
    assert!(!env.root.join(&id).exists(), "run left its state dir");
}

pub fn run_detach() {
    let env = Env::new("run_detach");
    let b = env.bundle(&env.config(&["sleep", "100"]));
    let id = env.id();
    env.rt(&["run", "--detach", "--bundle", b.to_str().unwrap(), &id])
        .expect_ok("run --detach");
    let st = env.state(&id);
    assert_eq!(st["status"], "running", "{st}");
    let pid = st["pid"].as_i64().unwrap() as i32;
    env.adopt(pid);
    env.rt(&["kill", &id, "KILL"]).expect_ok("kill");
    env.wait_exit(pid, T);
    assert_eq!(env.status(&id), "stopped");
    env.rt(&["delete", &id]).expect_ok("delete");
    env.assert_nothing_left(&id, &b);
}

/// A container whose init exits 3 on SIGTERM; returns (id, pid), started and ready.
fn trapping(env: &Env) -> (String, i32) {
    let b = env.bundle(&env.sh_config("trap 'exit 3' TERM; while :; do usleep 10000; done"));
    let id = env.id();
    let pid = env.create(&b, &id);
    env.rt(&["start", &id]).expect_ok("start");
    env.until("the TERM trap", T, || catches(pid, libc::SIGTERM));
    (id, pid)
}

pub fn kill_signal_forms() {
    let env = Env::new("kill_forms");
    for sig in ["KILL", "SIGKILL", "9", "kill"] {
        let (id, pid) = trapping(&env);
        env.rt(&["kill", &id, sig]).expect_ok(&format!("kill {sig}"));
        let ws = env.wait_exit(pid, T);
        assert!(matches!(ws, WaitStatus::Signaled(_, Signal::SIGKILL, _)), "kill {sig}: {ws:?}");
        env.rt(&["delete", &id]).expect_ok("delete");
    }
    for sig in ["TERM", "SIGTERM", "15"] {
        let (id, pid) = trapping(&env);
        env.rt(&["kill", &id, sig]).expect_ok(&format!("kill {sig}"));
        let ws = env.wait_exit(pid, T);
        assert!(matches!(ws, WaitStatus::Exited(_, 3)), "kill {sig}: {ws:?}");
        env.rt(&["delete", &id]).expect_ok("delete");
    }
    // No signal: SIGTERM.
    let (id, pid) = trapping(&env);
    env.rt(&["kill", &id]).expect_ok("kill without a signal");
    assert!(matches!(env.wait_exit(pid, T), WaitStatus::Exited(_, 3)));
    // Bad signals and a stopped container are errors.
    env.rt(&["kill", &id, "KILL"])
        .expect_err("kill of a stopped container", "not running");
    env.rt(&["delete", &id]).expect_ok("delete");
    let (id, pid) = trapping(&env);
    env.rt(&["kill", &id, "NOPE"]).expect_err("kill NOPE", "NOPE");
    env.rt(&["kill", &id, "0"]).expect_fail("kill 0");
    assert_eq!(env.status(&id), "running");
    env.rt(&["delete", "--force", &id]).expect_ok("delete --force");
    env.wait_exit(pid, T);
}

/// Pids whose pid namespace is `pid`'s.
fn pidns_members(pid: i32) -> Vec<i32> {
    let ns = ns_link(&pid.to_string(), "pid");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| ns_link(&p.to_string(), "pid") == ns)
        .collect()
}

pub fn kill_all() {
    let env = Env::new("kill_all");
    let b = env.bundle(&env.sh_config("sleep 100 & sleep 100 & wait"));
    let id = env.id();
    let pid = env.create(&b, &id);
    env.rt(&["start", &id]).expect_ok("start");
    env.until("three processes in the container", T, || pidns_members(pid).len() >= 3);
    let members = pidns_members(pid);
    env.rt(&["kill", "--all", &id, "KILL"]).expect_ok("kill --all");
    env.wait_exit(pid, T);
    env.until("every container process to go", T, || {
        members.iter().all(|p| {
            let s = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            s.is_empty() || s.contains(") Z")
        })
    });
    assert_eq!(env.status(&id), "stopped");
    env.rt(&["delete", &id]).expect_ok("delete");
    env.assert_nothing_left(&id, &b);
}

pub fn list_formats() {
    let env = Env::new("list");
    let out = env.rt(&["list"]);
    out.expect_ok("list with no root");
    assert!(out.stdout.starts_with("ID"), "{}", out.stdout);
    let b = env.bundle(&env.config(&["sleep", "100"]));
    let (a, c) = (env.id(), env.id());
    let pa = env.create(&b, &a);
    let pc = env.create(&b, &c);
    env.rt(&["start", &c]).expect_ok("start");

    let table = env.rt(&["list"]);
    table.expect_ok("list");
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", table.stdout);
    let head: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(head, ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]);
    let row_a: Vec<&str> = lines
        .iter()
        .find(|l| l.starts_with(&a))
        .expect("row a")
        .split_whitespace()
        .collect();
    assert_eq!(row_a[1], pa.to_string());
    assert_eq!(row_a[2], "created");
    assert_eq!(row_a[3], b.to_str().unwrap());
    assert_eq!(row_a[5], "root");
    let row_c: Vec<&str> = lines
        .iter()
        .find(|l| l.starts_with(&c))
        .expect("row c")
        .split_whitespace()
        .collect();
    assert_eq!(row_c[2], "running");

    for args in [
        vec!["list", "--format", "json"],
        vec!["list", "--format=json"],
        vec!["list", "-f", "json"],
    ] {
        let j = env.rt(&args);
        j.expect_ok("list json");
        let v: serde_json::Value = serde_json::from_str(&j.stdout).expect("list json parses");
        let arr = v.as_array().expect("an array");
        assert_eq!(arr.len(), 2);
        let ea = arr.iter().find(|e| e["id"] == a.as_str()).expect("a listed");
        assert_eq!(ea["status"], "created");
        assert_eq!(ea["pid"], pa);
        assert_eq!(ea["bundle"], b.to_str().unwrap());
        let ec = arr.iter().find(|e| e["id"] == c.as_str()).expect("c listed");
        assert_eq!(ec["status"], "running");
        assert_eq!(ec["pid"], pc);
    }

    let q = env.rt(&["list", "-q"]);
    q.expect_ok("list -q");
    let mut ids: Vec<&str> = q.stdout.lines().collect();
    ids.sort();
    let mut want = vec![a.as_str(), c.as_str()];
    want.sort();
    assert_eq!(ids, want);

    env.rt(&["list", "--format", "yaml"]).expect_fail("list --format yaml");
    env.rt(&["delete", "--force", &a, &c]).expect_ok("delete --force of two");
    env.wait_exit(pa, T);
    env.wait_exit(pc, T);
    assert_eq!(env.rt(&["list", "-q"]).stdout, "");
}

pub fn pid_file_content() {
    let env = Env::new("pid_file");
    let b = env.bundle(&env.config(&["sleep", "100"]));
    let id = env.id();
    let pf = env.dir.join("sub-pid");
    env.rt(&["create", "--pid-file", pf.to_str().unwrap(), "--bundle", b.to_str().unwrap(), &id])
        .expect_ok("create --pid-file");
    let pid = env.state(&id)["pid"].as_i64().unwrap() as i32;
    env.adopt(pid);
    assert_eq!(read(&pf), pid.to_string(), "pid file content");
    // Relative to the cwd, like runc.
    let b2 = env.bundle(&env.config(&["sleep", "100"]));
    let id2 = env.id();
    let mut c = env.cmd(&["create", "--pid-file", "rel.pid", "--bundle", b2.to_str().unwrap(), &id2]);
    c.current_dir(&env.dir);
    env.exec(c).expect_ok("create --pid-file relative");
    let pid2 = env.state(&id2)["pid"].as_i64().unwrap() as i32;
    env.adopt(pid2);
    assert_eq!(read(&env.dir.join("rel.pid")), pid2.to_string());
    env.rt(&["delete", "--force", &id, &id2]).expect_ok("delete");
    env.wait_exit(pid, T);
    env.wait_exit(pid2, T);
}

pub fn log_json_on_failure() {
    let env = Env::new("log_json");
    let b = env.bundle(&env.config(&["/no/such/binary"]));
    let id = env.id();
    let log = env.dir.join("log.json");
    env.rt(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "create",
        "--bundle",
        b.to_str().unwrap(),
        &id,
    ])
    .expect_err("create of a missing binary", "/no/such/binary");
    let text = read(&log);
    let lines: Vec<&str> = text.lines().collect();
    assert!(!lines.is_empty(), "no log line written");
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"));
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert!(keys.iter().all(|k| ["level", "msg", "time"].contains(&k.as_str())), "{l}");
        assert!(v["time"].as_str().is_some_and(|t| t.len() >= 20 && t.contains('T')), "{l}");
    }
    let err = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["level"] == "error")
        .expect("an error line");
    assert!(err["msg"].as_str().unwrap().contains("/no/such/binary"), "{err}");
    // Text format: logfmt-style line.
    let log2 = env.dir.join("log.txt");
    env.rt(&["--log", log2.to_str().unwrap(), "state", "nope"])
        .expect_fail("state nope");
    let t = read(&log2);
    assert!(t.contains("level=error") && t.contains("does not exist"), "{t}");
    env.assert_nothing_left(&id, &b);
}
