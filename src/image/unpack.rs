//! Unpacking one layer tar into a directory, the way overlayfs wants it: `.wh.NAME` becomes
//! a 0/0 character device NAME, `.wh..wh..opq` becomes `trusted.overlay.opaque=y` on its
//! directory. Ownership, modes, times, xattrs, hard links, symlinks and device nodes are
//! kept.
//!
//! Safety: every entry name is checked (no absolute paths, no `..`), and every parent
//! directory is opened with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS) from the layer
//! root, so a symlink planted by an earlier entry can never lead a later one out of the layer:
//! the kernel refuses (EXDEV) and the unpack fails naming the entry. The last component is
//! never followed (O_NOFOLLOW, mknodat, symlinkat, linkat without AT_SYMLINK_FOLLOW).

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{Mode, SFlag};
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("tar entry {entry:?} is unsafe: {why}")]
    Unsafe { entry: String, why: String },
    #[error("tar entry {entry:?}: {op}: {err}")]
    Sys { entry: String, op: String, err: Errno },
    #[error("tar entry {entry:?}: {op}: {err}")]
    Io { entry: String, op: String, err: std::io::Error },
    #[error("tar entry {entry:?}: unsupported entry type {kind}")]
    Unsupported { entry: String, kind: String },
    #[error("reading the layer tar: {0}")]
    Tar(std::io::Error),
}

pub type Result<T> = std::result::Result<T, UnpackError>;

/// What one unpack did.
#[derive(Debug, Default, Clone, Copy)]
pub struct UnpackStats {
    pub entries: u64,
    pub bytes: u64,
}

/// The prefix of a whiteout entry.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The name of an opaque-directory marker entry.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The xattr overlayfs reads to make a directory opaque.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// An entry name as its components; errors on an absolute path or a `..` component.
pub fn clean_path(raw: &[u8]) -> std::result::Result<Vec<OsString>, String> {
    if raw.first() == Some(&b'/') {
        return Err("absolute path".into());
    }
    if raw.contains(&0) {
        return Err("NUL byte in the name".into());
    }
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("`..` component (path traversal)".into()),
            c => out.push(OsString::from_vec(c.to_vec())),
        }
    }
    Ok(out)
}

fn show(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

fn join(comps: &[OsString]) -> PathBuf {
    comps.iter().collect()
}

struct Ctx<'a> {
    root: OwnedFd,
    entry: &'a str,
}

impl Ctx<'_> {
    fn sys(&self, op: impl Into<String>) -> impl FnOnce(Errno) -> UnpackError + '_ {
        let op = op.into();
        move |err| UnpackError::Sys {
            entry: self.entry.to_string(),
            op,
            err,
        }
    }

    fn io(&self, op: impl Into<String>) -> impl FnOnce(std::io::Error) -> UnpackError + '_ {
        let op = op.into();
        move |err| UnpackError::Io {
            entry: self.entry.to_string(),
            op,
            err,
        }
    }

    fn unsafe_(&self, why: impl Into<String>) -> UnpackError {
        UnpackError::Unsafe {
            entry: self.entry.to_string(),
            why: why.into(),
        }
    }

    fn open_beneath(&self, rel: &Path) -> std::result::Result<OwnedFd, Errno> {
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
        openat2(self.root.as_fd(), rel, how)
    }

    /// Open the directory `comps` (relative to the layer root), making missing ones
    /// (mode 0755) when `create`. Never leaves the layer root.
    fn open_dir(&self, comps: &[OsString], create: bool) -> Result<OwnedFd> {
        let full = join(comps);
        let map = |e: Errno, what: &Path| match e {
            Errno::EXDEV | Errno::ELOOP => self.unsafe_(format!("{} leads out of the layer (through a symlink)", what.display())),
            Errno::ENOTDIR => self.unsafe_(format!("{} is not a directory", what.display())),
            e => UnpackError::Sys {
                entry: self.entry.to_string(),
                op: format!("open {}", what.display()),
                err: e,
            },
        };
        match self.open_beneath(&full) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) if create => {}
            Err(e) => return Err(map(e, &full)),
        }
        let mut cur = self.open_beneath(Path::new("")).map_err(|e| map(e, Path::new(".")))?;
        for i in 1..=comps.len() {
            let prefix = join(&comps[..i]);
            cur = match self.open_beneath(&prefix) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => {
                    match nix::sys::stat::mkdirat(cur.as_fd(), comps[i - 1].as_os_str(), Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(map(e, &prefix)),
                    }
                    self.open_beneath(&prefix).map_err(|e| map(e, &prefix))?
                }
                Err(e) => return Err(map(e, &prefix)),
            };
        }
        Ok(cur)
    }
}

