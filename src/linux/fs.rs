//! Path resolution confined to a root directory. Every path taken from config.json is
//! resolved with openat2(RESOLVE_IN_ROOT): symlinks (absolute or `..`) cannot leave the root,
//! and the result is an O_PATH fd that mounts target through /proc/self/fd/N, so a path
//! swapped after the check is never followed (runc CVE-2021-30465 class).

use super::{Ctx, Result};
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{Mode, SFlag, mknodat};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path};

/// What to create at a missing final component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Make {
    Nothing,
    Dir,
    File,
}

fn how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// Open `path` (taken as relative to `root` even when absolute) as an O_PATH fd.
pub fn open_in_root(root: &impl AsFd, path: &Path) -> nix::Result<OwnedFd> {
    openat2(root.as_fd(), rel(path), how(OFlag::O_PATH | OFlag::O_NOFOLLOW))
}

/// Like [`open_in_root`] but follows a final symlink (still inside the root).
pub fn open_in_root_follow(root: &impl AsFd, path: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    openat2(root.as_fd(), rel(path), how(flags))
}

fn rel(path: &Path) -> &Path {
    let r = path.strip_prefix("/").unwrap_or(path);
    if r.as_os_str().is_empty() { Path::new(".") } else { r }
}

/// Resolve `path` inside `root`, creating missing directories on the way and the final
/// component as `make` says. Returns an O_PATH fd of the (followed) final component.
///
/// A dangling symlink on the way (say /var/run -> ../run where /run is missing, or a link to
/// a host path that does not exist in the rootfs) is followed as the kernel would, inside the
/// root: what it points to is created there, as runc's MkdirAllInRoot does. `..` components
/// are left to openat2, which keeps them inside the root.
pub fn resolve_create(root: &impl AsFd, path: &Path, make: Make, mode: u32) -> Result<OwnedFd> {
    let show = || format!("resolving {} in the rootfs", path.display());
    match open_in_root_follow(root, path, OFlag::O_PATH) {
        Ok(fd) => return Ok(fd),
        Err(nix::errno::Errno::ENOENT) if make != Make::Nothing => {}
        Err(e) => return Err(e).ctx(show),
    }
    let mut target = path.to_path_buf();
    'restart: for _ in 0..40 {
        let comps: Vec<Component> = target
            .components()
            .filter(|c| matches!(c, Component::Normal(_) | Component::ParentDir))
            .collect();
        let mut cur: OwnedFd = open_in_root_follow(root, Path::new("/"), OFlag::O_PATH | OFlag::O_DIRECTORY).ctx(show)?;
        let mut sofar = std::path::PathBuf::from("/");
        for (i, c) in comps.iter().enumerate() {
            let name = c.as_os_str();
            let parent = sofar.clone();
            sofar.push(name);
            let last = i + 1 == comps.len();
            match open_in_root_follow(root, &sofar, OFlag::O_PATH) {
                Ok(fd) => {
                    cur = fd;
                    continue;
                }
                Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => return Err(e).ctx(show),
            }
            // A dangling symlink: go on from where it points (inside the root).
            if let Ok(link) = nix::fcntl::readlinkat(cur.as_fd(), name) {
                let link = std::path::PathBuf::from(link);
                let mut next = if link.is_absolute() { link } else { parent.join(link) };
                for rest in &comps[i + 1..] {
                    next.push(rest.as_os_str());
                }
                target = next;
                continue 'restart;
            }
            // `cur` is the resolved parent; create the component in it.
            if last && make == Make::File {
                match mknodat(cur.as_fd(), name, SFlag::S_IFREG, Mode::from_bits_truncate(mode), 0) {
                    Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                    Err(e) => return Err(e).ctx(|| format!("creating {}", sofar.display())),
                }
            } else {
                match nix::sys::stat::mkdirat(cur.as_fd(), name, Mode::from_bits_truncate(if last { mode } else { 0o755 })) {
                    Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                    Err(e) => return Err(e).ctx(|| format!("creating directory {}", sofar.display())),
                }
            }
            cur = open_in_root_follow(root, &sofar, OFlag::O_PATH).ctx(show)?;
        }
        return Ok(cur);
    }
    Err(nix::errno::Errno::ELOOP).ctx(show)
}

/// The /proc/self/fd path of an fd, for syscalls that only take paths (mount).
pub fn fd_path(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// True if `fd` refers to a directory.
pub fn is_dir(fd: &impl AsFd) -> bool {
    nix::sys::stat::fstat(fd.as_fd())
        .map(|s| s.st_mode & libc::S_IFMT == libc::S_IFDIR)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::open;

    #[test]
    fn symlinks_stay_inside_root() {
        let dir = std::env::temp_dir().join(format!("tinyrt-fs-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("root/etc")).unwrap();
        std::os::unix::fs::symlink("/", dir.join("root/escape")).unwrap();
        std::os::unix::fs::symlink("../../../..", dir.join("root/etc/up")).unwrap();
        let root = open(&dir.join("root"), OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        // Creating through an absolute symlink lands inside the root.
        resolve_create(&root, Path::new("/escape/tinyrt-made"), Make::Dir, 0o755).unwrap();
        assert!(dir.join("root/tinyrt-made").is_dir());
        resolve_create(&root, Path::new("/etc/up/x/f"), Make::File, 0o644)
            .map_err(|e| e.to_string())
            .unwrap();
        assert!(dir.join("root/x/f").is_file());
        assert!(!Path::new("/tinyrt-made").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
