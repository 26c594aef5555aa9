//! The command lines of ../shared/reference/engine-argv.txt (Docker 20.10 / containerd 1.6
//! shim, ctr, podman 4.3 + conmon), replayed exactly as the engines write them.

use crate::console::{read_master, receive_master};
use crate::harness::*;
use nix::sys::wait::WaitStatus;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

/// containerd's shim: `RT --root R --log $B/log.json --log-format json VERB ...`.
struct Shim<'a> {
    env: &'a Env,
    b: PathBuf,
    id: String,
}

impl Shim<'_> {
    fn new<'a>(env: &'a Env, cfg: &serde_json::Value) -> Shim<'a> {
        Shim {
            env,
            b: env.bundle(cfg),
            id: env.id(),
        }
    }
    fn call(&self, verb: &[&str]) -> Out {
        let root = self.env.root.to_str().unwrap();
        let log = format!("{}/log.json", self.b.display());
        let mut args = vec!["--root", root, "--log", &log, "--log-format", "json"];
        args.extend_from_slice(verb);
        self.env.rt_raw(&args)
    }
    fn b(&self) -> &str {
        self.b.to_str().unwrap()
    }
    fn create(&self) -> i32 {
        let pidfile = format!("{}/init.pid", self.b());
        self.call(&["create", "--bundle", self.b(), "--pid-file", &pidfile, &self.id])
            .expect_ok("create");
        let pid: i32 = read(Path::new(&pidfile)).trim().parse().expect("init.pid holds a pid");
        self.env.adopt(pid);
        assert_eq!(self.env.state(&self.id)["pid"], pid);
        pid
    }
    fn start(&self) {
        self.call(&["start", &self.id]).expect_ok("start");
    }
    /// delete, then delete --force, as the shim does after every exit.
    fn delete_twice(&self) {
        self.call(&["delete", &self.id]).expect_ok("delete");
        self.call(&["delete", "--force", &self.id]).expect_ok("delete --force after delete");
        self.env.assert_nothing_left(&self.id, &self.b);
    }
    /// The log holds only JSON lines, and no error.
    fn log_clean(&self) {
        for l in read(&self.b.join("log.json")).lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("log.json line ({e}): {l}"));
            assert_ne!(v["level"], "error", "{l}");
        }
    }
}

fn trap_term(env: &Env) -> serde_json::Value {
    env.sh_config("trap 'exit 0' TERM; while :; do usleep 10000; done")
}

/// docker 01-run-d, 10-stop (kill 15, delete, delete --force), 11-start, 12-kill (kill 9),
/// 14-kill-signal (kill 10), 15-restart (re-create under the same id).
pub fn engine_docker_flow() {
    let env = Env::new("engine_docker");
    let s = Shim::new(&env, &trap_term(&env));
    let pid = s.create();
    assert_eq!(env.status(&s.id), "created");
    s.start();
    env.until("the TERM trap", T, || catches(pid, libc::SIGTERM));
    // 14-kill-signal: SIGUSR1 is ignored by an init without a handler.
    s.call(&["kill", &s.id, "10"]).expect_ok("kill 10");
    // 10-stop
    s.call(&["kill", &s.id, "15"]).expect_ok("kill 15");
    assert!(matches!(env.wait_exit(pid, T), WaitStatus::Exited(_, 0)));
    s.delete_twice();
    // 11-start / 15-restart: the same id and bundle again.
    let pid = s.create();
    s.start();
    // 12-kill / 16-rm-f-running
    s.call(&["kill", &s.id, "9"]).expect_ok("kill 9");
    env.wait_exit(pid, T);
    s.delete_twice();
    s.log_clean();
}

/// docker 17-run-rm-fg: create, start, the process exits by itself, delete, delete --force.
pub fn engine_run_rm_fg() {
    let env = Env::new("engine_fg");
    let s = Shim::new(&env, &env.sh_config("exit 5"));
    let pid = s.create();
    s.start();
    assert!(matches!(env.wait_exit(pid, T), WaitStatus::Exited(_, 5)));
    assert_eq!(env.status(&s.id), "stopped");
    s.delete_twice();
    s.log_clean();
}

/// ctr 15-kill-all, 16-task-rm-f: kill --all ID 10, kill --all ID 9, delete, delete --force.
pub fn engine_ctr_kill_all() {
    let env = Env::new("engine_ctr");
    let s = Shim::new(&env, &env.sh_config("trap '' USR1; sleep 100 & sleep 100 & wait"));
    let pid = s.create();
    s.start();
    s.call(&["kill", "--all", &s.id, "10"]).expect_ok("kill --all 10");
    s.call(&["kill", "--all", &s.id, "9"]).expect_ok("kill --all 9");
    env.wait_exit(pid, T);
    s.delete_twice();
    s.log_clean();
}

