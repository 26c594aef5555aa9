//! Bad bundles: each fails with an error naming the field, a non-zero exit, and nothing left
//! behind (no state dir, no process, no host mount, no cgroup).

use crate::harness::*;
use serde_json::{Value, json};

/// `create` and `run` of `cfg` both fail mentioning every needle, leaving nothing.
#[track_caller]
fn refused(env: &Env, cfg: &Value, needles: &[&str]) {
    let b = env.bundle(cfg);
    refused_bundle(env, &b, needles);
}

#[track_caller]
fn refused_bundle(env: &Env, b: &std::path::Path, needles: &[&str]) {
    for verb in ["create", "run"] {
        let id = env.id();
        let out = env.rt(&[verb, "--bundle", b.to_str().unwrap(), &id]);
        for n in needles {
            out.expect_err(verb, n);
        }
        assert!(out.stderr.lines().count() <= 3, "{verb}: a clear error, not a dump: {}", out.stderr);
        env.assert_nothing_left(&id, b);
    }
}

pub fn malformed_json() {
    let env = Env::new("malformed_json");
    let b = env.dir.join("bundle-bad");
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(b.join("config.json"), "{\"ociVersion\": \"1.0.2\", \"process\": {").unwrap();
    refused_bundle(&env, &b, &["config.json"]);
    // A wrong type names its field.
    std::fs::write(
        b.join("config.json"),
        serde_json::to_vec(&{
            let mut c = env.config(&["true"]);
            c["process"]["user"]["uid"] = json!("root");
            c
        })
        .unwrap(),
    )
    .unwrap();
    refused_bundle(&env, &b, &["process.user.uid"]);
    // No config.json at all.
    let empty = env.dir.join("bundle-empty");
    std::fs::create_dir_all(&empty).unwrap();
    refused_bundle(&env, &empty, &["config.json"]);
}

pub fn missing_rootfs() {
    let env = Env::new("missing_rootfs");
    let mut c = env.config(&["true"]);
    c["root"]["path"] = json!("no-such-rootfs");
    refused(&env, &c, &["root.path", "no-such-rootfs"]);
}