/// The file type of `name` in `dir`, not following a symlink; None if absent.
fn lstat_at(dir: &OwnedFd, name: &OsStr) -> std::result::Result<Option<SFlag>, Errno> {
    match nix::sys::stat::fstatat(dir.as_fd(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT))),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The path of `name` in the directory open as `dir`, through /proc (for the calls that
/// take no dirfd: lsetxattr, remove_dir_all). The dir fd was opened safely; the name is one
/// component, never followed by the callers.
fn proc_path(dir: &OwnedFd, name: &OsStr) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name)
}

fn lsetxattr(path: &Path, key: &[u8], value: &[u8]) -> std::result::Result<(), Errno> {
    let p = CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    let k = CString::new(key).map_err(|_| Errno::EINVAL)?;
    let r = unsafe { libc::lsetxattr(p.as_ptr(), k.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    Errno::result(r).map(drop)
}

fn fsetxattr(fd: &impl AsRawFd, key: &[u8], value: &[u8]) -> std::result::Result<(), Errno> {
    let k = CString::new(key).map_err(|_| Errno::EINVAL)?;
    let r = unsafe { libc::fsetxattr(fd.as_raw_fd(), k.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    Errno::result(r).map(drop)
}

/// Metadata of one entry, read from its header before its data.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Meta {
    fn times(&self) -> [nix::sys::time::TimeSpec; 2] {
        let t = nix::sys::time::TimeSpec::new(self.mtime, 0);
        [t, t]
    }
}

/// Remove whatever is at `name` unless it is a directory and `keep_dir`.
fn clear(ctx: &Ctx, dir: &OwnedFd, name: &OsStr, keep_dir: bool) -> Result<bool> {
    let kind = lstat_at(dir, name).map_err(ctx.sys("lstat"))?;
    match kind {
        None => Ok(false),
        Some(SFlag::S_IFDIR) if keep_dir => Ok(true),
        Some(SFlag::S_IFDIR) => {
            std::fs::remove_dir_all(proc_path(dir, name)).map_err(ctx.io("remove the directory in the way"))?;
            Ok(false)
        }
        Some(_) => {
            nix::unistd::unlinkat(dir.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir)
                .map_err(ctx.sys("unlink the file in the way"))?;
            Ok(false)
        }
    }
}

/// Set owner, mode, xattrs of something opened as `fd` (a regular file or directory).
fn apply_fd(ctx: &Ctx, fd: &File, m: &Meta) -> Result<()> {
    nix::unistd::fchown(fd.as_fd(), Some(m.uid.into()), Some(m.gid.into())).map_err(ctx.sys("fchown"))?;
    nix::sys::stat::fchmod(fd.as_fd(), Mode::from_bits_truncate(m.mode & 0o7777)).map_err(ctx.sys("fchmod"))?;
    for (k, v) in &m.xattrs {
        match fsetxattr(fd, k, v) {
            Ok(()) => {}
            // A label the host cannot represent is not the image's content.
            Err(Errno::EOPNOTSUPP) if k.starts_with(b"security.selinux") => {}
            Err(e) => return Err(ctx.sys(format!("setxattr {}", show(k)))(e)),
        }
    }
    Ok(())
}

/// Set owner, mode (not for symlinks), xattrs and times on `name` in `dir`, not following it.
fn apply_at(ctx: &Ctx, dir: &OwnedFd, name: &OsStr, m: &Meta, symlink: bool) -> Result<()> {
    nix::unistd::fchownat(
        dir.as_fd(),
        name,
        Some(m.uid.into()),
        Some(m.gid.into()),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(ctx.sys("lchown"))?;
    if !symlink {
        // Not a symlink (we just made it with mknodat), so following is harmless.
        nix::sys::stat::fchmodat(
            dir.as_fd(),
            name,
            Mode::from_bits_truncate(m.mode & 0o7777),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(ctx.sys("chmod"))?;
    }
    let p = proc_path(dir, name);
    for (k, v) in &m.xattrs {
        match lsetxattr(&p, k, v) {
            Ok(()) => {}
            Err(Errno::EOPNOTSUPP | Errno::EPERM) if symlink || k.starts_with(b"security.selinux") => {}
            Err(e) => return Err(ctx.sys(format!("setxattr {}", show(k)))(e)),
        }
    }
    let [a, t] = m.times();
    nix::sys::stat::utimensat(dir.as_fd(), name, &a, &t, nix::sys::stat::UtimensatFlags::NoFollowSymlink).map_err(ctx.sys("utimensat"))?;
    Ok(())
}

/// Unpack the (uncompressed) layer tar `archive` into `dest`, an existing empty directory.
pub fn unpack(archive: impl Read, dest: &Path) -> Result<UnpackStats> {
    let root: OwnedFd = File::open(dest)
        .map_err(|e| UnpackError::Io {
            entry: ".".into(),
            op: format!("open {}", dest.display()),
            err: e,
        })?
        .into();
    let mut ar = tar::Archive::new(archive);
    let mut stats = UnpackStats::default();
    // Directory times are set last: adding children changes them.
    let mut dir_times: Vec<(Vec<OsString>, i64)> = Vec::new();
    for entry in ar.entries().map_err(UnpackError::Tar)? {
        let mut e = entry.map_err(UnpackError::Tar)?;
        let raw = e.path_bytes().into_owned();
        let name_shown = show(&raw);
        let ctx = Ctx {
            root: root.try_clone().map_err(|err| UnpackError::Io {
                entry: name_shown.clone(),
                op: "dup".into(),
                err,
            })?,
            entry: &name_shown,
        };
        let kind = e.header().entry_type();
        if matches!(kind, tar::EntryType::XGlobalHeader | tar::EntryType::XHeader) {
            continue;
        }
        let comps = clean_path(&raw).map_err(|why| ctx.unsafe_(why))?;
        stats.entries += 1;
        let h = e.header();
        let mut m = Meta {
            mode: h.mode().map_err(UnpackError::Tar)?,
            uid: h.uid().map_err(UnpackError::Tar)? as u32,
            gid: h.gid().map_err(UnpackError::Tar)? as u32,
            mtime: h.mtime().map_err(UnpackError::Tar)? as i64,
            xattrs: Vec::new(),
        };
        if let Some(pax) = e.pax_extensions().map_err(UnpackError::Tar)? {
            for ext in pax {
                let ext = ext.map_err(UnpackError::Tar)?;
                if let Some(k) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                    m.xattrs.push((k.to_vec(), ext.value_bytes().to_vec()));
                }
            }
        }
        let Some((name, parent)) = comps.split_last() else {
            // The layer root itself ("./").
            if kind.is_dir() {
                let f = File::open(dest).map_err(ctx.io("open the layer root"))?;
                apply_fd(&ctx, &f, &m)?;
                dir_times.push((vec![], m.mtime));
            }
            continue;
        };
        let name_b = name.as_bytes();
        if name_b == OPAQUE_MARKER.as_bytes() {
            let dir = ctx.open_dir(parent, true)?;
            fsetxattr(&dir, OPAQUE_XATTR.as_bytes(), b"y").map_err(ctx.sys(format!("setxattr {OPAQUE_XATTR}")))?;
            continue;
        }
        if name_b.starts_with(b".wh..wh.") {
            // aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): not content.
            continue;
        }
        if let Some(target) = name_b.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if target.is_empty() || target == b"." || target == b".." {
                return Err(ctx.unsafe_("whiteout of an invalid name"));
            }
            let target = OsStr::from_bytes(target);
            let dir = ctx.open_dir(parent, true)?;
            clear(&ctx, &dir, target, false)?;
            nix::sys::stat::mknodat(dir.as_fd(), target, SFlag::S_IFCHR, Mode::empty(), 0).map_err(ctx.sys("mknod (whiteout)"))?;
            continue;
        }
        let dir = ctx.open_dir(parent, true)?;
        match kind {
            tar::EntryType::Directory => {
                if !clear(&ctx, &dir, name, true)? {
                    nix::sys::stat::mkdirat(dir.as_fd(), name.as_os_str(), Mode::from_bits_truncate(0o700)).map_err(ctx.sys("mkdir"))?;
                }
                let fd = ctx.open_dir(&comps, false)?;
                apply_fd(&ctx, &File::from(fd), &m)?;
                dir_times.push((comps.clone(), m.mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                clear(&ctx, &dir, name, false)?;
                let fd = nix::fcntl::openat(
                    dir.as_fd(),
                    name.as_os_str(),
                    OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(ctx.sys("create"))?;
                let mut f = File::from(fd);
                let n = std::io::copy(&mut e, &mut f).map_err(UnpackError::Tar)?;
                stats.bytes += n;
                apply_fd(&ctx, &f, &m)?;
                let [a, t] = m.times();
                nix::sys::stat::futimens(f.as_fd(), &a, &t).map_err(ctx.sys("futimens"))?;
            }
            tar::EntryType::Symlink => {
                let target = e
                    .link_name_bytes()
                    .ok_or_else(|| ctx.unsafe_("symlink without a target"))?
                    .into_owned();
                clear(&ctx, &dir, name, false)?;
                // A symlink may point anywhere: it is only data here, and is never followed.
                nix::unistd::symlinkat(OsStr::from_bytes(&target), dir.as_fd(), name.as_os_str()).map_err(ctx.sys("symlink"))?;
                apply_at(&ctx, &dir, name, &m, true)?;
            }
            tar::EntryType::Link => {
                let target = e
                    .link_name_bytes()
                    .ok_or_else(|| ctx.unsafe_("hard link without a target"))?
                    .into_owned();
                let tcomps = clean_path(&target).map_err(|why| ctx.unsafe_(format!("hard link target {:?}: {why}", show(&target))))?;
                let Some((tname, tparent)) = tcomps.split_last() else {
                    return Err(ctx.unsafe_("hard link to the layer root"));
                };
                let tdir = ctx.open_dir(tparent, false)?;
                if tcomps == comps {
                    continue;
                }
                clear(&ctx, &dir, name, false)?;
                nix::unistd::linkat(
                    tdir.as_fd(),
                    tname.as_os_str(),
                    dir.as_fd(),
                    name.as_os_str(),
                    nix::fcntl::AtFlags::empty(),
                )
                .map_err(ctx.sys(format!("link to {:?}", show(&target))))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let h = e.header();
                let major = h.device_major().map_err(UnpackError::Tar)?.unwrap_or(0);
                let minor = h.device_minor().map_err(UnpackError::Tar)?.unwrap_or(0);
                let ty = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                clear(&ctx, &dir, name, false)?;
                let dev = nix::sys::stat::makedev(major.into(), minor.into());
                nix::sys::stat::mknodat(dir.as_fd(), name.as_os_str(), ty, Mode::from_bits_truncate(0o600), dev)
                    .map_err(ctx.sys("mknod"))?;
                apply_at(&ctx, &dir, name, &m, false)?;
            }
            other => {
                return Err(UnpackError::Unsupported {
                    entry: name_shown.clone(),
                    kind: format!("{other:?}"),
                });
            }
        }
    }
    for (comps, mtime) in dir_times.iter().rev() {
        let entry = show(join(comps).as_os_str().as_bytes());
        let ctx = Ctx {
            root: root.try_clone().map_err(UnpackError::Tar)?,
            entry: &entry,
        };
        let fd = ctx.open_dir(comps, false)?;
        let t = nix::sys::time::TimeSpec::new(*mtime, 0);
        nix::sys::stat::futimens(fd.as_fd(), &t, &t).map_err(ctx.sys("futimens"))?;
    }
    Ok(stats)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    /// A scratch dir removed on drop.
    pub(crate) struct Scratch(pub PathBuf);
    impl Scratch {
        pub(crate) fn new(tag: &str) -> Scratch {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let p = std::env::temp_dir().join(format!("tinyrt-img-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A raw tar header with any name (the tar crate refuses `..` and absolute names).
    pub(crate) fn raw_entry(b: &mut tar::Builder<Vec<u8>>, name: &[u8], kind: tar::EntryType, link: Option<&[u8]>, data: &[u8]) {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l);
        }
        h.set_entry_type(kind);
        h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(data.len() as u64);
        h.set_mtime(1_000_000);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    pub(crate) fn tar_of(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        f(&mut b);
        b.into_inner().unwrap()
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut v = Vec::new();
        fn walk(base: &Path, d: &Path, v: &mut Vec<String>) {
            for e in std::fs::read_dir(d).unwrap().flatten() {
                let p = e.path();
                v.push(p.strip_prefix(base).unwrap().display().to_string());
                if e.file_type().unwrap().is_dir() {
                    walk(base, &p, v);
                }
            }
        }
        walk(dir, dir, &mut v);
        v.sort();
        v
    }

    #[test]
    fn clean_paths() {
        assert_eq!(clean_path(b"./a//b/").unwrap(), vec![OsString::from("a"), OsString::from("b")]);
        assert!(clean_path(b"./").unwrap().is_empty());
        assert!(clean_path(b"../x").is_err());
        assert!(clean_path(b"a/../../x").is_err());
        assert!(clean_path(b"/etc/passwd").is_err());
    }

    #[test]
    fn whiteouts_links_devices_metadata() {
        let s = Scratch::new("unpack");
        let dest = s.0.join("l");
        std::fs::create_dir(&dest).unwrap();
        let tar = tar_of(|b| {
            raw_entry(b, b"etc/", tar::EntryType::Directory, None, b"");
            raw_entry(b, b"etc/hostname", tar::EntryType::Regular, None, b"box\n");
            raw_entry(b, b"etc/hard", tar::EntryType::Link, Some(b"etc/hostname"), b"");
            raw_entry(b, b"etc/soft", tar::EntryType::Symlink, Some(b"/nowhere/../x"), b"");
            raw_entry(b, b"etc/.wh.gone", tar::EntryType::Regular, None, b"");
            raw_entry(b, b"data/.wh..wh..opq", tar::EntryType::Regular, None, b"");
            raw_entry(b, b"dev/null", tar::EntryType::Char, None, b"");
            let mut h = tar::Header::new_gnu();
            h.set_path("bin/tool").unwrap();
            h.set_mode(0o4755);
            h.set_uid(1234);
            h.set_gid(5678);
            h.set_size(2);
            h.set_mtime(42);
            h.set_cksum();
            b.append(&h, &b"ok"[..]).unwrap();
        });
        unpack(&tar[..], &dest).unwrap();
        let md = std::fs::symlink_metadata(dest.join("etc/gone")).unwrap();
        assert!(md.file_type().is_char_device() && md.rdev() == 0);
        let mut buf = [0u8; 4];
        let p = CString::new(dest.join("data").as_os_str().as_bytes()).unwrap();
        let n = unsafe { libc::lgetxattr(p.as_ptr(), c"trusted.overlay.opaque".as_ptr(), buf.as_mut_ptr().cast(), 4) };
        assert_eq!(&buf[..n as usize], b"y");
        assert_eq!(std::fs::metadata(dest.join("etc/hard")).unwrap().nlink(), 2);
        assert_eq!(std::fs::read_link(dest.join("etc/soft")).unwrap(), Path::new("/nowhere/../x"));
        let md = std::fs::metadata(dest.join("bin/tool")).unwrap();
        assert_eq!((md.mode() & 0o7777, md.uid(), md.gid(), md.mtime()), (0o4755, 1234, 5678, 42));
        assert_eq!(std::fs::metadata(dest.join("etc")).unwrap().mtime(), 1_000_000);
        assert!(
            std::fs::symlink_metadata(dest.join("dev/null"))
                .unwrap()
                .file_type()
                .is_char_device()
        );
    }

    #[test]
    fn hostile_entries_are_rejected() {
        let s = Scratch::new("hostile");
        let outside = s.0.join("outside");
        std::fs::create_dir(&outside).unwrap();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("dotdot", tar_of(|b| raw_entry(b, b"../x", tar::EntryType::Regular, None, b"pwned"))),
            (
                "nested dotdot",
                tar_of(|b| raw_entry(b, b"a/../../x", tar::EntryType::Regular, None, b"pwned")),
            ),
            (
                "absolute",
                tar_of(|b| raw_entry(b, b"/tmp/x", tar::EntryType::Regular, None, b"pwned")),
            ),
            (
                "symlink out",
                tar_of(|b| {
                    raw_entry(b, b"evil", tar::EntryType::Symlink, Some(b"../outside"), b"");
                    raw_entry(b, b"evil/pwned", tar::EntryType::Regular, None, b"pwned");
                }),
            ),
            (
                "absolute symlink",
                tar_of(|b| {
                    let t = outside.as_os_str().as_bytes().to_vec();
                    raw_entry(b, b"evil", tar::EntryType::Symlink, Some(&t), b"");
                    raw_entry(b, b"evil/pwned", tar::EntryType::Regular, None, b"pwned");
                }),
            ),
            (
                "hard link out",
                tar_of(|b| raw_entry(b, b"h", tar::EntryType::Link, Some(b"../outside/f"), b"")),
            ),
        ];
        for (what, tar) in cases {
            let dest = s.0.join("layer");
            std::fs::create_dir(&dest).unwrap();
            let err = unpack(&tar[..], &dest).expect_err(what);
            assert!(matches!(err, UnpackError::Unsafe { .. }), "{what}: {err}");
            assert!(listing(&outside).is_empty(), "{what}: wrote outside");
            assert!(!s.0.join("x").exists(), "{what}");
            std::fs::remove_dir_all(&dest).unwrap();
        }
    }
}
