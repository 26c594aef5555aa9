//! Address leases, one JSON file per network under `<state dir>/<bridge>/leases.json`,
//! read and written only while holding the global flock (`<state dir>/lock`). The state dir
//! is /run/tinyrt-net: a tmpfs, so leases, like the bridges and veths they describe, do not
//! outlive a reboot, but they do outlive any tinyrt process.
//!
//! A lease records the container's init pid and its start time: a lease whose process is
//! gone (crash, SIGKILL, a poststop hook that never ran) is stale and is reclaimed.

use super::{NetError, PortMap, Result, Subnet};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub pid: i32,
    pub start: u64,
    /// The host end of the container's veth pair.
    pub veth: String,
    #[serde(default)]
    pub ports: Vec<PortMap>,
}

impl Lease {
    /// Whether the container that took the lease still runs.
    pub fn alive(&self) -> bool {
        self.pid > 0 && crate::linux::proc::alive(self.pid, self.start)
    }
}

/// One network's leases.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Leases {
    pub subnet: String,
    /// tinyrt created the bridge (and so may delete it with the last lease).
    #[serde(default)]
    pub bridge_owned: bool,
    #[serde(default)]
    pub leases: BTreeMap<String, Lease>,
    /// The network namespace (inode) the bridge lives in: the runtime's.
    #[serde(default)]
    pub host_netns: u64,
}

impl Leases {
    /// The lowest free host address of the subnet (the first is the bridge's).
    pub fn allocate(&self, subnet: &Subnet) -> Result<Ipv4Addr> {
        let used: std::collections::BTreeSet<Ipv4Addr> = self.leases.values().map(|l| l.ip).collect();
        let first = u32::from(subnet.gateway()) + 1;
        let last = u32::from(subnet.broadcast()) - 1;
        (first..=last)
            .map(Ipv4Addr::from)
            .find(|a| !used.contains(a))
            .ok_or_else(|| NetError::Alloc(format!("subnet {subnet} is full ({} leases)", self.leases.len())))
    }

    /// Take out the leases whose containers are gone.
    pub fn take_stale(&mut self) -> Vec<(String, Lease)> {
        let stale: Vec<String> = self.leases.iter().filter(|(_, l)| !l.alive()).map(|(k, _)| k.clone()).collect();
        stale.into_iter().filter_map(|k| self.leases.remove(&k).map(|l| (k, l))).collect()
    }
}

/// The state directory; one subdirectory per bridge.
pub fn state_dir() -> PathBuf {
    PathBuf::from("/run/tinyrt-net")
}

pub fn network_dir(bridge: &str) -> PathBuf {
    state_dir().join(bridge)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> NetError + '_ {
    move |err| NetError::Io {
        path: path.to_path_buf(),
        err,
    }
}

/// The global lock, held for a whole `up` or `down`: every network's leases, bridges and
/// firewall tables change under it (one hook at a time; each takes milliseconds).
pub struct Lock {
    _file: std::fs::File,
}

pub fn lock() -> Result<Lock> {
    let dir = state_dir();
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    loop {
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(io(&path)(e));
        }
    }
    Ok(Lock { _file: file })
}

/// The leases of `bridge` (empty if the network does not exist). Call with the lock held.
pub fn load(_l: &Lock, bridge: &str) -> Result<Leases> {
    let path = network_dir(bridge).join("leases.json");
    match std::fs::read(&path) {
        Ok(text) => serde_json::from_slice(&text).map_err(|e| NetError::Corrupt { path, msg: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Leases::default()),
        Err(e) => Err(io(&path)(e)),
    }
}

/// Save the leases atomically. Call with the lock held.
pub fn save(_l: &Lock, bridge: &str, leases: &Leases) -> Result<()> {
    let dir = network_dir(bridge);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let path = dir.join("leases.json");
    let tmp = dir.join("leases.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(leases).expect("leases serialize")).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))
}

/// Forget a network entirely (its last lease is gone). Call with the lock held.
pub fn remove_network(_l: &Lock, bridge: &str) -> Result<()> {
    let dir = network_dir(bridge);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&dir)(e)),
        _ => Ok(()),
    }
}

/// Whether any network other than `bridge` still has leases in the namespace `netns`.
pub fn other_networks(l: &Lock, bridge: &str, netns: u64) -> bool {
    let Ok(rd) = std::fs::read_dir(state_dir()) else { return false };
    rd.flatten().any(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        name != bridge && e.path().join("leases.json").exists() && load(l, &name).is_ok_and(|x| x.host_netns == netns)
    })
}

/// The inode of the calling process's network namespace.
pub fn own_netns() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/net").map(|m| m.ino()).unwrap_or(0)
}

/// Where `up` records that forwarding was off in namespace `netns` before tinyrt turned it on.
pub fn forward_mark(netns: u64) -> PathBuf {
    state_dir().join(format!("ip_forward.orig.{netns}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_lowest_free_and_skips_gateway() {
        let s: Subnet = "10.209.0.0/29".parse().unwrap();
        let mut l = Leases::default();
        for i in 0..5 {
            let ip = l.allocate(&s).unwrap();
            assert_eq!(ip, Ipv4Addr::new(10, 209, 0, 2 + i));
            l.leases.insert(
                format!("c{i}"),
                Lease {
                    ip,
                    pid: 0,
                    start: 0,
                    veth: String::new(),
                    ports: vec![],
                },
            );
        }
        assert!(l.allocate(&s).unwrap_err().to_string().contains("full"));
        l.leases.remove("c1");
        assert_eq!(l.allocate(&s).unwrap(), Ipv4Addr::new(10, 209, 0, 3));
        // pid 0 is never alive: every lease above is stale.
        assert_eq!(l.take_stale().len(), 4);
    }
}
