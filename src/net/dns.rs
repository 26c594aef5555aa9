//! /etc/resolv.conf, /etc/hosts and /etc/hostname for a container.
//!
//! runc and tinyrt bind-mount a container's files before they run createRuntime hooks, so
//! the mount sources must exist when the container is created: `tinyrt spec --network`
//! creates them empty in the bundle, under `tinyrt-net/`, and mounts them read-only; the hook
//! fills them in place (same inode, so the container sees the content). The hook writes
//! nothing anywhere else: a bundle without `tinyrt-net/` gets no files.

use super::{NetError, Result};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The directory inside a bundle that holds the container's generated files.
pub const BUNDLE_DIR: &str = "tinyrt-net";
pub const FILES: [&str; 3] = ["resolv.conf", "hosts", "hostname"];

/// Docker's fallback when the host has only loopback resolvers.
const DEFAULT_NAMESERVERS: [&str; 2] = ["8.8.8.8", "8.8.4.4"];

fn is_loopback(ns: &str) -> bool {
    ns.parse::<IpAddr>().map(|a| a.is_loopback()).unwrap_or(false)
}

/// The container's resolv.conf from the host's: loopback nameservers (systemd-resolved's
/// 127.0.0.53, a local dnsmasq) cannot be reached from the container and are dropped.
pub fn resolv_conf(host: &str, fallback: Option<&str>) -> String {
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let t = line.trim();
        let mut words = t.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(ns) = words.next()
                    && !is_loopback(ns)
                {
                    out += &format!("nameserver {ns}\n");
                    servers += 1;
                }
            }
            Some("search" | "domain" | "options") => out += &format!("{t}\n"),
            _ => {}
        }
    }
    if servers == 0 {
        // systemd-resolved keeps the real upstream servers there.
        if let Some(f) = fallback {
            let up = resolv_conf(f, None);
            if up.contains("nameserver") {
                return up;
            }
        }
        for ns in DEFAULT_NAMESERVERS {
            out += &format!("nameserver {ns}\n");
        }
    }
    out
}

pub fn hosts(ip: Ipv4Addr, hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n{ip}\t{hostname}\n"
    )
}

/// Fill the bundle's `tinyrt-net/` files, if the bundle has them (regular files only).
pub fn write_files(bundle: &Path, ip: Ipv4Addr, hostname: &str) -> Result<()> {
    let dir = bundle.join(BUNDLE_DIR);
    if !dir.is_dir() {
        return Ok(());
    }
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let fallback = std::fs::read_to_string("/run/systemd/resolve/resolv.conf").ok();
    let contents = [
        resolv_conf(&host, fallback.as_deref()),
        hosts(ip, hostname),
        format!("{hostname}\n"),
    ];
    for (name, text) in FILES.iter().zip(contents) {
        let path = dir.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_file() => {}
            _ => continue,
        }
        let io = |err| NetError::Io { path: path.clone(), err };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_loopback_resolvers() {
        let r = resolv_conf(
            "# x\nnameserver 127.0.0.53\nnameserver 192.0.2.1\nsearch example.org\noptions edns0\n",
            None,
        );
        assert_eq!(r, "nameserver 192.0.2.1\nsearch example.org\noptions edns0\n");
        let r = resolv_conf("nameserver 127.0.0.53\nnameserver ::1\n", None);
        assert_eq!(r, "nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
        let r = resolv_conf("nameserver 127.0.0.53\n", Some("nameserver 192.0.2.9\n"));
        assert_eq!(r, "nameserver 192.0.2.9\n");
    }

    #[test]
    fn hosts_has_own_name() {
        assert!(hosts(Ipv4Addr::new(10, 209, 0, 2), "c1").ends_with("10.209.0.2\tc1\n"));
    }
}
