//! cgroups: detect the host's layout (v1, hybrid, unified) from /proc/self/mountinfo, turn
//! `linux.cgroupsPath` into one directory per hierarchy, create them, place the container's
//! init there before it runs, list its processes, and remove exactly what was created.
//! (Resource limits are applied by the driver layer added on top of this.)

mod devices_bpf;
mod resources;
mod stats;

pub use resources::{apply as apply_resources, cpu_weight_from_shares, io_weight_from_blkio};
pub use stats::{oom_kills, stats};

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("linux.cgroupsPath: {0}")]
    Path(String),
    #[error("cgroup {path}: {what}: {err}")]
    Io {
        path: PathBuf,
        what: &'static str,
        err: std::io::Error,
    },
    /// A resource value the host refused or cannot apply: the field and the file.
    #[error("{field}: writing {value:?} to {file}: {err}")]
    Write {
        field: String,
        file: PathBuf,
        value: String,
        err: std::io::Error,
    },
    #[error("{field}: {msg}")]
    Unsupported { field: String, msg: String },
    /// A leaf that stays busy: processes are still in it (or still exiting).
    #[error("cgroup {path}: rmdir: still busy after {secs:.1}s: {left}")]
    Busy {
        path: PathBuf,
        secs: f64,
        /// What remains, for the message: see [`left_in`].
        left: String,
    },
}

pub type Result<T> = std::result::Result<T, CgroupError>;

/// One mounted hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub mountpoint: PathBuf,
    /// v1 superblock options naming it ("cpu", "cpu,cpuacct", "name=systemd"); empty for cgroup2.
    pub controllers: String,
    pub v2: bool,
}

/// Every cgroup hierarchy mounted on the host, from mountinfo text.
pub fn hierarchies_from(mountinfo: &str) -> Vec<Hierarchy> {
    let mut out: Vec<Hierarchy> = Vec::new();
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else { continue };
        let mut post = post.split(' ');
        let fstype = post.next().unwrap_or("");
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        let _src = post.next();
        let opts = post.next().unwrap_or("");
        let Some(mp) = pre.split(' ').nth(4) else { continue };
        let v2 = fstype == "cgroup2";
        let controllers = if v2 {
            String::new()
        } else {
            opts.split(',')
                .filter(|o| !matches!(*o, "rw" | "ro" | "clone_children" | "noprefix" | "xattr") && !o.starts_with("release_agent"))
                .collect::<Vec<_>>()
                .join(",")
        };
        // The same hierarchy may be mounted twice: keep the first.
        if !out.iter().any(|h| h.v2 == v2 && h.controllers == controllers) {
            out.push(Hierarchy {
                mountpoint: PathBuf::from(mp),
                controllers,
                v2,
            });
        }
    }
    out
}

