//! The fixture every conformance test uses: a shared busybox rootfs, one private directory
//! per test (bundles, `--root` state dir, command output files), unique container ids, the
//! tinyrt binary run as a subprocess with a timeout, and cleanup that runs even on failure.

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde_json::{Value, json};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::support::procs::children_in_cgroup;

pub const RT: &str = env!("CARGO_BIN_EXE_tinyrt");
/// The longest any single tinyrt invocation may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Where the suite keeps what outlives one test (the rootfs).
fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("conformance")
}

/// The busybox rootfs, built once per run (under a file lock: several suites may run at once).
/// Tests share it read-only.
pub fn rootfs() -> &'static Path {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS.get_or_init(|| {
        let base = suite_dir();
        std::fs::create_dir_all(&base).expect("creating target/conformance");
        let lock = std::fs::File::create(base.join(".lock")).expect("lock file");
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0, "flock");
        let rootfs = base.join("rootfs");
        let done = base.join("rootfs.ok");
        if !done.exists() {
            let tmp = base.join("rootfs.tmp");
            let _ = std::fs::remove_dir_all(&tmp);
            let _ = std::fs::remove_dir_all(&rootfs);
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bundle-examples/mkrootfs.sh");
            let st = Command::new("sh")
                .arg(&script)
                .arg(&tmp)
                .stdout(Stdio::null())
                .status()
                .expect("running mkrootfs.sh");
            assert!(st.success(), "mkrootfs.sh failed: {st}");
            std::fs::rename(&tmp, &rootfs).expect("renaming the rootfs");
            std::fs::write(&done, b"").expect("rootfs marker");
        }
        rootfs
    })
}

/// `tinyrt spec`'s default config, generated once.
fn default_spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let dir = suite_dir().join(format!("spec.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let st = Command::new(RT).args(["spec", "--bundle"]).arg(&dir).status().unwrap();
        assert!(st.success(), "tinyrt spec failed");
        let v: Value = serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        v
    })
}

