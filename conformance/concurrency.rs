//! Many containers under one --root, and commands racing on one container: `list` and
//! `state` never fail because a container came or went, and conflicting operations end in a
//! clear error for one side, never in a broken container or a leftover.

use crate::harness::*;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const N: usize = 50;

/// 50 containers started and force-deleted from 10 threads while two others list and query
/// them without pause: every `list` succeeds with well-formed JSON, every `state` either
/// succeeds or says the container does not exist, and nothing is left at the end.
pub fn fifty_containers_list_and_state() {
    let env = Arc::new(Env::new("concurrency_fifty"));
    let b = env.bundle(&env.config(&["sleep", "3600"]));
    let ids: Vec<String> = (0..N).map(|_| env.id()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut readers = vec![];
    for r in 0..2 {
        let (env, stop, errors, ids) = (env.clone(), stop.clone(), errors.clone(), ids.clone());
        readers.push(std::thread::spawn(move || {
            let mut calls = 0;
            while !stop.load(Ordering::Relaxed) {
                let out = env.rt(&["list", "--format", "json"]);
                match serde_json::from_str::<serde_json::Value>(&out.stdout) {
                    Ok(v) if out.ok() && v.is_array() => {}
                    _ => errors
                        .lock()
                        .unwrap()
                        .push(format!("list: exit ok={} {:?} {:?}", out.ok(), out.stdout, out.stderr)),
                }
                let id = &ids[(calls * 7 + r) % ids.len()];
                let st = env.rt(&["state", id]);
                let fine = (st.ok() && serde_json::from_str::<serde_json::Value>(&st.stdout).is_ok())
                    || (!st.ok() && st.stderr.contains("does not exist"));
                if !fine {
                    errors.lock().unwrap().push(format!("state {id}: {:?} {:?}", st.stdout, st.stderr));
                }
                calls += 1;
            }
            calls
        }));
    }
    let mut writers = vec![];
    for chunk in ids.chunks(N / 10) {
        let (env, errors, chunk, b) = (env.clone(), errors.clone(), chunk.to_vec(), b.clone());
        writers.push(std::thread::spawn(move || {
            for id in &chunk {
                let out = env.rt(&["run", "--detach", "--bundle", b.to_str().unwrap(), id]);
                if !out.ok() {
                    errors.lock().unwrap().push(format!("run --detach {id}: {}", out.stderr));
                }
            }
            for id in &chunk {
                let out = env.rt(&["delete", "--force", id]);
                if !out.ok() {
                    errors.lock().unwrap().push(format!("delete --force {id}: {}", out.stderr));
                }
            }
        }));
    }
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let calls: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
    for id in &ids {
        env.reap_exited(id);
    }
    let errors = errors.lock().unwrap();
    assert!(
        errors.is_empty(),
        "{} failures, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(calls > 10, "the readers made only {calls} calls");
    let nothing = Path::new("/nonexistent");
    for id in &ids {
        env.assert_nothing_left(id, nothing);
    }
}

/// Two `delete --force` of one running container at once, and `pause` racing a delete: each
/// either does its work or fails with a clear error; the container is gone at the end.
pub fn conflicting_operations() {
    let env = Arc::new(Env::new("concurrency_conflict"));
    let b = env.bundle(&env.config(&["sleep", "3600"]));
    for round in 0..10 {
        let id = env.id();
        env.rt(&["run", "--detach", "--bundle", b.to_str().unwrap(), &id])
            .expect_ok("run --detach");
        let second: &[&str] = if round % 2 == 0 { &["delete", "--force"] } else { &["pause"] };
        let (e1, e2, i1, i2) = (env.clone(), env.clone(), id.clone(), id.clone());
        let mut a2: Vec<String> = second.iter().map(|s| s.to_string()).collect();
        a2.push(i2);
        let t1 = std::thread::spawn(move || e1.rt(&["delete", "--force", &i1]));
        let t2 = std::thread::spawn(move || e2.rt(&a2.iter().map(String::as_str).collect::<Vec<_>>()));
        let (o1, o2) = (t1.join().unwrap(), t2.join().unwrap());
        for (what, o) in [("delete --force", &o1), (second.join(" ").as_str(), &o2)] {
            let clear = o.ok()
                || ["does not exist", "not running", "stopped", "cannot pause", "is being"]
                    .iter()
                    .any(|m| o.stderr.contains(m));
            assert!(clear, "round {round}: {what} {id}: unclear failure: {:?}", o.stderr);
        }
        assert!(
            o1.ok() || o2.ok() || second[0] == "pause",
            "round {round}: neither delete succeeded: {:?} / {:?}",
            o1.stderr,
            o2.stderr
        );
        // Whatever won, a last delete --force finds nothing or finishes the job.
        let last = env.rt(&["delete", "--force", &id]);
        assert!(
            last.ok() || last.stderr.contains("does not exist"),
            "round {round}: {}",
            last.stderr
        );
        env.reap_exited(&id);
        env.assert_nothing_left(&id, Path::new("/nonexistent"));
    }
}
