//! The state store: `<root>/<id>/state.json` (the spec's state plus what tinyrt needs),
//! `<root>/<id>/config.json` (the spec as validated at create). Every file is replaced
//! atomically (temp file, rename), and commands that change a container hold an exclusive
//! flock on its directory, so readers never see a torn file and writers never race. State
//! files are not fsynced: they describe processes, which a reboot ends anyway (the root is
//! /run, a tmpfs, by default), and an fsync costs every verb a disk flush. Persistent data
//! (the image store) uses [`write_atomic`], which does fsync.

mod time;

pub use time::rfc3339;

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("container {0:?} does not exist")]
    NotFound(String),
    #[error("container with id {0:?} already exists")]
    Exists(String),
    #[error("invalid container id {0:?}: {1}")]
    InvalidId(String, &'static str),
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path}: corrupt state: {msg}")]
    Corrupt { path: PathBuf, msg: String },
}

pub type Result<T> = std::result::Result<T, StateError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        err: source,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        };
        f.write_str(s)
    }
}

/// What state.json holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    /// The status as last recorded; [`State::status`] gives the live one.
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Start time (clock ticks since boot) of `pid`, so a recycled pid is never taken for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
    /// The container's cgroup directories (recorded before they are made).
    #[serde(default)]
    pub cgroup: crate::cgroups::Cgroup,
}

impl State {
    /// The live status: a recorded created/running/paused container whose process is gone
    /// is stopped.
    pub fn status(&self) -> Status {
        match (self.status, self.pid, self.pid_start) {
            (Status::Stopped, _, _) => Status::Stopped,
            (s, Some(pid), Some(start)) if crate::linux::proc::alive(pid, start) => s,
            (Status::Creating, _, _) => Status::Creating,
            _ => Status::Stopped,
        }
    }

    /// The pid, only while that process is alive.
    pub fn live_pid(&self) -> Option<i32> {
        match (self.pid, self.pid_start) {
            (Some(pid), Some(start)) if crate::linux::proc::alive(pid, start) => Some(pid),
            _ => None,
        }
    }

    /// The JSON that `state` prints: the spec's state plus runc's extra fields.
    pub fn to_output(&self) -> serde_json::Value {
        let status = self.status();
        let mut v = serde_json::json!({
            "ociVersion": self.oci_version,
            "id": self.id,
            "pid": if status == Status::Stopped { 0 } else { self.pid.unwrap_or(0) },
            "status": status.to_string(),
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": owner(),
        });
        if !self.annotations.is_empty() {
            v["annotations"] = serde_json::to_value(&self.annotations).unwrap_or_default();
        }
        v
    }
}

/// The user running tinyrt, as runc's `owner` column shows it.
fn owner() -> &'static str {
    static OWNER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    OWNER.get_or_init(|| {
        let uid = nix::unistd::getuid();
        if uid.is_root() {
            return "root".into();
        }
        // /etc/passwd read directly, as runc does: no NSS, which a static binary cannot load.
        std::fs::read_to_string("/etc/passwd")
            .ok()
            .and_then(|t| user_name(&t, uid.as_raw()))
            .unwrap_or_else(|| uid.to_string())
    })
}

/// The name of `uid` in a passwd file's text.
fn user_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_string())
    })
}

/// runc's rule for ids: letters, digits, `_ + - .`, not `.` or `..`.
pub fn check_id(id: &str) -> Result<()> {
    let bad = |why| Err(StateError::InvalidId(id.to_string(), why));
    if id.is_empty() {
        return bad("must not be empty");
    }
    if id == "." || id == ".." {
        return bad("must not be . or ..");
    }
    if id.len() > 1024 {
        return bad("longer than 1024 bytes");
    }
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c)) {
        return bad("only letters, digits and _ + - . are allowed");
    }
    Ok(())
}

/// The root directory holding every container's state.
pub struct Store {
    root: PathBuf,
}

