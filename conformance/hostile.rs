//! Hostile bundles and the runc CVE classes: each attack is tried for real and must be
//! blocked, with the host unchanged.

use crate::harness::*;
use serde_json::{Value, json};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A host directory holding only `canary`, for links out of the rootfs to point at.
fn host_dir(env: &Env) -> PathBuf {
    let host = env.dir.join("host-target");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("canary"), "host").unwrap();
    host
}

/// `host` still holds only its canary, unchanged, and no mount of the host is on or in it.
#[track_caller]
fn assert_host_untouched(host: &Path, what: &str) {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let on_host = mi
        .lines()
        .find(|l| l.split(' ').nth(4).is_some_and(|mp| Path::new(mp).starts_with(host)));
    assert!(on_host.is_none(), "{what}: a mount landed on the host dir: {on_host:?}");
    let entries: Vec<_> = std::fs::read_dir(host).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("canary")], "{what}: the host dir changed");
    assert_eq!(
        std::fs::read_to_string(host.join("canary")).unwrap(),
        "host",
        "{what}: the canary changed"
    );
}

/// A `..` chain that climbs from anywhere in a rootfs to `/`, then `path`.
fn climbing(path: &Path) -> String {
    format!("../../../../../../../../../..{}", path.display())
}

fn write_executable(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, PermissionsExt::from_mode(0o755)).unwrap();
}

/// The major:minor of a block device of the host that root can open: the disk of / if it
/// can, else the first of /sys/dev/block that opens (a host may deny its own disk even to
/// root; the tests must see the container's rules at work, not the host's).
fn host_block_device() -> (u64, u64) {
    use nix::sys::stat::{major, minor, stat};
    let root = stat("/").unwrap().st_dev;
    let mut devs: Vec<(u64, u64, PathBuf)> = std::fs::read_dir("/sys/dev/block")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let (maj, min) = e
                .file_name()
                .to_str()?
                .split_once(':')
                .map(|(a, b)| (a.parse().ok(), b.parse().ok()))?;
            let name = std::fs::read_link(e.path()).ok()?.file_name()?.to_owned();
            Some((maj?, min?, Path::new("/dev").join(name)))
        })
        .collect();
    devs.sort_by_key(|d| ((d.0, d.1) != (major(root), minor(root)), d.0, d.1));
    devs.into_iter()
        .find(|d| std::fs::File::open(&d.2).is_ok())
        .map(|d| (d.0, d.1))
        .expect("a block device the host lets root open")
}

/// The config without its /dev tmpfs: /dev is the rootfs's own, links included.
fn without_dev_tmpfs(c: &mut Value) {
    c["mounts"].as_array_mut().unwrap().retain(|m| m["destination"] != "/dev");
}

/// CVE-2024-21626: a `process.cwd` through /proc/self/fd/N reaches a directory fd leaked from
/// the runtime, outside the rootfs. tinyrt leaks no fd into the container, and refuses a cwd
/// that is not inside its root, for the init and for exec.
pub fn cwd_through_proc_self_fd() {
    let env = Env::new("hostile_cwd_fd");
    for n in 3..10 {
        let cwd = format!("/proc/self/fd/{n}");
        let mut c = env.sh_config("pwd; ls / | head -3");
        c["process"]["cwd"] = json!(cwd);
        let out = env.run(&c);
        // Either refused, or (when no such fd exists) a plain error: never a host cwd.
        assert!(!out.ok(), "cwd {cwd}: the container ran: {:?}", out.stdout);
        assert!(
            out.stderr.contains("process.cwd"),
            "cwd {cwd}: the error names process.cwd: {}",
            out.stderr
        );
    }
    let (id, _, _) = sleeper(&env, |_| {});
    for n in 3..10 {
        let cwd = format!("/proc/self/fd/{n}");
        let out = env.rt(&["exec", "--cwd", &cwd, &id, "pwd"]);
        assert!(!out.ok(), "exec --cwd {cwd} ran: {:?}", out.stdout);
    }
}

