//! containerd alone: `ctr run --runtime io.containerd.runc.v2 --runc-binary <runtime>`, the way
//! a CRI `BinaryName` set-up calls tinyrt, without Docker in between.

use crate::util::{R, check, check_contains, check_eq, quote, sh, unique, wait_for};
use crate::{Check, Rt, engines};
use libtest_mimic::Failed;
use std::time::Duration;

pub fn checks() -> Vec<Check> {
    let c = |name, run| Check {
        engine: "containerd",
        name,
        run,
    };
    vec![
        c("run_rm_output", run_rm_output),
        c("exit_code", exit_code),
        c("run_tty", run_tty),
        c("exec", exec),
        c("exec_tty", exec_tty),
        c("pause_resume", pause_resume),
        c("kill_and_task_rm", kill_and_task_rm),
        c("kill_all", kill_all),
        c("metrics", metrics),
        c("cgroup_path", cgroup_path),
    ]
}

/// A container (and its task) removed when the check ends.
struct Ctr(String);

impl Drop for Ctr {
    fn drop(&mut self) {
        let c = &engines().ctr;
        let _ = sh(&format!(
            "{c} task kill -s KILL {0}; sleep 0.2; {c} task rm -f {0}; {c} c rm {0}",
            self.0
        ));
    }
}

fn runtime_flags(rt: Rt, id: &str) -> String {
    let e = engines();
    format!(
        "--runtime io.containerd.runc.v2 --runc-binary {} --runc-root {}/ctr-root-{} --cgroup {}/{id}",
        rt.binary().display(),
        e.work.display(),
        rt.label(),
        e.cgroup_parent
    )
}

fn run(rt: Rt, opts: &str, cmd: &str) -> crate::util::Out {
    let e = engines();
    let id = unique(&format!("c-{}", rt.label()));
    sh(&format!(
        "{} run --rm {} {opts} {} {id} {cmd}",
        e.ctr,
        runtime_flags(rt, &id),
        e.ctr_image
    ))
}

/// `ctr run -d` of `sh -c SCRIPT`.
fn detached(rt: Rt, script: &str) -> Result<Ctr, Failed> {
    let e = engines();
    let id = unique(&format!("c-{}", rt.label()));
    let c = Ctr(id.clone());
    sh(&format!(
        "{} run -d {} {} {id} sh -c {}",
        e.ctr,
        runtime_flags(rt, &id),
        e.ctr_image,
        quote(script)
    ))
    .ok()?;
    Ok(c)
}

fn status(id: &str) -> String {
    let ls = sh(&format!("{} task ls", engines().ctr)).stdout;
    ls.lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("")
        .to_string()
}

fn task_pid(id: &str) -> Result<String, Failed> {
    let ls = sh(&format!("{} task ls", engines().ctr)).ok()?;
    ls.stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(str::to_string)
        .ok_or_else(|| format!("no task {id}").into())
}

fn run_rm_output(rt: Rt) -> R {
    check_eq(run(rt, "", "echo hello-ctr").ok()?.out(), "hello-ctr", "output")
}

fn exit_code(rt: Rt) -> R {
    let o = run(rt, "", "sh -c 'exit 5'");
    check(o.code == 5, format!("exit {} (want 5): {}", o.code, o.stderr))
}

fn run_tty(rt: Rt) -> R {
    let e = engines();
    let id = unique(&format!("c-{}", rt.label()));
    let o = sh(&format!(
        "script -qec {} /dev/null",
        quote(&format!(
            "{} run --rm -t {} {} {id} tty",
            e.ctr,
            runtime_flags(rt, &id),
            e.ctr_image
        ))
    ));
    check_contains(&o.stdout, "/dev/pts/0", "tty")
}

fn exec(rt: Rt) -> R {
    let c = detached(rt, "exec sleep 600")?;
    let e = engines();
    let o = sh(&format!("{} task exec --exec-id e1 {} sh -c 'echo in-exec; exit 4'", e.ctr, c.0));
    check(o.code == 4, format!("exec exit {} (want 4)", o.code))?;
    check_eq(o.out(), "in-exec", "exec output")
}

fn exec_tty(rt: Rt) -> R {
    let c = detached(rt, "exec sleep 600")?;
    let o = sh(&format!(
        "script -qec {} /dev/null",
        quote(&format!("{} task exec -t --exec-id e2 {} tty", engines().ctr, c.0))
    ));
    check_contains(&o.stdout, "/dev/pts/", "exec tty")
}

fn pause_resume(rt: Rt) -> R {
    let c = detached(rt, "exec sleep 600")?;
    let e = engines();
    sh(&format!("{} task pause {}", e.ctr, c.0)).ok()?;
    check_eq(&status(&c.0), "PAUSED", "status after pause")?;
    sh(&format!("{} task resume {}", e.ctr, c.0)).ok()?;
    check_eq(&status(&c.0), "RUNNING", "status after resume")
}

fn kill_and_task_rm(rt: Rt) -> R {
    let c = detached(rt, "trap 'exit 9' TERM; while true; do sleep 0.1; done")?;
    let e = engines();
    std::thread::sleep(Duration::from_millis(300));
    sh(&format!("{} task kill -s TERM {}", e.ctr, c.0)).ok()?;
    let stopped = wait_for(Duration::from_secs(10), || (status(&c.0) == "STOPPED").then_some(()));
    check(stopped.is_some(), format!("status after TERM: {}", status(&c.0)))?;
    let rm = sh(&format!("{} task rm {}", e.ctr, c.0)).ok()?;
    check(
        rm.stdout.contains("9") || rm.stderr.contains("9"),
        format!("task rm should report exit 9: {}{}", rm.stdout, rm.stderr),
    )?;
    sh(&format!("{} c rm {}", e.ctr, c.0)).ok()?;
    Ok(())
}

fn kill_all(rt: Rt) -> R {
    let c = detached(rt, "sleep 600 & sleep 601 & wait")?;
    let e = engines();
    std::thread::sleep(Duration::from_millis(300));
    let pid = task_pid(&c.0)?;
    sh(&format!("{} task kill -a -s KILL {}", e.ctr, c.0)).ok()?;
    let stopped = wait_for(Duration::from_secs(10), || (status(&c.0) == "STOPPED").then_some(()));
    check(stopped.is_some(), format!("status after kill --all: {}", status(&c.0)))?;
    check(
        !std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists()
            || std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default().is_empty(),
        "init still alive",
    )
}

fn metrics(rt: Rt) -> R {
    let c = detached(rt, "exec sleep 600")?;
    let o = sh(&format!("{} task metrics {}", engines().ctr, c.0)).ok()?;
    check_contains(&o.stdout, "memory.usage_in_bytes", "metrics")
}

fn cgroup_path(rt: Rt) -> R {
    let c = detached(rt, "exec sleep 600")?;
    let pid = task_pid(&c.0)?;
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let want = format!("{}/{}", engines().cgroup_parent, c.0);
    check(
        cg.lines().filter(|l| l.ends_with(&want)).count() >= 8,
        format!("the task is not in {want} everywhere: {cg}"),
    )
}
