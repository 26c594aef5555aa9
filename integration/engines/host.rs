//! The engines' daemons and what they change on the host, set up by the suite and always torn
//! down by it.
//!
//! Everything lives under one work directory of this run (`/tmp/tinyrt-engines-<tag>`): the
//! daemons' data and exec roots, sockets, logs, podman's storage. Before anything starts, the
//! host is recorded (iptables rules, chains and policies, nft tables, links, ip_forward and the
//! bridge netfilter switch, /dev/shm) in a state file, `/run/tinyrt-engines/<tag>.json`;
//! teardown undoes exactly the difference. If a run dies before its teardown, the next run finds
//! the state file of a dead process and tears that run down first.

use crate::util::{ok, quote, sh, wait_for};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// One state file per run: `<STATE_DIR>/<tag>.json`.
const STATE_DIR: &str = "/run/tinyrt-engines";

/// Links the daemons make, which teardown removes when they were not there before.
const LINK_PREFIXES: &[&str] = &["docker0", "br-", "podman", "cni-podman", "veth"];

#[derive(Serialize, Deserialize, Default, Debug)]
pub struct Snapshot {
    pub harness_pid: u32,
    pub work: PathBuf,
    pub tag: String,
    /// `iptables -S` (and ip6tables) per "family/table", before the daemons.
    iptables: BTreeMap<String, Vec<String>>,
    nft_tables: Vec<String>,
    links: Vec<String>,
    sysctls: BTreeMap<String, String>,
    shm: Vec<String>,
    br_netfilter: bool,
    /// Which of FIXED_PATHS existed before.
    fixed_present: Vec<String>,
    /// Our cgroup parent in every hierarchy, absolute, made by the runtimes under the engines.
    pub cgroup_dirs: Vec<PathBuf>,
    /// (name, pid) of the daemons started.
    pub daemons: Vec<(String, i32)>,
}

/// Files and directories the daemons make at fixed places whatever their roots are set to
/// (containerd's shim sockets and fifos, dockerd's plugin dir and key, podman's and netavark's
/// run dirs, podman's lock segment): removed at teardown when they did not exist before.
const FIXED_PATHS: &[&str] = &[
    "/run/containerd",
    "/run/docker",
    "/run/containers",
    "/run/libpod",
    "/var/lib/containers",
    "/etc/docker/key.json",
    "/etc/cni/net.d/cni.lock",
    "/dev/shm/libpod_lock",
];

const TABLES: &[(&str, &str)] = &[
    ("iptables", "filter"),
    ("iptables", "nat"),
    ("ip6tables", "filter"),
    ("ip6tables", "nat"),
];
const SYSCTLS: &[&str] = &[
    "/proc/sys/net/ipv4/ip_forward",
    "/proc/sys/net/ipv6/conf/all/forwarding",
    "/proc/sys/net/bridge/bridge-nf-call-iptables",
    "/proc/sys/net/bridge/bridge-nf-call-ip6tables",
];

fn rules(family: &str, table: &str) -> Vec<String> {
    let o = sh(&format!("{family} -w -t {table} -S"));
    if o.code != 0 {
        return vec![];
    }
    o.stdout.lines().map(str::to_string).collect()
}

fn nft_tables() -> Vec<String> {
    sh("nft list tables").stdout.lines().map(str::to_string).collect()
}

fn links() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

fn shm() -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

fn br_netfilter_loaded() -> bool {
    Path::new("/sys/module/br_netfilter").exists()
}

/// Where a relative cgroupsPath `name` (docker --cgroup-parent NAME) lands in every hierarchy:
/// tinyrt's own resolution, which is also runc's (under this process's own cgroup).
fn own_cgroup_dirs(name: &str) -> Vec<PathBuf> {
    tinyrt::cgroups::resolve(None, name, false).map(|c| c.leaves).unwrap_or_default()
}

