//! tinyrt's built-in network, as a plain OCI hook: `tinyrt hook network up` (createRuntime)
//! and `tinyrt hook network down` (poststop) read the container state JSON on stdin.
//!
//! `up`: a bridge (annotation `io.tinyrt.network.bridge`, default `tinyrt0`) addressed with
//! the first host of the subnet (`io.tinyrt.network.subnet`, default 10.209.0.0/16), a veth
//! pair per container (the host end on the bridge, the other born in the container's netns
//! as `eth0`), an address from the lease file, `lo` up, a default route via the bridge,
//! IPv4 forwarding on, NAT and forward rules in the nftables table `tinyrt-<bridge>`, port
//! DNATs (`io.tinyrt.network.ports=8080:80/tcp,5353:53/udp`), and the container's
//! resolv.conf/hosts/hostname (see [`dns`]). A failure undoes what this run made.
//!
//! `down`: removes the container's veth, lease and rules; with the network's last lease the
//! bridge, the table and the state dir go too, and IPv4 forwarding is switched back off if
//! tinyrt switched it on and no other tinyrt network remains.
//!
//! Safety: a container that joins an existing network namespace by `path` is never touched
//! (engines do their own networking), and one without a network namespace of its own is
//! refused: the hook never configures the runtime's (the host's) namespace.
//!
//! Links, addresses and routes go over a netlink socket of our own ([`netlink`]): five
//! request types, synchronous, no async runtime; firewall rules through the `nft` tool.

pub mod allocator;
pub mod dns;
pub mod firewall;
pub mod netlink;

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

pub const ANN_BRIDGE: &str = "io.tinyrt.network.bridge";
pub const ANN_SUBNET: &str = "io.tinyrt.network.subnet";
pub const ANN_PORTS: &str = "io.tinyrt.network.ports";
pub const DEFAULT_BRIDGE: &str = "tinyrt0";
pub const DEFAULT_SUBNET: &str = "10.209.0.0/16";
/// Test-only fault injection, read from the hook's environment (config.json's hook `env`):
/// `kill-after-veth` (SIGKILL itself half-way) or `fail-after-veth` (return an error there).
pub const FAULT_ENV: &str = "TINYRT_NET_FAULT";

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("network hook: {0}")]
    Config(String),
    #[error("network hook: container {id}: {msg}")]
    Container { id: String, msg: String },
    #[error("network hook: {path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("network hook: {path}: corrupt lease file: {msg}")]
    Corrupt { path: PathBuf, msg: String },
    #[error("network hook: address allocation: {0}")]
    Alloc(String),
    #[error("network hook: {0}")]
    Netlink(netlink::NetlinkError),
    #[error("network hook: firewall: {cmd}: {msg}")]
    Firewall { cmd: String, msg: String },
}

pub type Result<T> = std::result::Result<T, NetError>;

// Not `#[from]`: that would make it the error's source, and the CLI prints source chains.
impl From<netlink::NetlinkError> for NetError {
    fn from(e: netlink::NetlinkError) -> Self {
        NetError::Netlink(e)
    }
}

/// An IPv4 subnet: network address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub net: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn mask(&self) -> u32 {
        if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix) }
    }
    /// The bridge's address: the first host.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.net) + 1)
    }
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.net) | !self.mask())
    }
    /// Whether two networks share any address.
    pub fn overlaps(&self, net: Ipv4Addr, prefix: u8) -> bool {
        let p = self.prefix.min(prefix);
        let m = if p == 0 { 0 } else { u32::MAX << (32 - p) };
        u32::from(self.net) & m == u32::from(net) & m
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

impl std::str::FromStr for Subnet {
    type Err = NetError;
    fn from_str(s: &str) -> Result<Subnet> {
        let bad = |why: &str| NetError::Config(format!("{ANN_SUBNET}={s:?}: {why}"));
        let (a, p) = s.split_once('/').ok_or_else(|| bad("want an IPv4 CIDR such as 10.209.0.0/16"))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = p.parse().map_err(|_| bad("bad prefix length"))?;
        if !(8..=30).contains(&prefix) {
            return Err(bad("prefix length must be between 8 and 30"));
        }
        let sub = Subnet { net: addr, prefix };
        if u32::from(addr) & !sub.mask() != 0 {
            return Err(bad("host bits set (give the network address)"));
        }
        Ok(sub)
    }
}

/// One published port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortMap {
    pub host: u16,
    pub container: u16,
    pub proto: String,
}

