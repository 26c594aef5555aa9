//! Mount options as the runtime spec and runc read them: flags to set or clear,
//! propagation changes applied after the mount, and the rest passed to the filesystem.

use nix::mount::MsFlags;

/// A parsed `options` list of one mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOpts {
    pub flags: MsFlags,
    /// Flags an option explicitly clears ("rw", "suid", "exec", ...): a bind remount keeps
    /// the source mount's flags except these.
    pub cleared: MsFlags,
    pub propagation: Vec<MsFlags>,
    pub data: Vec<String>,
}

impl Default for MountOpts {
    fn default() -> Self {
        MountOpts {
            flags: MsFlags::empty(),
            cleared: MsFlags::empty(),
            propagation: vec![],
            data: vec![],
        }
    }
}

impl MountOpts {
    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }
    pub fn data(&self) -> Option<String> {
        if self.data.is_empty() { None } else { Some(self.data.join(",")) }
    }
    /// Flags that need a remount after a bind mount (bind ignores them on the first call).
    pub fn remount_flags(&self) -> MsFlags {
        self.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT)
    }
}

/// (name, clear?, flag)
pub const FLAGS: &[(&str, bool, MsFlags)] = &[
    ("async", true, MsFlags::MS_SYNCHRONOUS),
    ("atime", true, MsFlags::MS_NOATIME),
    ("bind", false, MsFlags::MS_BIND),
    ("defaults", false, MsFlags::empty()),
    ("dev", true, MsFlags::MS_NODEV),
    ("diratime", true, MsFlags::MS_NODIRATIME),
    ("dirsync", false, MsFlags::MS_DIRSYNC),
    ("exec", true, MsFlags::MS_NOEXEC),
    ("mand", false, MsFlags::MS_MANDLOCK),
    ("noatime", false, MsFlags::MS_NOATIME),
    ("nodev", false, MsFlags::MS_NODEV),
    ("nodiratime", false, MsFlags::MS_NODIRATIME),
    ("noexec", false, MsFlags::MS_NOEXEC),
    ("nomand", true, MsFlags::MS_MANDLOCK),
    ("norelatime", true, MsFlags::MS_RELATIME),
    ("nostrictatime", true, MsFlags::MS_STRICTATIME),
    ("nosuid", false, MsFlags::MS_NOSUID),
    ("rbind", false, MsFlags::MS_BIND.union(MsFlags::MS_REC)),
    ("relatime", false, MsFlags::MS_RELATIME),
    ("remount", false, MsFlags::MS_REMOUNT),
    ("ro", false, MsFlags::MS_RDONLY),
    ("rw", true, MsFlags::MS_RDONLY),
    ("strictatime", false, MsFlags::MS_STRICTATIME),
    ("suid", true, MsFlags::MS_NOSUID),
    ("sync", false, MsFlags::MS_SYNCHRONOUS),
    ("lazytime", false, MsFlags::MS_LAZYTIME),
    ("nolazytime", true, MsFlags::MS_LAZYTIME),
    ("silent", false, MsFlags::MS_SILENT),
    ("loud", true, MsFlags::MS_SILENT),
];

pub const PROPAGATION: &[(&str, MsFlags)] = &[
    ("private", MsFlags::MS_PRIVATE),
    ("rprivate", MsFlags::MS_PRIVATE.union(MsFlags::MS_REC)),
    ("shared", MsFlags::MS_SHARED),
    ("rshared", MsFlags::MS_SHARED.union(MsFlags::MS_REC)),
    ("slave", MsFlags::MS_SLAVE),
    ("rslave", MsFlags::MS_SLAVE.union(MsFlags::MS_REC)),
    ("unbindable", MsFlags::MS_UNBINDABLE),
    ("runbindable", MsFlags::MS_UNBINDABLE.union(MsFlags::MS_REC)),
];

/// The propagation flags of a `rootfsPropagation` value.
pub fn propagation(name: &str) -> Option<MsFlags> {
    PROPAGATION.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// Options that runc and crun know but tinyrt does not implement yet: refused, never ignored.
const UNSUPPORTED: &[&str] = &["idmap", "ridmap", "tmpcopyup", "copy-symlink"];

/// Validate one option string (used by the spec validation pass).
pub fn check_option(o: &str) -> Result<(), String> {
    if o.is_empty() {
        return Err("empty option".into());
    }
    if o.contains(',') {
        return Err(format!("{o:?}: give options as separate list items"));
    }
    if UNSUPPORTED.contains(&o) {
        return Err(format!("{o:?} is not supported by tinyrt yet"));
    }
    Ok(())
}

pub fn parse(options: &[String]) -> MountOpts {
    let mut m = MountOpts::default();
    for o in options {
        if let Some((_, clear, f)) = FLAGS.iter().find(|(n, _, _)| n == o) {
            if *clear {
                m.flags.remove(*f);
                m.cleared.insert(*f);
            } else {
                m.flags.insert(*f);
                m.cleared.remove(*f);
            }
        } else if let Some(p) = propagation(o) {
            m.propagation.push(p);
        } else {
            m.data.push(o.clone());
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(opts: &[&str]) -> MountOpts {
        parse(&opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn flags_data_and_propagation() {
        let m = p(&["nosuid", "strictatime", "mode=755", "size=65536k", "rslave"]);
        assert_eq!(m.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(m.data().as_deref(), Some("mode=755,size=65536k"));
        assert_eq!(m.propagation, vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]);
    }

    #[test]
    fn later_options_win() {
        assert_eq!(p(&["ro", "rw"]).flags, MsFlags::empty());
        assert_eq!(p(&["ro", "rw"]).cleared, MsFlags::MS_RDONLY);
        assert_eq!(p(&["rw", "ro"]).cleared, MsFlags::empty());
        assert!(p(&["rbind", "ro"]).is_bind());
        assert_eq!(p(&["rbind", "ro"]).remount_flags(), MsFlags::MS_RDONLY);
    }

    #[test]
    fn check() {
        assert!(check_option("").is_err());
        assert!(check_option("a,b").is_err());
        assert!(check_option("idmap").is_err());
        assert!(check_option("mode=0755").is_ok());
    }
}
