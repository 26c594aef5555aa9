//! Docker (dockerd 20.10 with containerd's runc v2 shim) running tinyrt as the runtime "tiny",
//! and runc as "runc": the same check for both.

use crate::util::{HttpServer, R, check, check_contains, check_eq, free_port, http_get, ok, quote, sh, unique, wait_for};
use crate::{Check, Rt, engines};
use libtest_mimic::Failed;
use std::time::Duration;

pub fn checks() -> Vec<Check> {
    let c = |name, run| Check {
        engine: "docker",
        name,
        run,
    };
    vec![
        c("run_foreground_output", run_foreground_output),
        c("exit_code", exit_code),
        c("run_rm_removes", run_rm_removes),
        c("detached_and_logs", detached_and_logs),
        c("run_it_tty", run_it_tty),
        c("exec", exec),
        c("exec_it_tty", exec_it_tty),
        c("top", top),
        c("stats", stats),
        c("pause_unpause", pause_unpause),
        c("update", update),
        c("stop", stop),
        c("kill_signals", kill_signals),
        c("restart_policy", restart_policy),
        c("restart", restart),
        c("rm_force_running", rm_force_running),
        c("net_bridge_eth0", net_bridge_eth0),
        c("net_container_to_container", net_container_to_container),
        c("net_host_to_container", net_host_to_container),
        c("net_container_to_host", net_container_to_host),
        c("net_publish_port", net_publish_port),
        c("net_user_network_dns", net_user_network_dns),
        c("net_none", net_none),
        c("net_host", net_host),
        c("memory_oom_137", memory_oom_137),
        c("pids_limit", pids_limit),
        c("cpus", cpus),
        c("read_only_tmpfs", read_only_tmpfs),
        c("cap_drop_all", cap_drop_all),
        c("cap_add", cap_add),
        c("user", user),
        c("bind_mounts", bind_mounts),
        c("named_volume", named_volume),
        c("init", init),
        c("shm_size", shm_size),
        c("device", device),
        c("seccomp_default_profile", seccomp_default_profile),
        c("error_reaches_user", error_reaches_user),
        c("default_runtime", default_runtime),
    ]
}

/// A container that is removed when the check ends, whatever happened.
struct Ctr(String);

impl Drop for Ctr {
    fn drop(&mut self) {
        let _ = engines().docker(&format!("rm -f -v {}", self.0));
    }
}

/// `docker run --rm --runtime=RT OPTS IMAGE CMD`
fn run(rt: Rt, opts: &str, cmd: &str) -> crate::util::Out {
    let e = engines();
    e.docker(&format!("run --rm --runtime={} {opts} {} {cmd}", rt.docker_name(), e.image))
}

fn run_ok(rt: Rt, opts: &str, cmd: &str) -> Result<String, Failed> {
    Ok(run(rt, opts, cmd).ok()?.out().to_string())
}

/// `docker run -d` of `sh -c SCRIPT` under a unique name.
fn detached(rt: Rt, opts: &str, script: &str) -> Result<Ctr, Failed> {
    let e = engines();
    let name = unique(&format!("d-{}", rt.label()));
    let c = Ctr(name.clone());
    e.docker(&format!(
        "run -d --name {name} --runtime={} {opts} {} sh -c {}",
        rt.docker_name(),
        e.image,
        quote(script)
    ))
    .ok()?;
    Ok(c)
}

fn sleeper(rt: Rt, opts: &str) -> Result<Ctr, Failed> {
    detached(rt, opts, "trap 'exit 0' TERM; while true; do sleep 0.2; done")
}

fn inspect(name: &str, fmt: &str) -> Result<String, Failed> {
    Ok(engines()
        .docker(&format!("inspect -f {} {name}", quote(fmt)))
        .ok()?
        .out()
        .to_string())
}

