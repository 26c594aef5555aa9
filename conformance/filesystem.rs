//! The container's filesystem: mounts, root.readonly, --no-pivot, devices, masked and
//! read-only paths, sysctl, hostname and domainname. Checked from inside with busybox.

use crate::harness::*;
use serde_json::json;

/// A host directory of this test, with one file `hello` in it.
fn host_dir(env: &Env, name: &str) -> std::path::PathBuf {
    let d = env.dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("hello"), format!("from {name}\n")).unwrap();
    d
}

/// Field 6 (per-mount options) and the super options of a mountinfo line.
fn opts(line: &str) -> (Vec<&str>, Vec<&str>) {
    let (pre, post) = line.split_once(" - ").unwrap();
    let mnt = pre.split(' ').nth(5).unwrap_or("").split(',').collect();
    let sup = post.split(' ').nth(2).unwrap_or("").split(',').collect();
    (mnt, sup)
}

pub fn mount_tmpfs_options() {
    let env = Env::new("mount_tmpfs");
    let out = env.sh("cat /proc/self/mountinfo; stat -c %a /tmp", |c| {
        add_mount(
            c,
            json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                   "options": ["nosuid", "nodev", "noexec", "mode=1770", "size=1m"]}),
        );
    });
    let line = mountinfo_line(&out, "/tmp").unwrap_or_else(|| panic!("no /tmp mount inside: {out}"));
    assert!(line.contains(" - tmpfs "), "{line}");
    let (mnt, sup) = opts(line);
    for o in ["nosuid", "nodev", "noexec", "rw"] {
        assert!(mnt.contains(&o), "{o} missing: {line}");
    }
    assert!(sup.contains(&"size=1024k"), "{line}");
    assert!(sup.contains(&"mode=1770"), "{line}");
    assert_eq!(out.lines().last(), Some("1770"));
}

pub fn mount_bind_rw() {
    let env = Env::new("mount_bind_rw");
    let h = host_dir(&env, "rw");
    let out = env.sh("cat /home/hello && echo written > /home/new && cat /proc/self/mountinfo", |c| {
        add_mount(
            c,
            json!({"destination": "/home", "type": "bind", "source": h, "options": ["rbind", "rw"]}),
        );
    });
    assert!(out.starts_with("from rw\n"), "{out}");
    assert_eq!(read(&h.join("new")), "written\n", "the write did not reach the host dir");
    let line = mountinfo_line(&out, "/home").expect("a /home mount");
    assert!(opts(line).0.contains(&"rw"), "{line}");
}

pub fn mount_bind_ro() {
    let env = Env::new("mount_bind_ro");
    let h = host_dir(&env, "ro");
    let f = env.dir.join("file.txt");
    std::fs::write(&f, "a file\n").unwrap();
    let out = env.sh(
        "cat /home/hello; if echo x > /home/new 2>/dev/null; then echo WROTE; fi; cat /etc/hostname; cat /proc/self/mountinfo",
        |c| {
            add_mount(c, json!({"destination": "/home", "source": h, "options": ["rbind", "ro"]}));
            // A file onto a file.
            add_mount(
                c,
                json!({"destination": "/etc/hostname", "type": "bind", "source": f, "options": ["bind", "ro"]}),
            );
        },
    );
    assert!(out.starts_with("from ro\na file\n"), "{out}");
    assert!(!out.contains("WROTE"), "write to a ro bind mount succeeded");
    assert!(!h.join("new").exists());
    let line = mountinfo_line(&out, "/home").expect("a /home mount");
    assert!(opts(line).0.contains(&"ro"), "{line}");
    assert!(opts(mountinfo_line(&out, "/etc/hostname").expect("file bind")).0.contains(&"ro"));
}

