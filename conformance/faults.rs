//! Crash consistency: the runtime, the container's init or a hook is SIGKILLed at a random
//! instant of a verb (create, run, start, exec, kill, delete), then `delete --force` must
//! leave nothing: no state dir, no file in the root, no cgroup in any hierarchy, no process,
//! no host mount. The instants are drawn from a seeded generator (TINYRT_FAULT_SEED, and
//! TINYRT_FAULT_ITERS iterations per case), so a failure can be replayed.
//!
//! Each runtime command runs under a small reaper (this test binary again, see [`reaper_main`]):
//! a subreaper that reports the runtime's pid and exit, then reaps everything the runtime
//! left to it (the container's init, an exec'd process whose runtime was killed) until none
//! is left. So the test never reaps, or steals, another test's children, and a reaper that
//! does not end once the container is deleted shows a process left behind.
//!
//! The same cases run against another runc-compatible runtime when TINYRT_FAULT_RUNTIME names
//! its binary (e.g. /usr/sbin/runc, /usr/bin/crun). Then what is left is counted and printed
//! (`faults: <runtime> <case>: ...`), cleaned up by the test, and not a failure: that is how
//! the leak counts of runc and crun beside tinyrt's were measured.

use crate::harness::*;
use crate::support::fault_seed::{Rng, seed};

/// Kills per case unless TINYRT_FAULT_ITERS says otherwise.
fn iterations() -> usize {
    crate::support::fault_seed::iterations(40)
}
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The runtime under test, and whether it is tinyrt (leftovers fail the test) or another
/// runtime being measured (leftovers are counted).
fn runtime() -> (String, bool) {
    match std::env::var("TINYRT_FAULT_RUNTIME") {
        Ok(r) if !r.is_empty() => (r, false),
        _ => (RT.to_string(), true),
    }
}

/// Which process of the verb the fault kills.
#[derive(Clone, Copy, PartialEq)]
enum Victim {
    /// The runtime itself, at a random instant.
    Runtime,
    /// The runtime's children (the container's init, or an intermediate) at a random instant.
    Init,
    /// The createRuntime hook, once it runs.
    Hook,
    /// The runtime, once its createRuntime hook runs.
    RuntimeInHook,
}

/// What the container is before the verb runs.
#[derive(Clone, Copy, PartialEq)]
enum Before {
    Nothing,
    Created,
    Running,
}

struct Case {
    name: &'static str,
    before: Before,
    /// The verb's arguments; `{id}` and `{bundle}` are filled in.
    verb: &'static [&'static str],
    victim: Victim,
    max_delay_us: u64,
    /// Give the config a createRuntime hook that runs for a while.
    slow_hook: bool,
}

/// What one killed run left behind after `delete --force`, by kind.
#[derive(Default, Debug)]
struct Leaks {
    state_dirs: usize,
    cgroup_dirs: usize,
    processes: usize,
    mounts: usize,
    root_files: usize,
    failed_deletes: usize,
    hangs: usize,
}

impl Leaks {
    fn total(&self) -> usize {
        self.state_dirs + self.cgroup_dirs + self.processes + self.mounts + self.root_files + self.failed_deletes + self.hangs
    }
}

struct Faults<'a> {
    env: &'a Env,
    rt: String,
    strict: bool,
    /// Absolute cgroup parent under our own memory cgroup: an absolute path means the same to
    /// every runtime (crun reads a relative one from the hierarchy roots), and keeps every
    /// container under our own sub-path of the supervisor's memory hierarchy.
    cg_parent: String,
    /// Per hierarchy mount point, the deepest ancestor of `cg_parent` that existed before.
    existed: Vec<(PathBuf, PathBuf)>,
    n: std::cell::Cell<usize>,
}

/// One runtime command under its reaper.
struct Reaped {
    reaper: Child,
    report: PathBuf,
}

impl Reaped {
    fn line(&self, key: &str) -> Option<i32> {
        let text = std::fs::read_to_string(&self.report).ok()?;
        text.lines().find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
    }

