//! The few rtnetlink requests the network hook needs, over a plain NETLINK_ROUTE socket:
//! create a bridge or a veth pair (the peer born directly in the container's namespace as
//! `eth0`), enslave, set up, add an IPv4 address, add a default route, delete a link.
//! Synchronous, one request and one ack at a time: no async runtime in the hook.
//!
//! A socket talks to the network namespace it was created in, so work inside a container's
//! namespace happens on a short-lived thread that has `setns`-ed there (see [`in_netns`]).

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const NLA_F_NESTED: u16 = 0x8000;

/// A failed netlink request: what was asked, and the kernel's errno.
#[derive(Debug, thiserror::Error)]
#[error("netlink: {what}: {}", crate::linux::errno_text(*errno))]
pub struct NetlinkError {
    pub what: String,
    pub errno: nix::errno::Errno,
}

impl NetlinkError {
    pub fn is_exists(&self) -> bool {
        self.errno == nix::errno::Errno::EEXIST
    }
    pub fn is_not_found(&self) -> bool {
        matches!(self.errno, nix::errno::Errno::ENODEV | nix::errno::Errno::ENOENT)
    }
}

type Result<T> = std::result::Result<T, NetlinkError>;

fn err(what: impl Into<String>, errno: nix::errno::Errno) -> NetlinkError {
    NetlinkError { what: what.into(), errno }
}