/// What a finished command left: its exit code (128+n when killed by signal n), stdout, stderr.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.code == 0
    }
    #[track_caller]
    pub fn expect_ok(&self, what: &str) -> &Self {
        assert!(
            self.ok(),
            "{what}: exit {}\nstdout: {}\nstderr: {}",
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }
    #[track_caller]
    pub fn expect_fail(&self, what: &str) -> &Self {
        assert!(
            !self.ok(),
            "{what}: unexpectedly succeeded\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }
    /// Fails (non-zero) and stderr mentions `needle`.
    #[track_caller]
    pub fn expect_err(&self, what: &str, needle: &str) -> &Self {
        self.expect_fail(what);
        assert!(
            self.stderr.contains(needle),
            "{what}: stderr does not mention {needle:?}: {}",
            self.stderr
        );
        self
    }
}

/// A command running in the background (stdout/stderr go to files).
pub struct Bg {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Bg {
    #[track_caller]
    pub fn wait(mut self, timeout: Duration) -> Out {
        let deadline = Instant::now() + timeout;
        let mut nap = Duration::from_millis(1);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("command timed out after {timeout:?}: {}", read(&self.err));
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(20));
        };
        use std::os::unix::process::ExitStatusExt;
        let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        Out {
            code,
            stdout: read(&self.out),
            stderr: read(&self.err),
        }
    }
}

pub fn read(p: &Path) -> String {
    std::fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// One test's private world. Dropping it force-deletes every container it made, reaps their
/// processes (the suite is their subreaper), removes its directory, and fails the test if a
/// container's state or cgroup directories are left.
pub struct Env {
    pub name: String,
    pub dir: PathBuf,
    pub root: PathBuf,
    ids: Mutex<Vec<String>>,
    /// Container processes (inits, `exec --detach`ed ones) that were reparented to us and
    /// are not reaped yet.
    pids: Mutex<Vec<i32>>,
    n: AtomicUsize,
}

impl Env {
    pub fn new(name: &str) -> Env {
        rootfs();
        let dir = std::env::temp_dir().join(format!("tinyrt-conf.{}.{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the test dir");
        let root = dir.join("state");
        Env {
            name: name.to_string(),
            dir,
            root,
            ids: Mutex::new(vec![]),
            pids: Mutex::new(vec![]),
            n: AtomicUsize::new(0),
        }
    }

    fn next(&self) -> usize {
        self.n.fetch_add(1, Ordering::Relaxed)
    }

    /// A fresh container id, unique across concurrent suites; it is force-deleted on drop.
    pub fn id(&self) -> String {
        let id = format!("{}-{}-{}", self.name.replace('_', "-"), std::process::id(), self.next());
        self.ids.lock().unwrap().push(id.clone());
        id
    }

    /// runc's default config (from `tinyrt spec`) with the shared rootfs, no terminal, and `args`.
    pub fn config(&self, args: &[&str]) -> Value {
        let mut c = default_spec().clone();
        c["process"]["terminal"] = json!(false);
        c["process"]["args"] = json!(args);
        c["root"]["path"] = json!(rootfs());
        c
    }

    /// `sh -c script` in the default config.
    pub fn sh_config(&self, script: &str) -> Value {
        self.config(&["sh", "-c", script])
    }

    /// A new bundle directory holding `cfg` as config.json.
    pub fn bundle(&self, cfg: &Value) -> PathBuf {
        let b = self.dir.join(format!("bundle{}", self.next()));
        std::fs::create_dir_all(&b).unwrap();
        self.write_config(&b, cfg);
        b
    }

    pub fn write_config(&self, bundle: &Path, cfg: &Value) {
        std::fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(cfg).unwrap()).unwrap();
    }

    /// A private copy of the rootfs, for a test that makes the runtime create paths in it.
    pub fn private_rootfs(&self) -> PathBuf {
        let dst = self.dir.join(format!("rootfs{}", self.next()));
        let st = Command::new("cp").arg("-a").arg(rootfs()).arg(&dst).status().unwrap();
        assert!(st.success(), "copying the rootfs");
        dst
    }

    /// A tinyrt command with `--root` set.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(RT);
        c.arg("--root").arg(&self.root).args(args);
        c
    }

    /// Start `cmd` with stdin from /dev/null and stdout/stderr to files of this test.
    pub fn spawn(&self, mut cmd: Command) -> Bg {
        let n = self.next();
        let out = self.dir.join(format!("cmd{n}.out"));
        let err = self.dir.join(format!("cmd{n}.err"));
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        let child = cmd.spawn().expect("spawning tinyrt");
        Bg { child, out, err }
    }

    pub fn exec(&self, cmd: Command) -> Out {
        self.spawn(cmd).wait(TIMEOUT)
    }

    /// `tinyrt --root R args...`
    pub fn rt(&self, args: &[&str]) -> Out {
        self.exec(self.cmd(args))
    }

    /// `tinyrt args...` exactly as given (no `--root` added).
    pub fn rt_raw(&self, args: &[&str]) -> Out {
        let mut c = Command::new(RT);
        c.args(args);
        self.exec(c)
    }

    /// `run` a config in the foreground; returns what the container printed and its exit code.
    pub fn run(&self, cfg: &Value) -> Out {
        let b = self.bundle(cfg);
        let id = self.id();
        self.rt(&["run", "--bundle", b.to_str().unwrap(), &id])
    }

    /// Run `sh -c script` (after `tweak` edits the config), insist on exit 0, return stdout.
    #[track_caller]
    pub fn sh(&self, script: &str, tweak: impl FnOnce(&mut Value)) -> String {
        let mut cfg = self.sh_config(script);
        tweak(&mut cfg);
        let out = self.run(&cfg);
        out.expect_ok(&format!("run {script:?}"));
        out.stdout
    }

    /// `create` a bundle; insists on success; returns the init pid (registered for reaping).
    #[track_caller]
    pub fn create(&self, bundle: &Path, id: &str) -> i32 {
        self.rt(&["create", "--bundle", bundle.to_str().unwrap(), id]).expect_ok("create");
        let pid = self.state(id)["pid"].as_i64().expect("pid in state") as i32;
        self.adopt(pid);
        pid
    }

    /// Remember a container process that is now our child (reaped on drop or by `wait_exit`).
    pub fn adopt(&self, pid: i32) {
        if pid > 0 {
            self.pids.lock().unwrap().push(pid);
        }
    }

    #[track_caller]
    pub fn state(&self, id: &str) -> Value {
        let o = self.rt(&["state", id]);
        o.expect_ok("state");
        serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("state output is not JSON ({e}): {}", o.stdout))
    }

    pub fn status(&self, id: &str) -> String {
        self.state(id)["status"].as_str().unwrap_or("").to_string()
    }

    /// Wait for an adopted init to exit and reap it. Panics after `timeout`.
    #[track_caller]
    pub fn wait_exit(&self, pid: i32, timeout: Duration) -> WaitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {}
                Ok(s) => {
                    self.pids.lock().unwrap().retain(|p| *p != pid);
                    return s;
                }
                Err(e) => panic!("waitpid {pid}: {e}"),
            }
            assert!(Instant::now() < deadline, "process {pid} did not exit within {timeout:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Poll `f` until it is true (or panic after `timeout`).
    #[track_caller]
    pub fn until(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Nothing of container `id` (bundle `bundle`) is left: no state dir, no process, no mount
    /// on the host that mentions the test's paths, no cgroup directory.
    #[track_caller]
    pub fn assert_nothing_left(&self, id: &str, bundle: &Path) {
        assert!(
            !self.root.join(id).exists(),
            "state dir {} left behind",
            self.root.join(id).display()
        );
        let procs = processes_mentioning(&[bundle.to_str().unwrap(), id]);
        assert!(procs.is_empty(), "processes left behind: {procs:?}");
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        for l in mi.lines() {
            assert!(
                !l.contains(self.dir.to_str().unwrap()) && !l.contains(rootfs().to_str().unwrap()),
                "host mount left behind: {l}"
            );
        }
        for d in cgroup_dirs(id) {
            assert!(!d.exists(), "cgroup {} left behind", d.display());
        }
    }
}

impl Env {
    /// `delete --force id` as cleanup, reaping the container's processes that are our
    /// children while it runs: a PID namespace's init only finishes dying once every process
    /// of its namespace is reaped, and the ones `exec --detach` started were reparented to
    /// us. Without this, the delete times out waiting for the init and the container (its
    /// cgroups) stays. Returns tinyrt's stderr if it failed.
    fn cleanup_delete(&self, id: &str) -> Option<String> {
        let err = self.dir.join(format!("cleanup-{id}.err"));
        let mut c = self.cmd(&["delete", "--force", id]);
        c.stdin(Stdio::null()).stdout(Stdio::null());
        c.stderr(std::fs::File::create(&err).map(Stdio::from).unwrap_or_else(|_| Stdio::null()));
        let mut child = match c.spawn() {
            Ok(c) => c,
            Err(e) => return Some(format!("spawning tinyrt: {e}")),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            self.reap_exited(id);
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                _ => break None,
            }
        };
        let _ = child.kill();
        let _ = child.wait();
        self.reap_exited(id);
        match status {
            Some(s) if s.success() => None,
            Some(s) => Some(format!("{s}: {}", read(&err).trim())),
            None => Some(format!("timed out: {}", read(&err).trim())),
        }
    }

    /// Reap (without waiting) the processes of container `id` that are our children and have
    /// exited: the adopted ones, and any other in its cgroup.
    pub fn reap_exited(&self, id: &str) {
        let mut pids = std::mem::take(&mut *self.pids.lock().unwrap());
        pids.retain(|&p| matches!(waitpid(Pid::from_raw(p), Some(WaitPidFlag::WNOHANG)), Ok(WaitStatus::StillAlive)));
        self.pids.lock().unwrap().extend(pids);
        // (Not the adopted ones still alive: reaped here, they would stay listed.)
        let adopted = self.pids.lock().unwrap().clone();
        for p in children_in_cgroup(id).into_iter().filter(|p| !adopted.contains(p)) {
            let _ = waitpid(Pid::from_raw(p), Some(WaitPidFlag::WNOHANG));
        }
    }

    /// SIGKILL and reap every process we adopted and every child of ours in `ids`' cgroups.
    fn kill_and_reap_all(&self, ids: &[String]) {
        let mut pids = std::mem::take(&mut *self.pids.lock().unwrap());
        for id in ids {
            pids.extend(children_in_cgroup(id).into_iter().filter(|p| !pids.contains(p)).collect::<Vec<_>>());
        }
        for pid in pids {
            kill_and_reap(pid);
        }
    }
}