/// The container's half of CVE-2019-5736, run as its init: wait for a process of the
/// container running something other than busybox, hold its /proc/PID/exe open, and once
/// that file is no longer busy (the process exited), open it for writing and write. What
/// happened goes to /tmp/log: "held", then "wrote" or the error, then "done".
const EXE_ATTACK: &str = r#"
while :; do
  for f in /proc/[0-9]*/exe; do
    command exec 3<"$f" 2>/dev/null || continue
    if [ /proc/self/fd/3 -ef /bin/busybox ]; then exec 3<&-; continue; fi
    echo "held $f" >> /tmp/log
    while :; do
      if { command exec 4<>/proc/self/fd/3; } 2>/tmp/err; then
        if printf PWNED >&4 2>>/tmp/log; then echo wrote >> /tmp/log; else echo "write failed" >> /tmp/log; fi
        break
      fi
      grep -q busy /tmp/err || { cat /tmp/err >> /tmp/log; break; }
      usleep 1000
    done
    echo done >> /tmp/log
    exec sleep 3600
  done
done
"#;

/// CVE-2019-5736: the container's /bin/sh is `#!/proc/self/exe`, so `exec sh` makes the
/// runtime binary the container's process, which a process of the container holds through
/// /proc/PID/exe and writes once it has exited. tinyrt's final execve goes through a sealed
/// trampoline (or tinyrt runs from a read-only overlay of itself): /proc/PID/exe is never the
/// host file, a write to what the container holds fails, and the file on the host is
/// unchanged. (Without either, the attacker catches tinyrt within a few tries and writes.) The runtime of this test is a copy of tinyrt, so a successful attack
/// breaks no other test.
pub fn overwrite_runtime_through_proc_exe() {
    let env = Env::new("hostile_exe");
    let rt = env.dir.join("tinyrt");
    std::fs::copy(RT, &rt).unwrap();
    let original = std::fs::read(&rt).unwrap();
    let copy = |args: &[&str]| {
        let mut c = std::process::Command::new(&rt);
        c.arg("--root").arg(&env.root).args(args);
        env.exec(c)
    };
    let r = env.private_rootfs();
    std::fs::remove_file(r.join("bin/sh")).unwrap();
    write_executable(&r.join("bin/sh"), "#!/proc/self/exe\n");
    write_executable(&r.join("attack"), EXE_ATTACK);
    let mut c = env.config(&["/bin/busybox", "sh", "/attack"]);
    c["root"]["path"] = json!(r);
    with_tmp(&mut c);
    let b = env.bundle(&c);
    let id = env.id();
    copy(&["run", "--detach", "--bundle", b.to_str().unwrap(), &id]).expect_ok("run --detach");
    let pid = env.state(&id)["pid"].as_i64().unwrap() as i32;
    env.adopt(pid);
    let log = || read(Path::new(&format!("/proc/{pid}/root/tmp/log")));
    // The attacker has to catch the runtime running in the container: a few tries.
    for _ in 0..30 {
        if log().contains("held") {
            break;
        }
        copy(&["exec", &id, "/bin/sh", "-c", "true"]);
        std::thread::sleep(Duration::from_millis(20));
    }
    // What the container can catch is the exec trampoline (a sealed memfd, for microseconds;
    // linux/exec_stub.rs) or, in the fallback, tinyrt on a read-only overlay: if it held one,
    // its write failed (EPERM on the memfd, EROFS through the overlay).
    if log().contains("held") {
        env.until("the attacker's result", Duration::from_secs(10), || log().contains("done"));
        let log = log();
        assert!(
            log.contains("Read-only file system") || log.contains("Operation not permitted") || log.contains("write failed"),
            "the write attempt did not fail as expected: {log}"
        );
    }
    let log = log();
    assert!(!log.contains("wrote"), "the container wrote into the runtime binary: {log}");
    assert!(
        std::fs::read(&rt).unwrap() == original,
        "the runtime binary on the host changed: {log}"
    );
}

