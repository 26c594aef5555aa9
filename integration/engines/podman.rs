//! podman 4.3 with conmon, `--runtime <path>`, cgroupfs and file events (no systemd here).
//! podman passes `--log-format=json --log FILE` only to a runtime whose basename is runc or
//! crun: `named_runc` runs the runtime through a symlink called `runc` to cover that form.

use crate::util::{R, check, check_contains, check_eq, quote, sh, unique, wait_for};
use crate::{Check, Rt, engines};
use libtest_mimic::Failed;
use std::path::PathBuf;
use std::time::Duration;

pub fn checks() -> Vec<Check> {
    let c = |name, run| Check {
        engine: "podman",
        name,
        run,
    };
    vec![
        c("run_output_and_exit_code", run_output_and_exit_code),
        c("run_it_tty", run_it_tty),
        c("exec", exec),
        c("exec_tty", exec_tty),
        c("pause_unpause", pause_unpause),
        c("update", update),
        c("stop", stop),
        c("kill_signal", kill_signal),
        c("rm_force", rm_force),
        c("default_network", default_network),
        c("named_runc", named_runc),
    ]
}

/// The options every podman run here needs: the machine's rlimits (podman's defaults exceed
/// them), conmon left in our cgroup, and the containers under the suite's own cgroup parent.
fn common() -> String {
    format!(
        "--ulimit nofile=20000:20000 --ulimit nproc=32768:32768 --cgroups=no-conmon --cgroup-parent {}",
        engines().cgroup_parent
    )
}

fn podman(rt: Rt, args: &str) -> crate::util::Out {
    podman_with(&rt.binary(), args)
}

fn podman_with(binary: &std::path::Path, args: &str) -> crate::util::Out {
    sh(&format!("{} --runtime {} {args}", engines().podman, binary.display()))
}

struct Ctr(Rt, String);

impl Drop for Ctr {
    fn drop(&mut self) {
        let _ = podman(self.0, &format!("rm -f -t 0 {}", self.1));
    }
}

fn run(rt: Rt, opts: &str, cmd: &str) -> crate::util::Out {
    podman(rt, &format!("run --rm {} {opts} {} {cmd}", common(), engines().podman_image))
}

fn detached(rt: Rt, script: &str) -> Result<Ctr, Failed> {
    let name = unique(&format!("p-{}", rt.label()));
    let c = Ctr(rt, name.clone());
    podman(
        rt,
        &format!(
            "run -d --name {name} --network none {} {} sh -c {}",
            common(),
            engines().podman_image,
            quote(script)
        ),
    )
    .ok()?;
    Ok(c)
}

fn sleeper(rt: Rt) -> Result<Ctr, Failed> {
    detached(rt, "trap 'exit 3' TERM; while true; do sleep 0.1; done")
}

fn inspect(rt: Rt, name: &str, fmt: &str) -> Result<String, Failed> {
    Ok(podman(rt, &format!("inspect -f {} {name}", quote(fmt))).ok()?.out().to_string())
}

fn run_output_and_exit_code(rt: Rt) -> R {
    check_eq(run(rt, "--network none", "echo hello-podman").ok()?.out(), "hello-podman", "output")?;
    let o = run(rt, "--network none", "sh -c 'exit 6'");
    check(o.code == 6, format!("exit {} (want 6): {}", o.code, o.stderr))
}

/// (The program waits a moment: podman attaches to the terminal after `start`, and the output
/// of a program that ends before that is lost, with runc as with tinyrt.)
fn run_it_tty(rt: Rt) -> R {
    let cmd = format!(
        "{} --runtime {} run --rm -it --network none {} {} sh -c 'sleep 0.5; tty'",
        engines().podman,
        rt.binary().display(),
        common(),
        engines().podman_image
    );
    let o = sh(&format!("script -qec {} /dev/null", quote(&cmd)));
    check_contains(&o.stdout, "/dev/pts/0", "tty")
}

fn exec(rt: Rt) -> R {
    let c = sleeper(rt)?;
    let o = podman(rt, &format!("exec {} sh -c 'echo in-exec; exit 4'", c.1));
    check(o.code == 4, format!("exec exit {} (want 4): {}", o.code, o.stderr))?;
    check_eq(o.out(), "in-exec", "exec output")?;
    check_eq(podman(rt, &format!("exec -u 1000 {} id -u", c.1)).ok()?.out(), "1000", "exec -u")
}