/// docker 18-run-it-tty / ctr 19-run-rm-tty: create with --console-socket.
pub fn engine_tty_flow() {
    let env = Env::new("engine_tty");
    let sock = env.dir.join("pty.sock");
    let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let mut cfg = env.sh_config("tty");
    cfg["process"]["terminal"] = json!(true);
    let s = Shim::new(&env, &cfg);
    let pidfile = format!("{}/init.pid", s.b());
    s.call(&[
        "create",
        "--bundle",
        s.b(),
        "--pid-file",
        &pidfile,
        "--console-socket",
        sock.to_str().unwrap(),
        &s.id,
    ])
    .expect_ok("create --console-socket");
    let pid: i32 = read(Path::new(&pidfile)).trim().parse().unwrap();
    env.adopt(pid);
    let m = receive_master(&l);
    s.start();
    assert!(read_master(&m, T).starts_with("/dev/pts/0"));
    env.wait_exit(pid, T);
    s.delete_twice();
    s.log_clean();
}

/// The failure path: containerd shows the user the `msg` of the last error line of log.json.
pub fn engine_failure_logged() {
    let env = Env::new("engine_failure");
    let s = Shim::new(&env, &env.config(&["/no/such/entrypoint"]));
    let pidfile = format!("{}/init.pid", s.b());
    s.call(&["create", "--bundle", s.b(), "--pid-file", &pidfile, &s.id])
        .expect_err("create", "/no/such/entrypoint");
    assert!(!Path::new(&pidfile).exists(), "a pid file was written for a failed create");
    let log = read(&s.b.join("log.json"));
    let last: serde_json::Value = serde_json::from_str(log.lines().last().expect("a log line")).unwrap();
    assert_eq!(last["level"], "error");
    assert!(last["msg"].as_str().unwrap().contains("/no/such/entrypoint"), "{last}");
    // What the shim does next.
    s.call(&["delete", "--force", &s.id]).expect_ok("delete --force");
    env.assert_nothing_left(&s.id, &s.b);
}

/// podman 01-run-d .. 17-run-rm-fg: `--log-format=json --log FILE create ...`, then plain
/// `start`, `kill ID 15`, `kill ID 9`, `delete --force` (podman gives no --root; the test
/// puts its own --root first so it never touches /run/tinyrt).
pub fn engine_podman_flow() {
    let env = Env::new("engine_podman");
    let b = env.bundle(&trap_term(&env));
    let userdata = env.dir.join("userdata");
    std::fs::create_dir_all(&userdata).unwrap();
    let log = format!("{}/oci-log", userdata.display());
    let pidfile = format!("{}/pidfile", userdata.display());
    let root = env.root.to_str().unwrap();
    let id = env.id();
    let create = |id: &str| {
        env.rt_raw(&[
            "--root",
            root,
            "--log-format=json",
            "--log",
            &log,
            "create",
            "--bundle",
            b.to_str().unwrap(),
            "--pid-file",
            &pidfile,
            id,
        ])
        .expect_ok("podman create");
        let pid: i32 = read(Path::new(&pidfile)).trim().parse().unwrap();
        env.adopt(pid);
        pid
    };
    let plain = |args: &[&str]| {
        let mut a = vec!["--root", root];
        a.extend_from_slice(args);
        env.rt_raw(&a)
    };
    // 01-run-d, 10-stop
    let pid = create(&id);
    plain(&["start", &id]).expect_ok("start");
    env.until("the TERM trap", T, || catches(pid, libc::SIGTERM));
    plain(&["kill", &id, "15"]).expect_ok("kill 15");
    env.wait_exit(pid, T);
    plain(&["delete", "--force", &id]).expect_ok("delete --force");
    // 11-start, 12-kill
    let pid = create(&id);
    plain(&["start", &id]).expect_ok("start");
    plain(&["kill", &id, "9"]).expect_ok("kill 9");
    env.wait_exit(pid, T);
    plain(&["delete", "--force", &id]).expect_ok("delete --force");
    // 16-rm-f-running: kill 15 to an init that ignores it, then delete --force at once.
    let b2 = env.bundle(&env.config(&["sleep", "100"]));
    let id2 = env.id();
    env.rt_raw(&[
        "--root",
        root,
        "--log-format=json",
        "--log",
        &log,
        "create",
        "--bundle",
        b2.to_str().unwrap(),
        "--pid-file",
        &pidfile,
        &id2,
    ])
    .expect_ok("create");
    let pid = read(Path::new(&pidfile)).trim().parse().unwrap();
    env.adopt(pid);
    plain(&["start", &id2]).expect_ok("start");
    plain(&["kill", &id2, "15"]).expect_ok("kill 15");
    plain(&["delete", "--force", &id2]).expect_ok("delete --force of a running container");
    env.wait_exit(pid, T);
    env.assert_nothing_left(&id, &b);
    env.assert_nothing_left(&id2, &b2);
    // 21-info
    assert!(env.rt_raw(&["--version"]).stdout.contains("tinyrt version"));
    for l in read(Path::new(&log)).lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_ne!(v["level"], "error", "{l}");
    }
}
