//! tinyrt under the real engines: Docker (dockerd + containerd, the runc v2 shim), containerd
//! alone (`ctr`) and podman (conmon), from Debian's packages.
//!
//! Every check runs twice in the same run, once with tinyrt and once with runc, so that a
//! failure that only tinyrt has is clearly tinyrt's: trials are named `<engine>::<check>::tinyrt`
//! and `<engine>::<check>::runc`, and a table of both columns is printed at the end.
//!
//! The suite starts its own containerd and dockerd (own data roots, sockets and cgroup parent,
//! under /tmp/tinyrt-engines-<tag>), and always tears down what they changed on the host:
//! see host.rs. Run with `cargo test --test engines` as root. Without root or without the
//! engines installed, every trial is reported as ignored (and under CI=true, as failed).

mod bench;
mod containerd;
mod docker;
mod host;
mod image;
mod podman;
mod util;

use libtest_mimic::{Arguments, Failed, Trial};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;
use util::{R, ok, quote, sh, wait_for};

const TINYRT: &str = env!("CARGO_BIN_EXE_tinyrt");

/// One runtime under test: the name engines know it by, and its binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rt {
    Tinyrt,
    Runc,
}

impl Rt {
    pub const ALL: [Rt; 2] = [Rt::Tinyrt, Rt::Runc];

    /// The runtime name in dockerd (`--runtime NAME`).
    pub fn docker_name(self) -> &'static str {
        match self {
            Rt::Tinyrt => "tiny",
            Rt::Runc => "runc",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Rt::Tinyrt => "tinyrt",
            Rt::Runc => "runc",
        }
    }

    pub fn binary(self) -> PathBuf {
        match self {
            Rt::Tinyrt => PathBuf::from(TINYRT),
            Rt::Runc => PathBuf::from(which("runc").unwrap_or_else(|| "/usr/sbin/runc".into())),
        }
    }
}

fn which(cmd: &str) -> Option<String> {
    let o = sh(&format!("command -v {cmd}"));
    (o.code == 0).then(|| o.out().to_string())
}

/// The engines started for this run, and how to call them.
pub struct Engines {
    pub work: PathBuf,
    pub tag: String,
    /// `docker -H unix://...` (Debian's client, matching the daemon).
    pub docker: String,
    /// `ctr -a ... -n ...`
    pub ctr: String,
    /// `podman --root ... --runroot ...` without `--runtime`.
    pub podman: String,
    pub containerd_sock: PathBuf,
    pub docker_sock: PathBuf,
    pub daemon_json: PathBuf,
    /// The image, as each engine names it.
    pub image: String,
    pub ctr_image: String,
    pub podman_image: String,
    /// docker0's address (the host, seen from a container on the default bridge).
    pub gateway: String,
    pub cgroup_parent: String,
}

static ENGINES: OnceLock<Engines> = OnceLock::new();

pub fn engines() -> &'static Engines {
    ENGINES.get().expect("engines not set up")
}

fn tag() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{:06x}", (std::process::id() ^ n) & 0xffffff)
}

/// A /24 for docker0 and a pool for user networks that no route on the host uses.
fn free_subnets() -> (String, String) {
    let routes = sh("ip -4 route show table all").stdout;
    for b in (200..250).rev() {
        let bridge = format!("172.30.{b}.");
        let pool = format!("172.29.{b}.");
        if !routes.contains(&bridge) && !routes.contains(&pool) {
            return (format!("172.30.{b}.1/24"), format!("172.29.{b}.0/24"));
        }
    }
    ("172.30.254.1/24".into(), "172.29.254.0/24".into())
}