/// CVE-2019-19921 / CVE-2021-30465 class: mount destinations that are symlinks pointing out
/// of the rootfs (an absolute one, a relative one climbing out) are resolved inside the
/// rootfs, so the mounts land there; /proc replaced by a link to a host directory is refused.
/// The host directory is never touched.
pub fn symlinked_mount_destinations() {
    let env = Env::new("hostile_mount_links");
    let host = host_dir(&env);
    let r = env.private_rootfs();
    symlink(&host, r.join("abs")).unwrap();
    symlink(climbing(&host), r.join("rel")).unwrap();
    let mut c = env.sh_config("for d in /abs /rel; do cd $d && touch written && cd /; done; grep -c ' tmpfs ' /proc/self/mountinfo");
    c["root"]["path"] = json!(r);
    for d in ["/abs", "/rel"] {
        add_mount(
            &mut c,
            json!({"destination": d, "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}),
        );
    }
    env.run(&c).expect_ok("run with symlinked mount destinations");
    assert_host_untouched(&host, "links to the host");

    let r = env.private_rootfs();
    std::fs::remove_dir_all(r.join("proc")).unwrap();
    symlink(&host, r.join("proc")).unwrap();
    let mut c = env.config(&["true"]);
    c["root"]["path"] = json!(r);
    env.run(&c).expect_err("run with /proc a symlink to the host", "/proc");
    assert_host_untouched(&host, "/proc a link to the host");
}

/// /dev replaced by a symlink out of the rootfs (absolute, and climbing with `..`): the /dev
/// tmpfs, the device nodes and /dev/pts land inside the rootfs, where the link leads when
/// resolved in it (or the run is refused, naming /dev); the host directory is never touched.
pub fn dev_symlink_out_of_rootfs() {
    let env = Env::new("hostile_dev_link");
    let host = host_dir(&env);
    for link in [host.display().to_string(), climbing(&host)] {
        let r = env.private_rootfs();
        std::fs::remove_dir_all(r.join("dev")).unwrap();
        symlink(&link, r.join("dev")).unwrap();
        let mut c = env.sh_config("test -c /dev/null && echo x > /dev/null && test -d /dev/pts && echo ok");
        c["root"]["path"] = json!(r);
        let b = env.bundle(&c);
        let id = env.id();
        let out = env.rt(&["run", "--bundle", b.to_str().unwrap(), &id]);
        if out.ok() {
            assert_eq!(out.stdout, "ok\n", "/dev -> {link}");
            assert!(
                r.join(host.strip_prefix("/").unwrap()).is_dir(),
                "/dev -> {link}: not made inside the rootfs"
            );
        } else {
            assert!(out.stderr.contains("/dev"), "/dev -> {link}: the error names /dev: {}", out.stderr);
        }
        assert_host_untouched(&host, &format!("/dev -> {link}"));
        env.assert_nothing_left(&id, &b);
    }
}

/// Masked paths that are symlinks out of the rootfs (absolute, and climbing with `..`) or a
/// node of a host disk are masked where they are, inside the container: the host file
/// is neither read through them nor mounted over. And a /dev/null that is not the null
/// device (a link to a host file here; a file the masking would expose in the 2025
/// masked-path race) makes the run fail, naming linux.maskedPaths, instead of being bound.
pub fn masked_paths_symlinks_and_devices() {
    let env = Env::new("hostile_masked");
    let host = host_dir(&env);
    let secret = host.join("canary");
    let (major, minor) = host_block_device();
    let r = env.private_rootfs();
    symlink(&secret, r.join("etc/abs")).unwrap();
    symlink(climbing(&secret), r.join("etc/rel")).unwrap();
    let disk = nix::sys::stat::makedev(major, minor);
    nix::sys::stat::mknod(
        &r.join("etc/disk"),
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        disk,
    )
    .unwrap();
    let mut c = env.sh_config("for p in /etc/abs /etc/rel /etc/disk; do echo \"$p:$(cat $p 2>&1)\"; done");
    c["root"]["path"] = json!(r);
    c["linux"]["maskedPaths"] = json!(["/etc/abs", "/etc/rel", "/etc/disk"]);
    let b = env.bundle(&c);
    let id = env.id();
    let out = env.rt(&["run", "--bundle", b.to_str().unwrap(), &id]);
    // Each reads as /dev/null: masked where it is. (Unmasked, the links would lead nowhere in
    // the container, "No such file or directory", and the disk would give "Operation not
    // permitted"; the host's "host" never shows.)
    assert_eq!(out.expect_ok("run").stdout, "/etc/abs:\n/etc/rel:\n/etc/disk:\n");
    assert_host_untouched(&host, "masked links");
    env.assert_nothing_left(&id, &b);

    let r = env.private_rootfs();
    std::fs::remove_file(r.join("dev/null")).ok();
    symlink(&secret, r.join("dev/null")).unwrap();
    let mut c = env.config(&["true"]);
    c["root"]["path"] = json!(r);
    without_dev_tmpfs(&mut c);
    let b = env.bundle(&c);
    let id = env.id();
    env.rt(&["run", "--bundle", b.to_str().unwrap(), &id])
        .expect_err("/dev/null a link to a host file", "linux.maskedPaths")
        .expect_err("/dev/null a link to a host file", "not the null device");
    assert_host_untouched(&host, "/dev/null a link");
    env.assert_nothing_left(&id, &b);
}

/// The console race class (CVE-2025-52565): /dev/console in the rootfs is a symlink (to a
/// host file, to a procfs file the container must not write) when a terminal is asked for.
/// The pty is bound inside the container's /dev, never on the link's target.
pub fn console_symlink_out_of_rootfs() {
    use crate::console::{read_master, receive_master};
    let env = Env::new("hostile_console");
    let host = host_dir(&env);
    for target in [host.join("canary").display().to_string(), "/proc/sys/kernel/core_pattern".into()] {
        let r = env.private_rootfs();
        symlink(&target, r.join("dev/console")).unwrap();
        let mut c = env.sh_config("cat /proc/self/mountinfo");
        c["root"]["path"] = json!(r);
        c["process"]["terminal"] = json!(true);
        without_dev_tmpfs(&mut c);
        let b = env.bundle(&c);
        let id = env.id();
        let sock = env.dir.join(format!("{id}.sock"));
        let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let create = env.spawn(env.cmd(&[
            "create",
            "--console-socket",
            sock.to_str().unwrap(),
            "--bundle",
            b.to_str().unwrap(),
            &id,
        ]));
        // (No connection if create fails first.)
        let mut p = [libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&l),
            events: libc::POLLIN,
            revents: 0,
        }];
        let m = (unsafe { libc::poll(p.as_mut_ptr(), 1, 10_000) } == 1).then(|| receive_master(&l));
        let out = create.wait(TIMEOUT);
        if let Some(m) = m.filter(|_| out.ok()) {
            let pid = env.state(&id)["pid"].as_i64().unwrap() as i32;
            env.adopt(pid);
            env.rt(&["start", &id]).expect_ok("start");
            let mi = read_master(&m, Duration::from_secs(10)).replace('\r', "");
            env.wait_exit(pid, Duration::from_secs(10));
            assert!(
                mountinfo_line(&mi, &target).is_none(),
                "/dev/console -> {target}: the pty was bound on the target: {mi}"
            );
            let console = mountinfo_line(&mi, &format!("/dev{target}")).or_else(|| mountinfo_line(&mi, "/dev/console"));
            assert!(
                console.is_some_and(|l| l.contains("devpts")),
                "/dev/console -> {target}: no pty bound inside /dev: {mi}"
            );
            env.rt(&["delete", &id]).expect_ok("delete");
        } else {
            assert!(out.stderr.contains("/dev/console"), "/dev/console -> {target}: {}", out.stderr);
        }
        assert_host_untouched(&host, &format!("/dev/console -> {target}"));
        env.assert_nothing_left(&id, &b);
    }
}

