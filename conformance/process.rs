//! process.*: args, env, cwd, user, umask, rlimits, capabilities, noNewPrivileges,
//! oomScoreAdj; and the file descriptors the container gets.

use crate::harness::*;
use serde_json::json;
use std::os::unix::process::CommandExt;

pub fn process_args() {
    let env = Env::new("process_args");
    let out = env.run(&env.config(&["sh", "-c", "printf '[%s]' \"$0\" \"$@\"", "zero", "a b", "", "$HOME", "'q'"]));
    out.expect_ok("run");
    assert_eq!(out.stdout, "[zero][a b][][$HOME]['q']");
    // args[0] found through the container's PATH.
    let mut c = env.config(&["env"]);
    c["process"]["env"] = json!(["PATH=/usr/bin:/bin"]);
    let out = env.run(&c);
    out.expect_ok("run env");
    assert!(out.stdout.lines().any(|l| l == "PATH=/usr/bin:/bin"), "{}", out.stdout);
}

pub fn process_env() {
    let env = Env::new("process_env");
    let out = env.sh("env | sort", |c| {
        c["process"]["env"] = json!(["PATH=/bin:/usr/bin", "FOO=bar baz", "EMPTY=", "EQ=a=b"]);
    });
    let lines: Vec<&str> = out.lines().collect();
    for want in ["FOO=bar baz", "EMPTY=", "EQ=a=b", "PATH=/bin:/usr/bin", "HOME=/root"] {
        assert!(lines.contains(&want), "{want} missing: {out}");
    }
    // Nothing of the runtime's environment leaks in.
    assert!(!out.contains("CARGO"), "{out}");
    let mut bad = env.config(&["true"]);
    bad["process"]["env"] = json!(["NOEQUALS"]);
    env.run(&bad).expect_err("env without =", "process.env[0]");
}

pub fn process_cwd() {
    let env = Env::new("process_cwd");
    assert_eq!(env.sh("pwd", |c| c["process"]["cwd"] = json!("/etc")), "/etc\n");
    let mut bad = env.config(&["true"]);
    bad["process"]["cwd"] = json!("relative");
    env.run(&bad).expect_err("relative cwd", "process.cwd");
}

pub fn process_cwd_created() {
    let env = Env::new("process_cwd_created");
    let r = env.private_rootfs();
    let out = env.sh("pwd; stat -c %F .", |c| {
        c["root"]["path"] = json!(r);
        c["process"]["cwd"] = json!("/work/new/dir");
    });
    assert_eq!(out, "/work/new/dir\ndirectory\n");
    assert!(r.join("work/new/dir").is_dir());
}

pub fn process_user() {
    let env = Env::new("process_user");
    let out = env.sh("id -u; id -g; id -G; stat -c %u /proc/self/fd/1 >/dev/null; echo $HOME", |c| {
        c["process"]["user"] = json!({"uid": 1000, "gid": 1001, "additionalGids": [10, 20, 1001]});
    });
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1000", "{out}");
    assert_eq!(lines[1], "1001", "{out}");
    let mut groups: Vec<&str> = lines[2].split_whitespace().collect();
    groups.sort();
    groups.dedup();
    assert_eq!(groups, ["10", "1001", "20"], "{out}");
    // uid 65534 has HOME from the container's /etc/passwd.
    let out = env.sh("id -u; echo $HOME", |c| c["process"]["user"] = json!({"uid": 65534, "gid": 65534}));
    assert_eq!(out, "65534\n/nonexistent\n");
}

pub fn process_umask() {
    let env = Env::new("process_umask");
    let out = env.sh("umask; touch /tmp/f; stat -c %a /tmp/f", |c| {
        with_tmp(c);
        c["process"]["user"]["umask"] = json!(0o027);
    });
    assert_eq!(out, "0027\n640\n");
}

