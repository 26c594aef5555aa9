//! Namespaces: which to create, which to join, user id maps and time offsets.

use super::{Ctx, Result};
use nix::sched::CloneFlags;
use oci_spec::runtime::{Linux, LinuxIdMapping, LinuxNamespaceType};
use std::path::PathBuf;

pub fn clone_flag(t: LinuxNamespaceType) -> CloneFlags {
    use LinuxNamespaceType as T;
    match t {
        T::Mount => CloneFlags::CLONE_NEWNS,
        T::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        T::Uts => CloneFlags::CLONE_NEWUTS,
        T::Ipc => CloneFlags::CLONE_NEWIPC,
        T::User => CloneFlags::CLONE_NEWUSER,
        T::Pid => CloneFlags::CLONE_NEWPID,
        T::Network => CloneFlags::CLONE_NEWNET,
        T::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// The namespace part of a container config, split into what is created and what is joined.
#[derive(Debug, Clone)]
pub struct NsPlan {
    /// Namespaces to create (all flags, including user and cgroup).
    pub new: CloneFlags,
    /// Namespaces to join, user first, in the order they must be entered.
    pub join: Vec<(LinuxNamespaceType, PathBuf)>,
}

impl NsPlan {
    pub fn from_linux(linux: Option<&Linux>) -> Self {
        let mut plan = NsPlan {
            new: CloneFlags::empty(),
            join: vec![],
        };
        for ns in linux.and_then(|l| l.namespaces().as_ref()).into_iter().flatten() {
            match ns.path() {
                Some(p) => plan.join.push((ns.typ(), p.clone())),
                None => plan.new |= clone_flag(ns.typ()),
            }
        }
        // Entering the user namespace first gives the rights to enter the others.
        plan.join.sort_by_key(|(t, _)| *t != LinuxNamespaceType::User);
        plan
    }
    pub fn has(&self, t: LinuxNamespaceType) -> bool {
        self.new.contains(clone_flag(t)) || self.join.iter().any(|(j, _)| *j == t)
    }
    pub fn creates(&self, t: LinuxNamespaceType) -> bool {
        self.new.contains(clone_flag(t))
    }
}

/// setns into each namespace given by path.
pub fn join_all(plan: &NsPlan) -> Result<()> {
    for (i, (t, path)) in plan.join.iter().enumerate() {
        let f = std::fs::File::open(path).ctx(|| format!("linux.namespaces ({t}): opening {}", path.display()))?;
        nix::sched::setns(&f, clone_flag(*t)).ctx(|| format!("linux.namespaces ({t}): joining {} [{i}]", path.display()))?;
    }
    Ok(())
}

fn map_text(maps: &[LinuxIdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

/// Write uid_map and gid_map of `pid` from outside its user namespace.
pub fn write_id_maps(pid: i32, linux: &Linux) -> Result<()> {
    let uid = linux.uid_mappings().as_deref().unwrap_or(&[]);
    let gid = linux.gid_mappings().as_deref().unwrap_or(&[]);
    std::fs::write(format!("/proc/{pid}/uid_map"), map_text(uid)).ctx(|| "linux.uidMappings: writing uid_map")?;
    std::fs::write(format!("/proc/{pid}/gid_map"), map_text(gid)).ctx(|| "linux.gidMappings: writing gid_map")?;
    Ok(())
}

/// Write the clock offsets of a new time namespace (before any process enters it).
pub fn write_time_offsets(linux: &Linux) -> Result<()> {
    let Some(offsets) = linux.time_offsets() else { return Ok(()) };
    let mut text = String::new();
    for (clock, off) in offsets {
        text += &format!("{clock} {} {}\n", off.secs().unwrap_or(0), off.nanosecs().unwrap_or(0));
    }
    std::fs::write("/proc/self/timens_offsets", text).ctx(|| "linux.timeOffsets: writing /proc/self/timens_offsets")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_splits_new_and_joined_user_first() {
        let linux: Linux = serde_json::from_str(
            r#"{"namespaces":[{"type":"pid"},{"type":"network","path":"/proc/1/ns/net"},{"type":"user","path":"/proc/1/ns/user"},{"type":"mount"}]}"#,
        )
        .unwrap();
        let p = NsPlan::from_linux(Some(&linux));
        assert_eq!(p.new, CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS);
        assert_eq!(p.join[0].0, LinuxNamespaceType::User);
        assert!(p.has(LinuxNamespaceType::Network));
        assert!(!p.creates(LinuxNamespaceType::Network));
    }
}