/// `8080:80/tcp,5353:53/udp` (protocol defaults to tcp).
pub fn parse_ports(s: &str) -> Result<Vec<PortMap>> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let bad = |why: &str| NetError::Config(format!("{ANN_PORTS}: {item:?}: {why} (want HOST:CONTAINER[/tcp|udp])"));
        let (ports, proto) = item.split_once('/').unwrap_or((item, "tcp"));
        if proto != "tcp" && proto != "udp" {
            return Err(bad("protocol must be tcp or udp"));
        }
        let (h, c) = ports.split_once(':').ok_or_else(|| bad("missing ':'"))?;
        let port = |v: &str| v.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| bad("bad port number"));
        out.push(PortMap {
            host: port(h)?,
            container: port(c)?,
            proto: proto.into(),
        });
    }
    Ok(out)
}

/// The fields of the container state the hook uses.
#[derive(Debug, Deserialize)]
pub struct HookState {
    pub id: String,
    #[serde(default)]
    pub pid: i32,
    #[serde(default)]
    pub bundle: PathBuf,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
}

/// The network a container asks for through its annotations.
#[derive(Debug, Clone)]
pub struct NetConfig {
    pub bridge: String,
    pub subnet: Subnet,
    pub ports: Vec<PortMap>,
}

impl NetConfig {
    pub fn from_annotations(a: &HashMap<String, String>) -> Result<NetConfig> {
        let bridge = a.get(ANN_BRIDGE).map(String::as_str).unwrap_or(DEFAULT_BRIDGE).to_string();
        if bridge.is_empty() || bridge.len() > 15 || !bridge.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(NetError::Config(format!(
                "{ANN_BRIDGE}={bridge:?}: want 1 to 15 characters of letters, digits, '_' or '-'"
            )));
        }
        let subnet = a.get(ANN_SUBNET).map(String::as_str).unwrap_or(DEFAULT_SUBNET).parse()?;
        let ports = parse_ports(a.get(ANN_PORTS).map(String::as_str).unwrap_or(""))?;
        Ok(NetConfig { bridge, subnet, ports })
    }
}

/// The host end of a container's veth: `tinyv` and a hash of network and id (15 chars max).
pub fn veth_name(bridge: &str, id: &str) -> String {
    let mut h: u32 = 0x811c9dc5;
    for b in bridge.bytes().chain([b'/']).chain(id.bytes()) {
        h = (h ^ b as u32).wrapping_mul(0x01000193);
    }
    format!("tinyv{h:08x}")
}

/// What the container's config says about its network namespace.
#[derive(Debug, PartialEq)]
enum NetNs {
    /// A new one, made by the runtime: ours to set up.
    New,
    /// Joins an existing one by path: someone else's, never touched.
    Joined,
    /// No network namespace at all (the host's): refused.
    None,
    /// No readable config.json: decided from the process alone.
    Unknown,
}

fn netns_of_config(bundle: &Path) -> NetNs {
    let Ok(text) = std::fs::read(bundle.join("config.json")) else {
        return NetNs::Unknown;
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&text) else {
        return NetNs::Unknown;
    };
    let nss = v["linux"]["namespaces"].as_array().cloned().unwrap_or_default();
    match nss.iter().find(|n| n["type"] == "network") {
        None => NetNs::None,
        Some(n) if n["path"].as_str().is_some_and(|p| !p.is_empty()) => NetNs::Joined,
        Some(_) => NetNs::New,
    }
}