/// A netlink message under construction: header, fixed part, then attributes.
struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    fn new(ty: u16, flags: u16, fixed: &[u8]) -> Msg {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set at the end
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(&1u32.to_ne_bytes()); // seq
        buf.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
        buf.extend_from_slice(fixed);
        Msg { buf, nests: Vec::new() }
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn attr(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        self.pad();
        self.buf.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    fn str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(ty, &v)
    }

    fn u32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.attr(ty, &v.to_ne_bytes())
    }

    fn begin(&mut self, ty: u16) -> &mut Self {
        self.pad();
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        self
    }

    /// Raw bytes inside the current nest (a fixed struct such as the veth peer's ifinfomsg).
    fn raw(&mut self, data: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(data);
        self
    }

    fn end(&mut self) -> &mut Self {
        let at = self.nests.pop().expect("end without begin");
        self.pad();
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    fn finish(mut self) -> Vec<u8> {
        self.pad();
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

fn ifinfomsg(index: i32, flags: u32, change: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0] = libc::AF_UNSPEC as u8;
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b[12..16].copy_from_slice(&change.to_ne_bytes());
    b
}

/// A NETLINK_ROUTE socket in the calling thread's network namespace.
pub struct Netlink {
    fd: OwnedFd,
}

impl Netlink {
    pub fn open() -> Result<Netlink> {
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        if fd < 0 {
            return Err(err("socket(AF_NETLINK)", nix::errno::Errno::last()));
        }
        Ok(Netlink {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Send one request and wait for its ack.
    fn request(&self, what: &str, msg: Msg) -> Result<()> {
        let buf = msg.finish();
        let n = unsafe { libc::send(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(err(what, nix::errno::Errno::last()));
        }
        let mut rbuf = vec![0u8; 16384];
        loop {
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), rbuf.as_mut_ptr().cast(), rbuf.len(), 0) };
            if n < 0 {
                let e = nix::errno::Errno::last();
                if e == nix::errno::Errno::EINTR {
                    continue;
                }
                return Err(err(what, e));
            }
            let mut off = 0usize;
            let n = n as usize;
            while off + 16 <= n {
                let len = u32::from_ne_bytes(rbuf[off..off + 4].try_into().unwrap()) as usize;
                let ty = u16::from_ne_bytes(rbuf[off + 4..off + 6].try_into().unwrap());
                if len < 16 || off + len > n {
                    break;
                }
                if ty == NLMSG_ERROR && len >= 20 {
                    let code = i32::from_ne_bytes(rbuf[off + 16..off + 20].try_into().unwrap());
                    return if code == 0 {
                        Ok(())
                    } else {
                        Err(err(what, nix::errno::Errno::from_raw(-code)))
                    };
                }
                off += (len + 3) & !3;
            }
        }
    }

    /// Create a bridge (EEXIST if it is there).
    pub fn add_bridge(&self, name: &str) -> Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &ifinfomsg(0, 0, 0));
        m.str(IFLA_IFNAME, name).begin(IFLA_LINKINFO).str(IFLA_INFO_KIND, "bridge").end();
        self.request(&format!("creating bridge {name}"), m)
    }

    /// Create a veth pair: `host` here, `peer` born in the namespace behind `netns`.
    pub fn add_veth(&self, host: &str, peer: &str, netns: BorrowedFd) -> Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &ifinfomsg(0, 0, 0));
        m.str(IFLA_IFNAME, host)
            .begin(IFLA_LINKINFO)
            .str(IFLA_INFO_KIND, "veth")
            .begin(IFLA_INFO_DATA)
            .begin(VETH_INFO_PEER)
            .raw(&ifinfomsg(0, 0, 0))
            .str(IFLA_IFNAME, peer)
            .u32(IFLA_NET_NS_FD, netns.as_raw_fd() as u32)
            .end()
            .end()
            .end();
        self.request(&format!("creating veth pair {host} / {peer} (container side)"), m)
    }

    /// Set a link up, optionally enslaving it to `master`.
    pub fn link_up(&self, name: &str, master: Option<&str>) -> Result<()> {
        let index = index_of(name)?;
        let mut m = Msg::new(RTM_NEWLINK, 0, &ifinfomsg(index as i32, libc::IFF_UP as u32, libc::IFF_UP as u32));
        if let Some(br) = master {
            m.u32(IFLA_MASTER, index_of(br)?);
        }
        self.request(&format!("setting {name} up"), m)
    }

    /// Delete a link by name.
    pub fn del_link(&self, name: &str) -> Result<()> {
        let mut m = Msg::new(RTM_DELLINK, 0, &ifinfomsg(0, 0, 0));
        m.str(IFLA_IFNAME, name);
        self.request(&format!("deleting link {name}"), m)
    }

    /// Add `addr/prefix` to a link (EEXIST if it has it).
    pub fn add_addr(&self, name: &str, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        let index = index_of(name)?;
        let mut fixed = [0u8; 8];
        fixed[0] = libc::AF_INET as u8;
        fixed[1] = prefix;
        fixed[4..8].copy_from_slice(&index.to_ne_bytes());
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
        let bcast = Ipv4Addr::from(u32::from(addr) | !mask);
        let mut m = Msg::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &fixed);
        m.attr(IFA_LOCAL, &addr.octets())
            .attr(IFA_ADDRESS, &addr.octets())
            .attr(IFA_BROADCAST, &bcast.octets());
        self.request(&format!("adding {addr}/{prefix} to {name}"), m)
    }

    /// Add the default route via `gw` out of `dev`.
    pub fn add_default_route(&self, dev: &str, gw: Ipv4Addr) -> Result<()> {
        let index = index_of(dev)?;
        // rtmsg: family, dst_len, src_len, tos, table main, protocol boot, scope universe,
        // unicast, then 4 bytes of flags
        let fixed = [libc::AF_INET as u8, 0, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0];
        let mut m = Msg::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, &fixed);
        m.attr(RTA_GATEWAY, &gw.octets()).u32(RTA_OIF, index);
        self.request(&format!("adding default route via {gw} dev {dev}"), m)
    }
}

/// The index of a link in the calling thread's namespace.
pub fn index_of(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name).map_err(|_| err(format!("link name {name:?}"), nix::errno::Errno::EINVAL))?;
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(err(format!("looking up link {name}"), nix::errno::Errno::ENODEV));
    }
    Ok(i)
}

/// Whether a link of that name exists in the calling thread's namespace.
pub fn link_exists(name: &str) -> bool {
    index_of(name).is_ok()
}

/// Run `f` on a thread that has joined the network namespace behind `netns`; the caller's
/// own namespace is never changed.
pub fn in_netns<T: Send>(netns: BorrowedFd, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| err("setns(CLONE_NEWNET) into the container", e))?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(err("netns thread panicked", nix::errno::Errno::EIO)))
    })
}