/// A device node the cgroup device rules deny: with the default rules (deny all, then the
/// runtime's allow list), a container given CAP_MKNOD makes a node of a host disk but
/// cannot open it. Allowed read access to that one device, it can: the test tells the
/// two apart.
pub fn device_node_denied_by_cgroup() {
    let env = Env::new("hostile_devnode");
    let (major, minor) = host_block_device();
    let script = format!("mknod /dev/hostdisk b {major} {minor} && echo made; head -c 512 /dev/hostdisk 2>&1 >/dev/null; echo rc=$?");
    let run = |extra_rule: Option<Value>| {
        env.sh(&script, |c| {
            for set in ["bounding", "effective", "permitted"] {
                c["process"]["capabilities"][set].as_array_mut().unwrap().push(json!("CAP_MKNOD"));
            }
            let rules = c["linux"]["resources"]["devices"].as_array_mut().expect("the default device rules");
            assert_eq!(rules[0], json!({"allow": false, "access": "rwm"}), "the default rules deny all");
            rules.extend(extra_rule);
        })
    };
    let out = run(None);
    assert!(
        out.starts_with("made\n") && out.contains("Operation not permitted") && out.ends_with("rc=1\n"),
        "denied: {out}"
    );
    let out = run(Some(
        json!({"allow": true, "type": "b", "major": major, "minor": minor, "access": "r"}),
    ));
    assert_eq!(out, "made\nrc=0\n", "allowed");
}