impl Engines {
    fn start(snap: &mut host::Snapshot) -> Result<Engines, String> {
        let work = snap.work.clone();
        let tag = snap.tag.clone();
        std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
        let cgroup_parent = format!("tinyrt-engines-{tag}");

        // containerd: own root, state and socket; the CRI plugin is not needed here.
        let cd = work.join("containerd");
        let sock = cd.join("containerd.sock");
        std::fs::create_dir_all(&cd).unwrap();
        let cfg = cd.join("config.toml");
        std::fs::write(
            &cfg,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n",
                root = cd.join("root").display(),
                state = cd.join("state").display(),
                sock = sock.display(),
            ),
        )
        .unwrap();
        let pid = host::spawn_daemon(Command::new("containerd").arg("--config").arg(&cfg), &work.join("containerd.log"))
            .map_err(|e| format!("starting containerd: {e}"))?;
        snap.daemons.push(("containerd".into(), pid));
        snap.save();
        let ctr_base = format!("ctr -a {}", sock.display());
        wait_for(Duration::from_secs(30), || {
            (sh(&format!("{ctr_base} version")).code == 0).then_some(())
        })
        .ok_or_else(|| format!("containerd did not come up: {}", tail(&work.join("containerd.log"))))?;

        // dockerd: tinyrt registered as the runtime "tiny" in daemon.json (reloaded on SIGHUP).
        let (bip, pool) = free_subnets();
        let daemon_json = work.join("daemon.json");
        write_daemon_json(&daemon_json, "runc");
        let docker_sock = work.join("docker.sock");
        let pid = host::spawn_daemon(
            Command::new("dockerd")
                .arg("--config-file")
                .arg(&daemon_json)
                .arg("--containerd")
                .arg(&sock)
                .arg("--data-root")
                .arg(work.join("docker"))
                .arg("--exec-root")
                .arg(work.join("docker-exec"))
                .arg("--pidfile")
                .arg(work.join("dockerd.pid"))
                .arg("-H")
                .arg(format!("unix://{}", docker_sock.display()))
                .arg("--cgroup-parent")
                .arg(&cgroup_parent)
                .arg("--bip")
                .arg(&bip)
                .arg("--default-address-pool")
                .arg(format!("base={pool},size=26")),
            &work.join("dockerd.log"),
        )
        .map_err(|e| format!("starting dockerd: {e}"))?;
        snap.daemons.push(("dockerd".into(), pid));
        snap.save();
        let client = if Path::new("/usr/bin/docker").exists() {
            "/usr/bin/docker"
        } else {
            "docker"
        };
        let docker = format!("{client} -H unix://{}", docker_sock.display());
        wait_for(Duration::from_secs(60), || {
            (sh(&format!("{docker} version")).code == 0).then_some(())
        })
        .ok_or_else(|| format!("dockerd did not come up: {}", tail(&work.join("dockerd.log"))))?;

        let podman = format!(
            "podman --root {w}/podman/root --runroot {w}/podman/run --tmpdir {w}/podman/tmp --volumepath {w}/podman/volumes \
             --network-config-dir {w}/podman/networks --cgroup-manager=cgroupfs --events-backend=file",
            w = work.display()
        );
        let e = Engines {
            ctr: format!("{ctr_base} -n tinyrt-{tag}"),
            work,
            tag,
            docker,
            podman,
            containerd_sock: sock,
            docker_sock,
            daemon_json,
            image: "tinyrt-busybox:engines".into(),
            ctr_image: "docker.io/library/tinyrt-busybox:engines".into(),
            podman_image: "localhost/tinyrt-busybox:engines".into(),
            gateway: bip.trim_end_matches("/24").to_string(),
            cgroup_parent,
        };
        e.load_images()?;
        Ok(e)
    }

    /// The busybox image: a rootfs from busybox-static, `docker import`ed, then `docker save`d
    /// for `ctr image import` and `podman load`.
    fn load_images(&self) -> Result<(), String> {
        let rootfs = self.work.join("rootfs");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bundle-examples/mkrootfs.sh");
        let tar = self.work.join("busybox.tar");
        let steps = [
            format!("sh {} {}", quote(&script.to_string_lossy()), rootfs.display()),
            format!(
                "tar -C {} -c . | {} import -c 'CMD [\"/bin/sh\"]' - {}",
                rootfs.display(),
                self.docker,
                self.image
            ),
            format!("{} save -o {} {}", self.docker, tar.display(), self.image),
            format!("{} image import {}", self.ctr, tar.display()),
            format!("{} load -q -i {}", self.podman, tar.display()),
        ];
        for s in steps {
            ok(&s).map_err(|e| format!("preparing the image: {e:?}"))?;
        }
        Ok(())
    }

    /// Remove every container, task, network and volume the checks made (teardown's first step).
    pub fn remove_everything(&self) {
        let d = &self.docker;
        let _ = sh(&format!("{d} ps -aq | xargs -r {d} rm -f -v"));
        let _ = sh(&format!(
            "{d} network ls -q --filter label=tinyrt-engines | xargs -r {d} network rm"
        ));
        let _ = sh(&format!("{d} volume ls -q | xargs -r {d} volume rm -f"));
        let c = &self.ctr;
        let _ = sh(&format!(
            "for t in $({c} task ls -q); do {c} task kill -s KILL $t; done; sleep 0.5; \
             for t in $({c} task ls -q); do {c} task rm -f $t; done; \
             {c} c ls -q | xargs -r {c} c rm; {c} snapshot ls | awk 'NR>1{{print $1}}' | xargs -r {c} snapshot rm; \
             {c} image ls -q | xargs -r {c} image rm"
        ));
        let _ = sh(&format!("{} rm -a -f -t 0", self.podman));
        let _ = sh(&format!("{} system reset -f", self.podman));
        let _ = sh(&format!(
            "ctr -a {} namespace rm tinyrt-{}",
            self.containerd_sock.display(),
            self.tag
        ));
    }

    /// `docker` with `args` (a shell fragment).
    pub fn docker(&self, args: &str) -> util::Out {
        sh(&format!("{} {args}", self.docker))
    }
}