impl Drop for Env {
    /// Cleanup that really leaves nothing: every container force-deleted (its processes
    /// reaped meanwhile, see [`Env::cleanup_delete`]), every adopted process killed and reaped,
    /// and then no state dir and no cgroup directory of any id is left, or the test fails
    /// (the leftovers are removed all the same, so the host stays clean).
    fn drop(&mut self) {
        let ids = std::mem::take(&mut *self.ids.lock().unwrap());
        let mut problems = vec![];
        for id in &ids {
            if !self.root.join(id).exists() {
                continue;
            }
            if let Some(err) = self.cleanup_delete(id) {
                problems.push(format!("cleanup: delete --force {id} failed: {err}"));
                // Once more with nothing of ours holding it up.
                self.kill_and_reap_all(std::slice::from_ref(id));
                if let Some(err) = self.cleanup_delete(id) {
                    problems.push(format!("cleanup: delete --force {id} failed again: {err}"));
                }
            }
            if self.root.join(id).exists() {
                problems.push(format!("cleanup: state dir {} left", self.root.join(id).display()));
            }
        }
        self.kill_and_reap_all(&ids);
        for id in &ids {
            // rmdir: only an empty one goes (a populated one stays, and is reported).
            for d in cgroup_dirs(id).into_iter().filter(|d| d.exists()) {
                problems.push(format!("cleanup: cgroup {} left after delete", d.display()));
                let _ = std::fs::remove_dir(&d);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if !problems.is_empty() {
            let msg = format!("{}: {}", self.name, problems.join("\n"));
            if std::thread::panicking() {
                eprintln!("{msg}");
            } else {
                panic!("{msg}");
            }
        }
    }
}

/// SIGKILL one child of ours that is not reaped yet (so the pid is still its), and reap it.
fn kill_and_reap(pid: i32) {
    let p = Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
    for _ in 0..400 {
        match waitpid(p, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(5)),
            _ => return,
        }
    }
}

/// Pids (other than ours) whose command line contains any of `needles`.
pub fn processes_mentioning(needles: &[&str]) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if needles.iter().any(|n| cmdline.contains(n)) {
            out.push((pid, cmdline));
        }
    }
    out
}