/// A file of the container's cgroup for `controller`, found through its init's /proc/PID/cgroup.
fn cgroup_file(name: &str, controller: &str, file: &str) -> Result<String, Failed> {
    let pid = inspect(name, "{{.State.Pid}}")?;
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(|e| format!("/proc/{pid}/cgroup: {e}"))?;
    let path = cg
        .lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            ctrls.split(',').any(|c| c == controller).then(|| path.to_string())
        })
        .ok_or_else(|| format!("no {controller} cgroup for pid {pid}"))?;
    let f = format!("/sys/fs/cgroup/{controller}{path}/{file}");
    Ok(std::fs::read_to_string(&f).map_err(|e| format!("{f}: {e}"))?.trim().to_string())
}

/// Run a command under `script` so that it has a terminal (docker -it needs one).
fn with_tty(cmd: &str) -> crate::util::Out {
    sh(&format!("script -qec {} /dev/null", quote(cmd)))
}

fn run_foreground_output(rt: Rt) -> R {
    check_eq(
        &run_ok(rt, "", "echo hello from the container")?,
        "hello from the container",
        "stdout",
    )
}

fn exit_code(rt: Rt) -> R {
    let o = run(rt, "", "sh -c 'exit 42'");
    check(o.code == 42, format!("exit code {} (want 42): {}", o.code, o.stderr))
}

fn run_rm_removes(rt: Rt) -> R {
    let name = unique("rm");
    run(rt, &format!("--name {name}"), "true").ok()?;
    let left = engines().docker(&format!("ps -aq --filter name=^{name}$")).ok()?;
    check(left.out().is_empty(), format!("--rm left the container: {}", left.out()))
}

fn detached_and_logs(rt: Rt) -> R {
    let c = detached(rt, "", "echo to-stdout; echo to-stderr >&2; exec sleep 60")?;
    let logs = wait_for(Duration::from_secs(10), || {
        let o = engines().docker(&format!("logs {}", c.0));
        (o.stdout.contains("to-stdout") && o.stderr.contains("to-stderr")).then_some(o)
    });
    check(logs.is_some(), "docker logs never showed both streams")?;
    check_eq(&inspect(&c.0, "{{.State.Status}}")?, "running", "status")
}

fn run_it_tty(rt: Rt) -> R {
    let e = engines();
    let o = with_tty(&format!(
        "{} run --rm -it --runtime={} {} sh -c 'tty; echo cols=$COLUMNS'",
        e.docker,
        rt.docker_name(),
        e.image
    ));
    check(o.code == 0, format!("run -it failed: {}{}", o.stdout, o.stderr))?;
    check_contains(&o.stdout, "/dev/pts/0", "tty in the container")
}

fn exec(rt: Rt) -> R {
    let c = sleeper(rt, "")?;
    let e = engines();
    check_eq(
        e.docker(&format!("exec {} sh -c 'echo $((6*7))'", c.0)).ok()?.out(),
        "42",
        "exec output",
    )?;
    let o = e.docker(&format!("exec {} sh -c 'exit 7'", c.0));
    check(o.code == 7, format!("exec exit code {} (want 7)", o.code))?;
    check_eq(
        e.docker(&format!("exec -u 1000:1001 {} id", c.0)).ok()?.out(),
        "uid=1000 gid=1001 groups=1001",
        "exec -u",
    )?;
    check_eq(
        e.docker(&format!("exec -w /tmp -e X=y {} sh -c 'echo $PWD $X'", c.0)).ok()?.out(),
        "/tmp y",
        "exec -w -e",
    )?;
    // The exec'd process is in the container's pid namespace.
    let ps = e.docker(&format!("exec {} ps -o pid,args", c.0)).ok()?;
    check(
        ps.stdout.lines().any(|l| l.trim_start().starts_with("1 ")),
        format!("pid 1 not visible: {}", ps.stdout),
    )
}

fn exec_it_tty(rt: Rt) -> R {
    let c = sleeper(rt, "")?;
    let o = with_tty(&format!("{} exec -it {} tty", engines().docker, c.0));
    check(o.code == 0, format!("exec -it failed: {}{}", o.stdout, o.stderr))?;
    check_contains(&o.stdout, "/dev/pts/", "tty of the exec")
}