fn hostname_of_config(bundle: &Path) -> Option<String> {
    let text = std::fs::read(bundle.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    v["hostname"].as_str().filter(|h| !h.is_empty()).map(String::from)
}

/// Entry point of `tinyrt hook network up|down`: `state` is the JSON read from stdin.
pub fn hook(action: &str, state: &str) -> Result<()> {
    let st: HookState = serde_json::from_str(state).map_err(|e| NetError::Config(format!("container state on stdin: {e}")))?;
    if st.id.is_empty() {
        return Err(NetError::Config("container state on stdin: no id".into()));
    }
    let cfg = NetConfig::from_annotations(&st.annotations)?;
    match netns_of_config(&st.bundle) {
        NetNs::Joined => return Ok(()),
        NetNs::None if action == "up" => {
            return Err(NetError::Container {
                id: st.id,
                msg: "config.json has no network namespace (linux.namespaces): refusing to configure the host's network".into(),
            });
        }
        NetNs::None => return Ok(()),
        NetNs::New | NetNs::Unknown => {}
    }
    match action {
        "up" => up(&st, &cfg),
        "down" => down(&st, &cfg),
        a => Err(NetError::Config(format!("unknown action {a:?} (up or down)"))),
    }
}

fn container_err(id: &str, msg: impl Into<String>) -> NetError {
    NetError::Container {
        id: id.into(),
        msg: msg.into(),
    }
}

/// The container's netns, checked to be its own: (fd, init start time).
fn open_netns(st: &HookState) -> Result<(OwnedFd, u64)> {
    use std::os::unix::fs::MetadataExt;
    if st.pid <= 0 {
        return Err(container_err(&st.id, format!("no container pid in the state (pid {})", st.pid)));
    }
    let start = crate::linux::proc::stat(st.pid)
        .filter(|(s, _)| *s != 'Z' && *s != 'X')
        .map(|(_, t)| t)
        .ok_or_else(|| container_err(&st.id, format!("pid {}: no such process", st.pid)))?;
    let path = format!("/proc/{}/ns/net", st.pid);
    let f = std::fs::File::open(&path).map_err(|e| container_err(&st.id, format!("{path}: {e}")))?;
    let own = std::fs::metadata("/proc/self/ns/net").map_err(|err| NetError::Io {
        path: "/proc/self/ns/net".into(),
        err,
    })?;
    let theirs = f.metadata().map_err(|err| NetError::Io {
        path: path.clone().into(),
        err,
    })?;
    if (own.dev(), own.ino()) == (theirs.dev(), theirs.ino()) {
        return Err(container_err(
            &st.id,
            format!(
                "pid {} is in the runtime's own network namespace: refusing to configure the host's network",
                st.pid
            ),
        ));
    }
    // The pid was not recycled between the stat and the open.
    if !crate::linux::proc::alive(st.pid, start) {
        return Err(container_err(&st.id, format!("pid {} exited during set-up", st.pid)));
    }
    Ok((OwnedFd::from(f), start))
}

/// Routes of the host (main table, IPv4) that overlap `subnet`, other than on `bridge`.
fn colliding_routes(subnet: &Subnet, bridge: &str) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 || f[0] == bridge {
            continue;
        }
        let hex = |s: &str| u32::from_str_radix(s, 16).ok().map(|v| Ipv4Addr::from(v.to_le_bytes()));
        let (Some(dst), Some(mask)) = (hex(f[1]), hex(f[7])) else {
            continue;
        };
        let prefix = u32::from(mask).count_ones() as u8;
        if prefix == 0 {
            continue; // a default route overlaps everything; it is not a collision
        }
        if subnet.overlaps(dst, prefix) {
            out.push(format!("{dst}/{prefix} dev {}", f[0]));
        }
    }
    out
}

fn fault(point: &str) -> Result<()> {
    match std::env::var(FAULT_ENV) {
        Ok(v) if v == format!("kill-{point}") => {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
            Ok(())
        }
        Ok(v) if v == format!("fail-{point}") => Err(NetError::Config(format!("injected fault {v}"))),
        _ => Ok(()),
    }
}

