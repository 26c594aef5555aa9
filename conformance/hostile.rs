//! Hostile bundles and the runc CVE classes: each attack is tried for real and must be
//! blocked, with the host unchanged.

use crate::harness::*;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

fn write_executable(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, PermissionsExt::from_mode(0o755)).unwrap();
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
        printf PWNED >&4 && echo wrote >> /tmp/log
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
/// /proc/PID/exe and writes once it has exited. tinyrt runs from a binary nothing can write
/// (a read-only overlay of it, or a sealed copy): the write fails, and the file on the host
/// is unchanged. The runtime of this test is a copy of tinyrt, so a successful attack
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
    env.until("the attacker's result", Duration::from_secs(10), || log().contains("done"));
    let log = log();
    assert!(!log.contains("wrote"), "the container wrote into the runtime binary: {log}");
    // It did try: the open for writing failed (EROFS through the overlay, EPERM on a sealed memfd).
    assert!(
        log.contains("Read-only file system") || log.contains("Operation not permitted"),
        "the write attempt did not fail as expected: {log}"
    );
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
    let host = env.dir.join("host-target");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("canary"), "host").unwrap();
    let host_untouched = |what: &str| {
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            mountinfo_line(&mi, host.to_str().unwrap()).is_none(),
            "{what}: a mount landed on {}",
            host.display()
        );
        let entries: Vec<_> = std::fs::read_dir(&host).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(entries, vec![std::ffi::OsString::from("canary")], "{what}: the host dir changed");
    };

    let r = env.private_rootfs();
    std::os::unix::fs::symlink(&host, r.join("abs")).unwrap();
    std::os::unix::fs::symlink("../../../../../../..".to_string() + host.to_str().unwrap(), r.join("rel")).unwrap();
    let mut c = env.sh_config("for d in /abs /rel; do cd $d && touch written && cd /; done; grep -c ' tmpfs ' /proc/self/mountinfo");
    c["root"]["path"] = json!(r);
    for d in ["/abs", "/rel"] {
        add_mount(
            &mut c,
            json!({"destination": d, "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}),
        );
    }
    env.run(&c).expect_ok("run with symlinked mount destinations");
    host_untouched("links to the host");

    let r = env.private_rootfs();
    std::fs::remove_dir_all(r.join("proc")).unwrap();
    std::os::unix::fs::symlink(&host, r.join("proc")).unwrap();
    let mut c = env.config(&["true"]);
    c["root"]["path"] = json!(r);
    env.run(&c).expect_err("run with /proc a symlink to the host", "/proc");
    host_untouched("/proc a link to the host");
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
