//! The built-in network hook (`tinyrt hook network up|down`), end to end, as root.
//!
//! Every name is unique to this run (bridge `tinyt<tag><n>`, its own /24 subnets, netns and
//! links `tinyo<tag>...`), so runs can go in parallel with other tests. The suite only ever
//! contacts addresses it created. Each test's `Net` guard removes what the test made, even
//! when it fails; the suite is the subreaper of the container inits and reaps them at the end.
//!
//! Run with `cargo test --test network` (as root; skipped otherwise or without nft/busybox).

#[path = "../conformance/support/fault_seed.rs"]
mod fault_seed;
#[path = "../conformance/support/procs.rs"]
mod procs;

use libtest_mimic::{Arguments, Failed, Trial};
use procs::{children_in_cgroup, our_children};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

const TINYRT: &str = env!("CARGO_BIN_EXE_tinyrt");

type R = Result<(), Failed>;
type TestFn = fn() -> R;

fn tag() -> &'static str {
    static T: OnceLock<String> = OnceLock::new();
    T.get_or_init(|| {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        format!("{:06x}", (std::process::id() ^ n) & 0xffffff)
    })
}

fn work_dir() -> PathBuf {
    PathBuf::from(format!("/tmp/tinyrt-nettest-{}", tag()))
}

/// The shared busybox rootfs (read-only in every container).
fn rootfs() -> PathBuf {
    static R: OnceLock<PathBuf> = OnceLock::new();
    R.get_or_init(|| {
        let dir = work_dir().join("rootfs");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bundle-examples/mkrootfs.sh");
        let out = Command::new("sh").arg(script).arg(&dir).output().expect("mkrootfs.sh");
        assert!(out.status.success(), "mkrootfs.sh: {}", String::from_utf8_lossy(&out.stderr));
        dir
    })
    .clone()
}