/// The cgroup directory tinyrt would make for `id` in every hierarchy (relative cgroupsPath).
pub fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    tinyrt::cgroups::resolve(None, id, false).map(|c| c.leaves).unwrap_or_default()
}

/// The namespace link of `pid` (e.g. "net:[4026531840]").
pub fn ns_link(pid: &str, ns: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Add a mount to a config.
pub fn add_mount(cfg: &mut Value, m: Value) {
    cfg["mounts"].as_array_mut().expect("mounts").push(m);
}

/// Remove namespace `typ` from the config.
pub fn drop_ns(cfg: &mut Value, typ: &str) {
    cfg["linux"]["namespaces"].as_array_mut().unwrap().retain(|n| n["type"] != typ);
}

/// The mountinfo line (as seen inside a container) whose mount point is `mp`, last one wins.
pub fn mountinfo_line<'a>(mountinfo: &'a str, mp: &str) -> Option<&'a str> {
    mountinfo.lines().rfind(|l| l.split(' ').nth(4) == Some(mp))
}

/// A shell loop that waits until /tmp/go exists (the test creates it through /proc/PID/root).
/// Needs a writable /tmp: see [`with_tmp`].
pub const WAIT_GO: &str = "while [ ! -e /tmp/go ]; do usleep 10000; done";

/// Give the config a tmpfs at /tmp.
pub fn with_tmp(cfg: &mut Value) {
    add_mount(
        cfg,
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}),
    );
}

/// Release a container waiting in [`WAIT_GO`].
pub fn release(pid: i32) {
    std::fs::write(format!("/proc/{pid}/root/tmp/go"), b"").expect("writing /tmp/go into the container");
}

/// Whether `pid` has a handler for signal `sig` (from SigCgt in /proc/PID/status).
pub fn catches(pid: i32, sig: i32) -> bool {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .is_some_and(|m| m & (1 << (sig - 1)) != 0)
}

/// The value of a `Key:` line of /proc/self/status text.
pub fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status.lines().find_map(|l| l.strip_prefix(&format!("{key}:")).map(str::trim))
}

/// A detached `sleep` container (adopted for reaping); its id, init pid and bundle.
pub fn sleeper(env: &Env, tweak: impl FnOnce(&mut Value)) -> (String, i32, PathBuf) {
    let mut c = env.config(&["sleep", "3600"]);
    tweak(&mut c);
    let b = env.bundle(&c);
    let id = env.id();
    env.rt(&["run", "--detach", "--bundle", b.to_str().unwrap(), &id])
        .expect_ok("run --detach");
    let pid = env.state(&id)["pid"].as_i64().unwrap() as i32;
    env.adopt(pid);
    (id, pid, b)
}