fn up(st: &HookState, cfg: &NetConfig) -> Result<()> {
    let (netns, start) = open_netns(st)?;
    let lock = allocator::lock()?;
    let mut leases = allocator::load(&lock, &cfg.bridge)?;
    if !leases.leases.is_empty() && leases.subnet != cfg.subnet.to_string() {
        return Err(NetError::Config(format!(
            "{ANN_SUBNET}={}: network {} already exists with subnet {}",
            cfg.subnet, cfg.bridge, leases.subnet
        )));
    }
    for (_, l) in leases.take_stale() {
        del_veth(&l.veth)?;
    }
    if let Some(l) = leases.leases.get(&st.id) {
        return Err(container_err(
            &st.id,
            format!("already has address {} (pid {}) on {}", l.ip, l.pid, cfg.bridge),
        ));
    }
    let bridge_exists = netlink::link_exists(&cfg.bridge);
    if leases.leases.is_empty() {
        if bridge_exists && !leases.bridge_owned {
            return Err(NetError::Config(format!(
                "{ANN_BRIDGE}={}: a link of that name exists and tinyrt did not create it",
                cfg.bridge
            )));
        }
        let c = colliding_routes(&cfg.subnet, &cfg.bridge);
        if !c.is_empty() {
            return Err(NetError::Config(format!(
                "{ANN_SUBNET}={}: collides with existing route(s) {}; choose another subnet",
                cfg.subnet,
                c.join(", ")
            )));
        }
    }
    leases.subnet = cfg.subnet.to_string();
    leases.bridge_owned |= !bridge_exists;
    leases.host_netns = allocator::own_netns();
    let ip = leases.allocate(&cfg.subnet)?;
    let veth = veth_name(&cfg.bridge, &st.id);
    leases.leases.insert(
        st.id.clone(),
        allocator::Lease {
            ip,
            pid: st.pid,
            start,
            veth: veth.clone(),
            ports: cfg.ports.clone(),
        },
    );
    // Intent first: a hook killed from here on leaves a lease that `down` or a later `up` cleans.
    allocator::save(&lock, &cfg.bridge, &leases)?;
    let res = set_up(st, cfg, &netns, &leases, ip, &veth);
    if let Err(e) = res {
        leases.leases.remove(&st.id);
        let _ = del_veth(&veth);
        let _ = finish(&lock, cfg, &leases);
        return Err(e);
    }
    Ok(())
}

fn set_up(st: &HookState, cfg: &NetConfig, netns: &OwnedFd, leases: &allocator::Leases, ip: Ipv4Addr, veth: &str) -> Result<()> {
    let nl = netlink::Netlink::open()?;
    let gw = cfg.subnet.gateway();
    if !firewall::ip_forward()? {
        let orig = allocator::forward_mark(allocator::own_netns());
        if !orig.exists() {
            std::fs::write(&orig, "0\n").map_err(|err| NetError::Io { path: orig, err })?;
        }
        firewall::set_ip_forward(true)?;
    }
    match nl.add_bridge(&cfg.bridge) {
        Err(e) if e.is_exists() => {}
        r => r?,
    }
    match nl.add_addr(&cfg.bridge, gw, cfg.subnet.prefix) {
        Err(e) if e.is_exists() => {}
        r => r?,
    }
    // Published ports reached at 127.0.0.1 are DNAT-ed out through the bridge.
    firewall::set_conf(&cfg.bridge, "route_localnet", "1")?;
    nl.link_up(&cfg.bridge, None)?;
    nl.add_veth(veth, "eth0", netns.as_fd())?;
    fault("after-veth")?;
    nl.link_up(veth, Some(&cfg.bridge))?;
    let prefix = cfg.subnet.prefix;
    netlink::in_netns(netns.as_fd(), || {
        let nl = netlink::Netlink::open()?;
        nl.link_up("lo", None)?;
        nl.add_addr("eth0", ip, prefix)?;
        nl.link_up("eth0", None)?;
        nl.add_default_route("eth0", gw)
    })?;
    firewall::apply(&cfg.bridge, &cfg.subnet, leases)?;
    let hostname = hostname_of_config(&st.bundle).unwrap_or_else(|| st.id.clone());
    dns::write_files(&st.bundle, ip, &hostname)?;
    fault("at-end")
}

fn del_veth(name: &str) -> Result<()> {
    if !netlink::link_exists(name) {
        return Ok(());
    }
    match netlink::Netlink::open()?.del_link(name) {
        Err(e) if e.is_not_found() => Ok(()),
        r => Ok(r?),
    }
}