pub fn hierarchies() -> Vec<Hierarchy> {
    hierarchies_from(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

/// The calling process's cgroup in each hierarchy, from /proc/self/cgroup text:
/// keyed by the v1 controller list, "" for cgroup2.
fn own_cgroup(proc_cgroup: &str, h: &Hierarchy) -> String {
    for l in proc_cgroup.lines() {
        let mut it = l.splitn(3, ':');
        let (_, ctl, path) = (it.next(), it.next().unwrap_or(""), it.next().unwrap_or("/"));
        if (h.v2 && ctl.is_empty()) || (!h.v2 && ctl == h.controllers) {
            return path.to_string();
        }
    }
    "/".into()
}

/// `slice:prefix:name` (--systemd-cgroup) as the cgroupfs path systemd would use:
/// `a-b.slice:docker:ID` -> /a.slice/a-b.slice/docker-ID.scope.
pub fn systemd_to_fs(p: &str) -> Result<String> {
    let parts: Vec<&str> = p.split(':').collect();
    let [slice, prefix, name] = parts[..] else {
        return Err(CgroupError::Path(format!(
            "{p:?}: with --systemd-cgroup it must be slice:prefix:name"
        )));
    };
    let slice = if slice.is_empty() { "system.slice" } else { slice };
    let Some(stem) = slice.strip_suffix(".slice") else {
        return Err(CgroupError::Path(format!("{slice:?} is not a .slice")));
    };
    let mut path = String::new();
    if stem != "-" {
        let mut acc = String::new();
        for (i, part) in stem.split('-').enumerate() {
            if part.is_empty() {
                return Err(CgroupError::Path(format!("{slice:?}: empty slice component")));
            }
            if i > 0 {
                acc.push('-');
            }
            acc.push_str(part);
            path += &format!("/{acc}.slice");
        }
    }
    let unit = if name.ends_with(".slice") || name.ends_with(".scope") {
        name.to_string()
    } else if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    Ok(format!("{path}/{unit}"))
}

/// The container's cgroup: one directory per hierarchy.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cgroup {
    /// Leaf directories, one per hierarchy.
    pub leaves: Vec<PathBuf>,
    /// For each leaf, its hierarchy's v1 controllers ("cpu,cpuacct"); "" for cgroup2.
    #[serde(default)]
    pub controllers: Vec<String>,
    /// Every directory tinyrt made, parents before children (only these are removed).
    #[serde(default)]
    pub created: Vec<PathBuf>,
}

/// Resolve `linux.cgroupsPath` as runc does: absolute from each hierarchy's root, relative
/// from the runtime's own cgroup there; empty means the container id, relative.
pub fn resolve(cgroups_path: Option<&Path>, id: &str, systemd: bool) -> Result<Cgroup> {
    let inner = match cgroups_path.map(|p| p.to_string_lossy().into_owned()) {
        Some(p) if systemd && p.contains(':') => systemd_to_fs(&p)?,
        Some(p) if !p.is_empty() => p,
        _ => id.to_string(),
    };
    if inner.split('/').any(|c| c == "..") {
        return Err(CgroupError::Path(format!("{inner:?} contains '..'")));
    }
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let hier = hierarchies();
    let controllers = hier.iter().map(|h| h.controllers.clone()).collect();
    let leaves = hier
        .into_iter()
        .map(|h| {
            let base = if inner.starts_with('/') {
                String::new()
            } else {
                own_cgroup(&own, &h)
            };
            let rel = format!("{}/{}", base.trim_end_matches('/'), inner.trim_start_matches('/'));
            h.mountpoint.join(rel.trim_start_matches('/'))
        })
        .collect();
    Ok(Cgroup {
        leaves,
        controllers,
        created: vec![],
    })
}

fn io<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> CgroupError + 'a {
    move |err| CgroupError::Io {
        path: path.to_path_buf(),
        what,
        err,
    }
}

impl Cgroup {
    /// The directories that do not exist yet, parents first: what `create` will make.
    /// Recorded in the state before creating, so a crash in between still gets cleaned.
    pub fn plan(&mut self) {
        self.created.clear();
        for leaf in &self.leaves {
            let mut missing: Vec<PathBuf> = leaf.ancestors().take_while(|p| !p.exists()).map(Path::to_path_buf).collect();
            missing.reverse();
            self.created.extend(missing);
        }
    }

