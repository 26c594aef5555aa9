//! Firewall rules: one nftables table per network, `ip tinyrt-<bridge>`, rebuilt whole from
//! the leases at every change (one `nft -f` transaction: create, delete, create again), and
//! deleted with the network's last lease. Nothing outside that table is touched, except:
//!
//! Docker (and anything using iptables-nft) puts a FORWARD chain with policy DROP in the
//! `ip filter` table. In nftables every base chain at a hook sees the packet, and an accept
//! in ours does not stop theirs from dropping it. So when that chain exists, a chain of our
//! own, `TINYRT-<bridge>`, is jumped to from the top of iptables' FORWARD (made and removed
//! with the `iptables` tool, as Docker's own DOCKER-USER chain would be), accepting the
//! network's traffic there as well.

use super::{NetError, Result, Subnet};
use crate::net::allocator::Leases;
use std::io::Write;
use std::process::{Command, Stdio};

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A tool by absolute path: hooks run with an empty environment, so no PATH to search.
fn tool(name: &str) -> Result<String> {
    PATH.split(':')
        .map(|d| format!("{d}/{name}"))
        .find(|p| std::path::Path::new(p).exists())
        .ok_or_else(|| NetError::Firewall {
            cmd: name.into(),
            msg: format!("{name} not found in {PATH} (apt-get install nftables iptables)"),
        })
}

fn run(bin: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let cmdline = format!("{bin} {}", args.join(" "));
    let mut child = Command::new(tool(bin)?)
        .args(args)
        .env_clear()
        .env("PATH", PATH)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetError::Firewall {
            cmd: cmdline.clone(),
            msg: e.to_string(),
        })?;
    if let (Some(text), Some(mut w)) = (stdin, child.stdin.take()) {
        let _ = w.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| NetError::Firewall {
        cmd: cmdline.clone(),
        msg: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(NetError::Firewall {
            cmd: cmdline,
            msg: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn table_name(bridge: &str) -> String {
    format!("tinyrt-{bridge}")
}

fn chain_name(bridge: &str) -> String {
    format!("TINYRT-{bridge}")
}

/// The network's whole table, as nft text.
pub fn ruleset(bridge: &str, subnet: &Subnet, leases: &Leases) -> String {
    let t = table_name(bridge);
    let mut dnat = String::new();
    for l in leases.leases.values() {
        for p in &l.ports {
            dnat += &format!(
                "    fib daddr type local meta l4proto {} th dport {} dnat ip to {}:{}\n",
                p.proto, p.host, l.ip, p.container
            );
        }
    }
    format!(
        "table ip {t} {{\n}}\ndelete table ip {t}\n\
table ip {t} {{\n\
  chain forward {{\n    type filter hook forward priority filter; policy accept;\n\
    iifname \"{bridge}\" accept\n\
    oifname \"{bridge}\" ct state established,related accept\n\
    oifname \"{bridge}\" ct status dnat accept\n\
    oifname \"{bridge}\" drop\n  }}\n\
  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n{dnat}  }}\n\
  chain output {{\n    type nat hook output priority -100; policy accept;\n{dnat}  }}\n\
  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n\
    ip saddr {subnet} oifname != \"{bridge}\" masquerade\n\
    ip saddr {subnet} ip daddr {subnet} ct status dnat masquerade\n\
    ip saddr 127.0.0.0/8 oifname \"{bridge}\" masquerade\n  }}\n\
}}\n"
    )
}

/// Make the network's rules match its leases.
pub fn apply(bridge: &str, subnet: &Subnet, leases: &Leases) -> Result<()> {
    run("nft", &["-f", "-"], Some(&ruleset(bridge, subnet, leases)))?;
    if iptables_forward_exists() {
        iptables_chain(bridge)?;
    }
    Ok(())
}

/// Remove the network's table and its iptables chain, if they are there.
pub fn remove(bridge: &str) -> Result<()> {
    let t = table_name(bridge);
    run("nft", &["-f", "-"], Some(&format!("table ip {t} {{\n}}\ndelete table ip {t}\n")))?;
    let c = chain_name(bridge);
    if tool("iptables").is_ok() && run("iptables", &["-w", "-S", &c], None).is_ok() {
        while run("iptables", &["-w", "-D", "FORWARD", "-j", &c], None).is_ok() {}
        run("iptables", &["-w", "-F", &c], None)?;
        run("iptables", &["-w", "-X", &c], None)?;
    }
    Ok(())
}

/// An iptables-nft `filter FORWARD` chain is there (Docker's, say).
fn iptables_forward_exists() -> bool {
    tool("iptables").is_ok() && run("nft", &["list", "chain", "ip", "filter", "FORWARD"], None).is_ok()
}

fn iptables_chain(bridge: &str) -> Result<()> {
    let c = chain_name(bridge);
    if run("iptables", &["-w", "-S", &c], None).is_err() {
        run("iptables", &["-w", "-N", &c], None)?;
    }
    run("iptables", &["-w", "-F", &c], None)?;
    run("iptables", &["-w", "-A", &c, "-i", bridge, "-j", "ACCEPT"], None)?;
    run(
        "iptables",
        &[
            "-w",
            "-A",
            &c,
            "-o",
            bridge,
            "-m",
            "conntrack",
            "--ctstate",
            "RELATED,ESTABLISHED,DNAT",
            "-j",
            "ACCEPT",
        ],
        None,
    )?;
    if run("iptables", &["-w", "-C", "FORWARD", "-j", &c], None).is_err() {
        run("iptables", &["-w", "-I", "FORWARD", "1", "-j", &c], None)?;
    }
    Ok(())
}

/// The IPv4 forwarding switch.
pub fn ip_forward() -> Result<bool> {
    let p = "/proc/sys/net/ipv4/ip_forward";
    let v = std::fs::read_to_string(p).map_err(|err| NetError::Io { path: p.into(), err })?;
    Ok(v.trim() == "1")
}

pub fn set_ip_forward(on: bool) -> Result<()> {
    let p = "/proc/sys/net/ipv4/ip_forward";
    std::fs::write(p, if on { "1" } else { "0" }).map_err(|err| NetError::Io { path: p.into(), err })
}

/// A per-interface IPv4 sysctl (only ever on our own bridge).
pub fn set_conf(dev: &str, key: &str, val: &str) -> Result<()> {
    let p = format!("/proc/sys/net/ipv4/conf/{dev}/{key}");
    std::fs::write(&p, val).map_err(|err| NetError::Io { path: p.into(), err })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::allocator::Lease;

    #[test]
    fn ruleset_has_ports_and_nat() {
        let s: Subnet = "10.209.0.0/16".parse().unwrap();
        let mut l = Leases::default();
        l.leases.insert(
            "a".into(),
            Lease {
                ip: "10.209.0.2".parse().unwrap(),
                pid: 1,
                start: 1,
                veth: "v".into(),
                ports: crate::net::parse_ports("8080:80/tcp,5353:53/udp").unwrap(),
            },
        );
        let r = ruleset("tinyrt0", &s, &l);
        assert!(r.contains("meta l4proto tcp th dport 8080 dnat ip to 10.209.0.2:80"), "{r}");
        assert!(r.contains("meta l4proto udp th dport 5353 dnat ip to 10.209.0.2:53"), "{r}");
        assert!(r.contains("ip saddr 10.209.0.0/16 oifname != \"tinyrt0\" masquerade"), "{r}");
    }
}