impl Snapshot {
    pub fn take(work: &Path, tag: &str, cgroup_parent: &str) -> Snapshot {
        let mut s = Snapshot {
            harness_pid: std::process::id(),
            work: work.to_path_buf(),
            tag: tag.to_string(),
            nft_tables: nft_tables(),
            links: links(),
            shm: shm(),
            br_netfilter: br_netfilter_loaded(),
            fixed_present: FIXED_PATHS
                .iter()
                .filter(|p| Path::new(p).exists())
                .map(|p| p.to_string())
                .collect(),
            cgroup_dirs: own_cgroup_dirs(cgroup_parent),
            ..Default::default()
        };
        for (family, table) in TABLES {
            s.iptables.insert(format!("{family}/{table}"), rules(family, table));
        }
        for f in SYSCTLS {
            if let Ok(v) = std::fs::read_to_string(f) {
                s.sysctls.insert(f.to_string(), v.trim().to_string());
            }
        }
        s
    }

    fn state_file(&self) -> PathBuf {
        Path::new(STATE_DIR).join(format!("{}.json", self.tag))
    }

    pub fn save(&self) {
        let _ = std::fs::create_dir_all(STATE_DIR);
        let _ = std::fs::write(self.state_file(), serde_json::to_vec_pretty(self).unwrap());
    }

    /// The state files of earlier runs whose harness is gone: those runs were killed before
    /// their teardown.
    pub fn abandoned() -> Vec<Snapshot> {
        let Ok(dir) = std::fs::read_dir(STATE_DIR) else { return vec![] };
        let mut found = vec![];
        for e in dir.flatten() {
            let Some(s) = std::fs::read(e.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<Snapshot>(&b).ok())
            else {
                continue;
            };
            if Path::new(&format!("/proc/{}", s.harness_pid)).exists() {
                continue; // (not abandoned; the suite's lock keeps runs apart)
            }
            found.push(s);
        }
        found
    }