pub fn process_rlimits() {
    let env = Env::new("process_rlimits");
    let out = env.sh("ulimit -n; ulimit -Hn; ulimit -c", |c| {
        c["process"]["rlimits"] = json!([
            {"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456},
            {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}
        ]);
    });
    assert_eq!(out, "123\n456\n0\n");
    let mut bad = env.config(&["true"]);
    bad["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 5}]);
    env.run(&bad).expect_err("soft > hard", "process.rlimits[0]");
}

/// The bitmask of capability names.
fn mask(caps: &[&str]) -> u64 {
    caps.iter()
        .map(|c| {
            1u64 << match *c {
                "CAP_CHOWN" => 0,
                "CAP_KILL" => 5,
                "CAP_NET_BIND_SERVICE" => 10,
                "CAP_AUDIT_WRITE" => 29,
                "CAP_SYS_ADMIN" => 21,
                other => panic!("unknown cap {other}"),
            }
        })
        .fold(0, |a, b| a | b)
}

fn caps_of(status: &str) -> [u64; 5] {
    ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"]
        .map(|k| u64::from_str_radix(status_field(status, k).unwrap_or_else(|| panic!("{k} missing")), 16).unwrap())
}

pub fn process_capabilities() {
    let env = Env::new("process_capabilities");
    // A non-root user keeps exactly its ambient set across exec.
    let amb = ["CAP_KILL", "CAP_NET_BIND_SERVICE"];
    let bnd = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
    let st = env.sh("cat /proc/self/status", |c| {
        c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
        c["process"]["capabilities"] = json!({
            "bounding": bnd, "effective": amb, "permitted": amb, "inheritable": amb, "ambient": amb
        });
    });
    let [inh, prm, eff, bset, amb_got] = caps_of(&st);
    assert_eq!(bset, mask(&bnd), "CapBnd");
    assert_eq!(amb_got, mask(&amb), "CapAmb");
    assert_eq!(eff, mask(&amb), "CapEff");
    assert_eq!(prm, mask(&amb), "CapPrm");
    assert_eq!(inh, mask(&amb), "CapInh");
    // Root with the default (runc) set: effective = bounding = the configured caps.
    let st = env.sh("cat /proc/self/status", |_| {});
    let [_, prm, eff, bset, amb_got] = caps_of(&st);
    let def = mask(&["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    assert_eq!((eff, prm, bset, amb_got), (def, def, def, 0), "{st}");
    // And a capability outside the set really is missing: chown fails without CAP_CHOWN.
    let out = env.run(&env.sh_config("touch /dev/shm/f && chown 1:1 /dev/shm/f"));
    assert_ne!(out.code, 0, "chown worked without CAP_CHOWN");
    let mut bad = env.config(&["true"]);
    bad["process"]["capabilities"] = json!({"bounding": ["CAP_NOPE"]});
    let out = env.run(&bad);
    out.expect_err("unknown capability", "CAP_NOPE");
}

pub fn no_new_privileges() {
    let env = Env::new("no_new_privileges");
    let st = env.sh("cat /proc/self/status", |c| c["process"]["noNewPrivileges"] = json!(true));
    assert_eq!(status_field(&st, "NoNewPrivs"), Some("1"));
    let st = env.sh("cat /proc/self/status", |c| c["process"]["noNewPrivileges"] = json!(false));
    assert_eq!(status_field(&st, "NoNewPrivs"), Some("0"));
}

pub fn oom_score_adj() {
    let env = Env::new("oom_score_adj");
    let mine: i32 = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap().trim().parse().unwrap();
    let want = (mine + 100).clamp(mine, 1000).max(500);
    let out = env.sh("cat /proc/self/oom_score_adj", |c| c["process"]["oomScoreAdj"] = json!(want));
    assert_eq!(out.trim(), want.to_string());
    // Unset: inherited.
    assert_eq!(env.sh("cat /proc/self/oom_score_adj", |_| {}).trim(), mine.to_string());
}

/// The fds a container process sees (ls's own directory fd is the highest one).
fn fds_inside(out: &str) -> Vec<u32> {
    let mut v: Vec<u32> = out.split_whitespace().map(|f| f.parse().unwrap()).collect();
    v.sort();
    v
}

/// Make `file` fd `target` of the spawned tinyrt (inherited, no CLOEXEC).
fn give_fd(cmd: &mut std::process::Command, file: std::fs::File, target: i32) {
    use std::os::fd::IntoRawFd;
    let raw = file.into_raw_fd();
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would leave FD_CLOEXEC set.
            let r = if raw == target {
                libc::fcntl(raw, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, target)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

pub fn no_fd_leak() {
    let env = Env::new("no_fd_leak");
    let b = env.bundle(&env.config(&["ls", "/proc/self/fd"]));
    let id = env.id();
    let log = env.dir.join("log.json");
    let mut c = env.cmd(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "run",
        "--bundle",
        b.to_str().unwrap(),
        &id,
    ]);
    // fds the caller left open without CLOEXEC must not reach the container either.
    give_fd(&mut c, std::fs::File::open("/etc/hostname").unwrap(), 3);
    give_fd(&mut c, std::fs::File::open("/etc/hostname").unwrap(), 9);
    let out = env.exec(c);
    out.expect_ok("run ls /proc/self/fd");
    assert_eq!(fds_inside(&out.stdout), [0, 1, 2, 3], "fds inside: {}", out.stdout);
    // create + start: the same.
    let b = env.bundle(&env.config(&["ls", "-l", "/proc/self/fd"]));
    let id = env.id();
    let pid = env.create(&b, &id);
    let mut c = env.cmd(&["start", &id]);
    give_fd(&mut c, std::fs::File::open("/etc/hostname").unwrap(), 5);
    env.exec(c).expect_ok("start");
    env.wait_exit(pid, std::time::Duration::from_secs(10));
}

pub fn preserve_fds() {
    let env = Env::new("preserve_fds");
    let f = env.dir.join("payload");
    std::fs::write(&f, "passed through fd 3\n").unwrap();
    let b = env.bundle(&env.sh_config("cat <&3; ls /proc/self/fd | wc -l"));
    let id = env.id();
    let mut c = env.cmd(&["run", "--preserve-fds", "1", "--bundle", b.to_str().unwrap(), &id]);
    give_fd(&mut c, std::fs::File::open(&f).unwrap(), 3);
    give_fd(&mut c, std::fs::File::open(&f).unwrap(), 4);
    let out = env.exec(c);
    out.expect_ok("run --preserve-fds 1");
    // 0 1 2 3 plus ls's own: fd 4 was not preserved.
    assert_eq!(out.stdout, "passed through fd 3\n5\n");

    // The caller promises fd 3 but has none open: none of tinyrt's own files (its log, the
    // state-dir lock) may take that number and cross into the container (the lock held by
    // the init used to deadlock start).
    let b = env.bundle(&env.sh_config("readlink /proc/self/fd/3"));
    let id = env.id();
    let log = env.dir.join("log.json");
    let mut c = env.cmd(&[
        "--log",
        log.to_str().unwrap(),
        "run",
        "--preserve-fds",
        "1",
        "--bundle",
        b.to_str().unwrap(),
        &id,
    ]);
    unsafe {
        c.pre_exec(|| {
            libc::fcntl(3, libc::F_SETFD, libc::FD_CLOEXEC);
            Ok(())
        });
    }
    let out = env.exec(c);
    out.expect_ok("run --preserve-fds 1 without an fd 3");
    assert_eq!(out.stdout, "/dev/null\n", "fd 3 inside");
}
