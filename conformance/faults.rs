//! Crash consistency: tinyrt SIGKILLed at a random instant of `create` (or `run`), then
//! `delete --force` must leave nothing: no state dir, no cgroup in any hierarchy, no process,
//! no host mount. The instants are drawn from a seeded generator (TINYRT_FAULT_SEED, and
//! TINYRT_FAULT_ITERS iterations per verb), so a failure can be replayed.

use crate::harness::*;
use crate::support::procs::our_children;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use std::path::Path;
use std::time::{Duration, Instant};

/// xorshift64*: small, seedable, good enough to spread kill instants.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn seed() -> u64 {
    std::env::var("TINYRT_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x7e57_5eed)
}

fn iterations() -> usize {
    std::env::var("TINYRT_FAULT_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(40)
}

/// Reap our children whose command line names `id` (inits of killed runs reparented to us,
/// and their intermediates), until none is left or `limit` passes.
fn reap_mentioning(id: &str, limit: Duration) {
    let end = Instant::now() + limit;
    loop {
        let ours: Vec<i32> = our_children()
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| String::from_utf8_lossy(&std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default()).contains(id))
            .collect();
        for &p in &ours {
            let _ = waitpid(Pid::from_raw(p), Some(WaitPidFlag::WNOHANG));
        }
        if ours.is_empty() || Instant::now() > end {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Kill `verb` (create, or run --detach) after a random delay, `delete --force`, check.
fn kill_during(name: &str, verb: &[&str], max_delay_us: u64) {
    let env = Env::new(name);
    let b = env.bundle(&env.config(&["sleep", "3600"]));
    let mut rng = Rng(seed() ^ name.len() as u64);
    let mut killed_at = vec![];
    // How far the killed runs got: no state dir, a state dir (create was under way), a
    // container that came up (the verb finished before the kill).
    let (mut none, mut partial, mut whole) = (0, 0, 0);
    for i in 0..iterations() {
        let id = env.id();
        let delay = Duration::from_micros(rng.next() % max_delay_us);
        let mut args: Vec<&str> = verb.to_vec();
        args.extend(["--bundle", b.to_str().unwrap(), &id]);
        let mut cmd = env.cmd(&args);
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().expect("spawning tinyrt");
        std::thread::sleep(delay);
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        let finished = child.wait().map(|s| s.success()).unwrap_or(false);
        killed_at.push(delay.as_micros());
        match (finished, env.root.join(&id).exists()) {
            (true, _) => whole += 1,
            (false, true) => partial += 1,
            (false, false) => none += 1,
        }
        let out = env.rt(&["delete", "--force", &id]);
        assert!(
            out.ok() || out.stderr.contains("does not exist"),
            "iteration {i} (seed {:#x}, killed after {delay:?}, finished: {finished}): delete --force {id}: {}",
            seed(),
            out.stderr
        );
        // A killed create's init that never got its Proceed exits on its own (its channel
        // closed); one that did is killed by delete. Either way it was reparented to us.
        reap_mentioning(&id, Duration::from_secs(5));
        env.assert_nothing_left(&id, Path::new(&format!("/nonexistent-{id}")));
        let left = processes_mentioning(&[&id]);
        assert!(left.is_empty(), "iteration {i} (killed after {delay:?}): processes left: {left:?}");
    }
    eprintln!(
        "{name}: {} kills: {none} before the state dir, {partial} during, {whole} after the verb finished",
        killed_at.len()
    );
    // The kills really landed inside the verb, not all before or after it.
    assert!(
        partial > 0,
        "no kill landed while {verb:?} was under way ({none} before, {whole} after)"
    );
}

pub fn kill_during_create() {
    kill_during("fault_create", &["create"], 12_000);
}

pub fn kill_during_run_detach() {
    kill_during("fault_run", &["run", "--detach"], 15_000);
}