pub fn unknown_namespace_type() {
    let env = Env::new("unknown_ns");
    let mut c = env.config(&["true"]);
    c["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "bogus"}));
    refused(&env, &c, &["linux.namespaces[6].type", "bogus"]);
    let mut c = env.config(&["true"]);
    c["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "network", "path": "/proc/self/ns/nope"}));
    refused(&env, &c, &["linux.namespaces[6]"]);
}

pub fn mount_symlink_escape() {
    let env = Env::new("symlink_escape");
    let host = env.dir.join("host-target");
    std::fs::create_dir_all(&host).unwrap();
    let r = env.private_rootfs();
    // Absolute and relative symlinks in the rootfs that point at a host path.
    std::os::unix::fs::symlink(&host, r.join("abs-escape")).unwrap();
    let rel = format!("../../../../../../../../..{}", host.display());
    std::os::unix::fs::symlink(&rel, r.join("etc/rel-escape")).unwrap();
    for (dest, typ) in [("/abs-escape", "tmpfs"), ("/etc/rel-escape/sub", "tmpfs"), ("/abs-escape", "bind")] {
        let mut c = env.sh_config(&format!("touch {dest}/pwned; cat /proc/self/mountinfo"));
        c["root"] = json!({"path": r, "readonly": false});
        let src = env.dir.join("bind-src");
        std::fs::create_dir_all(&src).unwrap();
        if typ == "bind" {
            add_mount(
                &mut c,
                json!({"destination": dest, "type": "bind", "source": src, "options": ["rbind"]}),
            );
        } else {
            add_mount(&mut c, json!({"destination": dest, "type": "tmpfs", "source": "tmpfs"}));
        }
        let b = env.bundle(&c);
        let id = env.id();
        let out = env.rt(&["run", "--bundle", b.to_str().unwrap(), &id]);
        // Either refused, or the mount landed inside the rootfs: never on the host path.
        let entries: Vec<_> = std::fs::read_dir(&host).unwrap().flatten().map(|e| e.path()).collect();
        assert!(entries.is_empty(), "{dest} ({typ}): the container wrote to the host: {entries:?}");
        let host_mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !host_mi.contains(host.to_str().unwrap()),
            "{dest}: a mount appeared on the host path"
        );
        if out.ok() {
            let resolved = if dest.starts_with("/etc/rel-escape") {
                format!("{}/sub", host.display())
            } else {
                host.display().to_string()
            };
            assert!(
                out.stdout.lines().any(|l| l.split(' ').nth(4) == Some(resolved.as_str())),
                "{dest}: expected the mount at {resolved} inside the container: {}",
                out.stdout
            );
            // ...that is, inside the rootfs on the host.
            assert!(r.join(resolved.trim_start_matches('/')).is_dir());
        } else {
            assert!(
                out.stderr.contains("mounts[7]"),
                "{dest}: error should name the mount: {}",
                out.stderr
            );
        }
        env.assert_nothing_left(&id, &b);
    }
}

pub fn missing_binary() {
    let env = Env::new("missing_binary");
    refused(&env, &env.config(&["/bin/no-such-binary"]), &["no-such-binary", "process.args"]);
    refused(&env, &env.config(&["no-such-command"]), &["no-such-command", "process.args"]);
    // Not executable.
    refused(&env, &env.config(&["/etc/passwd"]), &["/etc/passwd"]);
}

pub fn empty_args() {
    let env = Env::new("empty_args");
    let c = env.config(&[]);
    refused(&env, &c, &["process.args"]);
    let mut c = env.config(&["true"]);
    c["process"]["args"] = json!([""]);
    refused(&env, &c, &["process.args"]);
}

pub fn relative_hook_path() {
    let env = Env::new("relative_hook");
    let mut c = env.config(&["true"]);
    c["hooks"] = json!({"prestart": [{"path": "bin/true"}]});
    refused(&env, &c, &["hooks.prestart[0].path"]);
}

pub fn oci_version_2() {
    let env = Env::new("oci_version");
    let mut c = env.config(&["true"]);
    c["ociVersion"] = json!("2.0.0");
    refused(&env, &c, &["ociVersion", "2.0.0"]);
}

/// The container cannot run the runtime's own binary through /proc/self/exe (runc
/// CVE-2019-5736): neither as process.args[0] nor through a symlink in the rootfs.
pub fn runtime_binary_refused() {
    let env = Env::new("runtime_binary");
    refused(&env, &env.config(&["/proc/self/exe"]), &["process.args[0]", "runtime binary"]);
    let r = env.private_rootfs();
    std::os::unix::fs::symlink("/proc/self/exe", r.join("bin/selfexe")).unwrap();
    let mut c = env.config(&["selfexe"]);
    c["root"]["path"] = json!(r);
    refused(&env, &c, &["runtime binary"]);
    // And exec into a running container is refused the same way.
    let mut c = env.config(&["sleep", "3600"]);
    c["root"]["path"] = json!(r);
    let b = env.bundle(&c);
    let id = env.id();
    env.rt(&["run", "--detach", "--bundle", b.to_str().unwrap(), &id])
        .expect_ok("run --detach");
    env.adopt(env.state(&id)["pid"].as_i64().unwrap() as i32);
    env.rt(&["exec", &id, "/proc/self/exe", "--version"])
        .expect_err("exec /proc/self/exe", "runtime binary");
}

/// `kill` with a signal that does not exist (a name, numbers past SIGRTMAX, a negative one,
/// a real-time offset out of range) is refused naming it; the container is untouched.
pub fn unknown_signal() {
    let env = Env::new("bad_signal");
    let (id, pid, _) = sleeper(&env, |_| {});
    for sig in ["SIGFOO", "FOO", "99", "65", "-1", "RTMIN+99"] {
        for all in [false, true] {
            let mut args = vec!["kill"];
            args.extend(all.then_some("--all"));
            args.extend([id.as_str(), "--", sig]);
            env.rt(&args)
                .expect_err(&format!("kill {sig} (--all {all})"), &format!("unknown signal {sig:?}"));
        }
    }
    assert_eq!(env.status(&id), "running");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    assert!(!stat.contains(") Z "), "the init died: {stat}");
}

/// An unknown capability, in config.json and for exec (--cap, and a process.json), is
/// refused naming the field; nothing is made and nothing runs. (runc and crun drop it with
/// at most a warning, which runtime-spec 1.1 allows; 1.0 said it MUST cause an error.)
pub fn unknown_capability() {
    let env = Env::new("bad_capability");
    let mut c = env.config(&["true"]);
    c["process"]["capabilities"]["bounding"]
        .as_array_mut()
        .unwrap()
        .push(json!("CAP_FOO"));
    refused(&env, &c, &["process.capabilities.bounding[3]", "CAP_FOO"]);
    let (id, _, _) = sleeper(&env, |_| {});
    let marker = "touch /dev/shm/ran";
    env.rt(&["exec", "--cap", "CAP_FOO", &id, "sh", "-c", marker])
        .expect_err("exec --cap CAP_FOO", "CAP_FOO");
    let p = env.dir.join("process.json");
    let process = json!({"args": ["sh", "-c", marker], "cwd": "/", "user": {"uid": 0, "gid": 0},
        "capabilities": {"bounding": ["CAP_KILL", "CAP_FOO"]}});
    std::fs::write(&p, process.to_string()).unwrap();
    env.rt(&["exec", "--process", p.to_str().unwrap(), &id])
        .expect_err("exec --process with CAP_FOO", "capabilities.bounding[1]");
    let out = env.rt(&["exec", &id, "ls", "/dev/shm"]);
    assert_eq!(out.expect_ok("ls").stdout, "", "a refused exec ran");
}

/// Resource values no kernel takes (negative other than -1, cpu.shares outside 2..262144,
/// a blkio weight above 1000) are refused naming the field before a cgroup is made, in
/// config.json and by `update`. What runc accepts (-1 or 0 for unlimited or unset) runs.
pub fn absurd_resource_values() {
    let env = Env::new("bad_resources");
    // The validator's words ("field: value is ..."), not the kernel's: refused before a
    // cgroup was made or written.
    let cases = [
        (json!({"memory": {"limit": -5}}), "linux.resources.memory.limit: -5 is negative"),
        (
            json!({"memory": {"reservation": -2}}),
            "linux.resources.memory.reservation: -2 is negative",
        ),
        (
            json!({"cpu": {"shares": 1u64 << 40}}),
            "linux.resources.cpu.shares: 1099511627776 is outside",
        ),
        (json!({"cpu": {"shares": 1}}), "linux.resources.cpu.shares: 1 is outside"),
        (json!({"cpu": {"quota": -5}}), "linux.resources.cpu.quota: -5 is negative"),
        (json!({"pids": {"limit": -5}}), "linux.resources.pids.limit: -5 is negative"),
        (
            json!({"blockIO": {"weight": 2000}}),
            "linux.resources.blockIO.weight: 2000 is above 1000",
        ),
    ];
    for (res, needle) in &cases {
        let mut c = env.config(&["true"]);
        c["linux"]["resources"] = res.clone();
        refused(&env, &c, &[needle]);
    }
    let (id, _, _) = sleeper(&env, |_| {});
    let f = env.dir.join("res.json");
    for (res, needle) in &cases {
        std::fs::write(&f, res.to_string()).unwrap();
        env.rt(&["update", "--resources", f.to_str().unwrap(), &id])
            .expect_err("update", needle);
    }
    env.rt(&["update", "--pids-limit=-5", &id])
        .expect_err("update --pids-limit=-5", "linux.resources.pids.limit: -5 is negative");
    env.sh("true", |c| {
        c["linux"]["resources"] = json!({"memory": {"limit": 0, "swap": -1}, "cpu": {"shares": 0, "quota": -1}, "pids": {"limit": -1}});
    });
    env.sh("true", |c| {
        c["linux"]["resources"] = json!({"pids": {"limit": 0}, "memory": {"limit": -1}})
    });
}

/// Overlapping uid or gid ranges (container side or host side) are refused naming the
/// mapping, before a user namespace is made.
pub fn overlapping_id_maps() {
    let env = Env::new("bad_id_maps");
    let ok = json!([{"containerID": 0, "hostID": 100000, "size": 1000}]);
    let container_side = json!([{"containerID": 0, "hostID": 100000, "size": 1000}, {"containerID": 500, "hostID": 300000, "size": 10}]);
    let host_side = json!([{"containerID": 0, "hostID": 100000, "size": 1000}, {"containerID": 5000, "hostID": 100999, "size": 10}]);
    for (uids, gids, needle) in [
        (&container_side, &ok, "linux.uidMappings[1]: containerID range overlaps"),
        (&host_side, &ok, "linux.uidMappings[1]: hostID range overlaps"),
        (&ok, &container_side, "linux.gidMappings[1]: containerID range overlaps"),
    ] {
        let mut c = env.config(&["true"]);
        c["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "user"}));
        c["linux"]["uidMappings"] = uids.clone();
        c["linux"]["gidMappings"] = gids.clone();
        refused(&env, &c, &[needle]);
    }
}