pub fn mount_propagation_options() {
    let env = Env::new("mount_propagation");
    let (a, b, c) = (host_dir(&env, "a"), host_dir(&env, "b"), host_dir(&env, "c"));
    let mounts = |cfg: &mut serde_json::Value| {
        add_mount(
            cfg,
            json!({"destination": "/home", "type": "bind", "source": a, "options": ["rbind", "rshared"]}),
        );
        add_mount(
            cfg,
            json!({"destination": "/root", "type": "bind", "source": b, "options": ["rbind", "rprivate"]}),
        );
        add_mount(
            cfg,
            json!({"destination": "/var", "type": "bind", "source": c, "options": ["bind", "runbindable"]}),
        );
    };
    let out = env.sh("cat /proc/self/mountinfo", mounts);
    // The optional fields (shared:N, master:N, unbindable) of the mount at `mp`.
    let fields = |out: &str, mp: &str| -> Vec<String> {
        let l = mountinfo_line(out, mp).unwrap_or_else(|| panic!("no {mp} mount: {out}"));
        l.split(" - ").next().unwrap().split(' ').skip(6).map(String::from).collect()
    };
    assert!(
        fields(&out, "/home").iter().any(|f| f.starts_with("shared:")),
        "/home: {:?}",
        fields(&out, "/home")
    );
    assert!(
        fields(&out, "/root").is_empty(),
        "/root should be private: {:?}",
        fields(&out, "/root")
    );
    assert!(
        fields(&out, "/var").iter().any(|f| f == "unbindable"),
        "/var: {:?}",
        fields(&out, "/var")
    );
    // rootfsPropagation is applied to / recursively after the mounts (as runc does).
    let out = env.sh("cat /proc/self/mountinfo", |cfg| {
        mounts(cfg);
        cfg["linux"]["rootfsPropagation"] = json!("rprivate");
    });
    for mp in ["/", "/home", "/root", "/proc"] {
        assert!(fields(&out, mp).is_empty(), "{mp} should be private: {:?}", fields(&out, mp));
    }
    let out = env.sh("cat /proc/self/mountinfo", |cfg| {
        cfg["linux"]["rootfsPropagation"] = json!("rshared")
    });
    assert!(
        fields(&out, "/").iter().any(|f| f.starts_with("shared:")),
        "/: {:?}",
        fields(&out, "/")
    );
    // Each propagation keyword parses.
    for p in [
        "private",
        "rprivate",
        "slave",
        "rslave",
        "shared",
        "rshared",
        "unbindable",
        "runbindable",
    ] {
        let d = host_dir(&env, p);
        env.sh("true", |cfg| {
            add_mount(
                cfg,
                json!({"destination": "/home", "type": "bind", "source": d, "options": ["rbind", p]}),
            );
            // (An unbindable / cannot have the rootfs bound onto itself: runc fails there too.)
            if !p.contains("unbindable") {
                cfg["linux"]["rootfsPropagation"] = json!(p);
            }
        });
    }
    let mut bad = env.config(&["true"]);
    bad["linux"]["rootfsPropagation"] = json!("sideways");
    env.run(&bad).expect_err("rootfsPropagation sideways", "linux.rootfsPropagation");
}

pub fn root_readonly() {
    let env = Env::new("root_readonly");
    let out = env.sh("if touch /x 2>/dev/null; then echo WROTE; fi; cat /proc/self/mountinfo", |_| {});
    assert!(!out.contains("WROTE"), "writing to a read-only root succeeded");
    let l = mountinfo_line(&out, "/").expect("a / mount");
    assert!(opts(l).0.contains(&"ro"), "{l}");
    assert!(!rootfs().join("x").exists());
    // readonly false: writable (on a private copy).
    let r = env.private_rootfs();
    env.sh("touch /x && echo ok", |c| {
        c["root"] = json!({"path": r, "readonly": false});
    });
    assert!(r.join("x").exists());
}

pub fn no_pivot() {
    let env = Env::new("no_pivot");
    let cfg = env.sh_config(&format!(
        "test -x /bin/busybox && echo rootfs; test -e {} || echo host-hidden; echo $$; hostname",
        env.dir.display()
    ));
    let b = env.bundle(&cfg);
    let id = env.id();
    let out = env.rt(&["run", "--no-pivot", "--bundle", b.to_str().unwrap(), &id]);
    out.expect_ok("run --no-pivot");
    assert_eq!(out.stdout, "rootfs\nhost-hidden\n1\ntinyrt\n");
}

pub fn default_devices() {
    let env = Env::new("default_devices");
    let out = env.sh(
        "for d in null zero full random urandom tty; do stat -c '%n %F %t:%T %a' /dev/$d; done; \
         ls -d /dev/pts /dev/shm /dev/mqueue; readlink /dev/ptmx; echo x > /dev/null && head -c 4 /dev/zero | wc -c",
        |_| {},
    );
    let want = [
        ("/dev/null", "1:3"),
        ("/dev/zero", "1:5"),
        ("/dev/full", "1:7"),
        ("/dev/random", "1:8"),
        ("/dev/urandom", "1:9"),
        ("/dev/tty", "5:0"),
    ];
    for (dev, mm) in want {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{dev} ")))
            .unwrap_or_else(|| panic!("no {dev}: {out}"));
        assert!(line.contains("character special file"), "{line}");
        assert!(line.contains(&format!(" {mm} ")), "{dev} should be {mm}: {line}");
        assert!(line.ends_with(" 666"), "{dev} mode: {line}");
    }
    assert!(out.contains("/dev/mqueue\n/dev/pts\n/dev/shm\n"), "{out}");
    assert!(out.contains("pts/ptmx\n"), "{out}");
    assert!(out.ends_with("4\n"), "{out}");
}

