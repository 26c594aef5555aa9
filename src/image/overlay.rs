//! The container's rootfs as an overlay: the image's layers (read-only, shared) below a
//! per-container upper dir. For `create` and `delete`:
//!
//! * [`mount_rootfs`] mounts it on the bundle's rootfs dir when the spec's annotations
//!   declare one (see `config`), with upper/work dirs in `<store>/containers/<key>/`, and
//!   records the container's use of its layers there (so GC keeps them);
//! * [`unmount_rootfs`] unmounts and removes the upper dir, unless
//!   `io.tinyrt.rootfs.keep-upper=true` (or `TINYRT_KEEP_UPPER=1`) keeps it for
//!   `tinyrt image diff`.
//!
//! The mount uses the new mount API (fsopen/fsconfig/fsmount/move_mount) with one
//! `lowerdir+` per layer (Linux 6.8+), so the number of layers is not limited by the
//! one-page mount(2) option string. Older kernels fall back to mount(2) with
//! `lowerdir=a:b:c,upperdir=...,workdir=...`; when those full paths do not fit in the page
//! (a few dozen layers), the layers are named as Docker's overlay2 does: short symlinks to
//! them in `<store>/containers/<key>/l/` (`l/0`, `l/1`, ... `l/1t`: the index in base 36),
//! and mount(2) is given `lowerdir=l/0:l/1:...,upperdir=upper,workdir=work`, relative paths
//! that it resolves against the cwd, so it runs with the cwd in the container's dir (the
//! process's own cwd restored after). The links go at unmount, or at once if the mount fails.
//! `TINYRT_OVERLAY_LEGACY=1` in the environment of `create` forces the mount(2) path (for
//! tests, on kernels that have `lowerdir+`).
//! Neither writes into the container's state dir: its path only names the container.

use super::store::{ContainerRecord, Digest, ImageStore, StoreError, is_mountpoint};
use super::unpack::{OPAQUE_MARKER, OPAQUE_XATTR, WHITEOUT_PREFIX};
use super::{ANN_KEEP_UPPER, ANN_LOWER, ANN_STORE};
use nix::errno::Errno;
use std::collections::HashMap;
use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("annotation {key}: {msg}")]
    Annotation { key: &'static str, msg: String },
    #[error("overlay on {rootfs}: {what}: {err}{detail}")]
    Mount {
        rootfs: PathBuf,
        what: String,
        err: Errno,
        detail: String,
    },
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type Result<T> = std::result::Result<T, OverlayError>;

/// A mounted container rootfs.
#[derive(Debug, Clone)]
pub struct OverlayMount {
    pub rootfs: PathBuf,
    /// The container's writable layer.
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Topmost first.
    pub lowers: Vec<PathBuf>,
    /// The key of `<store>/containers/<key>` (for `tinyrt image diff`).
    pub key: String,
    pub keep_upper: bool,
}

fn ioe(path: &Path) -> impl FnOnce(std::io::Error) -> OverlayError + '_ {
    move |err| OverlayError::Io {
        path: path.to_path_buf(),
        err,
    }
}

/// The store named by the annotations (default: the default store).
fn store_of(annotations: &HashMap<String, String>) -> Result<ImageStore> {
    let root = super::root_from(annotations.get(ANN_STORE).map(Path::new));
    Ok(ImageStore::open(&root)?)
}

/// `<state dir name>-<hash of its path>`: unique across state roots.
pub fn container_key(container_state_dir: &Path) -> String {
    let abs = std::path::absolute(container_state_dir).unwrap_or_else(|_| container_state_dir.to_path_buf());
    let id = abs.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    format!("{id}-{}", &Digest::of(abs.as_os_str().as_bytes()).hex()[..12])
}

fn keep_upper(annotations: &HashMap<String, String>) -> bool {
    annotations.get(ANN_KEEP_UPPER).is_some_and(|v| v == "true" || v == "1")
        || std::env::var("TINYRT_KEEP_UPPER").is_ok_and(|v| v == "1" || v == "true")
}