pub fn write_daemon_json(path: &Path, default_runtime: &str) {
    let cfg = serde_json::json!({
        "runtimes": { "tiny": { "path": TINYRT } },
        "default-runtime": default_runtime,
    });
    std::fs::write(path, serde_json::to_vec_pretty(&cfg).unwrap()).expect("writing daemon.json");
}

fn tail(p: &Path) -> String {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// A check: a name, the engine it belongs to, and the function run once per runtime.
pub struct Check {
    pub engine: &'static str,
    pub name: &'static str,
    pub run: fn(Rt) -> R,
}

fn all_checks() -> Vec<Check> {
    let mut v = docker::checks();
    v.extend(image::checks());
    v.extend(containerd::checks());
    v.extend(podman::checks());
    v
}

fn missing_tools() -> Vec<&'static str> {
    [
        "dockerd",
        "containerd",
        "ctr",
        "podman",
        "runc",
        "busybox",
        "iptables",
        "nft",
        "script",
    ]
    .into_iter()
    .filter(|t| which(t).is_none())
    .collect()
}

fn main() {
    let mut args = Arguments::from_args();
    if args.test_threads.is_none() {
        args.test_threads = Some(4); // the checks mostly wait on the daemons
    }
    let checks = all_checks();
    let skip = if !nix::unistd::geteuid().is_root() {
        Some("not root".to_string())
    } else {
        let m = missing_tools();
        (!m.is_empty()).then(|| {
            format!(
                "missing {} (apt-get install docker.io containerd podman runc busybox-static ...)",
                m.join(", ")
            )
        })
    };
    if let Some(why) = &skip {
        eprintln!("engines: {why}");
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            eprintln!("engines: CI=true: the engine suite must run in CI");
            std::process::exit(1);
        }
    }
    let listing = args.list;
    let mut trials = vec![];
    for c in &checks {
        for rt in Rt::ALL {
            let (run, engine, name) = (c.run, c.engine, c.name);
            trials.push(
                Trial::test(format!("{engine}::{name}::{}", rt.label()), move || {
                    let r = run(rt);
                    RESULTS.lock().unwrap().push((engine, name, rt, r.is_ok()));
                    r
                })
                .with_ignored_flag(skip.is_some()),
            );
        }
    }
    trials.push(Trial::bench("bench::docker_run_rm_true", bench::docker_run_rm_true).with_ignored_flag(skip.is_some()));
    if skip.is_some() || listing || wants_nothing(&args, &trials) {
        libtest_mimic::run(&args, trials).exit();
    }

    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    // One engine suite at a time on a machine: the daemons share docker0 and the iptables
    // chains, and each teardown undoes what changed since its own snapshot. A second run waits.
    let _ = std::fs::create_dir_all("/run/tinyrt-engines");
    let lock = std::fs::File::create("/run/tinyrt-engines/lock").expect("creating the suite's lock file");
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        eprintln!("engines: another engine suite is running; waiting for it");
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    }
    for old in host::Snapshot::abandoned() {
        eprintln!("engines: tearing down an abandoned run ({})", old.work.display());
        for p in old.teardown(None) {
            eprintln!("engines: abandoned run: {p}");
        }
    }
    let tag = tag();
    let work = PathBuf::from(format!("/tmp/tinyrt-engines-{tag}"));
    let mut snap = host::Snapshot::take(&work, &tag, &format!("tinyrt-engines-{tag}"));
    snap.save();
    let started = Engines::start(&mut snap);
    let conclusion = match started {
        Ok(e) => {
            let _ = ENGINES.set(e);
            let c = libtest_mimic::run(&args, trials);
            if !args.bench {
                print_table(&checks);
            }
            c
        }
        Err(why) => {
            eprintln!("engines: setting up the engines failed: {why}");
            let failing = checks
                .iter()
                .flat_map(|c| Rt::ALL.map(|rt| format!("{}::{}::{}", c.engine, c.name, rt.label())))
                .map(|n| {
                    let why = why.clone();
                    Trial::test(n, move || Err(Failed::from(format!("engines not set up: {why}"))))
                })
                .collect();
            libtest_mimic::run(&args, failing)
        }
    };
    // TINYRT_ENGINES_HOLD=SECONDS keeps the daemons up that long after the checks, to look
    // at a failure by hand (the sockets are under the work dir printed here).
    if let Some(secs) = std::env::var("TINYRT_ENGINES_HOLD").ok().and_then(|v| v.parse::<u64>().ok()) {
        eprintln!("engines: holding {secs}s before teardown; work dir {}", snap.work.display());
        std::thread::sleep(Duration::from_secs(secs));
    }
    let problems = snap.teardown(ENGINES.get());
    for p in &problems {
        eprintln!("engines teardown: {p}");
    }
    while let Ok(s) = nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
        if s == nix::sys::wait::WaitStatus::StillAlive {
            break;
        }
    }
    if !problems.is_empty() {
        eprintln!("engines: teardown left {} problem(s)", problems.len());
        std::process::exit(101);
    }
    conclusion.exit();
}