fn top(rt: Rt) -> R {
    let c = detached(rt, "", "exec sleep 1234")?;
    let o = engines().docker(&format!("top {}", c.0)).ok()?;
    check_contains(&o.stdout, "sleep 1234", "docker top")
}

fn stats(rt: Rt) -> R {
    let c = sleeper(rt, "--memory 64m")?;
    let o = engines()
        .docker(&format!("stats --no-stream --format '{{{{.MemUsage}}}}|{{{{.PIDs}}}}' {}", c.0))
        .ok()?;
    let (mem, pids) = o.out().split_once('|').ok_or("stats format")?;
    check(mem.contains("/ 64MiB"), format!("memory limit not reported: {mem}"))?;
    check(pids.parse::<u32>().is_ok_and(|n| n >= 1), format!("pids: {pids}"))
}

fn pause_unpause(rt: Rt) -> R {
    let c = sleeper(rt, "")?;
    let e = engines();
    e.docker(&format!("pause {}", c.0)).ok()?;
    check_eq(&inspect(&c.0, "{{.State.Status}}")?, "paused", "status after pause")?;
    check_eq(&cgroup_file(&c.0, "freezer", "freezer.state")?, "FROZEN", "freezer.state")?;
    e.docker(&format!("unpause {}", c.0)).ok()?;
    check_eq(&cgroup_file(&c.0, "freezer", "freezer.state")?, "THAWED", "freezer.state")?;
    check_eq(
        e.docker(&format!("exec {} echo alive", c.0)).ok()?.out(),
        "alive",
        "exec after unpause",
    )
}

fn update(rt: Rt) -> R {
    let c = sleeper(rt, "--memory 32m")?;
    engines()
        .docker(&format!(
            "update --memory 64m --memory-swap 128m --cpus 0.5 --pids-limit 50 {}",
            c.0
        ))
        .ok()?;
    check_eq(&cgroup_file(&c.0, "memory", "memory.limit_in_bytes")?, "67108864", "memory limit")?;
    check_eq(
        &cgroup_file(&c.0, "memory", "memory.memsw.limit_in_bytes")?,
        "134217728",
        "memory+swap limit",
    )?;
    check_eq(&cgroup_file(&c.0, "cpu", "cpu.cfs_quota_us")?, "50000", "cpu quota")?;
    check_eq(&cgroup_file(&c.0, "pids", "pids.max")?, "50", "pids.max")
}

fn stop(rt: Rt) -> R {
    let c = detached(rt, "", "trap 'echo got-term; exit 3' TERM; while true; do sleep 0.1; done")?;
    std::thread::sleep(Duration::from_millis(300));
    engines().docker(&format!("stop -t 20 {}", c.0)).ok()?;
    check_eq(&inspect(&c.0, "{{.State.ExitCode}}")?, "3", "exit code after stop (the TERM trap)")?;
    check_contains(&engines().docker(&format!("logs {}", c.0)).stdout, "got-term", "logs")
}

fn kill_signals(rt: Rt) -> R {
    let c = detached(
        rt,
        "",
        "trap 'echo got-usr1' USR1; trap 'echo got-hup' HUP; while true; do sleep 0.1; done",
    )?;
    let e = engines();
    std::thread::sleep(Duration::from_millis(300));
    e.docker(&format!("kill -s USR1 {}", c.0)).ok()?;
    e.docker(&format!("kill -s HUP {}", c.0)).ok()?;
    let seen = wait_for(Duration::from_secs(10), || {
        let l = e.docker(&format!("logs {}", c.0)).stdout;
        (l.contains("got-usr1") && l.contains("got-hup")).then_some(())
    });
    check(seen.is_some(), "USR1 and HUP were not both delivered")?;
    e.docker(&format!("kill {}", c.0)).ok()?;
    let code = wait_for(Duration::from_secs(10), || {
        (inspect(&c.0, "{{.State.Status}}").ok()? == "exited").then(|| inspect(&c.0, "{{.State.ExitCode}}").ok())?
    });
    check_eq(code.as_deref().unwrap_or("?"), "137", "exit code after docker kill")
}

