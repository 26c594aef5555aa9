//! AppArmor profiles and SELinux labels. When the host has the LSM, the profile or label is
//! set for the exec (the kernel applies it as the program starts); when it does not, a config
//! that asks for one is refused naming the field, as runc refuses it, rather than running the
//! container without the confinement it asked for.

use super::{Ctx, Result};

pub fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.trim() == "Y")
}

pub fn selinux_enabled() -> bool {
    std::path::Path::new("/sys/fs/selinux/enforce").exists()
}

/// Refuse what the host cannot apply (used by validation, before anything is made).
pub fn check(apparmor: Option<&str>, selinux: Option<&str>) -> std::result::Result<(), (String, String)> {
    if apparmor.is_some_and(|p| !p.is_empty()) && !apparmor_enabled() {
        return Err(("process.apparmorProfile".into(), "AppArmor is not enabled on this host".into()));
    }
    if selinux.is_some_and(|l| !l.is_empty()) && !selinux_enabled() {
        return Err(("process.selinuxLabel".into(), "SELinux is not enabled on this host".into()));
    }
    Ok(())
}

/// Arrange for the profile and label to take effect at the next execve.
pub fn apply_on_exec(apparmor: Option<&str>, selinux: Option<&str>) -> Result<()> {
    if let Some(p) = apparmor.filter(|p| !p.is_empty()) {
        let file = if std::path::Path::new("/proc/self/attr/apparmor/exec").exists() {
            "/proc/self/attr/apparmor/exec"
        } else {
            "/proc/self/attr/exec"
        };
        std::fs::write(file, format!("exec {p}")).ctx(|| format!("process.apparmorProfile: setting {p:?} in {file}"))?;
    }
    if let Some(l) = selinux.filter(|l| !l.is_empty()) {
        std::fs::write("/proc/self/attr/exec", l).ctx(|| format!("process.selinuxLabel: setting {l:?}"))?;
    }
    Ok(())
}