/// The lower dirs an annotation map declares (topmost first); None if it declares none.
pub fn lowers_of(annotations: &HashMap<String, String>) -> Result<Option<Vec<PathBuf>>> {
    let Some(v) = annotations.get(ANN_LOWER) else { return Ok(None) };
    let bad = |msg: String| OverlayError::Annotation { key: ANN_LOWER, msg };
    let lowers: Vec<PathBuf> = v.split(':').filter(|s| !s.is_empty()).map(PathBuf::from).collect();
    if lowers.is_empty() {
        return Err(bad("names no layer directory".into()));
    }
    for l in &lowers {
        if !l.is_absolute() {
            return Err(bad(format!("{} is not an absolute path", l.display())));
        }
        if l.as_os_str().as_bytes().contains(&b',') {
            return Err(bad(format!("{} contains ','", l.display())));
        }
        if !l.is_dir() {
            return Err(bad(format!(
                "layer directory {} does not exist (removed from the store?)",
                l.display()
            )));
        }
    }
    Ok(Some(lowers))
}

/// Mount the overlay the annotations declare on `rootfs` (the spec's root.path, absolute);
/// Ok(None) when they declare none (a plain bundle). `container_state_dir` is
/// `<root>/<id>`; it names the container and is never written to.
pub fn mount_rootfs(annotations: &HashMap<String, String>, rootfs: &Path, container_state_dir: &Path) -> Result<Option<OverlayMount>> {
    let Some(lowers) = lowers_of(annotations)? else { return Ok(None) };
    let store = store_of(annotations)?;
    let rootfs = std::path::absolute(rootfs).map_err(ioe(rootfs))?;
    let state_dir = std::path::absolute(container_state_dir).map_err(ioe(container_state_dir))?;
    if is_mountpoint(&rootfs) {
        return Err(OverlayError::Mount {
            rootfs,
            what: "already a mount point (one bundle per container)".into(),
            err: Errno::EBUSY,
            detail: String::new(),
        });
    }
    std::fs::create_dir_all(&rootfs).map_err(ioe(&rootfs))?;
    let key = container_key(&state_dir);
    // GC holds the lock exclusively: our record is written before it can look.
    let _lock = store.lock_shared()?;
    let cdir = store.container_dir(&key);
    let (upper, work) = (cdir.join("upper"), cdir.join("work"));
    if cdir.exists() {
        // A leftover of the same container id and root (kept upper, or a crash): start clean.
        std::fs::remove_dir_all(&cdir).map_err(ioe(&cdir))?;
    }
    for d in [&upper, &work] {
        std::fs::create_dir_all(d).map_err(ioe(d))?;
    }
    std::fs::set_permissions(&cdir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).map_err(ioe(&cdir))?;
    std::fs::set_permissions(&upper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).map_err(ioe(&upper))?;
    let rec = ContainerRecord {
        key: key.clone(),
        id: state_dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        state_dir,
        rootfs: rootfs.clone(),
        lowers: lowers.clone(),
        keep_upper: keep_upper(annotations),
        mounted: true,
        created: crate::state::rfc3339(std::time::SystemTime::now()),
    };
    store.put_container(&rec)?;
    let m = OverlayMount {
        rootfs,
        upper,
        work,
        lowers,
        key,
        keep_upper: rec.keep_upper,
    };
    if let Err(e) = mount_overlay(&m) {
        let _ = store.remove_container(&m.key);
        return Err(e);
    }
    Ok(Some(m))
}

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

fn c(s: &[u8]) -> CString {
    CString::new(s).expect("no NUL in paths")
}

/// The kernel's messages about a failed fsconfig (the fs context log), as ": msg; msg".
fn fs_log(fd: &OwnedFd) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    for _ in 0..8 {
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        out.push(String::from_utf8_lossy(&buf[..n as usize]).trim().to_string());
    }
    if out.is_empty() {
        String::new()
    } else {
        format!(" ({})", out.join("; "))
    }
}

