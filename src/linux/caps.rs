//! The five capability sets of process.capabilities.

use super::{Ctx, Result, SysError, refuse};
use oci_spec::runtime::{Capabilities, LinuxCapabilities};
use std::str::FromStr;

/// A set as a bit mask of capability numbers.
fn mask(field: &str, set: Option<&Capabilities>) -> Result<u64> {
    let mut m = 0u64;
    for c in set.into_iter().flatten() {
        let name = format!("CAP_{c}");
        let Ok(cap) = caps::Capability::from_str(&name) else {
            return refuse(format!("process.capabilities.{field}: unknown capability {name}"));
        };
        m |= 1u64 << cap.index();
    }
    Ok(m)
}

fn cap_name(i: u8) -> String {
    caps::all()
        .into_iter()
        .find(|c| c.index() == i)
        .map(|c| c.to_string())
        .unwrap_or_else(|| format!("capability {i}"))
}

fn last_cap() -> u8 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// The parsed sets.
#[derive(Debug, Clone, Copy, Default)]
pub struct CapSets {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

impl CapSets {
    pub fn from_spec(c: Option<&LinuxCapabilities>) -> Result<Self> {
        let Some(c) = c else { return Ok(CapSets::default()) };
        Ok(CapSets {
            bounding: mask("bounding", c.bounding().as_ref())?,
            effective: mask("effective", c.effective().as_ref())?,
            permitted: mask("permitted", c.permitted().as_ref())?,
            inheritable: mask("inheritable", c.inheritable().as_ref())?,
            ambient: mask("ambient", c.ambient().as_ref())?,
        })
    }
}

/// Drop every capability outside `bounding` from the bounding set (needs CAP_SETPCAP, so
/// this runs before the user switch). A capability asked for that the runtime's own bounding
/// set lacks is an error naming it.
pub fn drop_bounding(sets: &CapSets) -> Result<()> {
    let last = last_cap();
    let mut have = 0u64;
    for i in 0..=last {
        // PR_CAPBSET_READ
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_READ, i as libc::c_ulong, 0, 0, 0) };
        if r == 1 {
            have |= 1 << i;
        }
    }
    for (field, want) in [
        ("bounding", sets.bounding),
        ("permitted", sets.permitted),
        ("effective", sets.effective),
    ] {
        let missing = want & !have;
        if missing != 0 {
            let i = missing.trailing_zeros() as u8;
            return Err(SysError {
                what: format!("process.capabilities.{field}: {} is not in the runtime's bounding set", cap_name(i)),
                errno: nix::errno::Errno::EPERM,
            });
        }
    }
    for i in 0..=last {
        if have & (1 << i) != 0 && sets.bounding & (1 << i) == 0 {
            let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, i as libc::c_ulong, 0, 0, 0) };
            if r != 0 {
                return Err(nix::errno::Errno::last()).ctx(|| format!("dropping {} from the bounding set", cap_name(i)));
            }
        }
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Set effective, permitted and inheritable at once, then raise the ambient set.
pub fn apply(sets: &CapSets) -> Result<()> {
    let hdr = CapHeader {
        version: 0x2008_0522,
        pid: 0,
    };
    let lo = |m: u64| m as u32;
    let hi = |m: u64| (m >> 32) as u32;
    let data = [
        CapData {
            effective: lo(sets.effective),
            permitted: lo(sets.permitted),
            inheritable: lo(sets.inheritable),
        },
        CapData {
            effective: hi(sets.effective),
            permitted: hi(sets.permitted),
            inheritable: hi(sets.inheritable),
        },
    ];
    let r = unsafe { libc::syscall(libc::SYS_capset, &hdr as *const CapHeader, data.as_ptr()) };
    if r != 0 {
        return Err(nix::errno::Errno::last()).ctx(|| "process.capabilities: capset");
    }
    let r = unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0) };
    if r != 0 {
        return Err(nix::errno::Errno::last()).ctx(|| "clearing the ambient set");
    }
    for i in 0..64u8 {
        if sets.ambient & (1 << i) != 0 {
            let r = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    i as libc::c_ulong,
                    0,
                    0,
                )
            };
            if r != 0 {
                return Err(nix::errno::Errno::last()).ctx(|| {
                    format!(
                        "process.capabilities.ambient: raising {} (it must be permitted and inheritable)",
                        cap_name(i)
                    )
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        let c: LinuxCapabilities = serde_json::from_str(r#"{"bounding":["CAP_CHOWN","CAP_KILL"],"ambient":[]}"#).unwrap();
        let s = CapSets::from_spec(Some(&c)).unwrap();
        assert_eq!(s.bounding, (1 << 0) | (1 << 5));
        assert_eq!(s.ambient, 0);
        assert_eq!(cap_name(5), "CAP_KILL");
    }
}