    /// The runtime's pid, once the reaper started it.
    fn pid(&self) -> Pid {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(p) = self.line("pid ") {
                return Pid::from_raw(p);
            }
            assert!(Instant::now() < end, "the reaper did not start the runtime");
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// The runtime's exit code (128+n for signal n), or None if it did not end within `limit`.
    fn status(&self, limit: Duration) -> Option<i32> {
        let end = Instant::now() + limit;
        loop {
            if let Some(c) = self.line("exit ") {
                return Some(c);
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Wait for the reaper to end (everything under it reaped). On timeout, what is still
    /// under it is returned, then killed.
    fn finish(mut self, limit: Duration) -> Vec<(i32, String)> {
        let end = Instant::now() + limit;
        loop {
            if let Ok(Some(_)) = self.reaper.try_wait() {
                return vec![];
            }
            if Instant::now() > end {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let left = descendants(self.reaper.id() as i32);
        for (p, _) in &left {
            let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
        }
        let _ = self.reaper.kill();
        let _ = self.reaper.wait();
        left
    }
}

/// The reaper: run as `conformance` with TINYRT_FAULT_REAPER=<report file> and the runtime's
/// command line. It is a child subreaper; it writes `pid N` once the runtime runs and
/// `exit C` once it ended, then reaps every orphan that comes to it until it has no child.
pub fn reaper_main(report: &str) -> ! {
    use std::io::Write;
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let mut out = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(report)
        .expect("report file");
    let child = Command::new(&args[0])
        .args(&args[1..])
        .env_remove("TINYRT_FAULT_REAPER")
        .stdin(Stdio::null())
        .spawn()
        .expect("starting the runtime");
    let pid = Pid::from_raw(child.id() as i32);
    writeln!(out, "pid {pid}").unwrap();
    let code = loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, c)) => break c,
            Ok(WaitStatus::Signaled(_, s, _)) => break 128 + s as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => panic!("waitpid: {e}"),
        }
    };
    writeln!(out, "exit {code}").unwrap();
    while waitpid(None, None) != Err(nix::errno::Errno::ECHILD) {}
    std::process::exit(0)
}

/// Our own cgroup in the memory hierarchy (where tinyrt would put a relative path's parent).
fn own_memory_cgroup() -> String {
    let leaves = tinyrt::cgroups::resolve(None, "x", false).map(|c| c.leaves).unwrap_or_default();
    tinyrt::cgroups::hierarchies()
        .into_iter()
        .zip(leaves)
        .find(|(h, _)| h.controllers.split(',').any(|c| c == "memory"))
        .and_then(|(h, leaf)| Some(format!("/{}", leaf.parent()?.strip_prefix(&h.mountpoint).ok()?.display())))
        .unwrap_or_else(|| "/".into())
}

impl<'a> Faults<'a> {
    fn new(env: &'a Env, name: &str) -> Self {
        let (rt, strict) = runtime();
        let cg_parent = format!(
            "{}/tinyrt-faults-{}-{name}",
            own_memory_cgroup().trim_end_matches('/'),
            std::process::id()
        );
        let existed = tinyrt::cgroups::hierarchies()
            .into_iter()
            .map(|h| {
                let mut d = h.mountpoint.join(cg_parent.trim_start_matches('/'));
                while !d.is_dir() && d != h.mountpoint {
                    d.pop();
                }
                (h.mountpoint, d)
            })
            .collect();
        Faults {
            env,
            rt,
            strict,
            cg_parent,
            existed,
            n: Default::default(),
        }
    }

    fn cgroup_dirs(&self, id: &str) -> Vec<PathBuf> {
        let path = format!("{}/{id}", self.cg_parent);
        tinyrt::cgroups::resolve(Some(Path::new(&path)), id, false)
            .map(|c| c.leaves)
            .unwrap_or_default()
    }

    /// Start `runtime --root R args...` under a reaper; its stderr goes to `err`, its stdout
    /// beside it (`.out`).
    fn spawn(&self, args: &[&str], err: &Path) -> Reaped {
        self.n.set(self.n.get() + 1);
        let report = self.env.dir.join(format!("reaper{}", self.n.get()));
        let reaper = Command::new(std::env::current_exe().unwrap())
            .env("TINYRT_FAULT_REAPER", &report)
            .arg(&self.rt)
            .arg("--root")
            .arg(&self.env.root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(err.with_extension("out")).unwrap())
            .stderr(std::fs::File::create(err).unwrap())
            .spawn()
            .expect("spawning the reaper");
        Reaped { reaper, report }
    }

    /// Run a runtime command to its end (bounded): whether it succeeded, its stderr, and its
    /// reaper (still holding what the command left running, e.g. a container's init).
    fn rt(&self, args: &[&str]) -> (bool, String, Reaped) {
        let err = self.env.dir.join(format!("cmd{}.err", self.n.get() + 1));
        let r = self.spawn(args, &err);
        let ok = r.status(Duration::from_secs(30)) == Some(0);
        (ok, read(&err), r)
    }

    fn config(&self, id: &str, slow_hook: bool) -> Value {
        let mut c = self.env.config(&["sleep", "3600"]);
        c["linux"]["cgroupsPath"] = json!(format!("{}/{id}", self.cg_parent));
        if slow_hook {
            // bash's `exec -a` names the hook after the container, so the test can find it.
            c["hooks"] = json!({"createRuntime": [{
                "path": "/bin/bash",
                "args": ["bash", "-c", format!("exec -a fault-hook-{id} sleep 30")],
            }]});
        }
        c
    }

    /// Bring container `id` to `before` with the runtime under test.
    fn prepare(&self, id: &str, bundle: &Path, before: Before) -> Option<Reaped> {
        let b = bundle.to_str().unwrap();
        let (ok, err, r) = match before {
            Before::Nothing => return None,
            Before::Created => self.rt(&["create", "--bundle", b, id]),
            Before::Running => self.rt(&["run", "--detach", "--bundle", b, id]),
        };
        assert!(ok, "{}: preparing {id}: {err}", self.rt);
        Some(r)
    }

    fn run_case(&self, case: &Case) {
        let mut rng = Rng(seed() ^ case.name.len() as u64 ^ (case.max_delay_us << 7));
        let mut leaks = Leaks::default();
        let (mut finished, mut cut) = (0, 0);
        for i in 0..iterations() {
            // (The trailing letter keeps one id from being a prefix of another.)
            let id = format!("{}-{}-{i}c", case.name.replace('_', "-"), std::process::id());
            let bundle = self.env.bundle(&self.config(&id, case.slow_hook));
            // Whatever happens (a failed assertion included), this iteration's leftovers go.
            let _guard = Cleanup(self, &id, &bundle);
            let mut reapers: Vec<Reaped> = self.prepare(&id, &bundle, case.before).into_iter().collect();
            let delay = rng.delay(case.max_delay_us);
            let args: Vec<String> = case
                .verb
                .iter()
                .map(|a| a.replace("{id}", &id).replace("{bundle}", bundle.to_str().unwrap()))
                .collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let verb = self.spawn(&args, &self.env.dir.join("verb.err"));
            let rpid = verb.pid();
            match case.victim {
                Victim::Runtime => {
                    std::thread::sleep(delay);
                    let _ = kill(rpid, Signal::SIGKILL);
                }
                Victim::Init => {
                    std::thread::sleep(delay);
                    for (p, _) in descendants(rpid.as_raw()) {
                        let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
                    }
                }
                Victim::Hook | Victim::RuntimeInHook => {
                    let hook = format!("fault-hook-{id}");
                    let end = Instant::now() + Duration::from_secs(20);
                    let found = loop {
                        let h = processes_mentioning(&[&hook]);
                        if !h.is_empty() || Instant::now() > end || verb.line("exit ").is_some() {
                            break h;
                        }
                        std::thread::sleep(Duration::from_micros(200));
                    };
                    assert!(!found.is_empty(), "{}: iteration {i}: the hook of {id} never ran", case.name);
                    std::thread::sleep(delay);
                    if case.victim == Victim::Hook {
                        for (p, _) in found {
                            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
                        }
                    } else {
                        let _ = kill(rpid, Signal::SIGKILL);
                    }
                }
            }
            // A killed init or hook must not make the verb hang.
            match verb.status(Duration::from_secs(20)) {
                Some(0) => finished += 1,
                Some(_) => cut += 1,
                None => {
                    leaks.hangs += 1;
                    assert!(!self.strict, "{}: iteration {i}: the verb hung after the kill", case.name);
                    let _ = kill(rpid, Signal::SIGKILL);
                }
            }
            reapers.push(verb);
            // A container the kill left half-made is listed, so an engine can delete it.
            if self.strict && self.env.root.join(&id).exists() {
                let (ok, err, r) = self.rt(&["list", "--format", "json"]);
                reapers.push(r);
                let listed = read(&self.env.dir.join(format!("cmd{}.out", self.n.get())));
                assert!(ok, "{}: iteration {i}: list failed: {err}", case.name);
                let rows: Vec<Value> = serde_json::from_str(&listed).unwrap_or_else(|e| panic!("list output ({e}): {listed}"));
                assert!(
                    rows.iter().any(|r| r["id"] == id.as_str()),
                    "{}: iteration {i}: {id} (its state dir exists) is not listed: {listed}",
                    case.name
                );
            }
            let (ok, err, del) = self.rt(&["delete", "--force", &id]);
            reapers.push(del);
            if !ok && !err.contains("does not exist") && !err.contains("not exist") {
                leaks.failed_deletes += 1;
                assert!(
                    !self.strict,
                    "{}: iteration {i} (seed {:#x}, killed after {delay:?}): delete --force {id}: {err}",
                    case.name,
                    seed()
                );
            }
            let left = self.leftovers(&id, &bundle, reapers, &mut leaks);
            assert!(
                !self.strict || left.is_empty(),
                "{}: iteration {i} (seed {:#x}, killed after {delay:?}): left behind: {left:?}",
                case.name,
                seed()
            );
        }
        eprintln!(
            "faults: {} {}: {} kills ({cut} cut the verb short, {finished} after it finished): left {leaks:?}",
            Path::new(&self.rt).file_name().unwrap().to_string_lossy(),
            case.name,
            iterations()
        );
        if self.strict {
            assert_eq!(leaks.total(), 0);
            // The kills really landed inside the verb, not all after it.
            assert!(cut > 0, "{}: no kill cut the verb short ({finished} finished first)", case.name);
        }
    }

    /// Everything of `id` still there after its `delete --force`, counted into `leaks`.
    fn leftovers(&self, id: &str, bundle: &Path, reapers: Vec<Reaped>, leaks: &mut Leaks) -> Vec<String> {
        let mut left = vec![];
        // Every process the commands left must be gone, so their reapers end. (A SIGKILLed
        // init's namespace is torn down asynchronously: give it a moment.)
        let mut procs = vec![];
        for r in reapers {
            procs.extend(r.finish(Duration::from_secs(3)));
        }
        for (p, c) in live_mentioning(id, bundle) {
            if !procs.iter().any(|(q, _)| *q == p) {
                procs.push((p, c));
            }
        }
        for d in self.cgroup_dirs(id) {
            let pids = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            for p in pids.lines().filter_map(|l| l.parse::<i32>().ok()) {
                if !procs.iter().any(|(q, _)| *q == p) {
                    procs.push((p, "(in the container's cgroup)".into()));
                }
            }
        }
        if !procs.is_empty() {
            leaks.processes += procs.len();
            left.push(format!("processes {procs:?}"));
        }
        if self.env.root.join(id).exists() {
            leaks.state_dirs += 1;
            left.push(format!("state dir {}", self.env.root.join(id).display()));
        }
        if let Ok(rd) = std::fs::read_dir(&self.env.root) {
            for e in rd.flatten().filter(|e| e.file_name() != id) {
                leaks.root_files += 1;
                left.push(format!("file in the root: {}", e.path().display()));
            }
        }
        for d in self.cgroup_dirs(id).into_iter().filter(|d| d.exists()) {
            leaks.cgroup_dirs += 1;
            left.push(format!("cgroup {}", d.display()));
        }
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        for l in mi
            .lines()
            .filter(|l| l.contains(self.env.dir.to_str().unwrap()) || l.contains(rootfs().to_str().unwrap()))
        {
            leaks.mounts += 1;
            left.push(format!("mount {l}"));
        }
        left
    }

    /// Remove what a measured runtime left (tinyrt's are asserted before this runs).
    fn clean(&self, id: &str, bundle: &Path) {
        for _ in 0..3 {
            let mut pids: Vec<i32> = live_mentioning(id, bundle).into_iter().map(|(p, _)| p).collect();
            for d in self.cgroup_dirs(id) {
                let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
                pids.extend(procs.lines().filter_map(|l| l.parse::<i32>().ok()));
            }
            if pids.is_empty() {
                break;
            }
            for p in pids {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mut mps: Vec<String> = mi
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|mp| mp.starts_with(self.env.dir.to_str().unwrap()))
            .map(str::to_string)
            .collect();
        mps.reverse();
        for mp in mps {
            let _ = nix::mount::umount2(mp.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        for d in self.cgroup_dirs(id) {
            let _ = std::fs::remove_dir(&d);
        }
        if let Ok(rd) = std::fs::read_dir(&self.env.root) {
            for e in rd.flatten() {
                let _ = std::fs::remove_dir_all(e.path()).or_else(|_| std::fs::remove_file(e.path()));
            }
        }
        let _ = std::fs::remove_dir_all(bundle);
    }
}

/// Runs [`Faults::clean`] for one container when dropped.
struct Cleanup<'f, 'a>(&'f Faults<'a>, &'f str, &'f Path);

impl Drop for Cleanup<'_, '_> {
    fn drop(&mut self) {
        self.0.clean(self.1, self.2);
    }
}

impl Drop for Faults<'_> {
    /// Remove the cgroup parents the runtimes made for `cg_parent`, down to what existed.
    fn drop(&mut self) {
        for (mp, existed) in &self.existed {
            let mut d = mp.join(self.cg_parent.trim_start_matches('/'));
            while d != *existed && d.starts_with(existed) {
                if std::fs::remove_dir(&d).is_err() && d.exists() {
                    eprintln!("faults: cgroup {} left", d.display());
                    break;
                }
                d.pop();
            }
        }
    }
}

/// Live (not zombie) processes whose command line mentions the id or the bundle.
fn live_mentioning(id: &str, bundle: &Path) -> Vec<(i32, String)> {
    processes_mentioning(&[id, bundle.to_str().unwrap()])
        .into_iter()
        .filter(|(p, _)| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with('Z')))
                .unwrap_or(false)
        })
        .collect()
}

/// Every descendant of `pid` (children first found, then theirs), with its command line.
fn descendants(pid: i32) -> Vec<(i32, String)> {
    let table: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter_map(|p| {
                    let s = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
                    let ppid = s.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()?;
                    Some((p, ppid))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(table.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    out.into_iter()
        .skip(1)
        .map(|p| {
            let c = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            (p, String::from_utf8_lossy(&c).replace('\0', " "))
        })
        .collect()
}

fn run(case: Case) {
    let env = Env::new(case.name);
    let f = Faults::new(&env, case.name);
    f.run_case(&case);
}

pub fn kill_during_create() {
    run(Case {
        name: "fault_create",
        before: Before::Nothing,
        verb: &["create", "--bundle", "{bundle}", "{id}"],
        victim: Victim::Runtime,
        max_delay_us: 12_000,
        slow_hook: false,
    });
}

pub fn kill_during_run_detach() {
    run(Case {
        name: "fault_run",
        before: Before::Nothing,
        verb: &["run", "--detach", "--bundle", "{bundle}", "{id}"],
        victim: Victim::Runtime,
        max_delay_us: 15_000,
        slow_hook: false,
    });
}

pub fn kill_during_start() {
    run(Case {
        name: "fault_start",
        before: Before::Created,
        verb: &["start", "{id}"],
        victim: Victim::Runtime,
        max_delay_us: 4_000,
        slow_hook: false,
    });
}

pub fn kill_during_exec() {
    run(Case {
        name: "fault_exec",
        before: Before::Running,
        verb: &["exec", "{id}", "true"],
        victim: Victim::Runtime,
        max_delay_us: 8_000,
        slow_hook: false,
    });
}

pub fn kill_during_kill() {
    run(Case {
        name: "fault_kill",
        before: Before::Running,
        verb: &["kill", "{id}", "KILL"],
        victim: Victim::Runtime,
        max_delay_us: 3_000,
        slow_hook: false,
    });
}

pub fn kill_during_delete() {
    run(Case {
        name: "fault_delete",
        before: Before::Running,
        verb: &["delete", "--force", "{id}"],
        victim: Victim::Runtime,
        max_delay_us: 8_000,
        slow_hook: false,
    });
}

/// The container's init (or the runtime's intermediate) dies at a random instant of create:
/// create must end (not hang) and fail or leave a stopped container; delete cleans up.
pub fn init_killed_during_create() {
    run(Case {
        name: "fault_init",
        before: Before::Nothing,
        verb: &["create", "--bundle", "{bundle}", "{id}"],
        victim: Victim::Init,
        max_delay_us: 10_000,
        slow_hook: false,
    });
}

/// A createRuntime hook is killed while it runs: create fails and leaves nothing.
pub fn hook_killed_during_create() {
    run(Case {
        name: "fault_hook",
        before: Before::Nothing,
        verb: &["create", "--bundle", "{bundle}", "{id}"],
        victim: Victim::Hook,
        max_delay_us: 2_000,
        slow_hook: true,
    });
}

/// The runtime is killed while its createRuntime hook runs: the hook must not outlive it.
pub fn killed_while_hook_runs() {
    run(Case {
        name: "fault_in_hook",
        before: Before::Nothing,
        verb: &["create", "--bundle", "{bundle}", "{id}"],
        victim: Victim::RuntimeInHook,
        max_delay_us: 2_000,
        slow_hook: true,
    });
}