fn restart_policy(rt: Rt) -> R {
    let c = detached(rt, "--restart on-failure:2", "echo run; exit 1")?;
    let done = wait_for(Duration::from_secs(40), || {
        let s = inspect(&c.0, "{{.RestartCount}} {{.State.Status}}").ok()?;
        (s == "2 exited").then_some(s)
    });
    check(
        done.is_some(),
        format!("restart count/status: {:?}", inspect(&c.0, "{{.RestartCount}} {{.State.Status}}")),
    )?;
    let runs = engines().docker(&format!("logs {}", c.0)).stdout.matches("run").count();
    check(runs == 3, format!("{runs} runs logged, want 3"))
}

fn restart(rt: Rt) -> R {
    let c = sleeper(rt, "")?;
    let pid1 = inspect(&c.0, "{{.State.Pid}}")?;
    engines().docker(&format!("restart -t 5 {}", c.0)).ok()?;
    let pid2 = inspect(&c.0, "{{.State.Pid}}")?;
    check(pid1 != pid2 && pid2 != "0", format!("pid {pid1} -> {pid2}"))?;
    check_eq(&inspect(&c.0, "{{.State.Status}}")?, "running", "status after restart")
}

fn rm_force_running(rt: Rt) -> R {
    let c = sleeper(rt, "")?;
    let pid = inspect(&c.0, "{{.State.Pid}}")?;
    engines().docker(&format!("rm -f {}", c.0)).ok()?;
    let gone = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(Some(()), |s| s.contains(") Z").then_some(()))
    });
    check(gone.is_some(), format!("pid {pid} still alive after rm -f"))?;
    check(
        engines().docker(&format!("inspect {}", c.0)).code != 0,
        "container still known after rm -f",
    )
}

fn net_bridge_eth0(rt: Rt) -> R {
    let e = engines();
    let out = run_ok(rt, "", "sh -c 'ip -4 -o addr show eth0; ip route'")?;
    let prefix = e.gateway.rsplit_once('.').unwrap().0;
    check_contains(&out, &format!("inet {prefix}."), "eth0 address on docker0's subnet")?;
    check_contains(&out, &format!("default via {}", e.gateway), "default route")
}

/// A detached busybox httpd serving `body` at /i on port 8080.
fn server(rt: Rt, opts: &str, body: &str) -> Result<Ctr, Failed> {
    detached(
        rt,
        opts,
        &format!("mkdir -p /w && echo {} > /w/i && exec httpd -f -p 8080 -h /w", quote(body)),
    )
}