type Result4 = (&'static str, &'static str, Rt, bool);
static RESULTS: std::sync::Mutex<Vec<Result4>> = std::sync::Mutex::new(Vec::new());

/// Every check with its result under tinyrt and under runc, and the pass counts.
fn print_table(checks: &[Check]) {
    let results = RESULTS.lock().unwrap();
    let cell = |c: &Check, rt: Rt| match results.iter().find(|r| r.0 == c.engine && r.1 == c.name && r.2 == rt) {
        Some((.., true)) => "pass",
        Some((.., false)) => "FAIL",
        None => "-",
    };
    println!("\n{:<44} {:>6} {:>6}", "check", "tinyrt", "runc");
    let mut pass = [0, 0];
    for c in checks {
        let (t, r) = (cell(c, Rt::Tinyrt), cell(c, Rt::Runc));
        pass[0] += usize::from(t == "pass");
        pass[1] += usize::from(r == "pass");
        println!("{:<44} {t:>6} {r:>6}", format!("{}::{}", c.engine, c.name));
    }
    println!("{:<44} {:>6} {:>6}\n", format!("passed (of {})", checks.len()), pass[0], pass[1]);
}

/// True when the filter selects no trial (`cargo test` running another target's filter).
fn wants_nothing(args: &Arguments, trials: &[Trial]) -> bool {
    let Some(f) = &args.filter else { return false };
    !trials
        .iter()
        .any(|t| if args.exact { t.name() == f } else { t.name().contains(f.as_str()) })
}