fn exec_tty(rt: Rt) -> R {
    let c = sleeper(rt)?;
    let cmd = format!(
        "{} --runtime {} exec -it {} sh -c 'sleep 0.3; tty'",
        engines().podman,
        rt.binary().display(),
        c.1
    );
    let o = sh(&format!("script -qec {} /dev/null", quote(&cmd)));
    check_contains(&o.stdout, "/dev/pts/", "exec tty")
}

fn pause_unpause(rt: Rt) -> R {
    let c = sleeper(rt)?;
    podman(rt, &format!("pause {}", c.1)).ok()?;
    check_eq(&inspect(rt, &c.1, "{{.State.Status}}")?, "paused", "status after pause")?;
    podman(rt, &format!("unpause {}", c.1)).ok()?;
    check_eq(&inspect(rt, &c.1, "{{.State.Status}}")?, "running", "status after unpause")?;
    check_eq(
        podman(rt, &format!("exec {} echo alive", c.1)).ok()?.out(),
        "alive",
        "exec after unpause",
    )
}

fn update(rt: Rt) -> R {
    let c = sleeper(rt)?;
    podman(rt, &format!("update --memory 64m --cpu-quota 50000 {}", c.1)).ok()?;
    let out = podman(
        rt,
        &format!(
            "exec {} cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us",
            c.1
        ),
    )
    .ok()?;
    check_eq(
        &out.stdout.split_whitespace().collect::<Vec<_>>().join(" "),
        "67108864 50000",
        "memory limit and cpu quota",
    )
}

fn stop(rt: Rt) -> R {
    let c = sleeper(rt)?;
    std::thread::sleep(Duration::from_millis(300));
    podman(rt, &format!("stop -t 20 {}", c.1)).ok()?;
    check_eq(
        &inspect(rt, &c.1, "{{.State.ExitCode}}")?,
        "3",
        "exit code after stop (the TERM trap)",
    )
}

fn kill_signal(rt: Rt) -> R {
    let c = detached(rt, "trap 'echo got-usr1' USR1; while true; do sleep 0.1; done")?;
    std::thread::sleep(Duration::from_millis(300));
    podman(rt, &format!("kill -s USR1 {}", c.1)).ok()?;
    let seen = wait_for(Duration::from_secs(10), || {
        podman(rt, &format!("logs {}", c.1)).stdout.contains("got-usr1").then_some(())
    });
    check(seen.is_some(), "USR1 not delivered")?;
    podman(rt, &format!("kill {}", c.1)).ok()?;
    let code = wait_for(Duration::from_secs(10), || {
        (inspect(rt, &c.1, "{{.State.Status}}").ok()? == "exited").then(|| inspect(rt, &c.1, "{{.State.ExitCode}}").ok())?
    });
    check_eq(code.as_deref().unwrap_or("?"), "137", "exit code after kill")
}

fn rm_force(rt: Rt) -> R {
    let c = sleeper(rt)?;
    let pid = inspect(rt, &c.1, "{{.State.Pid}}")?;
    podman(rt, &format!("rm -f -t 0 {}", c.1)).ok()?;
    let gone = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(Some(()), |s| s.contains(") Z").then_some(()))
    });
    check(gone.is_some(), format!("pid {pid} alive after rm -f"))
}

fn default_network(rt: Rt) -> R {
    let out = run(rt, "", "sh -c 'ip -4 -o addr show eth0; ip route'").ok()?;
    check_contains(&out.stdout, "inet ", "eth0 address")?;
    check_contains(&out.stdout, "default via", "default route")
}

/// The runtime behind a symlink named `runc`: podman then adds `--log-format=json --log FILE`,
/// and a failure reaches the user from that log.
fn named_runc(rt: Rt) -> R {
    let dir: PathBuf = engines().work.join(format!("named-{}", rt.label()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("runc");
    if !link.exists() {
        std::os::unix::fs::symlink(rt.binary(), &link).map_err(|e| format!("symlink: {e}"))?;
    }
    let o = podman_with(
        &link,
        &format!("run --rm --network none {} {} echo via-runc-name", common(), engines().podman_image),
    );
    check_eq(o.ok()?.out(), "via-runc-name", "output")?;
    let o = podman_with(
        &link,
        &format!("run --rm --network none {} {} /no/such/binary", common(), engines().podman_image),
    );
    check(o.code != 0, "a missing binary must fail")?;
    check_contains(&o.stderr, "/no/such/binary", "the error names the binary")?;
    check(
        o.stderr.contains("no such file or directory"),
        format!("the cause reaches the user: {}", o.stderr),
    )
}