fn mount_overlay(m: &OverlayMount) -> Result<()> {
    let err = |what: String, err: Errno, detail: String| OverlayError::Mount {
        rootfs: m.rootfs.clone(),
        what,
        err,
        detail,
    };
    if legacy_forced() {
        return mount_legacy(m);
    }
    let fd = unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) };
    if fd < 0 {
        let e = Errno::last();
        if e == Errno::ENOSYS {
            return mount_legacy(m);
        }
        return Err(err("fsopen overlay".into(), e, String::new()));
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let set = |key: &str, val: &Path| -> std::result::Result<(), Errno> {
        let (k, v) = (c(key.as_bytes()), c(val.as_os_str().as_bytes()));
        let r = unsafe { libc::syscall(libc::SYS_fsconfig, fd.as_raw_fd(), FSCONFIG_SET_STRING, k.as_ptr(), v.as_ptr(), 0) };
        Errno::result(r).map(drop)
    };
    for (i, l) in m.lowers.iter().enumerate() {
        if let Err(e) = set("lowerdir+", l) {
            // No lowerdir+ (before 6.8): mount(2), if the options fit in a page.
            if i == 0 && e == Errno::EINVAL {
                return mount_legacy(m);
            }
            return Err(err(format!("lowerdir+ {}", l.display()), e, fs_log(&fd)));
        }
    }
    set("upperdir", &m.upper).map_err(|e| err(format!("upperdir {}", m.upper.display()), e, fs_log(&fd)))?;
    set("workdir", &m.work).map_err(|e| err(format!("workdir {}", m.work.display()), e, fs_log(&fd)))?;
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fd.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<u8>(),
            std::ptr::null::<u8>(),
            0,
        )
    };
    Errno::result(r).map_err(|e| err("create the overlay".into(), e, fs_log(&fd)))?;
    let mfd = unsafe { libc::syscall(libc::SYS_fsmount, fd.as_raw_fd(), FSMOUNT_CLOEXEC, 0) };
    let mfd = Errno::result(mfd).map_err(|e| err("fsmount".into(), e, fs_log(&fd)))?;
    let mfd = unsafe { OwnedFd::from_raw_fd(mfd as i32) };
    let target = c(m.rootfs.as_os_str().as_bytes());
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mfd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    Errno::result(r).map_err(|e| err("move_mount".into(), e, String::new()))?;
    Ok(())
}

/// The environment switch that makes `create` mount with mount(2), as on kernels without
/// `lowerdir+` (before 6.8): `1` or `true`.
pub const LEGACY_ENV: &str = "TINYRT_OVERLAY_LEGACY";
/// The dir in `<store>/containers/<key>/` holding the short links to the layers that mount(2)
/// is given when their full paths do not fit in its one-page option string.
pub const LINK_DIR: &str = "l";

fn legacy_forced() -> bool {
    std::env::var(LEGACY_ENV).is_ok_and(|v| v == "1" || v == "true")
}

/// The name of the link to the `i`th lower dir (topmost first): `i` in base 36.
fn short_name(mut i: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[i % 36]);
        i /= 36;
        if i == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII digits")
}

/// mount(2)'s overlay options: `lowerdir=` the lowers joined with `:`, `upperdir=`, `workdir=`.
fn overlay_options(lowers: &[PathBuf], upper: &Path, work: &Path) -> Vec<u8> {
    let mut o = b"lowerdir=".to_vec();
    for (i, l) in lowers.iter().enumerate() {
        if i > 0 {
            o.push(b':');
        }
        o.extend_from_slice(l.as_os_str().as_bytes());
    }
    for (k, v) in [(&b",upperdir="[..], upper), (b",workdir=", work)] {
        o.extend_from_slice(k);
        o.extend_from_slice(v.as_os_str().as_bytes());
    }
    o
}

/// What mount(2) is given.
#[derive(Debug, PartialEq)]
struct LegacyOptions {
    data: Vec<u8>,
    /// Some(dir): `data` names lower i by the link `l/<short_name(i)>` and the upper and work
    /// dirs relative to `dir` (the upper dir's parent, the container's dir), where mount(2)
    /// is to run; None: `data` has the full paths.
    relative_to: Option<PathBuf>,
}

/// The options for mount(2): the full paths if they fit in `limit` bytes (with the NUL: the
/// page mount(2) copies), else the short relative form; Err(the short form's length) if
/// neither fits.
fn legacy_options(lowers: &[PathBuf], upper: &Path, work: &Path, limit: usize) -> std::result::Result<LegacyOptions, usize> {
    let full = overlay_options(lowers, upper, work);
    if full.len() < limit {
        return Ok(LegacyOptions {
            data: full,
            relative_to: None,
        });
    }
    let base = upper.parent().unwrap_or(Path::new("/"));
    let rel = |p: &Path| p.strip_prefix(base).map(Path::to_path_buf).unwrap_or_else(|_| p.to_path_buf());
    let links: Vec<PathBuf> = (0..lowers.len()).map(|i| Path::new(LINK_DIR).join(short_name(i))).collect();
    let short = overlay_options(&links, &rel(upper), &rel(work));
    if short.len() >= limit {
        return Err(short.len());
    }
    Ok(LegacyOptions {
        data: short,
        relative_to: Some(base.to_path_buf()),
    })
}