fn ip_of(name: &str, network: &str) -> Result<String, Failed> {
    inspect(name, &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"))
}

fn fetch_until(cmd: &str, want: &str) -> R {
    let got = wait_for(Duration::from_secs(15), || {
        let o = sh(cmd);
        o.stdout.contains(want).then_some(())
    });
    check(got.is_some(), format!("`{cmd}` never returned {want:?}: {}", sh(cmd).stderr))
}

fn net_container_to_container(rt: Rt) -> R {
    let s = server(rt, "", "c2c")?;
    let ip = ip_of(&s.0, "bridge")?;
    let e = engines();
    fetch_until(
        &format!(
            "{} run --rm --runtime={} {} wget -qO- http://{ip}:8080/i",
            e.docker,
            rt.docker_name(),
            e.image
        ),
        "c2c",
    )
}

fn net_host_to_container(rt: Rt) -> R {
    let s = server(rt, "", "h2c")?;
    let ip = ip_of(&s.0, "bridge")?;
    get_until(&format!("{ip}:8080"), "h2c")
}

/// GET /i from the host until it answers `want` (the server may still be starting).
fn get_until(addr: &str, want: &str) -> R {
    let mut last = String::new();
    let got = wait_for(Duration::from_secs(15), || match http_get(addr, "/i") {
        Ok(b) if b.contains(want) => Some(()),
        Ok(b) => {
            last = b;
            None
        }
        Err(e) => {
            last = e;
            None
        }
    });
    check(got.is_some(), format!("http://{addr}/i never returned {want:?}: {last}"))
}

/// (busybox 1.35's static wget crashes with -T: the checks bound it with `timeout` instead.)
fn net_container_to_host(rt: Rt) -> R {
    let e = engines();
    let srv = HttpServer::start(&e.gateway, "from-the-host").map_err(Failed::from)?;
    fetch_until(
        &format!(
            "{} run --rm --runtime={} {} timeout 5 wget -qO- http://{}/i",
            e.docker,
            rt.docker_name(),
            e.image,
            srv.addr
        ),
        "from-the-host",
    )
}

fn net_publish_port(rt: Rt) -> R {
    let port = free_port();
    let _s = server(rt, &format!("-p 127.0.0.1:{port}:8080"), "published")?;
    get_until(&format!("127.0.0.1:{port}"), "published")
}

/// A user-defined network, removed when dropped.
struct Network(String);

impl Drop for Network {
    fn drop(&mut self) {
        let _ = engines().docker(&format!("network rm {}", self.0));
    }
}

/// Docker's embedded DNS (127.0.0.11 in the container, reached through the rules dockerd puts
/// in the container's network namespace) resolves a container name and an alias, and the
/// container answers there. busybox-static's wget resolves through glibc's NSS, which a static
/// binary cannot load: nslookup asks the DNS server itself.
fn net_user_network_dns(rt: Rt) -> R {
    let e = engines();
    let net = Network(unique(&format!("n-{}", rt.label())));
    e.docker(&format!("network create --label tinyrt-engines {}", net.0)).ok()?;
    let alias = format!("web-{}", rt.label());
    let s = server(rt, &format!("--network {} --network-alias {alias}", net.0), "by-name")?;
    let ip = ip_of(&s.0, &net.0)?;
    let script = format!(
        "for n in {} {alias}; do nslookup $n 127.0.0.11 || exit 1; done; timeout 5 wget -qO- http://{ip}:8080/i",
        s.0
    );
    let cmd = format!(
        "{} run --rm --runtime={} --network {} {} sh -c {}",
        e.docker,
        rt.docker_name(),
        net.0,
        e.image,
        quote(&script)
    );
    fetch_until(&cmd, "by-name")?;
    let out = sh(&cmd).stdout;
    check(
        out.matches(&format!("Address: {ip}")).count() >= 2,
        format!("both names resolve to {ip}: {out}"),
    )
}

fn net_none(rt: Rt) -> R {
    let links = run_ok(rt, "--network none", "sh -c \"ip -o link | cut -d: -f2 | tr -d ' ' | tr '\\n' ,\"")?;
    check_eq(&links, "lo,", "links with --network none")
}

fn net_host(rt: Rt) -> R {
    let links = run_ok(rt, "--network host", "ip -o link")?;
    check_contains(&links, "docker0", "the host's links with --network host")
}

/// The OOM kill gives 137 and reaches Docker as an `oom` event. (Not `.State.OOMKilled`:
/// Docker sets it only when containerd's OOM event comes before the exit event, and with
/// containerd 1.6's runc v2 shim the exit sometimes wins, with runc as with tinyrt.) The shim
/// registers its memory.oom_control eventfd only after `start` returns, so the script waits a
/// moment before allocating.
fn memory_oom_137(rt: Rt) -> R {
    let name = unique("oom");
    let _c = Ctr(name.clone());
    let e = engines();
    let since = ok("date +%s")?;
    let o = e.docker(&format!(
        "run --name {name} --runtime={} --memory 16m --memory-swap 16m {} sh -c 'sleep 1; x=$(head -c 100000000 /dev/zero | tr \"\\0\" a); echo survived ${{#x}}'",
        rt.docker_name(),
        e.image
    ));
    check(o.code == 137, format!("exit {} (want 137): {}{}", o.code, o.stdout, o.stderr))?;
    let seen = wait_for(Duration::from_secs(10), || {
        let ev = e.docker(&format!(
            "events --since {since} --until $(date +%s) --filter container={name} --filter event=oom --format '{{{{.Action}}}}'"
        ));
        ev.stdout.contains("oom").then_some(())
    });
    check(seen.is_some(), "no oom event from Docker")
}

fn pids_limit(rt: Rt) -> R {
    let o = run(
        rt,
        "--pids-limit 10",
        "sh -c 'cat /sys/fs/cgroup/pids/pids.max; for i in $(seq 30); do sleep 5 & done; echo spawned'",
    );
    check_contains(&o.stdout, "10\n", "pids.max in the container")?;
    check_contains(&o.stderr, "can't fork", "forks beyond the limit fail")
}

fn cpus(rt: Rt) -> R {
    let out = run_ok(
        rt,
        "--cpus 1.5 --cpu-shares 512",
        "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us /sys/fs/cgroup/cpu/cpu.shares",
    )?;
    check_eq(
        &out.split_whitespace().collect::<Vec<_>>().join(" "),
        "150000 100000 512",
        "quota period shares",
    )
}

fn read_only_tmpfs(rt: Rt) -> R {
    let o = run(
        rt,
        "--read-only --tmpfs /run:size=1m",
        "sh -c 'touch /x 2>&1; touch /run/y && echo tmpfs-ok; grep \" /run \" /proc/mounts'",
    );
    check_contains(&o.stdout, "Read-only file system", "write to /")?;
    check_contains(&o.stdout, "tmpfs-ok", "write to the tmpfs")?;
    check_contains(&o.stdout, "size=1024k", "tmpfs size")
}

fn cap_drop_all(rt: Rt) -> R {
    let o = run(rt, "--cap-drop ALL", "sh -c 'grep CapEff /proc/self/status; chown 1 /tmp'");
    check_contains(&o.stdout, "0000000000000000", "CapEff")?;
    check_contains(&o.stderr, "Operation not permitted", "chown without CAP_CHOWN")
}

fn cap_add(rt: Rt) -> R {
    let out = run_ok(
        rt,
        "--cap-drop ALL --cap-add CHOWN --cap-add NET_ADMIN",
        "sh -c 'grep CapEff /proc/self/status; chown 1 /tmp && ip addr add 10.11.12.13/32 dev lo && echo ok'",
    )?;
    check_contains(&out, "0000000000001001", "CapEff = CHOWN|NET_ADMIN")?;
    check_contains(&out, "ok", "chown and ip addr add")
}

fn user(rt: Rt) -> R {
    check_eq(
        &run_ok(rt, "--user 1000:1000 --group-add 2000", "id")?,
        "uid=1000 gid=1000 groups=1000,2000",
        "id",
    )?;
    check_eq(&run_ok(rt, "--user nobody", "id -u")?, "65534", "--user by name")
}

fn bind_mounts(rt: Rt) -> R {
    let dir = engines().work.join(unique("bind"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("in"), "from-host\n").unwrap();
    let d = dir.display();
    let out = run_ok(rt, &format!("-v {d}:/b"), "sh -c 'cat /b/in; echo from-container > /b/out'")?;
    check_eq(&out, "from-host", "host file in the container")?;
    check_eq(
        std::fs::read_to_string(dir.join("out")).unwrap_or_default().trim(),
        "from-container",
        "container write on the host",
    )?;
    let o = run(rt, &format!("-v {d}:/b:ro"), "touch /b/x");
    check(
        o.code != 0 && o.stderr.contains("Read-only"),
        format!("write to a :ro bind: {}", o.stderr),
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn named_volume(rt: Rt) -> R {
    let e = engines();
    let v = unique(&format!("v-{}", rt.label()));
    e.docker(&format!("volume create {v}")).ok()?;
    let r = (|| {
        run_ok(rt, &format!("-v {v}:/data"), "sh -c 'echo persisted > /data/f'")?;
        check_eq(
            &run_ok(rt, &format!("-v {v}:/data"), "cat /data/f")?,
            "persisted",
            "volume content in a second container",
        )
    })();
    let _ = e.docker(&format!("volume rm -f {v}"));
    r
}

fn init(rt: Rt) -> R {
    let out = run_ok(rt, "--init", "ps -o pid,args")?;
    let pid1 = out.lines().find(|l| l.trim_start().starts_with("1 ")).unwrap_or("");
    check_contains(pid1, "docker-init", "pid 1 with --init")
}

fn shm_size(rt: Rt) -> R {
    let out = run_ok(rt, "--shm-size 3m", "df -k /dev/shm")?;
    check_contains(&out, " 3072 ", "/dev/shm size")
}

fn device(rt: Rt) -> R {
    let out = run_ok(
        rt,
        "--device /dev/zero:/dev/myzero",
        "sh -c 'ls -l /dev/myzero; head -c 3 /dev/myzero | od -An -tx1'",
    )?;
    check_contains(&out, "1,   5", "device numbers")?;
    check_contains(&out, "00 00 00", "reading the device")?;
    // The device cgroup refuses a node outside Docker's allow list (/dev/mem), even made by hand.
    let o = run(rt, "", "sh -c 'mknod /tmp/mem c 1 1 && head -c 1 /tmp/mem'");
    check(
        o.code != 0 && o.stderr.contains("Operation not permitted"),
        format!("a device outside the allow list: {}", o.stderr),
    )
}

fn seccomp_default_profile(rt: Rt) -> R {
    let out = run_ok(rt, "", "sh -c 'grep Seccomp: /proc/self/status; unshare -U true 2>&1; echo rc=$?'")?;
    check_contains(&out, "Seccomp:\t2", "filter mode")?;
    check_contains(&out, "Operation not permitted", "unshare(CLONE_NEWUSER) refused by the profile")?;
    let out = run_ok(
        rt,
        "--security-opt seccomp=unconfined",
        "sh -c 'grep Seccomp: /proc/self/status; unshare -U true; echo rc=$?'",
    )?;
    check_contains(&out, "Seccomp:\t0", "unconfined")?;
    check_contains(&out, "rc=0", "unshare allowed when unconfined")
}

fn error_reaches_user(rt: Rt) -> R {
    let o = run(rt, "", "/no/such/binary");
    check(o.code == 127, format!("exit {} (want 127, as runc)", o.code))?;
    check_contains(&o.stderr, "/no/such/binary", "the engine's error names the binary")?;
    check(
        o.stderr.contains("no such file or directory"),
        format!("the cause (ENOENT) reaches the user: {}", o.stderr),
    )?;
    let o = run(rt, "-w /etc/passwd", "true");
    check(
        o.code != 0 && o.stderr.to_lowercase().contains("not a directory"),
        format!("a bad cwd: {}", o.stderr),
    )
}

/// dockerd reloads `default-runtime` from daemon.json on SIGHUP; `docker info` then calls the
/// runtime's `--version`. One at a time: it changes the daemon.
fn default_runtime(rt: Rt) -> R {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let e = engines();
    let set = |name: &str| -> R {
        crate::write_daemon_json(&e.daemon_json, name);
        let pid = std::fs::read_to_string(e.work.join("dockerd.pid")).map_err(|e| format!("dockerd.pid: {e}"))?;
        sh(&format!("kill -HUP {}", pid.trim())).ok()?;
        let now = wait_for(Duration::from_secs(10), || {
            let d = e.docker("info -f '{{.DefaultRuntime}}'").stdout;
            (d.trim() == name).then_some(())
        });
        check(now.is_some(), format!("default runtime never became {name}"))
    };
    set(rt.docker_name())?;
    let r = (|| {
        let info = e.docker("info -f '{{.RuncCommit.ID}}|{{.RuncCommit.Expected}}'").ok()?;
        let id = info.out().split('|').next().unwrap_or("");
        check(
            !id.is_empty() && id != "N/A",
            format!("docker info could not read `{} --version`: {:?}", rt.label(), info.out()),
        )?;
        let name = unique("def");
        let _c = Ctr(name.clone());
        let o = e.docker(&format!("run --name {name} {} echo default-ok", e.image)).ok()?;
        check_eq(o.out(), "default-ok", "output")?;
        check_eq(
            &inspect(&name, "{{.HostConfig.Runtime}}")?,
            rt.docker_name(),
            "the runtime docker used",
        )
    })();
    set("runc")?;
    r
}
