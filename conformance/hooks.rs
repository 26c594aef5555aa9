//! OCI hooks: each kind runs at its point with the state JSON on stdin; a failing or slow
//! create-time hook makes create fail cleanly.

use crate::harness::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

/// A hook that saves its stdin as `<dir>/<name>.json`.
fn saver(dir: &str, name: &str) -> Value {
    json!({"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {dir}/{name}.json")]})
}

pub fn hooks_all_kinds() {
    let env = Env::new("hooks");
    let out = env.dir.join("hooks");
    std::fs::create_dir_all(&out).unwrap();
    let o = out.to_str().unwrap();
    let mut cfg = env.sh_config(WAIT_GO);
    with_tmp(&mut cfg);
    // startContainer runs in the container: it writes into a bind mount of the same dir.
    add_mount(
        &mut cfg,
        json!({"destination": "/home", "type": "bind", "source": o, "options": ["rbind", "rw"]}),
    );
    cfg["annotations"] = json!({"org.example.test": "yes"});
    cfg["hooks"] = json!({
        "prestart": [saver(o, "prestart")],
        "createRuntime": [saver(o, "createRuntime")],
        "createContainer": [saver(o, "createContainer")],
        "startContainer": [saver("/home", "startContainer")],
        "poststart": [saver(o, "poststart")],
        "poststop": [saver(o, "poststop")],
    });
    let b = env.bundle(&cfg);
    let id = env.id();
    let load = |name: &str| -> Option<Value> {
        let t = std::fs::read(out.join(format!("{name}.json"))).ok()?;
        Some(serde_json::from_slice(&t).unwrap_or_else(|e| panic!("{name}: stdin is not JSON ({e})")))
    };
    let pid = env.create(&b, &id);
    for k in ["prestart", "createRuntime", "createContainer"] {
        let s = load(k).unwrap_or_else(|| panic!("{k} hook did not run at create"));
        assert_eq!(s["status"], "creating", "{k}: {s}");
        assert_eq!(s["id"], id.as_str(), "{k}");
        assert_eq!(s["pid"], pid, "{k}");
        assert_eq!(s["bundle"], b.to_str().unwrap(), "{k}");
        assert_eq!(s["annotations"]["org.example.test"], "yes", "{k}");
        assert!(s["ociVersion"].is_string(), "{k}");
    }
    for k in ["startContainer", "poststart", "poststop"] {
        assert!(load(k).is_none(), "{k} ran at create");
    }
    env.rt(&["start", &id]).expect_ok("start");
    let s = load("startContainer").expect("startContainer hook did not run");
    assert_eq!(s["status"], "created", "{s}");
    assert_eq!(s["id"], id.as_str());
    let s = load("poststart").expect("poststart hook did not run");
    assert_eq!(s["status"], "running", "{s}");
    assert_eq!(s["pid"], pid);
    assert!(load("poststop").is_none());
    release(pid);
    env.wait_exit(pid, T);
    env.rt(&["delete", &id]).expect_ok("delete");
    let s = load("poststop").expect("poststop hook did not run");
    assert_eq!(s["status"], "stopped", "{s}");
    assert_eq!(s["id"], id.as_str());
}

pub fn hook_args_and_env() {
    let env = Env::new("hook_env");
    let o = env.dir.display().to_string();
    let mut cfg = env.config(&["true"]);
    cfg["hooks"] = json!({"createRuntime": [{
        "path": "/bin/sh",
        "args": ["sh", "-c", format!("echo \"$0|$1|$FOO\" > {o}/out; cat /proc/$$/environ > {o}/environ"), "arg0", "arg1"],
        "env": ["FOO=bar"]
    }]});
    env.run(&cfg).expect_ok("run");
    assert_eq!(read(&env.dir.join("out")), "arg0|arg1|bar\n");
    // Exactly the hook's env, nothing of the runtime's.
    assert_eq!(read(&env.dir.join("environ")), "FOO=bar\0");
}

pub fn hook_failure_fails_create() {
    let env = Env::new("hook_failure");
    let mut cfg = env.config(&["sleep", "100"]);
    cfg["hooks"] = json!({"createRuntime": [
        {"path": "/bin/true"},
        {"path": "/bin/sh", "args": ["sh", "-c", "echo hook-says-no >&2; exit 3"]}
    ]});
    let b = env.bundle(&cfg);
    let id = env.id();
    let out = env.rt(&["create", "--bundle", b.to_str().unwrap(), &id]);
    out.expect_err("create with a failing createRuntime hook", "hooks.createRuntime[1]");
    assert!(
        out.stderr.contains("hook-says-no"),
        "the hook's output is not in the error: {}",
        out.stderr
    );
    assert!(out.stderr.contains("status 3"), "{}", out.stderr);
    env.assert_nothing_left(&id, &b);
    // The same for prestart and createContainer, and for run.
    for kind in ["prestart", "createContainer"] {
        let mut cfg = env.config(&["sleep", "100"]);
        cfg["hooks"] = json!({kind: [{"path": "/bin/false"}]});
        let b = env.bundle(&cfg);
        let id = env.id();
        env.rt(&["run", "--bundle", b.to_str().unwrap(), &id])
            .expect_err(&format!("run with a failing {kind} hook"), &format!("hooks.{kind}[0]"));
        env.assert_nothing_left(&id, &b);
    }
    // A failing poststart or poststop hook is only a warning.
    let mut cfg = env.config(&["true"]);
    cfg["hooks"] = json!({"poststart": [{"path": "/bin/false"}], "poststop": [{"path": "/bin/false"}]});
    let out = env.run(&cfg);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("hooks.poststart[0]") && out.stderr.contains("hooks.poststop[0]"),
        "{}",
        out.stderr
    );
}

pub fn hook_timeout() {
    let env = Env::new("hook_timeout");
    let mut cfg = env.config(&["sleep", "100"]);
    // A unique argv[0], to find the hook among the processes of concurrent suites.
    let arg0 = format!("slow-hook-{}", std::process::id());
    cfg["hooks"] = json!({"createRuntime": [{"path": "/bin/sleep", "args": [arg0, "30"], "timeout": 1}]});
    let b = env.bundle(&cfg);
    let id = env.id();
    let t = Instant::now();
    let out = env.rt(&["create", "--bundle", b.to_str().unwrap(), &id]);
    out.expect_err("create with a slow hook", "hooks.createRuntime[0]");
    assert!(out.stderr.contains("timed out"), "{}", out.stderr);
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    env.assert_nothing_left(&id, &b);
    let left = processes_mentioning(&[&arg0]);
    assert!(left.is_empty(), "the hook is still running: {left:?}");
    let mut cfg = env.config(&["true"]);
    cfg["hooks"] = json!({"createRuntime": [{"path": "/bin/true", "timeout": 0}]});
    env.run(&cfg).expect_err("timeout 0", "hooks.createRuntime[0].timeout");
}