    /// Make the planned directories (cpuset ones get their parent's cpus and mems).
    pub fn create(&self) -> Result<()> {
        for d in &self.created {
            let mut tries = 0;
            loop {
                match std::fs::create_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => break,
                    // A parent that another container's delete removed just now (the last
                    // container under it went away between our plan and this mkdir): make
                    // it again.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 5 => {
                        tries += 1;
                        if let Some(parent) = d.parent() {
                            let _ = std::fs::create_dir_all(parent);
                        }
                    }
                    Err(e) => return Err(io(d, "mkdir")(e)),
                }
            }
            // Only v1 needs cpus/mems copied down; on cgroup2 empty means "as the parent".
            let v2 = self
                .leaves
                .iter()
                .zip(&self.controllers)
                .any(|(l, c)| c.is_empty() && l.starts_with(d));
            if !v2 && d.join("cpuset.cpus").exists() {
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    let cur = std::fs::read_to_string(d.join(f)).unwrap_or_default();
                    if cur.trim().is_empty()
                        && let Some(parent) = d.parent()
                    {
                        let v = std::fs::read_to_string(parent.join(f)).map_err(io(parent, "reading cpuset"))?;
                        std::fs::write(d.join(f), v.trim()).map_err(io(d, "writing cpuset"))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// On a unified (cgroup2-only) host, turn on every controller the hierarchy offers down to
    /// the container's cgroup, as runc does, so stats and OOM events exist without limits.
    pub fn enable_all_v2(&self) -> Result<()> {
        if self.controllers.iter().any(|c| !c.is_empty()) {
            return Ok(());
        }
        for leaf in &self.leaves {
            let Some(top) = leaf
                .ancestors()
                .skip(1)
                .take_while(|p| p.join("cgroup.controllers").exists())
                .last()
            else {
                continue;
            };
            let avail = std::fs::read_to_string(top.join("cgroup.controllers")).unwrap_or_default();
            // Best effort, as runc: a controller the kernel refuses here (say, the caller's
            // cgroup holds processes) only means its files are missing; limits asking for it
            // still fail, naming the field.
            for c in avail.split_whitespace() {
                let _ = resources::enable_v2(self, leaf, c);
            }
        }
        Ok(())
    }

    /// Move `pid` into every leaf.
    pub fn add(&self, pid: i32) -> Result<()> {
        for l in &self.leaves {
            std::fs::write(l.join("cgroup.procs"), pid.to_string()).map_err(io(l, "adding the init to cgroup.procs"))?;
        }
        Ok(())
    }

    /// The processes in the container's cgroup (from the first hierarchy that lists them).
    pub fn procs(&self) -> Vec<i32> {
        let pick = self.leaves.iter().find(|l| l.join("cgroup.procs").exists());
        pick.and_then(|l| std::fs::read_to_string(l.join("cgroup.procs")).ok())
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// The processes in the leaves tinyrt made (one it did not make may be shared), from
    /// every hierarchy: what is left of the container when its init is gone.
    pub fn created_procs(&self) -> Vec<i32> {
        let mut out: Vec<i32> = vec![];
        for l in self.leaves.iter().filter(|l| self.created.contains(l)) {
            let text = std::fs::read_to_string(l.join("cgroup.procs")).unwrap_or_default();
            for p in text.lines().filter_map(|l| l.trim().parse().ok()) {
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
        out
    }

    /// Freeze (or thaw) every process: the v1 freezer, else cgroup2's cgroup.freeze.
    /// Waits until the kernel reports the new state.
    pub fn freeze(&self, frozen: bool) -> Result<()> {
        let v1 = self.leaves.iter().find(|l| l.join("freezer.state").exists());
        let v2 = self.leaves.iter().find(|l| l.join("cgroup.freeze").exists());
        let (file, value, check, want): (PathBuf, &str, PathBuf, &str) = match (v1, v2) {
            (Some(l), _) => {
                let v = if frozen { "FROZEN" } else { "THAWED" };
                (l.join("freezer.state"), v, l.join("freezer.state"), v)
            }
            (None, Some(l)) => (
                l.join("cgroup.freeze"),
                if frozen { "1" } else { "0" },
                l.join("cgroup.events"),
                if frozen { "frozen 1" } else { "frozen 0" },
            ),
            (None, None) => return Err(CgroupError::Path("no freezer: neither a v1 freezer hierarchy nor cgroup2".into())),
        };
        for attempt in 0..1000 {
            if attempt % 50 == 0 {
                std::fs::write(&file, value).map_err(io(&file, "writing the freezer state"))?;
            }
            let now = std::fs::read_to_string(&check).map_err(io(&check, "reading the freezer state"))?;
            if now.lines().any(|l| l.trim() == want) {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Err(CgroupError::Io {
            path: file,
            what: "the freezer did not settle",
            err: std::io::Error::from(std::io::ErrorKind::TimedOut),
        })
    }

    /// Remove what `create` made, children first. A cgroup whose last processes are still
    /// exiting is busy for a moment: a directory is retried for up to `REMOVE_PATIENCE`;
    /// once one stays busy the rest get a single try, so this never takes long. Every
    /// directory is tried; the first error is returned, and a leaf that stays busy is
    /// reported with the processes left in it. Nothing is lost on error: `created` still
    /// names every directory, and removing one that is gone is fine, so this can be retried.
    pub fn remove(&self) -> Result<()> {
        let mut first_err = None;
        let mut patience = REMOVE_PATIENCE;
        for d in self.created.iter().rev() {
            let started = std::time::Instant::now();
            // The last process of a cgroup leaves it a moment after it is reaped (run removes
            // the cgroups right after its container exits): retry soon, then less often.
            let mut pause = std::time::Duration::from_micros(100);
            let leaf = self.leaves.contains(d);
            loop {
                match std::fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    // A parent that another container also uses is not empty: leave it at
                    // once (its children are not ours to wait for).
                    Err(e) if !leaf && (e.raw_os_error() == Some(libc::EBUSY) || e.raw_os_error() == Some(libc::ENOTEMPTY)) => break,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && started.elapsed() < patience => {
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(std::time::Duration::from_millis(5));
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        patience = std::time::Duration::ZERO;
                        first_err.get_or_insert(CgroupError::Busy {
                            path: d.clone(),
                            secs: started.elapsed().as_secs_f64(),
                            left: left_in(d),
                        });
                        break;
                    }
                    Err(e) => {
                        first_err.get_or_insert(io(d, "rmdir")(e));
                        break;
                    }
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// How long [`Cgroup::remove`] retries a busy directory (its processes are still exiting).
const REMOVE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// What keeps the cgroup `dir` busy, in words: the processes its cgroup.procs lists, or
/// (when it lists none) that they are exiting or unreaped.
pub fn left_in(dir: &Path) -> String {
    let pids: Vec<i32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default();
    if pids.is_empty() {
        "processes remain in it, though cgroup.procs lists none: they are still exiting, or are \
         unreaped zombies (or a PID namespace's init waiting for its zombies to be reaped)"
            .into()
    } else {
        format!("processes remain in it: {}", describe_processes(&pids))
    }
}

/// `pid (comm, state S, parent P)` for each process, comma-separated: for error messages.
pub fn describe_processes(pids: &[i32]) -> String {
    pids.iter()
        .map(|&p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let comm = stat.find('(').zip(stat.rfind(')')).map(|(a, b)| &stat[a + 1..b]);
            let rest = stat.rfind(')').map(|i| &stat[i + 1..]).unwrap_or("");
            let mut f = rest.split_whitespace();
            match (comm, f.next(), f.next()) {
                (Some(comm), Some("Z"), Some(ppid)) => format!("{p} ({comm}, zombie not reaped by its parent {ppid})"),
                (Some(comm), Some(state), Some(ppid)) => format!("{p} ({comm}, state {state}, parent {ppid})"),
                _ => format!("{p} (gone)"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";

    #[test]
    fn hybrid_layout() {
        let h = hierarchies_from(MI);
        assert_eq!(h.len(), 4);
        assert_eq!(h[2].controllers, "name=systemd");
        assert!(h[3].v2);
        let own = "4:memory:/process_api/x\n1:cpu:/\n0::/\n";
        assert_eq!(own_cgroup(own, &h[1]), "/process_api/x");
        assert_eq!(own_cgroup(own, &h[3]), "/");
    }

    #[test]
    fn systemd_paths() {
        assert_eq!(systemd_to_fs("system.slice:docker:abc").unwrap(), "/system.slice/docker-abc.scope");
        assert_eq!(systemd_to_fs("a-b.slice:p:n").unwrap(), "/a.slice/a-b.slice/p-n.scope");
        assert_eq!(systemd_to_fs(":tinyrt:x").unwrap(), "/system.slice/tinyrt-x.scope");
        assert!(systemd_to_fs("nope").is_err());
        assert!(systemd_to_fs("bad:p:n").is_err());
    }

    #[test]
    fn dotdot_refused() {
        assert!(resolve(Some(Path::new("../escape")), "x", false).is_err());
    }
}