pub fn dev_fd_symlinks() {
    let env = Env::new("dev_symlinks");
    let out = env.sh(
        "for l in fd stdin stdout stderr; do readlink /dev/$l; done; echo via-dev-stdout >> /dev/stdout",
        |_| {},
    );
    assert_eq!(
        out,
        "/proc/self/fd\n/proc/self/fd/0\n/proc/self/fd/1\n/proc/self/fd/2\nvia-dev-stdout\n"
    );
}

pub fn linux_devices_entry() {
    let env = Env::new("linux_devices");
    let out = env.sh(
        "stat -c '%n %t:%T %a %u:%g' /dev/fuse /dev/mynull /dev/sub/zero; echo x > /dev/mynull && echo wrote",
        |c| {
            c["linux"]["devices"] = json!([
                {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o666, "uid": 0, "gid": 0},
                {"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o606, "uid": 7, "gid": 8},
                {"path": "/dev/sub/zero", "type": "c", "major": 1, "minor": 5}
            ]);
        },
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "/dev/fuse a:e5 666 0:0", "{out}");
    assert_eq!(lines[1], "/dev/mynull 1:3 606 7:8", "{out}");
    assert!(lines[2].starts_with("/dev/sub/zero 1:5 "), "{out}");
    assert_eq!(lines[3], "wrote");
}

pub fn masked_paths() {
    let env = Env::new("masked_paths");
    let out = env.sh(
        "wc -c < /proc/timer_list; wc -c < /proc/keys; ls -A /proc/acpi | wc -l; ls -A /sys/firmware | wc -l; wc -c < /etc/group; ls -A /usr/sbin | wc -l",
        |c| {
            let mp = c["linux"]["maskedPaths"].as_array_mut().unwrap();
            mp.push(json!("/etc/group"));
            mp.push(json!("/usr/sbin"));
            mp.push(json!("/proc/does-not-exist"));
        },
    );
    // (/proc/kcore does not exist on this kernel; timer_list and keys do.)
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["0", "0", "0", "0", "0", "0"], "{out}");
}

pub fn readonly_paths() {
    let env = Env::new("readonly_paths");
    let out = env.sh(
        "if echo 1 > /proc/sys/net/ipv4/ip_forward 2>/dev/null; then echo WROTE; fi; \
         if echo x > /home/f 2>/dev/null; then echo WROTE2; fi; cat /proc/self/mountinfo",
        |c| {
            c["linux"]["readonlyPaths"].as_array_mut().unwrap().push(json!("/home"));
            add_mount(c, json!({"destination": "/home", "type": "tmpfs", "source": "tmpfs"}));
        },
    );
    assert!(!out.contains("WROTE"), "/proc/sys is writable: {out}");
    assert!(!out.contains("WROTE2"), "/home is writable");
    let l = mountinfo_line(&out, "/proc/sys").expect("/proc/sys mount");
    assert!(opts(l).0.contains(&"ro"), "{l}");
}

pub fn sysctl() {
    let env = Env::new("sysctl");
    let host = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let out = env.sh("cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni", |c| {
        c["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1", "kernel.shmmni": "1234"});
    });
    assert_eq!(out, "1\n1234\n");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host,
        "the host's value changed"
    );
    // Without a network namespace, a net.* sysctl is refused.
    let mut c = env.config(&["true"]);
    drop_ns(&mut c, "network");
    c["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
    env.run(&c)
        .expect_err("net sysctl without netns", "linux.sysctl.net.ipv4.ip_forward");
}

pub fn hostname_domainname() {
    let env = Env::new("hostname");
    let out = env.sh("hostname; cat /proc/sys/kernel/domainname", |c| {
        c["hostname"] = json!("box1");
        c["domainname"] = json!("example.test");
    });
    assert_eq!(out, "box1\nexample.test\n");
    let mut c = env.config(&["true"]);
    drop_ns(&mut c, "uts");
    c["hostname"] = json!("nope");
    env.run(&c).expect_err("hostname without uts", "hostname");
}