impl Store {
    pub fn new(root: &Path) -> Store {
        Store { root: root.to_path_buf() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path_of(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Make the directory of a new container (fails if the id is taken) and lock it.
    pub fn create(&self, id: &str) -> Result<ContainerDir> {
        check_id(id)?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&self.root)
            .map_err(io(&self.root))?;
        let path = self.path_of(id);
        match std::fs::DirBuilder::new().mode(0o711).create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(StateError::Exists(id.into())),
            Err(e) => return Err(io(&path)(e)),
        }
        ContainerDir::lock(path)
    }

    /// Open and lock the directory of an existing container.
    pub fn open(&self, id: &str) -> Result<ContainerDir> {
        check_id(id)?;
        let path = self.path_of(id);
        match ContainerDir::lock(path) {
            Err(StateError::Io { err, .. }) if err.kind() == std::io::ErrorKind::NotFound => Err(StateError::NotFound(id.into())),
            r => r,
        }
    }

    /// Read a container's state without taking its lock (files are replaced atomically).
    pub fn read(&self, id: &str) -> Result<State> {
        check_id(id)?;
        read_state(&self.path_of(id), id)
    }

    /// Every container under the root, with its state if one was written. A container that
    /// disappears while we list is skipped, never an error.
    pub fn list(&self) -> Result<Vec<(String, Option<State>)>> {
        let dir = match std::fs::read_dir(&self.root) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(io(&self.root)(e)),
        };
        let mut out = Vec::new();
        for entry in dir.flatten() {
            let Ok(id) = entry.file_name().into_string() else { continue };
            if check_id(&id).is_err() || !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            match read_state(&entry.path(), &id) {
                Ok(s) => out.push((id, Some(s))),
                Err(StateError::NotFound(_)) if !entry.path().exists() => {}
                Err(_) => out.push((id, None)),
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

fn read_state(dir: &Path, id: &str) -> Result<State> {
    let path = dir.join("state.json");
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(StateError::NotFound(id.into())),
        Err(e) => return Err(io(&path)(e)),
    };
    serde_json::from_slice(&text).map_err(|e| StateError::Corrupt { path, msg: e.to_string() })
}

/// A container's directory, locked for as long as this value lives.
pub struct ContainerDir {
    path: PathBuf,
    _lock: File,
}

impl ContainerDir {
    fn lock(path: PathBuf) -> Result<ContainerDir> {
        let f = File::open(&path).map_err(io(&path))?;
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io(&path)(std::io::Error::last_os_error()));
        }
        // Deleted while we waited for the lock: it is gone.
        if !path.exists() {
            return Err(io(&path)(std::io::Error::from(std::io::ErrorKind::NotFound)));
        }
        Ok(ContainerDir { path, _lock: f })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn id(&self) -> &str {
        self.path.file_name().and_then(|s| s.to_str()).unwrap_or("")
    }

    pub fn read_state(&self) -> Result<State> {
        read_state(&self.path, self.id())
    }

    pub fn write_state(&self, s: &State) -> Result<()> {
        let bytes = serde_json::to_vec(s).expect("state serializes");
        self.write_file("state.json", &bytes)
    }

    /// Replace `name` atomically: write a temp file, rename it over (no fsync: see above).
    pub fn write_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        write_replace(&self.path.join(name), bytes, 0o600, false)
    }

    pub fn read_file(&self, name: &str) -> Result<Vec<u8>> {
        let p = self.path.join(name);
        std::fs::read(&p).map_err(io(&p))
    }

    /// Remove the directory and everything in it.
    pub fn remove(self) -> Result<()> {
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&self.path)(e)),
        }
    }
}

/// Write `bytes` to `path` so that readers see the old or the new content, never a mix, and
/// the new content is on disk when this returns.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    write_replace(path, bytes, mode, true)
}

/// Like [`write_atomic`], without the fsync: for files that do not outlive the processes
/// they describe (container state, pid files).
pub fn write_volatile(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    write_replace(path, bytes, mode, false)
}

fn write_replace(path: &Path, bytes: &[u8], mode: u32, sync: bool) -> Result<()> {
    let name = path.file_name().and_then(|s| s.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        if sync {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_name_from_passwd() {
        let p = "root:x:0:0:root:/root:/bin/sh\n# c\nbad\nalice:x:1000:1000::/home/alice:/bin/sh\n";
        assert_eq!(user_name(p, 1000).as_deref(), Some("alice"));
        assert_eq!(user_name(p, 0).as_deref(), Some("root"));
        assert_eq!(user_name(p, 7), None);
    }

    fn tmp_root(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("tinyrt-state-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        p
    }

    fn sample(id: &str) -> State {
        State {
            oci_version: "1.2.0".into(),
            id: id.into(),
            status: Status::Created,
            pid: None,
            pid_start: None,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: rfc3339(std::time::SystemTime::now()),
            annotations: HashMap::new(),
            cgroup: Default::default(),
        }
    }

    #[test]
    fn ids() {
        assert!(check_id("abc-1.2_x+y").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "../x"] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn create_twice_and_round_trip() {
        let root = tmp_root("rt");
        let store = Store::new(&root);
        let d = store.create("c1").unwrap();
        assert!(matches!(store.create("c1"), Err(StateError::Exists(_))));
        d.write_state(&sample("c1")).unwrap();
        drop(d);
        let s = store.read("c1").unwrap();
        assert_eq!(s.id, "c1");
        // No pid recorded: not alive, so stopped.
        assert_eq!(s.status(), Status::Stopped);
        assert_eq!(store.list().unwrap().len(), 1);
        store.open("c1").unwrap().remove().unwrap();
        assert!(matches!(store.open("c1"), Err(StateError::NotFound(_))));
        assert!(store.list().unwrap().is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn half_made_container_is_listed() {
        let root = tmp_root("half");
        let store = Store::new(&root);
        drop(store.create("c2").unwrap());
        let l = store.list().unwrap();
        assert_eq!(l.len(), 1);
        assert!(l[0].1.is_none());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