/// A setuid-root program in the rootfs: with noNewPrivileges the user keeps its euid; without
/// it, the setuid bit works (so the test can tell the two apart).
pub fn setuid_under_no_new_privileges() {
    let env = Env::new("hostile_setuid_nnp");
    let r = env.private_rootfs();
    let src = env.dir.join("euid.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\n#include <unistd.h>\nint main(void){printf(\"euid=%d\\n\", (int)geteuid());return 0;}\n",
    )
    .unwrap();
    let bin = r.join("bin/euid");
    let cc = std::process::Command::new("cc")
        .args(["-static", "-O1", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("cc");
    assert!(cc.status.success(), "cc: {}", String::from_utf8_lossy(&cc.stderr));
    std::os::unix::fs::chown(&bin, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o4755)).unwrap();
    let run_as_user = |nnp: bool| {
        let mut c = env.config(&["/bin/euid"]);
        c["root"]["path"] = json!(r);
        c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
        c["process"]["noNewPrivileges"] = json!(nnp);
        let out = env.run(&c);
        out.expect_ok("run /bin/euid");
        out.stdout.trim().to_string()
    };
    assert_eq!(run_as_user(true), "euid=1000", "noNewPrivileges must stop the setuid bit");
    assert_eq!(run_as_user(false), "euid=0", "without noNewPrivileges the setuid bit works here");
}

/// CVE-2022-29162: runc gave exec'd processes an inheritable set they were not configured
/// with. The init and an exec get exactly the sets of the spec (empty inheritable and
/// ambient here), so a file capability cannot be raised through them.
pub fn no_inherited_capabilities() {
    let env = Env::new("hostile_caps");
    let caps = json!(["CAP_CHOWN", "CAP_KILL"]);
    let (id, pid, _) = sleeper(&env, |c| {
        c["process"]["capabilities"] = json!({"bounding": caps, "effective": caps, "permitted": caps, "inheritable": [], "ambient": []});
    });
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    for (k, want) in [
        ("CapInh", "0000000000000000"),
        ("CapAmb", "0000000000000000"),
        ("CapEff", "0000000000000021"),
        ("CapBnd", "0000000000000021"),
    ] {
        assert_eq!(status_field(&status, k), Some(want), "init {k}: {status}");
    }
    let out = env.rt(&["exec", &id, "grep", "-E", "^Cap(Inh|Amb|Eff|Bnd)", "/proc/self/status"]);
    out.expect_ok("exec grep Cap");
    for (k, want) in [
        ("CapInh", "0000000000000000"),
        ("CapAmb", "0000000000000000"),
        ("CapEff", "0000000000000021"),
        ("CapBnd", "0000000000000021"),
    ] {
        assert_eq!(status_field(&out.stdout, k), Some(want), "exec {k}: {}", out.stdout);
    }
}