/// Bring the network in line with `leases`: save them and rebuild the rules, or, with no
/// lease left, remove the network.
fn finish(lock: &allocator::Lock, cfg: &NetConfig, leases: &allocator::Leases) -> Result<()> {
    if !leases.leases.is_empty() {
        allocator::save(lock, &cfg.bridge, leases)?;
        return firewall::apply(&cfg.bridge, &cfg.subnet, leases);
    }
    firewall::remove(&cfg.bridge)?;
    if leases.bridge_owned && netlink::link_exists(&cfg.bridge) {
        match netlink::Netlink::open()?.del_link(&cfg.bridge) {
            Err(e) if e.is_not_found() => {}
            r => r?,
        }
    }
    allocator::remove_network(lock, &cfg.bridge)?;
    let netns = allocator::own_netns();
    let orig = allocator::forward_mark(netns);
    if !allocator::other_networks(lock, &cfg.bridge, netns) && orig.exists() {
        firewall::set_ip_forward(false)?;
        let _ = std::fs::remove_file(&orig);
    }
    Ok(())
}

fn down(st: &HookState, cfg: &NetConfig) -> Result<()> {
    let lock = allocator::lock()?;
    let mut leases = allocator::load(&lock, &cfg.bridge)?;
    let subnet = leases.subnet.parse().unwrap_or(cfg.subnet);
    let cfg = NetConfig { subnet, ..cfg.clone() };
    if leases.leases.is_empty() && !allocator::network_dir(&cfg.bridge).exists() {
        return Ok(());
    }
    if let Some(l) = leases.leases.get(&st.id) {
        // Another live container's lease under the same id (a different runtime root) is not ours.
        if st.pid > 0 && l.pid != st.pid && l.alive() {
            return Ok(());
        }
        let l = leases.leases.remove(&st.id).expect("present");
        del_veth(&l.veth)?;
    }
    for (_, l) in leases.take_stale() {
        del_veth(&l.veth)?;
    }
    finish(&lock, &cfg, &leases)
}

/// What `tinyrt spec --network` adds to the default spec: the two hooks (by the absolute
/// path of this binary) and read-only bind mounts of the bundle's `tinyrt-net/` files.
pub fn add_to_spec(spec: &mut serde_json::Value, exe: &Path) {
    let exe = exe.display().to_string();
    spec["hooks"] = serde_json::json!({
        "createRuntime": [{"path": exe, "args": ["tinyrt", "hook", "network", "up"]}],
        "poststop": [{"path": exe, "args": ["tinyrt", "hook", "network", "down"]}]
    });
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        for f in dns::FILES {
            mounts.push(serde_json::json!({
                "destination": format!("/etc/{f}"),
                "type": "bind",
                "source": format!("{}/{f}", dns::BUNDLE_DIR),
                "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]
            }));
        }
    }
    spec["annotations"] = serde_json::json!({ANN_BRIDGE: DEFAULT_BRIDGE, ANN_SUBNET: DEFAULT_SUBNET});
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_with_network_parses() {
        let mut v = crate::spec::default_spec(false, 0, 0);
        add_to_spec(&mut v, Path::new("/usr/bin/tinyrt"));
        let s: oci_spec::runtime::Spec = serde_json::from_value(v).unwrap();
        assert_eq!(s.hooks().as_ref().unwrap().create_runtime().as_ref().unwrap().len(), 1);
        assert!(
            s.mounts()
                .as_ref()
                .unwrap()
                .iter()
                .any(|m| m.destination() == Path::new("/etc/resolv.conf"))
        );
    }

    #[test]
    fn subnets_and_ports() {
        let s: Subnet = "10.209.0.0/16".parse().unwrap();
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 209, 0, 1));
        assert_eq!(s.broadcast(), Ipv4Addr::new(10, 209, 255, 255));
        assert!(s.overlaps(Ipv4Addr::new(10, 0, 0, 0), 8));
        assert!(s.overlaps(Ipv4Addr::new(10, 209, 3, 0), 24));
        assert!(!s.overlaps(Ipv4Addr::new(10, 210, 0, 0), 16));
        assert!("10.209.0.1/16".parse::<Subnet>().is_err());
        assert!("10.209.0.0".parse::<Subnet>().is_err());
        let p = parse_ports("8080:80/tcp, 5353:53/udp,9000:90").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[2].proto, "tcp");
        assert!(parse_ports("80/tcp").is_err());
        assert!(parse_ports("1:2/sctp").is_err());
        assert_eq!(veth_name("tinyrt0", "abc").len(), 13);
    }
}