    /// Undo everything the engines changed since the snapshot. Best effort, in order; returns
    /// what could not be undone.
    pub fn teardown(&self, engines: Option<&crate::Engines>) -> Vec<String> {
        let mut problems = vec![];
        if let Some(e) = engines {
            e.remove_everything();
        }
        // Daemons, by the pids we recorded (dockerd first: it uses containerd).
        for (name, pid) in self.daemons.iter().rev() {
            if !stop_pid(*pid, Duration::from_secs(20)) {
                problems.push(format!("{name} (pid {pid}) did not stop"));
            }
        }
        // What the daemons started and left: shims and conmons name our work dir.
        for pid in pids_mentioning(&self.work) {
            eprintln!("engines teardown: ending pid {pid} ({})", cmdline(pid));
            stop_pid(pid, Duration::from_secs(5));
        }
        // Mounts under the work dir (netns files, overlay rootfs, shm), deepest first.
        let mut mounts = mounts_under(&self.work);
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            if let Err(e) = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH) {
                problems.push(format!("umount {m}: {e}"));
            }
        }
        self.restore_firewall(&mut problems);
        for l in links() {
            if !self.links.contains(&l)
                && LINK_PREFIXES.iter().any(|p| l.starts_with(p))
                && let Err(e) = ok(&format!("ip link del {}", quote(&l)))
            {
                problems.push(format!("link {l}: {e:?}"));
            }
        }
        for (f, v) in &self.sysctls {
            if std::fs::read_to_string(f).map(|c| c.trim() != v).unwrap_or(false) && std::fs::write(f, v).is_err() {
                problems.push(format!("could not restore {f} to {v}"));
            }
        }
        if !self.br_netfilter && br_netfilter_loaded() {
            let _ = sh("modprobe -r br_netfilter");
        }
        for name in shm() {
            if !self.shm.contains(&name) && name.starts_with("libpod") {
                let _ = std::fs::remove_file(Path::new("/dev/shm").join(&name));
            }
        }
        for p in FIXED_PATHS {
            let path = Path::new(p);
            if !self.fixed_present.iter().any(|q| q == p) && path.exists() {
                let r = if path.is_dir() {
                    std::fs::remove_dir_all(path)
                } else {
                    std::fs::remove_file(path)
                };
                if let Err(e) = r {
                    problems.push(format!("removing {p}: {e}"));
                }
            }
        }
        for d in &self.cgroup_dirs {
            if let Err(e) = remove_cgroup_tree(d) {
                problems.push(format!("cgroup {}: {e}", d.display()));
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.work)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            problems.push(format!("removing {}: {e}", self.work.display()));
        }
        let _ = std::fs::remove_file(self.state_file());
        problems
    }

    fn restore_firewall(&self, problems: &mut Vec<String>) {
        for (family, table) in TABLES {
            let before = self.iptables.get(&format!("{family}/{table}")).cloned().unwrap_or_default();
            let now = rules(family, table);
            // New rules, last first (they were appended).
            for r in now.iter().rev().filter(|r| r.starts_with("-A ") && !before.contains(r)) {
                let del = format!("{family} -w -t {table} -D {}", &r[3..]);
                if let Err(e) = ok(&del) {
                    problems.push(format!("{del}: {e:?}"));
                }
            }
            let new_chains: Vec<&str> = now
                .iter()
                .filter(|r| r.starts_with("-N ") && !before.contains(r))
                .map(|r| &r[3..])
                .collect();
            for c in &new_chains {
                let _ = sh(&format!("{family} -w -t {table} -F {c}"));
            }
            for c in &new_chains {
                if let Err(e) = ok(&format!("{family} -w -t {table} -X {c}")) {
                    problems.push(format!("{family} -t {table} -X {c}: {e:?}"));
                }
            }
            for p in before.iter().filter(|r| r.starts_with("-P ")) {
                if !now.contains(p) {
                    let _ = sh(&format!("{family} -w -t {table} {p}"));
                }
            }
        }
        // Tables that iptables-nft created for the daemons and that are empty again.
        for t in nft_tables() {
            if !self.nft_tables.contains(&t) {
                let name = t.trim_start_matches("table ");
                let body = sh(&format!("nft list {t}")).stdout;
                if !body.lines().any(|l| {
                    let l = l.trim();
                    !(l.is_empty() || l.starts_with("table") || l.starts_with("chain") || l.starts_with("type") || l == "}")
                }) {
                    let _ = sh(&format!("nft delete table {name}"));
                }
            }
        }
    }
}

/// SIGTERM, wait, SIGKILL. True if the process is gone (or a zombie we reaped).
pub fn stop_pid(pid: i32, grace: Duration) -> bool {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let p = Pid::from_raw(pid);
    let gone = || {
        let _ = nix::sys::wait::waitpid(p, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(s) => s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')),
        }
    };
    if gone() {
        return true;
    }
    let _ = kill(p, Signal::SIGTERM);
    if wait_for(grace, || gone().then_some(())).is_some() {
        return true;
    }
    let _ = kill(p, Signal::SIGKILL);
    wait_for(Duration::from_secs(5), || gone().then_some(())).is_some()
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " ").trim().to_string())
        .unwrap_or_default()
}

/// Live processes whose command line names `dir` (never this process).
fn pids_mentioning(dir: &Path) -> Vec<i32> {
    let needle = dir.to_string_lossy().into_owned();
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|&pid| pid != me && cmdline(pid).contains(&needle))
                .collect()
        })
        .unwrap_or_default()
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

/// rmdir a cgroup directory and every directory below it, children first. Only empty
/// cgroups go (a cgroup with processes refuses rmdir).
fn remove_cgroup_tree(d: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(d) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        r => r?,
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&e.path())?;
        }
    }
    let mut tries = 0;
    loop {
        match std::fs::remove_dir(d) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            r => return r,
        }
    }
}

/// Start `cmd` in the background with its output in `log`; its pid.
pub fn spawn_daemon(cmd: &mut Command, log: &Path) -> std::io::Result<i32> {
    let f = std::fs::File::create(log)?;
    let child = cmd.stdin(Stdio::null()).stdout(f.try_clone()?).stderr(f).spawn()?;
    Ok(child.id() as i32)
}