fn sh(cmd: &str) -> Output {
    Command::new("sh").arg("-c").arg(cmd).output().expect("sh")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn ok(cmd: &str) -> Result<String, Failed> {
    let o = sh(cmd);
    if !o.status.success() {
        return Err(format!("`{cmd}` failed: {}", text(&o)).into());
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn check(cond: bool, msg: impl Into<String>) -> R {
    if cond { Ok(()) } else { Err(msg.into().into()) }
}

/// Routes of the host, to pick subnets that collide with nothing.
fn free_subnet(seed: u32) -> String {
    let routes = ok("ip -4 route show table all").unwrap_or_default();
    for i in 0..200u32 {
        let v = seed.wrapping_mul(2654435761).wrapping_add(i * 7919);
        let (a, b) = (100 + (v >> 8) % 100, (v >> 16) % 256);
        let net = format!("10.{a}.{b}.");
        if !routes.contains(&net) {
            return format!("10.{a}.{b}.0/24");
        }
    }
    panic!("no free 10.x.y.0/24");
}

fn seed(n: u32) -> u32 {
    u32::from_str_radix(tag(), 16).unwrap().wrapping_add(n * 1_000_003)
}

/// What the `Net` guards' cleanup found left behind (containers that would not delete,
/// cgroup directories): the test that made them fails with it (see `main`).
static CLEANUP_PROBLEMS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// One test's network: a bridge and subnet of its own, containers, namespaces and links it
/// made; dropping it removes them all, and checks that no container's cgroup is left.
struct Net {
    n: u32,
    bridge: String,
    subnet: String,
    root: PathBuf,
    ids: Vec<String>,
    /// Every container id handed out (`ids` holds only the ones still to delete).
    made: Mutex<BTreeSet<String>>,
    netns: Vec<String>,
    links: Vec<String>,
    children: Vec<Child>,
    /// Run tinyrt inside this network namespace (the "host" of the test).
    host_ns: Option<String>,
}

impl Net {
    fn new(n: u32) -> Net {
        let bridge = format!("tinyt{}{n}", tag());
        let root = work_dir().join(format!("root{n}"));
        std::fs::create_dir_all(&root).unwrap();
        Net {
            n,
            subnet: free_subnet(seed(n)),
            bridge,
            root,
            ids: vec![],
            made: Mutex::new(BTreeSet::new()),
            netns: vec![],
            links: vec![],
            children: vec![],
            host_ns: None,
        }
    }

    fn id(&self, name: &str) -> String {
        let id = format!("nt{}-{}-{name}", tag(), self.n);
        self.made.lock().unwrap().insert(id.clone());
        id
    }

    fn prefix(&self) -> String {
        match &self.host_ns {
            // nsenter, not `ip netns exec`: that remounts /sys, hiding the cgroup tree.
            Some(ns) => format!("nsenter --net=/var/run/netns/{ns} "),
            None => String::new(),
        }
    }

    fn gateway(&self) -> String {
        self.subnet.replace(".0/24", ".1")
    }

    /// A bundle from `tinyrt spec --network`, with this network's annotations.
    fn bundle(&self, id: &str, script: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
        let b = work_dir().join("bundles").join(id);
        let _ = std::fs::remove_dir_all(&b);
        std::fs::create_dir_all(&b).unwrap();
        let o = Command::new(TINYRT).args(["spec", "--network", "-b"]).arg(&b).output().unwrap();
        assert!(o.status.success(), "spec --network: {}", text(&o));
        let path = b.join("config.json");
        let mut c: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        c["root"]["path"] = rootfs().display().to_string().into();
        c["process"]["terminal"] = false.into();
        c["process"]["args"] = serde_json::json!(["sh", "-c", script]);
        c["hostname"] = id.into();
        c["mounts"].as_array_mut().unwrap().push(serde_json::json!(
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]}
        ));
        c["annotations"] = serde_json::json!({
            "io.tinyrt.network.bridge": self.bridge,
            "io.tinyrt.network.subnet": self.subnet,
        });
        edit(&mut c);
        std::fs::write(&path, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
        b
    }

    fn tinyrt(&self, args: &str) -> Output {
        sh(&format!("{}{TINYRT} --root {} {args}", self.prefix(), self.root.display()))
    }

    /// A command whose children (a container's init) may keep its stdio: the output goes
    /// through a file, so waiting for it never waits for the container.
    fn detached(&self, cmd: &str) -> Output {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let f = work_dir().join(format!("out{}", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
        let mut o = sh(&format!("{cmd} </dev/null >{f} 2>&1", f = f.display()));
        o.stdout = std::fs::read(&f).unwrap_or_default();
        let _ = std::fs::remove_file(&f);
        o
    }

    fn create(&self, id: &str, bundle: &Path) -> Output {
        self.detached(&format!(
            "{}{TINYRT} --root {} create --bundle {} {id}",
            self.prefix(),
            self.root.display(),
            bundle.display()
        ))
    }

    /// create + start; returns the create output on failure.
    fn run(&mut self, id: &str, bundle: &Path) -> Result<(), String> {
        self.ids.push(id.to_string());
        let o = self.create(id, bundle);
        if !o.status.success() {
            return Err(text(&o));
        }
        let o = self.tinyrt(&format!("start {id}"));
        if !o.status.success() {
            return Err(text(&o));
        }
        Ok(())
    }

    /// A container serving `hello-<id>` over HTTP on port 80.
    fn web(&mut self, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Result<(String, Ipv4Addr), Failed> {
        let id = self.id(name);
        let b = self.bundle(
            &id,
            "mkdir -p /tmp/w && echo hello-$(hostname) > /tmp/w/index.html && exec httpd -f -p 80 -h /tmp/w",
            edit,
        );
        self.run(&id, &b).map_err(|e| format!("{id}: {e}"))?;
        let ip = ip_of(&b)?;
        Ok((id, ip))
    }

    fn exec(&self, id: &str, cmd: &str) -> Output {
        self.tinyrt(&format!("exec {id} sh -c '{cmd}'"))
    }

    fn delete(&mut self, id: &str) -> R {
        let o = self.force_delete(id);
        self.ids.retain(|i| i != id);
        check(o.status.success(), format!("delete {id}: {}", text(&o)))
    }

    /// `tinyrt delete --force id`, reaping the container's processes that are our children
    /// (its init, reparented to us) while it runs: the init of a PID namespace only finishes
    /// dying once every process of the namespace is reaped, so an unreaped one would make
    /// the delete time out and leave the container and its cgroups.
    fn force_delete(&self, id: &str) -> Output {
        let f = work_dir().join(format!("delete-{id}.out"));
        let cmd = format!(
            "{}{TINYRT} --root {} delete --force {id} </dev/null >{} 2>&1",
            self.prefix(),
            self.root.display(),
            f.display()
        );
        let mut child = Command::new("sh").arg("-c").arg(cmd).spawn().expect("sh");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            reap_exited_in_cgroup(id);
            match child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                _ => {
                    let _ = child.kill();
                    break child.wait().expect("wait");
                }
            }
        };
        reap_exited_in_cgroup(id);
        let stdout = std::fs::read(&f).unwrap_or_default();
        let _ = std::fs::remove_file(&f);
        Output {
            status,
            stdout,
            stderr: vec![],
        }
    }

    /// A network namespace of the test's own, linked to the host by a veth: `<net>.1` on the
    /// host side, `<net>.2` inside. Returns (ns name, host address, inside address).
    fn outside(&mut self, seedn: u32) -> Result<(String, String, String), Failed> {
        let ns = format!("tinyo{}{}", tag(), self.n);
        let (h, o) = (format!("tinyo{}{}h", tag(), self.n), format!("tinyo{}{}o", tag(), self.n));
        let net = free_subnet(seed(seedn)).replace(".0/24", "");
        self.netns.push(ns.clone());
        self.links.push(h.clone());
        let p = self.prefix();
        ok(&format!("ip netns add {ns}"))?;
        ok(&format!("{p}ip link add {h} type veth peer name {o} netns {ns}"))?;
        ok(&format!("{p}ip addr add {net}.1/24 dev {h} && {p}ip link set {h} up"))?;
        ok(&format!(
            "ip -n {ns} addr add {net}.2/24 dev {o} && ip -n {ns} link set {o} up && ip -n {ns} link set lo up && ip -n {ns} route add default via {net}.1"
        ))?;
        Ok((ns, format!("{net}.1"), format!("{net}.2")))
    }

    /// busybox httpd serving `dir`, in the host (or `ns`), as a child of the test.
    fn serve(&mut self, ns: Option<&str>, addr: &str, dir: &Path) -> R {
        let mut c = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "busybox"]);
                c
            }
            None => match &self.host_ns {
                Some(h) => {
                    let mut c = Command::new("ip");
                    c.args(["netns", "exec", h, "busybox"]);
                    c
                }
                None => Command::new("busybox"),
            },
        };
        let child = c
            .args(["httpd", "-f", "-p", addr, "-h"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.children.push(child);
        std::thread::sleep(Duration::from_millis(200));
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let mut problems = vec![];
        for id in self.ids.clone() {
            let o = self.force_delete(&id);
            if !o.status.success() {
                problems.push(format!("cleanup: delete --force {id} failed: {}", text(&o)));
                // Once more, with nothing of ours holding it up.
                kill_and_reap_in_cgroup(&id);
                let o = self.force_delete(&id);
                if !o.status.success() {
                    problems.push(format!("cleanup: delete --force {id} failed again: {}", text(&o)));
                }
            }
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Whatever a failed hook left: the hook's own `down` removes leases, veths, rules.
        for id in self.ids.clone() {
            let state = serde_json::json!({"id": id, "pid": 0, "bundle": "/nonexistent",
                "annotations": {"io.tinyrt.network.bridge": self.bridge, "io.tinyrt.network.subnet": self.subnet}});
            let _ = sh(&format!("echo '{state}' | {}{TINYRT} hook network down", self.prefix()));
        }
        let p = self.prefix();
        for l in &self.links {
            let _ = sh(&format!("{p}ip link del {l} 2>/dev/null"));
        }
        for ns in &self.netns {
            let _ = sh(&format!("ip netns pids {ns} | xargs -r kill -9; ip netns del {ns} 2>/dev/null"));
        }
        if let Some(h) = &self.host_ns {
            let _ = sh(&format!("ip netns pids {h} | xargs -r kill -9; ip netns del {h} 2>/dev/null"));
        }
        // No cgroup of any container is left (removed all the same, so the host stays clean).
        for id in self.made.lock().unwrap().iter() {
            for d in cgroup_dirs(id).into_iter().filter(|d| d.exists()) {
                problems.push(format!("cleanup: cgroup {} left after delete", d.display()));
                let _ = std::fs::remove_dir(&d);
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
        for p in &problems {
            eprintln!("{p}");
        }
        CLEANUP_PROBLEMS.lock().unwrap().extend(problems);
    }
}

/// The cgroup directories tinyrt makes for container `id` (its default, relative path).
fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    tinyrt::cgroups::resolve(None, id, false).map(|c| c.leaves).unwrap_or_default()
}

/// Reap, without waiting, the processes of container `id` that are our children and exited.
fn reap_exited_in_cgroup(id: &str) {
    for p in children_in_cgroup(id) {
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(p), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
    }
}

/// SIGKILL and reap the processes of container `id` that are our children.
fn kill_and_reap_in_cgroup(id: &str) {
    for p in children_in_cgroup(id) {
        let pid = nix::unistd::Pid::from_raw(p);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        for _ in 0..400 {
            match nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                Ok(nix::sys::wait::WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(5)),
                _ => break,
            }
        }
    }
}

/// The container's address, from the hosts file the hook wrote into its bundle.
fn ip_of(bundle: &Path) -> Result<Ipv4Addr, Failed> {
    let hosts = std::fs::read_to_string(bundle.join("tinyrt-net/hosts"))?;
    let last = hosts.lines().last().ok_or("empty hosts file")?;
    Ok(last.split('\t').next().unwrap().parse()?)
}

/// `wget` from the host (in the test's host namespace if any), with retries while a server starts.
fn host_get(net: &Net, url: &str) -> Result<String, Failed> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let o = sh(&format!("{}timeout 5 busybox wget -q -O- {url}", net.prefix()));
        if o.status.success() {
            return Ok(String::from_utf8_lossy(&o.stdout).trim().to_string());
        }
        if Instant::now() > deadline {
            return Err(format!("host: wget {url}: {}", text(&o)).into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ctr_get(net: &Net, id: &str, url: &str) -> Result<String, Failed> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let o = net.exec(id, &format!("timeout 5 wget -q -O- {url}"));
        if o.status.success() {
            return Ok(String::from_utf8_lossy(&o.stdout).trim().to_string());
        }
        if Instant::now() > deadline {
            return Err(format!("{id}: wget {url}: {}", text(&o)).into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Nothing of this network is left: no bridge, no veth, no lease, no table, no chain.
fn assert_gone(net: &Net, ids: &[String]) -> R {
    let p = net.prefix();
    let links = ok(&format!("{p}ip -o link"))?;
    check(!links.contains(&format!(" {}:", net.bridge)), format!("bridge {} left", net.bridge))?;
    for id in ids {
        let v = tinyrt::net::veth_name(&net.bridge, id);
        check(!links.contains(&v), format!("veth {v} of {id} left"))?;
    }
    check(!Path::new("/run/tinyrt-net").join(&net.bridge).exists(), "lease dir left")?;
    let rules = ok(&format!("{p}nft list ruleset"))?;
    check(
        !rules.contains(&format!("tinyrt-{}", net.bridge)),
        format!("nft table left:\n{rules}"),
    )?;
    let ipt = ok(&format!("{p}iptables-save 2>/dev/null || true"))?;
    check(
        !ipt.contains(&format!("TINYRT-{}", net.bridge)),
        format!("iptables chain left:\n{ipt}"),
    )
}

fn links_of(prefix: &str) -> BTreeSet<String> {
    ok(&format!("{prefix}ip -o link"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|s| s.trim().split('@').next().unwrap().to_string()))
        .collect()
}

/// iptables-save without its timestamps, and without the chains of other tinyrt networks
/// (a parallel run of this suite); ours are checked to be gone by `assert_gone`.
fn strip_comments(s: &str) -> String {
    s.lines()
        .filter(|l| !l.starts_with('#') && !l.contains("TINYRT-"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `nft list ruleset` without the tables of tinyrt networks (same reason).
fn ruleset_sans_tinyrt() -> Result<String, Failed> {
    let all = ok("nft list ruleset")?;
    let mut out = String::new();
    let mut skip = false;
    for l in all.lines() {
        if l.starts_with("table ") {
            skip = l.starts_with("table ip tinyrt-");
        }
        if !skip {
            out += l;
            out.push('\n');
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------

fn bridge_traffic() -> R {
    let mut net = Net::new(1);
    let port = 20000 + seed(1) % 20000;
    let (a, a_ip) = net.web("a", |_| {})?;
    let (b, b_ip) = net.web("b", |c| {
        c["annotations"]["io.tinyrt.network.ports"] = format!("{port}:80/tcp").into()
    })?;
    check(a_ip != b_ip, "two containers, one address")?;
    // container to container over the bridge
    check(ctr_get(&net, &b, &format!("http://{a_ip}/"))? == format!("hello-{a}"), "b -> a")?;
    check(ctr_get(&net, &a, &format!("http://{b_ip}/"))? == format!("hello-{b}"), "a -> b")?;
    // host to container
    check(host_get(&net, &format!("http://{a_ip}/"))? == format!("hello-{a}"), "host -> a")?;
    // container to the host's bridge address
    let www = work_dir().join("www1");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("index.html"), "host-side\n")?;
    let gw = net.gateway();
    net.serve(None, &format!("{gw}:8000"), &www)?;
    check(
        ctr_get(&net, &a, &format!("http://{gw}:8000/"))? == "host-side",
        "a -> host bridge address",
    )?;
    // the published port, from the host: at the bridge address and at 127.0.0.1
    check(
        host_get(&net, &format!("http://{gw}:{port}/"))? == format!("hello-{b}"),
        "host -> published port (bridge addr)",
    )?;
    check(
        host_get(&net, &format!("http://127.0.0.1:{port}/"))? == format!("hello-{b}"),
        "host -> published port (127.0.0.1)",
    )?;
    // hairpin: a reaches b through the published port
    check(
        ctr_get(&net, &a, &format!("http://{gw}:{port}/"))? == format!("hello-{b}"),
        "a -> published port of b",
    )?;
    // name resolution files
    let hosts = String::from_utf8_lossy(&net.exec(&a, "cat /etc/hosts; cat /etc/hostname; cat /etc/resolv.conf").stdout).into_owned();
    check(
        hosts.contains(&format!("{a_ip}\t{a}")) && hosts.contains("127.0.0.1\tlocalhost"),
        format!("hosts: {hosts}"),
    )?;
    check(
        hosts.contains("nameserver") && !hosts.contains("nameserver 127."),
        format!("resolv.conf: {hosts}"),
    )?;
    let ids = vec![a.clone(), b.clone()];
    net.delete(&a)?;
    net.delete(&b)?;
    assert_gone(&net, &ids)
}

fn nat_to_outside() -> R {
    let mut net = Net::new(2);
    let (ns, host_addr, out_addr) = net.outside(102)?;
    let www = work_dir().join("www2");
    std::fs::create_dir_all(www.join("cgi-bin"))?;
    std::fs::write(
        www.join("cgi-bin/ip"),
        "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"$REMOTE_ADDR\"\n",
    )?;
    ok(&format!("chmod 755 {}/cgi-bin/ip", www.display()))?;
    net.serve(Some(&ns), &format!("{out_addr}:80"), &www)?;
    let (a, a_ip) = net.web("a", |_| {})?;
    let seen = ctr_get(&net, &a, &format!("http://{out_addr}/cgi-bin/ip"))?;
    check(
        seen.ends_with(&host_addr),
        format!("outside server saw {seen:?}, want the host's {host_addr}"),
    )?;
    check(!seen.contains(&a_ip.to_string()), "the container's address leaked")?;
    // Unsolicited traffic from outside to the container is not forwarded.
    let o = sh(&format!("ip netns exec {ns} ip route add {} via {host_addr}", net.subnet));
    check(o.status.success(), text(&o))?;
    let o = sh(&format!("ip netns exec {ns} timeout 3 busybox wget -q -O- http://{a_ip}/"));
    check(!o.status.success(), "outside reached the container without a published port")?;
    net.delete(&a)?;
    assert_gone(&net, &[a])
}

fn twenty_parallel() -> R {
    let before_links = links_of("");
    let before_nft = ruleset_sans_tinyrt()?;
    let before_ipt = strip_comments(&ok("iptables-save 2>/dev/null || true")?);
    let mut net = Net::new(3);
    let ids: Vec<String> = (0..20).map(|i| net.id(&format!("c{i}"))).collect();
    let script = "mkdir -p /tmp/w && echo hello-$(hostname) > /tmp/w/index.html && exec httpd -f -p 80 -h /tmp/w";
    let bundles: Vec<PathBuf> = ids.iter().map(|id| net.bundle(id, script, |_| {})).collect();
    net.ids.extend(ids.iter().cloned());
    let results: Vec<Output> = std::thread::scope(|s| {
        let hs: Vec<_> = ids
            .iter()
            .zip(&bundles)
            .map(|(id, b)| {
                let net = &net;
                s.spawn(move || {
                    let o = net.create(id, b);
                    if o.status.success() {
                        net.tinyrt(&format!("start {id}"))
                    } else {
                        o
                    }
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (id, o) in ids.iter().zip(&results) {
        check(o.status.success(), format!("{id}: {}", text(o)))?;
    }
    let ips: Vec<Ipv4Addr> = bundles.iter().map(|b| ip_of(b)).collect::<Result<_, _>>()?;
    let distinct: BTreeSet<_> = ips.iter().collect();
    check(distinct.len() == 20, format!("addresses not distinct: {ips:?}"))?;
    for (id, ip) in ids.iter().zip(&ips) {
        check(
            host_get(&net, &format!("http://{ip}/"))? == format!("hello-{id}"),
            format!("{id} at {ip}"),
        )?;
    }
    let outs: Vec<Output> = std::thread::scope(|s| {
        let net = &net;
        let hs: Vec<_> = ids
            .iter()
            .map(|id| s.spawn(move || net.tinyrt(&format!("delete --force {id}"))))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (id, o) in ids.iter().zip(&outs) {
        check(o.status.success(), format!("delete {id}: {}", text(o)))?;
    }
    net.ids.clear();
    assert_gone(&net, &ids)?;
    // Nothing of ours is left, and nothing else changed.
    let after_links = links_of("");
    let ours = |l: &String| l == &net.bridge || ids.iter().any(|id| *l == tinyrt::net::veth_name(&net.bridge, id));
    check(!after_links.iter().any(ours), "links left")?;
    check(
        before_links.iter().filter(|l| ours(l)).count() == 0,
        "links of ours existed before the test",
    )?;
    check(ruleset_sans_tinyrt()? == before_nft, "nft ruleset changed")?;
    check(
        strip_comments(&ok("iptables-save 2>/dev/null || true")?) == before_ipt,
        "iptables changed",
    )
}

fn expect_create_fails(net: &mut Net, name: &str, want: &str, edit: impl FnOnce(&mut serde_json::Value)) -> R {
    let id = net.id(name);
    let b = net.bundle(&id, "sleep 100", edit);
    match net.run(&id, &b) {
        Ok(()) => Err(format!("{id}: create succeeded, want an error with {want:?}").into()),
        Err(e) => {
            check(e.contains(want), format!("{id}: error {e:?} lacks {want:?}"))?;
            let o = net.tinyrt(&format!("state {id}"));
            check(!o.status.success(), format!("{id} still exists after a failed create"))?;
            assert_gone(net, &[id])
        }
    }
}

fn hook_env(c: &mut serde_json::Value, fault: &str) {
    c["hooks"]["createRuntime"][0]["env"] = serde_json::json!([format!("TINYRT_NET_FAULT={fault}")]);
}

fn faults() -> R {
    let mut net = Net::new(4);
    expect_create_fails(&mut net, "killed", "killed by signal 9", |c| hook_env(c, "kill-after-veth"))?;
    expect_create_fails(&mut net, "failed", "injected fault", |c| hook_env(c, "fail-after-veth"))?;
    expect_create_fails(&mut net, "failend", "injected fault", |c| hook_env(c, "fail-at-end"))?;
    // A failure with another container up: that one keeps working, the new one is undone.
    let (a, a_ip) = net.web("a", |_| {})?;
    let id = net.id("killed2");
    let b = net.bundle(&id, "sleep 100", |c| hook_env(c, "kill-after-veth"));
    check(net.run(&id, &b).is_err(), "killed hook: create succeeded")?;
    let links = ok("ip -o link")?;
    check(
        !links.contains(&tinyrt::net::veth_name(&net.bridge, &id)),
        "veth of the failed container left",
    )?;
    let leases = std::fs::read_to_string(Path::new("/run/tinyrt-net").join(&net.bridge).join("leases.json"))?;
    check(!leases.contains(&format!("\"{id}\"")), "lease of the failed container left")?;
    check(
        host_get(&net, &format!("http://{a_ip}/"))? == format!("hello-{a}"),
        "a after b's failure",
    )?;
    net.delete(&a)?;
    assert_gone(&net, &[a, id])?;

    // A subnet that collides with an existing route (on a dummy link of the test's own).
    let dummy = format!("tinyo{}d", tag()); // a veth pair: the dummy module may be missing
    net.links.push(dummy.clone());
    let dnet = free_subnet(seed(44)).replace(".0/24", "");
    ok(&format!(
        "ip link add {dummy} type veth peer name {dummy}p && ip addr add {dnet}.1/24 dev {dummy} && ip link set {dummy}p up && ip link set {dummy} up"
    ))?;
    let sub = format!("{dnet}.0/24");
    let mut clash = Net::new(5);
    clash.subnet = sub.clone();
    expect_create_fails(&mut clash, "clash", "collides with existing route", |_| {})?;
    drop(clash);
    ok(&format!("ip link del {dummy}"))?;

    // A container pid that does not exist: the hook says so and makes nothing.
    let state = serde_json::json!({"id": net.id("nopid"), "pid": 4_194_000, "bundle": "/nonexistent",
        "annotations": {"io.tinyrt.network.bridge": net.bridge, "io.tinyrt.network.subnet": net.subnet}});
    let o = sh(&format!("echo '{state}' | {TINYRT} hook network up"));
    check(
        !o.status.success() && text(&o).contains("no such process"),
        format!("missing pid: {}", text(&o)),
    )?;
    assert_gone(&net, &[net.id("nopid")])?;

    // A pid in the runtime's own namespace is never configured.
    let state = serde_json::json!({"id": net.id("hostns"), "pid": std::process::id(), "bundle": "/nonexistent",
        "annotations": {"io.tinyrt.network.bridge": net.bridge, "io.tinyrt.network.subnet": net.subnet}});
    let o = sh(&format!("echo '{state}' | {TINYRT} hook network up"));
    check(
        !o.status.success() && text(&o).contains("refusing"),
        format!("host netns: {}", text(&o)),
    )?;
    assert_gone(&net, &[net.id("hostns")])?;

    // A config without a network namespace is refused at create.
    expect_create_fails(&mut net, "nonetns", "no network namespace", |c| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "network");
    })
}

/// Issue 8, with the network hook: tinyrt SIGKILLed at a random instant of `create` (so
/// sometimes inside the hook, which dies with it), or of a `delete --force` of a running
/// container. A later `delete --force` must leave no veth, lease or process, while a
/// neighbour on the same bridge keeps working; once it is deleted too, no bridge, table or
/// chain is left. Seeded by TINYRT_FAULT_SEED; TINYRT_FAULT_ITERS iterations (default 20).
fn killed_mid_verb() -> R {
    let mut net = Net::new(6);
    let iters = fault_seed::iterations(20);
    let mut rng = fault_seed::Rng(fault_seed::seed());
    let mut rand = |max_us: u64| rng.delay(max_us);
    let (keep, keep_ip) = net.web("keep", |_| {})?;
    let mut ids = vec![keep.clone()];
    let (mut cut_create, mut cut_delete) = (0, 0);
    for i in 0..iters {
        let id = net.id(&format!("k{i}"));
        net.ids.push(id.clone());
        ids.push(id.clone());
        let b = net.bundle(&id, "sleep 100", |_| {});
        let spawn = |args: &[&str]| {
            Command::new(TINYRT)
                .arg("--root")
                .arg(&net.root)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawning tinyrt")
        };
        let mut create = spawn(&["create", "--bundle", b.to_str().unwrap(), &id]);
        std::thread::sleep(rand(150_000));
        let _ = create.kill();
        let created = create.wait()?.success();
        if !created {
            cut_create += 1;
        } else if net.tinyrt(&format!("start {id}")).status.success() {
            let mut delete = spawn(&["delete", "--force", &id]);
            let end = Instant::now() + rand(80_000);
            while Instant::now() < end {
                reap_exited_in_cgroup(&id);
                std::thread::sleep(Duration::from_micros(300));
            }
            let _ = delete.kill();
            if !delete.wait()?.success() {
                cut_delete += 1;
            }
        }
        let o = net.force_delete(&id);
        check(
            o.status.success() || text(&o).contains("does not exist"),
            format!("iteration {i}: delete --force {id}: {}", text(&o)),
        )?;
        net.ids.retain(|x| x != &id);
        // Inits of killed creates that never got going exit on their own, reparented to us.
        let servers: Vec<i32> = net.children.iter().map(|c| c.id() as i32).collect();
        for (p, st) in our_children() {
            if st == 'Z' && !servers.contains(&p) {
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(p), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
            }
        }
        let links = ok("ip -o link")?;
        let veth = tinyrt::net::veth_name(&net.bridge, &id);
        check(!links.contains(&veth), format!("iteration {i}: veth {veth} of {id} left"))?;
        let leases = std::fs::read_to_string(Path::new("/run/tinyrt-net").join(&net.bridge).join("leases.json")).unwrap_or_default();
        check(!leases.contains(&format!("\"{id}\"")), format!("iteration {i}: lease of {id} left"))?;
        check(!net.root.join(&id).exists(), format!("iteration {i}: state dir of {id} left"))?;
        for d in cgroup_dirs(&id) {
            check(!d.exists(), format!("iteration {i}: cgroup {} left", d.display()))?;
        }
    }
    eprintln!("killed_mid_verb: {iters} creates killed at random: {cut_create} cut short; {cut_delete} deletes cut short");
    check(cut_create > 0, "no kill landed inside create")?;
    check(
        host_get(&net, &format!("http://{keep_ip}/"))? == format!("hello-{keep}"),
        "the neighbour after the killed containers",
    )?;
    net.delete(&keep)?;
    assert_gone(&net, &ids)
}

/// A container that joins an existing network namespace by path is left alone.
fn joined_netns_untouched() -> R {
    let mut net = Net::new(6);
    let ns = format!("tinyo{}j", tag());
    net.netns.push(ns.clone());
    ok(&format!("ip netns add {ns}"))?;
    let id = net.id("joined");
    let b = net.bundle(&id, "sleep 100", |c| {
        for n in c["linux"]["namespaces"].as_array_mut().unwrap() {
            if n["type"] == "network" {
                n["path"] = format!("/var/run/netns/{ns}").into();
            }
        }
    });
    net.run(&id, &b).map_err(|e| format!("joined: {e}"))?;
    let links = ok(&format!("ip -n {ns} -o link"))?;
    check(!links.contains("eth0"), format!("the joined namespace was configured: {links}"))?;
    check(!Path::new("/run/tinyrt-net").join(&net.bridge).exists(), "a lease was taken")?;
    net.delete(&id)?;
    assert_gone(&net, &[id])
}

/// Docker's FORWARD policy DROP (iptables-nft) in a "host" namespace of the test's own:
/// containers still reach the outside, and our iptables chain goes with the last container.
fn docker_forward_drop() -> R {
    if !Path::new("/usr/sbin/iptables").exists() {
        eprintln!("iptables not installed: skipped");
        return Ok(());
    }
    let mut net = Net::new(7);
    let h = format!("tinyo{}H", tag());
    ok(&format!("ip netns add {h} && ip -n {h} link set lo up"))?;
    net.host_ns = Some(h.clone());
    ok(&format!(
        "ip netns exec {h} iptables -w -P FORWARD DROP && ip netns exec {h} iptables -w -A FORWARD -j DROP"
    ))?;
    let (ns, host_addr, out_addr) = net.outside(107)?;
    let www = work_dir().join("www7");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("index.html"), "outside\n")?;
    net.serve(Some(&ns), &format!("{out_addr}:80"), &www)?;
    let (a, _) = net.web("a", |_| {})?;
    let (b, b_ip) = net.web("b", |_| {})?;
    check(
        ctr_get(&net, &a, &format!("http://{out_addr}/"))? == "outside",
        format!("a -> outside ({host_addr}) under FORWARD DROP"),
    )?;
    check(
        ctr_get(&net, &a, &format!("http://{b_ip}/"))? == format!("hello-{b}"),
        "a -> b under FORWARD DROP",
    )?;
    let ipt = ok(&format!("ip netns exec {h} iptables-save"))?;
    check(
        ipt.contains(&format!("-A FORWARD -j TINYRT-{}", net.bridge)),
        format!("no jump to our chain:\n{ipt}"),
    )?;
    // Without that jump, the nftables table alone does not get past the DROP policy.
    let chain = format!("TINYRT-{}", net.bridge);
    ok(&format!("ip netns exec {h} iptables -w -D FORWARD -j {chain}"))?;
    let o = net.exec(&a, &format!("timeout 3 wget -q -O- http://{out_addr}/"));
    ok(&format!("ip netns exec {h} iptables -w -I FORWARD 1 -j {chain}"))?;
    check(
        !o.status.success(),
        "reached the outside without the iptables jump: the test proves nothing",
    )?;
    net.delete(&a)?;
    net.delete(&b)?;
    assert_gone(&net, &[a, b])?;
    let ipt = ok(&format!("ip netns exec {h} iptables-save"))?;
    check(
        ipt.contains(":FORWARD DROP") && ipt.contains("-A FORWARD -j DROP"),
        "Docker-like rules were changed",
    )
}

/// runc runs the same hooks.
fn runc_uses_hook() -> R {
    if sh("command -v runc").stdout.is_empty() {
        eprintln!("runc not installed: skipped");
        return Ok(());
    }
    let mut net = Net::new(8);
    let (a, a_ip) = net.web("a", |_| {})?;
    let id = net.id("runc");
    let b = net.bundle(
        &id,
        "mkdir -p /tmp/w && echo hello-runc > /tmp/w/index.html && exec httpd -f -p 80 -h /tmp/w",
        |_| {},
    );
    let rroot = work_dir().join("runc-root");
    let run = |args: &str| sh(&format!("runc --root {} {args}", rroot.display()));
    let o = net.detached(&format!("runc --root {} run -d --bundle {} {id}", rroot.display(), b.display()));
    let res = (|| -> R {
        check(o.status.success(), format!("runc run: {}", text(&o)))?;
        let r_ip = ip_of(&b)?;
        check(r_ip != a_ip, "runc container got a's address")?;
        check(
            host_get(&net, &format!("http://{r_ip}/"))? == "hello-runc",
            "host -> runc container",
        )?;
        let o = run(&format!("exec {id} timeout 5 wget -q -O- http://{a_ip}/"));
        check(
            String::from_utf8_lossy(&o.stdout).trim() == format!("hello-{a}"),
            format!("runc -> a: {}", text(&o)),
        )
    })();
    let o = run(&format!("delete --force {id}"));
    res?;
    check(o.status.success(), format!("runc delete: {}", text(&o)))?;
    check(
        !ok("ip -o link")?.contains(&tinyrt::net::veth_name(&net.bridge, &id)),
        "runc container's veth left",
    )?;
    net.delete(&a)?;
    assert_gone(&net, &[a, id])
}

fn main() {
    let mut args = Arguments::from_args();
    args.test_threads = Some(1);
    let skip = if !nix::unistd::geteuid().is_root() {
        Some("not root")
    } else if sh("command -v nft && command -v busybox && command -v ip").stdout.is_empty() {
        Some("nft, busybox or ip missing")
    } else {
        None
    };
    let tests: Vec<(&str, TestFn)> = vec![
        ("bridge_traffic", bridge_traffic),
        ("nat_to_outside", nat_to_outside),
        ("twenty_parallel", twenty_parallel),
        ("faults", faults),
        ("killed_mid_verb", killed_mid_verb),
        ("joined_netns_untouched", joined_netns_untouched),
        ("docker_forward_drop", docker_forward_drop),
        ("runc_uses_hook", runc_uses_hook),
    ];
    let trials = tests
        .into_iter()
        .map(|(name, f)| {
            Trial::test(name, move || match skip {
                Some(why) => {
                    eprintln!("{name}: skipped ({why})");
                    Ok(())
                }
                None => {
                    CLEANUP_PROBLEMS.lock().unwrap().clear();
                    let r = f();
                    // What the test's cleanup left fails it too (the tests run one at a time).
                    let left = std::mem::take(&mut *CLEANUP_PROBLEMS.lock().unwrap());
                    match (r, left.is_empty()) {
                        (r, true) => r,
                        (Ok(()), false) => Err(left.join("\n").into()),
                        (Err(e), false) => Err(format!("{}\n{}", e.message().unwrap_or(""), left.join("\n")).into()),
                    }
                }
            })
        })
        .collect();
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let forward_before = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
    let conclusion = libtest_mimic::run(&args, trials);
    // Reap every orphaned container init.
    while let Ok(s) = nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
        if s == nix::sys::wait::WaitStatus::StillAlive {
            break;
        }
    }
    let _ = std::fs::remove_dir_all(work_dir());
    // The hooks switch forwarding back off with the last tinyrt network; say so if not.
    let forward_after = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
    if forward_before.trim() == "0"
        && forward_after.trim() == "1"
        && !Path::new("/run/tinyrt-net")
            .read_dir()
            .is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("ip_forward"))))
    {
        eprintln!("warning: ip_forward was 0 before the suite and is 1 now (changed by something else?)");
    }
    conclusion.exit();
}