/// Remove the links to the layers (`<dir>/l/`), if any. Never follows them.
fn remove_links(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir.join(LINK_DIR)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `<dir>/l/<short_name(i)>` -> lower i, for each lower (a leftover `l/` replaced).
fn make_links(dir: &Path, lowers: &[PathBuf]) -> Result<()> {
    let ld = dir.join(LINK_DIR);
    remove_links(dir).map_err(ioe(&ld))?;
    std::fs::create_dir(&ld).map_err(ioe(&ld))?;
    std::fs::set_permissions(&ld, std::os::unix::fs::PermissionsExt::from_mode(0o700)).map_err(ioe(&ld))?;
    for (i, l) in lowers.iter().enumerate() {
        let link = ld.join(short_name(i));
        std::os::unix::fs::symlink(l, &link).map_err(ioe(&link))?;
    }
    Ok(())
}

fn open_path_dir(path: &Path) -> std::result::Result<OwnedFd, Errno> {
    let p = c(path.as_os_str().as_bytes());
    let fd = unsafe { libc::open(p.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    Errno::result(fd).map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The process's cwd when made, which it goes back to when dropped.
struct SavedCwd(OwnedFd);

impl SavedCwd {
    fn save() -> std::result::Result<SavedCwd, Errno> {
        open_path_dir(Path::new(".")).map(SavedCwd)
    }
}

impl Drop for SavedCwd {
    fn drop(&mut self) {
        unsafe { libc::fchdir(self.0.as_raw_fd()) };
    }
}

/// mount(2) the overlay with `data` on `rootfs`; with the cwd in `cwd` if given (for the
/// relative paths in `data`), the process's cwd restored after (create is single-threaded).
fn mount2(rootfs: &Path, data: &[u8], cwd: Option<&Path>) -> std::result::Result<(), (String, Errno)> {
    let _restore = match cwd {
        Some(dir) => {
            let saved = SavedCwd::save().map_err(|e| ("open the cwd".to_string(), e))?;
            let there = open_path_dir(dir).map_err(|e| (format!("open {}", dir.display()), e))?;
            Errno::result(unsafe { libc::fchdir(there.as_raw_fd()) }).map_err(|e| (format!("chdir {}", dir.display()), e))?;
            Some(saved)
        }
        None => None,
    };
    nix::mount::mount(Some("overlay"), rootfs, Some("overlay"), nix::mount::MsFlags::empty(), Some(data))
        .map_err(|e| ("mount(2) overlay".to_string(), e))
}

fn mount_legacy(m: &OverlayMount) -> Result<()> {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as usize;
    let err = |what: String, err: Errno| OverlayError::Mount {
        rootfs: m.rootfs.clone(),
        what,
        err,
        detail: String::new(),
    };
    let opts = legacy_options(&m.lowers, &m.upper, &m.work, page).map_err(|len| {
        err(
            format!(
                "{} layers need {len} bytes of mount options even by short links, over the {page}-byte limit, and this kernel lacks lowerdir+ (Linux 6.8+)",
                m.lowers.len()
            ),
            Errno::E2BIG,
        )
    })?;
    let Some(dir) = &opts.relative_to else {
        return mount2(&m.rootfs, &opts.data, None).map_err(|(what, e)| err(what, e));
    };
    let r = make_links(dir, &m.lowers).and_then(|()| {
        mount2(&m.rootfs, &opts.data, Some(dir)).map_err(|(what, e)| {
            err(
                format!(
                    "{what} (the {} layers by their links in {})",
                    m.lowers.len(),
                    dir.join(LINK_DIR).display()
                ),
                e,
            )
        })
    });
    if r.is_err() {
        let _ = remove_links(dir);
    }
    r
}

/// Unmount the container's overlay (if mounted) and remove its upper/work dirs, unless the
/// upper is to be kept: then it stays (for `tinyrt image diff`) and its path is returned.
/// Idempotent; Ok(None) also for a plain bundle.
pub fn unmount_rootfs(annotations: &HashMap<String, String>, rootfs: &Path, container_state_dir: &Path) -> Result<Option<PathBuf>> {
    if !annotations.contains_key(ANN_LOWER) {
        return Ok(None);
    }
    let store = store_of(annotations)?;
    let rootfs = std::path::absolute(rootfs).map_err(ioe(rootfs))?;
    let key = container_key(container_state_dir);
    let rec = store.find_container(&key).ok();
    let mut target = rootfs.clone();
    if let Some(r) = &rec {
        target = r.rootfs.clone();
    }
    while is_mountpoint(&target) {
        if let Err(e) = nix::mount::umount2(&target, nix::mount::MntFlags::empty()) {
            // Busy (a process of another namespace holds it): detach, the kernel finishes later.
            nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH).map_err(|e2| OverlayError::Mount {
                rootfs: target.clone(),
                what: format!("unmount (after {e})"),
                err: e2,
                detail: String::new(),
            })?;
        }
    }
    // The links to the layers mount(2) may have been given: not needed once unmounted.
    let cdir = store.container_dir(&key);
    remove_links(&cdir).map_err(ioe(&cdir.join(LINK_DIR)))?;
    let Some(mut rec) = rec else {
        // No record: a create killed between making the upper/work dirs and writing the
        // record (which comes before the mount, so nothing was mounted or kept): remove them.
        store.remove_container(&key)?;
        return Ok(None);
    };
    if rec.keep_upper || keep_upper(annotations) {
        rec.mounted = false;
        rec.keep_upper = true;
        store.put_container(&rec)?;
        return Ok(Some(store.container_dir(&key).join("upper")));
    }
    store.remove_container(&key)?;
    Ok(None)
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    // "<len> <key>=<value>\n", where len counts itself.
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while body + len.to_string().len() != len {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

fn xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let p = c(path.as_os_str().as_bytes());
    let mut names = vec![0u8; 4096];
    let n = unsafe { libc::llistxattr(p.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return vec![];
    }
    let mut out = Vec::new();
    for name in names[..n as usize].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let s = String::from_utf8_lossy(name).into_owned();
        let k = c(name);
        let mut v = vec![0u8; 65536];
        let m = unsafe { libc::lgetxattr(p.as_ptr(), k.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        if m >= 0 {
            v.truncate(m as usize);
            out.push((s, v));
        }
    }
    out
}

/// Write the upper dir `upper` as a layer tar: overlayfs whiteouts (0/0 char devices) become
/// `.wh.NAME`, opaque dirs get a `.wh..wh..opq`, trusted.overlay.* xattrs are dropped.
pub fn diff_upper(upper: &Path, out: impl Write) -> std::io::Result<()> {
    let mut b = tar::Builder::new(out);
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    walk(&mut b, upper, Path::new(""), &mut links)?;
    b.into_inner()?.flush()
}

fn header_for(md: &std::fs::Metadata, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(md.mode() & 0o7777);
    h.set_uid(md.uid().into());
    h.set_gid(md.gid().into());
    h.set_mtime(md.mtime().max(0) as u64);
    h.set_size(0);
    h
}

fn append(
    b: &mut tar::Builder<impl Write>,
    h: &mut tar::Header,
    name: &Path,
    link: Option<&Path>,
    data: &[u8],
    x: &[(String, Vec<u8>)],
) -> std::io::Result<()> {
    let x: Vec<&(String, Vec<u8>)> = x.iter().filter(|(k, _)| !k.starts_with("trusted.overlay.")).collect();
    if !x.is_empty() {
        let mut pax = Vec::new();
        for (k, v) in x {
            pax.extend(pax_record(&format!("SCHILY.xattr.{k}"), v));
        }
        let mut ph = tar::Header::new_ustar();
        ph.set_entry_type(tar::EntryType::XHeader);
        ph.set_path("././@PaxHeader")?;
        ph.set_size(pax.len() as u64);
        ph.set_mode(0o644);
        ph.set_cksum();
        b.append(&ph, &pax[..])?;
    }
    match link {
        Some(l) => b.append_link(h, name, l),
        None => b.append_data(h, name, data),
    }
}

fn walk(b: &mut tar::Builder<impl Write>, root: &Path, rel: &Path, links: &mut HashMap<(u64, u64), PathBuf>) -> std::io::Result<()> {
    let dir = root.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = rel.join(e.file_name());
        let path = e.path();
        let md = std::fs::symlink_metadata(&path)?;
        let ft = md.file_type();
        let x = xattrs(&path);
        if ft.is_char_device() && md.rdev() == 0 {
            let wh = rel.join(format!("{WHITEOUT_PREFIX}{}", e.file_name().to_string_lossy()));
            let mut h = header_for(&md, tar::EntryType::Regular);
            h.set_mode(0o644);
            append(b, &mut h, &wh, None, b"", &[])?;
        } else if ft.is_dir() {
            let mut h = header_for(&md, tar::EntryType::Directory);
            append(b, &mut h, &name, None, b"", &x)?;
            if x.iter().any(|(k, v)| k == OPAQUE_XATTR && v == b"y") {
                let mut h = header_for(&md, tar::EntryType::Regular);
                h.set_mode(0o644);
                append(b, &mut h, &name.join(OPAQUE_MARKER), None, b"", &[])?;
            }
            walk(b, root, &name, links)?;
        } else if md.nlink() > 1 && !ft.is_dir() && links.contains_key(&(md.dev(), md.ino())) {
            let mut h = header_for(&md, tar::EntryType::Link);
            let target = links[&(md.dev(), md.ino())].clone();
            append(b, &mut h, &name, Some(&target), b"", &[])?;
        } else {
            if md.nlink() > 1 {
                links.insert((md.dev(), md.ino()), name.clone());
            }
            if ft.is_symlink() {
                let mut h = header_for(&md, tar::EntryType::Symlink);
                let t = std::fs::read_link(&path)?;
                append(b, &mut h, &name, Some(&t), b"", &x)?;
            } else if ft.is_file() {
                let data = std::fs::read(&path)?;
                let mut h = header_for(&md, tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                append(b, &mut h, &name, None, &data, &x)?;
            } else {
                let kind = if ft.is_char_device() {
                    tar::EntryType::Char
                } else if ft.is_block_device() {
                    tar::EntryType::Block
                } else if ft.is_fifo() {
                    tar::EntryType::Fifo
                } else {
                    continue; // sockets are not content
                };
                let mut h = header_for(&md, kind);
                let dev = md.rdev();
                h.set_device_major(libc::major(dev))?;
                h.set_device_minor(libc::minor(dev))?;
                append(b, &mut h, &name, None, b"", &x)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::unpack::tests::Scratch;

    #[test]
    fn short_names_are_base36() {
        let n: Vec<String> = [0, 9, 10, 35, 36, 65, 1295, 1296].into_iter().map(short_name).collect();
        assert_eq!(n, ["0", "9", "a", "z", "10", "1t", "zz", "100"]);
    }

    #[test]
    fn legacy_options_full_then_short() {
        let (upper, work) = (Path::new("/s/containers/k/upper"), Path::new("/s/containers/k/work"));
        let lowers: Vec<PathBuf> = ["/s/layers/a/diff", "/s/layers/b/diff"].iter().map(PathBuf::from).collect();
        // Fits: the full paths, no links.
        assert_eq!(
            legacy_options(&lowers, upper, work, 4096),
            Ok(LegacyOptions {
                data: b"lowerdir=/s/layers/a/diff:/s/layers/b/diff,upperdir=/s/containers/k/upper,workdir=/s/containers/k/work".to_vec(),
                relative_to: None,
            })
        );
        // 66 layers by 64-hex names: over a page in full, short links relative to the container dir.
        let lowers: Vec<PathBuf> = (0..66)
            .map(|i| PathBuf::from(format!("/var/lib/tinyrt/layers/{i:064x}/diff")))
            .collect();
        assert!(overlay_options(&lowers, upper, work).len() > 4096);
        let o = legacy_options(&lowers, upper, work, 4096).unwrap();
        assert_eq!(o.relative_to.as_deref(), Some(Path::new("/s/containers/k")));
        let names: Vec<String> = (0..66).map(|i| format!("l/{}", short_name(i))).collect();
        let want = format!("lowerdir={},upperdir=upper,workdir=work", names.join(":"));
        assert_eq!(String::from_utf8(o.data).unwrap(), want);
        assert!(want.starts_with("lowerdir=l/0:l/1:") && want.contains(":l/z:l/10:") && want.contains(":l/1t,upperdir="));
        // The limit counts the NUL: exactly `limit` bytes do not fit.
        assert_eq!(legacy_options(&lowers, upper, work, want.len()), Err(want.len()));
        assert!(legacy_options(&lowers, upper, work, want.len() + 1).is_ok());
        // A work dir elsewhere stays absolute.
        let o = legacy_options(&lowers, upper, Path::new("/w"), 4096).unwrap();
        assert!(String::from_utf8(o.data).unwrap().ends_with(",upperdir=upper,workdir=/w"));
    }

    #[test]
    fn links_made_and_removed_without_following() {
        let s = Scratch::new("links");
        let lowers: Vec<PathBuf> = (0..40).map(|i| s.0.join(format!("layer{i}"))).collect();
        for l in &lowers {
            std::fs::create_dir_all(l).unwrap();
            std::fs::write(l.join("f"), "x").unwrap();
        }
        let dir = s.0.join("c");
        std::fs::create_dir_all(dir.join(LINK_DIR).join("stale")).unwrap();
        make_links(&dir, &lowers).unwrap();
        let mut got: Vec<String> = std::fs::read_dir(dir.join(LINK_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        got.sort_by_key(|n| (n.len(), n.clone()));
        assert_eq!(got, (0..40).map(short_name).collect::<Vec<_>>(), "a leftover is replaced");
        assert_eq!(std::fs::read_link(dir.join("l/13")).unwrap(), lowers[39]);
        assert_eq!(std::fs::read_to_string(dir.join("l/a/f")).unwrap(), "x");
        remove_links(&dir).unwrap();
        remove_links(&dir).unwrap();
        assert!(!dir.join(LINK_DIR).exists());
        assert!(
            lowers.iter().all(|l| l.join("f").exists()),
            "a layer's content removed through its link"
        );
    }

    #[test]
    fn pax_lengths() {
        let r = pax_record("SCHILY.xattr.user.a", b"v");
        let s = String::from_utf8(r.clone()).unwrap();
        let n: usize = s.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(n, r.len());
        let r = pax_record("k", &[b'x'; 93]);
        let n: usize = String::from_utf8_lossy(&r).split(' ').next().unwrap().parse().unwrap();
        assert_eq!(n, r.len());
    }

    #[test]
    fn diff_round_trips_whiteouts() {
        let s = Scratch::new("diff");
        let up = s.0.join("upper");
        std::fs::create_dir_all(up.join("data")).unwrap();
        std::fs::write(up.join("data/new"), "n").unwrap();
        std::fs::hard_link(up.join("data/new"), up.join("data/new2")).unwrap();
        nix::sys::stat::mknod(&up.join("gone"), nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::empty(), 0).unwrap();
        let p = c(up.join("data").as_os_str().as_bytes());
        unsafe { libc::lsetxattr(p.as_ptr(), c"trusted.overlay.opaque".as_ptr(), c"y".as_ptr().cast(), 1, 0) };
        let mut out = Vec::new();
        diff_upper(&up, &mut out).unwrap();
        let mut names = vec![];
        for e in tar::Archive::new(&out[..]).entries().unwrap() {
            let e = e.unwrap();
            names.push((e.path().unwrap().display().to_string(), e.header().entry_type()));
        }
        let n: Vec<&str> = names.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(n, ["data", "data/.wh..wh..opq", "data/new", "data/new2", ".wh.gone"]);
        assert_eq!(names[3].1, tar::EntryType::Link);
        // And back: unpacking the diff gives the same markers.
        let l = s.0.join("l");
        std::fs::create_dir(&l).unwrap();
        crate::image::unpack::unpack(&out[..], &l).unwrap();
        assert!(std::fs::symlink_metadata(l.join("gone")).unwrap().file_type().is_char_device());
        assert_eq!(std::fs::metadata(l.join("data/new2")).unwrap().nlink(), 2);
    }
}
