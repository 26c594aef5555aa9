//! The container's filesystem view: root propagation, the rootfs bind, every spec mount,
//! default and configured devices, pivot_root, then read-only and masked paths.
//! Runs inside the container's (new) mount namespace, in the init process.

use super::fs::{Make, fd_path, is_dir, open_in_root, open_in_root_follow, resolve_create};
use super::mounts::{self, MountOpts};
use super::{Ctx, Result, refuse};
use nix::fcntl::{OFlag, open};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag, fstat, makedev, mknodat, umask};
use nix::unistd::{Gid, Uid, chdir, fchdir, fchownat, pivot_root, symlinkat};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

const NONE: Option<&str> = None;

/// What the rootfs setup needs to know about the rest of the container.
pub struct RootfsCtx<'a> {
    pub spec: &'a Spec,
    pub rootfs: &'a Path,
    pub bundle: &'a Path,
    /// The container has its own user namespace: device nodes are bind-mounted, not made.
    pub userns: bool,
    /// The container has its own cgroup namespace.
    pub cgroupns: bool,
    /// Called (once) before anything that needs the container's cgroup: a cgroup mount, and
    /// the device nodes (made under the container's device controller). Mounts before that
    /// point are made while the parent is still creating the cgroups.
    pub enter_cgroup: &'a dyn Fn() -> Result<()>,
}

/// Everything before pivot_root. Returns an O_PATH fd of the rootfs.
pub fn prepare(cx: &RootfsCtx) -> Result<OwnedFd> {
    let linux = cx.spec.linux().as_ref();
    let prop = linux.and_then(|l| l.rootfs_propagation().as_deref());
    let root_flag = match prop {
        Some(p) => mounts::propagation(p).unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC),
        None => MsFlags::MS_SLAVE | MsFlags::MS_REC,
    };
    // Keep our mounts from reaching the host: make "/" slave (or what rootfsPropagation says).
    mount(NONE, "/", NONE, root_flag, NONE).ctx(|| "setting propagation of / (linux.rootfsPropagation)")?;
    if root_flag.contains(MsFlags::MS_SHARED) {
        make_parent_private(cx.rootfs)?;
    }
    // The rootfs becomes a mount point of its own, a prerequisite of pivot_root.
    mount(Some(cx.rootfs), cx.rootfs, NONE, MsFlags::MS_BIND | MsFlags::MS_REC, NONE)
        .ctx(|| format!("bind-mounting the rootfs {} (root.path)", cx.rootfs.display()))?;
    let root = open(cx.rootfs, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .ctx(|| format!("opening rootfs {}", cx.rootfs.display()))?;

    let old_umask = umask(Mode::empty());
    let mut dev_bound = false;
    for (i, m) in cx.spec.mounts().iter().flatten().enumerate() {
        if matches!(m.typ().as_deref(), Some("cgroup" | "cgroup2")) {
            (cx.enter_cgroup)()?;
        }
        mount_one(cx, &root, m).map_err(|e| super::SysError {
            what: format!("mounts[{i}] ({}): {}", m.destination().display(), e.what),
            errno: e.errno,
        })?;
        if m.destination() == Path::new("/dev") && mounts::parse(m.options().as_deref().unwrap_or(&[])).is_bind() {
            dev_bound = true;
        }
    }
    (cx.enter_cgroup)()?;
    if !dev_bound {
        setup_devices(cx, &root)?;
    }
    umask(old_umask);

    if let Some(p) = cx.spec.process() {
        resolve_create(&root, p.cwd(), Make::Dir, 0o755).map_err(|e| super::SysError {
            what: format!("process.cwd: {}", e.what),
            errno: e.errno,
        })?;
    }
    Ok(root)
}

/// pivot_root into the rootfs (or MS_MOVE + chroot with `--no-pivot`); detaches the old root.
pub fn pivot(rootfs: &Path, no_pivot: bool) -> Result<()> {
    if no_pivot {
        chdir(rootfs).ctx(|| format!("chdir {}", rootfs.display()))?;
        mount(Some("."), "/", NONE, MsFlags::MS_MOVE, NONE).ctx(|| "moving the rootfs to / (--no-pivot)")?;
        nix::unistd::chroot(".").ctx(|| "chroot (--no-pivot)")?;
        return chdir("/").ctx(|| "chdir /");
    }
    let old = open("/", OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).ctx(|| "opening /")?;
    let new = open(rootfs, OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .ctx(|| format!("opening {}", rootfs.display()))?;
    fchdir(&new).ctx(|| "fchdir to the rootfs")?;
    pivot_root(".", ".").ctx(|| "pivot_root")?;
    // The old root is now stacked under "."; detach it without propagating to the host.
    fchdir(&old).ctx(|| "fchdir to the old root")?;
    mount(NONE, ".", NONE, MsFlags::MS_SLAVE | MsFlags::MS_REC, NONE).ctx(|| "making the old root slave")?;
    umount2(".", MntFlags::MNT_DETACH).ctx(|| "detaching the old root")?;
    chdir("/").ctx(|| "chdir /")
}

/// After pivot_root: read-only paths, masked paths, final propagation, read-only root.
pub fn finish(spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref();
    for p in linux.and_then(|l| l.readonly_paths().as_ref()).into_iter().flatten() {
        readonly_path(p).map_err(|e| super::SysError {
            what: format!("linux.readonlyPaths {p}: {}", e.what),
            errno: e.errno,
        })?;
    }
    for p in linux.and_then(|l| l.masked_paths().as_ref()).into_iter().flatten() {
        mask_path(p).map_err(|e| super::SysError {
            what: format!("linux.maskedPaths {p}: {}", e.what),
            errno: e.errno,
        })?;
    }
    if let Some(p) = linux.and_then(|l| l.rootfs_propagation().as_deref())
        && let Some(f) = mounts::propagation(p)
    {
        mount(NONE, "/", NONE, f, NONE).ctx(|| format!("linux.rootfsPropagation {p}"))?;
    }
    if spec.root().as_ref().and_then(|r| r.readonly()).unwrap_or(false) {
        remount_locked("/", MsFlags::MS_RDONLY).ctx(|| "root.readonly: remounting / read-only")?;
    }
    Ok(())
}

fn make_parent_private(rootfs: &Path) -> Result<()> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ctx(|| "reading /proc/self/mountinfo")?;
    let best = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|mp| rootfs.starts_with(mp))
        .max_by_key(|mp| mp.len())
        .unwrap_or("/")
        .to_string();
    mount(NONE, best.as_str(), NONE, MsFlags::MS_PRIVATE, NONE).ctx(|| format!("making {best} private"))
}

/// Remount a bind mount with `flags` added to the per-mount flags it has (nosuid, nodev,
/// noexec, atime), as runc does: a bind remount replaces them all, so without this a read-only
/// path would lose the nosuid/nodev/noexec of the mount it came from. Flags in `cleared` (an
/// explicit "rw", "suid", "exec"...) are dropped; if the kernel refuses that because they are
/// locked by a more privileged namespace (EPERM), they are kept.
fn remount_keeping(target: &str, flags: MsFlags, cleared: MsFlags) -> nix::Result<()> {
    let st = nix::sys::statvfs::statvfs(target)?;
    use nix::sys::statvfs::FsFlags as F;
    let mut source = MsFlags::empty();
    for (f, m) in [
        (F::ST_NOSUID, MsFlags::MS_NOSUID),
        (F::ST_NODEV, MsFlags::MS_NODEV),
        (F::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (F::ST_RDONLY, MsFlags::MS_RDONLY),
        (F::ST_NOATIME, MsFlags::MS_NOATIME),
        (F::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (F::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if st.flags().contains(f) {
            source |= m;
        }
    }
    let atime = MsFlags::MS_NOATIME | MsFlags::MS_RELATIME | MsFlags::MS_STRICTATIME | MsFlags::MS_NODIRATIME;
    let mut kept = source & !cleared;
    if flags.intersects(atime) {
        kept &= !atime;
    }
    let base = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags;
    match mount(NONE, target, NONE, base | kept, NONE) {
        Err(nix::errno::Errno::EPERM) if kept != source => mount(NONE, target, NONE, base | source, NONE),
        r => r,
    }
}

fn remount_locked(target: &str, flags: MsFlags) -> nix::Result<()> {
    remount_keeping(target, flags, MsFlags::empty())
}

fn mount_one(cx: &RootfsCtx, root: &OwnedFd, m: &Mount) -> Result<()> {
    let opts = mounts::parse(m.options().as_deref().unwrap_or(&[]));
    let typ = m.typ().as_deref().unwrap_or("");
    let dest = m.destination();
    if opts.is_bind() || typ == "bind" {
        return bind_mount(cx, root, m, &opts);
    }
    if typ == "cgroup" || typ == "cgroup2" {
        return mount_cgroup(root, dest, &opts, cx.cgroupns);
    }
    let target = if typ == "proc" || typ == "sysfs" {
        // Never mount proc or sysfs over a symlink (runc CVE-2019-16884/19921 class).
        resolve_create(root, dest, Make::Dir, 0o755)?;
        let fd = open_in_root(root, dest).ctx(|| "opening destination")?;
        if !is_dir(&fd) {
            return refuse(format!("{typ} destination is not a directory (a symlink?)"));
        }
        fd
    } else {
        resolve_create(root, dest, Make::Dir, 0o755)?
    };
    let src = m.source().as_deref().map(|p| p.to_path_buf()).unwrap_or_else(|| PathBuf::from(typ));
    let data = opts.data();
    let flags = opts.flags & !MsFlags::MS_REMOUNT;
    let res = mount(Some(&src), fd_path(&target).as_str(), Some(typ), flags, data.as_deref());
    match res {
        Ok(()) => {}
        // In a user namespace that does not own the network (or ipc) namespace the kernel
        // refuses a new sysfs (mqueue): bind the host's instead, as runc does.
        Err(nix::errno::Errno::EPERM) if cx.userns && (typ == "sysfs" || typ == "mqueue") => {
            let host = if typ == "sysfs" { "/sys" } else { "/dev/mqueue" };
            mount(
                Some(host),
                fd_path(&target).as_str(),
                NONE,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                NONE,
            )
            .ctx(|| format!("binding {host} (the kernel refused a new {typ})"))?;
            let again = open_in_root_follow(root, dest, OFlag::O_PATH).ctx(|| "reopening destination")?;
            remount_locked(&fd_path(&again), flags & !MsFlags::MS_REC).ctx(|| "remounting with the options")?;
        }
        Err(e) => return Err(e).ctx(|| format!("mounting {typ}")),
    }
    apply_propagation(root, dest, &opts)
}

fn apply_propagation(root: &OwnedFd, dest: &Path, opts: &MountOpts) -> Result<()> {
    if opts.propagation.is_empty() {
        return Ok(());
    }
    let fd = open_in_root_follow(root, dest, OFlag::O_PATH).ctx(|| "reopening destination")?;
    for p in &opts.propagation {
        mount(NONE, fd_path(&fd).as_str(), NONE, *p, NONE).ctx(|| "setting propagation")?;
    }
    Ok(())
}

fn bind_mount(cx: &RootfsCtx, root: &OwnedFd, m: &Mount, opts: &MountOpts) -> Result<()> {
    let Some(src) = m.source() else {
        return refuse("a bind mount needs a source");
    };
    let src = if src.is_absolute() { src.clone() } else { cx.bundle.join(src) };
    let meta = std::fs::metadata(&src).ctx(|| format!("source {}", src.display()))?;
    let make = if meta.is_dir() { Make::Dir } else { Make::File };
    let target = resolve_create(root, m.destination(), make, if meta.is_dir() { 0o755 } else { 0o644 })?;
    let mut flags = MsFlags::MS_BIND;
    if opts.flags.contains(MsFlags::MS_REC) {
        flags |= MsFlags::MS_REC;
    }
    mount(Some(&src), fd_path(&target).as_str(), NONE, flags, NONE).ctx(|| format!("binding {}", src.display()))?;
    let extra = opts.remount_flags();
    if !extra.is_empty() || !opts.cleared.is_empty() {
        let again = open_in_root_follow(root, m.destination(), OFlag::O_PATH).ctx(|| "reopening destination")?;
        remount_keeping(&fd_path(&again), extra, opts.cleared).ctx(|| "remounting with the options")?;
    }
    apply_propagation(root, m.destination(), opts)
}

/// A cgroup mount. On a v1 or hybrid host: a tmpfs holding one mount per hierarchy (plus the
/// cgroup2 one), as runc builds it; on a unified host: one cgroup2 mount. With a cgroup namespace
/// each hierarchy shows the container's own cgroup as its root; without one, the container's
/// cgroup directory is bound there.
fn mount_cgroup(root: &OwnedFd, dest: &Path, opts: &MountOpts, cgroupns: bool) -> Result<()> {
    let target = resolve_create(root, dest, Make::Dir, 0o755)?;
    let hier = crate::cgroups::hierarchies();
    let flags = opts.flags & !(MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_REC);
    let own = own_cgroups();
    let unified_only = hier.iter().all(|h| h.v2) && hier.iter().any(|h| h.mountpoint == Path::new("/sys/fs/cgroup"));
    if unified_only {
        drop(target);
        return mount_hierarchy(root, dest, "cgroup2", "", flags, cgroupns, own.get("").map(String::as_str));
    }
    mount(
        Some("tmpfs"),
        fd_path(&target).as_str(),
        Some("tmpfs"),
        flags & !MsFlags::MS_RDONLY,
        Some("mode=755"),
    )
    .ctx(|| "mounting the tmpfs for cgroup hierarchies")?;
    let top = open_in_root_follow(root, dest, OFlag::O_PATH).ctx(|| "reopening destination")?;
    for h in &hier {
        let Some(name) = h.mountpoint.file_name() else {
            continue;
        };
        if h.mountpoint == Path::new("/sys/fs/cgroup") {
            continue;
        }
        resolve_create(&top, Path::new(name), Make::Dir, 0o755)?;
        let key = if h.v2 { String::new() } else { h.controllers.clone() };
        mount_hierarchy(
            &top,
            Path::new(name),
            if h.v2 { "cgroup2" } else { "cgroup" },
            &h.controllers,
            flags,
            cgroupns,
            own.get(&key).map(String::as_str),
        )
        .map_err(|e| super::SysError {
            what: format!("{}: {}", h.mountpoint.display(), e.what),
            errno: e.errno,
        })?;
    }
    if flags.contains(MsFlags::MS_RDONLY) {
        remount_locked(&fd_path(&top), MsFlags::MS_RDONLY).ctx(|| "remounting the cgroup tmpfs read-only")?;
    }
    Ok(())
}

/// Mount one hierarchy at `rel` under `dir` (made already).
fn mount_hierarchy(
    dir: &OwnedFd,
    rel: &Path,
    fstype: &str,
    controllers: &str,
    flags: MsFlags,
    cgroupns: bool,
    own: Option<&str>,
) -> Result<()> {
    let fd = open_in_root_follow(dir, rel, OFlag::O_PATH).ctx(|| "opening the mount point")?;
    let target = fd_path(&fd);
    let target = target.as_str();
    if cgroupns {
        let data = if controllers.is_empty() { None } else { Some(controllers) };
        return mount(Some(fstype), target, Some(fstype), flags, data).ctx(|| format!("mounting {fstype} {controllers}"));
    }
    // No cgroup namespace: show the container its own cgroup directory.
    let v2 = fstype == "cgroup2";
    let host = crate::cgroups::hierarchies()
        .into_iter()
        .find(|h| h.v2 == v2 && (v2 || h.controllers == controllers))
        .map(|h| h.mountpoint.display().to_string());
    let Some(mp) = host else {
        return refuse(format!("no host {fstype} mount for {controllers:?}"));
    };
    let src = format!("{mp}{}", own.unwrap_or("/"));
    mount(Some(src.as_str()), target, NONE, MsFlags::MS_BIND | MsFlags::MS_REC, NONE).ctx(|| format!("binding {src}"))?;
    if !(flags & !MsFlags::MS_REC).is_empty() {
        // The options go on the new bind mount: reopen the path to reach it.
        let bound = open_in_root_follow(dir, rel, OFlag::O_PATH).ctx(|| "reopening the mount point")?;
        remount_locked(&fd_path(&bound), flags & !MsFlags::MS_REC).ctx(|| format!("remounting {src}"))?;
    }
    Ok(())
}

/// The calling process's cgroup per hierarchy, keyed by controller list ("" for cgroup2).
fn own_cgroups() -> std::collections::HashMap<String, String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            Some((it.next()?.to_string(), it.next()?.to_string()))
        })
        .collect()
}

const DEFAULT_DEVICES: [(&str, u64, u64); 6] = [
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

fn setup_devices(cx: &RootfsCtx, root: &OwnedFd) -> Result<()> {
    let configured: Vec<&LinuxDevice> = cx
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().as_ref())
        .into_iter()
        .flatten()
        .collect();
    for (path, major, minor) in DEFAULT_DEVICES {
        if configured.iter().any(|d| d.path() == Path::new(path)) {
            continue;
        }
        make_device(cx, root, Path::new(path), SFlag::S_IFCHR, major, minor, 0o666, None, None).map_err(|e| super::SysError {
            what: format!("default device {path}: {}", e.what),
            errno: e.errno,
        })?;
    }
    for (i, d) in configured.iter().enumerate() {
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            LinuxDeviceType::A => return refuse(format!("linux.devices[{i}].type: a is not a device type")),
        };
        make_device(
            cx,
            root,
            d.path(),
            kind,
            d.major() as u64,
            d.minor() as u64,
            d.file_mode().unwrap_or(0o666),
            d.uid(),
            d.gid(),
        )
        .map_err(|e| super::SysError {
            what: format!("linux.devices[{i}] {}: {}", d.path().display(), e.what),
            errno: e.errno,
        })?;
    }
    let dev = resolve_create(root, Path::new("/dev"), Make::Dir, 0o755)?;
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "core"));
    }
    for (target, name) in links {
        match symlinkat(target, dev.as_fd(), name) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(e).ctx(|| format!("symlink /dev/{name}")),
        }
    }
    // /dev/ptmx points at the devpts instance of the container.
    let _ = nix::unistd::unlinkat(dev.as_fd(), "ptmx", nix::unistd::UnlinkatFlags::NoRemoveDir);
    symlinkat("pts/ptmx", dev.as_fd(), "ptmx").ctx(|| "symlink /dev/ptmx")?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn make_device(
    cx: &RootfsCtx,
    root: &OwnedFd,
    path: &Path,
    kind: SFlag,
    major: u64,
    minor: u64,
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("/dev"));
    let Some(name) = path.file_name() else {
        return refuse("no file name");
    };
    let dir = resolve_create(root, parent, Make::Dir, 0o755)?;
    if cx.userns {
        // mknod is not allowed in a user namespace: bind the host's node onto a plain file.
        let target = resolve_create(root, path, Make::File, 0o644)?;
        return mount(Some(path), fd_path(&target).as_str(), NONE, MsFlags::MS_BIND, NONE)
            .ctx(|| format!("binding host {}", path.display()));
    }
    match mknodat(dir.as_fd(), name, kind, Mode::from_bits_truncate(mode), makedev(major, minor)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => return Err(e).ctx(|| "mknod"),
    }
    if uid.is_some() || gid.is_some() {
        fchownat(
            dir.as_fd(),
            name,
            uid.map(Uid::from_raw),
            gid.map(Gid::from_raw),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .ctx(|| "chown")?;
    }
    Ok(())
}

fn readonly_path(p: &str) -> Result<()> {
    match nix::sys::stat::lstat(p) {
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e).ctx(|| "stat"),
        Ok(_) => {}
    }
    mount(Some(p), p, NONE, MsFlags::MS_BIND | MsFlags::MS_REC, NONE).ctx(|| "bind")?;
    remount_locked(p, MsFlags::MS_RDONLY | MsFlags::MS_REC).ctx(|| "remount read-only")
}

fn mask_path(p: &str) -> Result<()> {
    let fd = match open(p, OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty()) {
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e).ctx(|| "open"),
        Ok(fd) => fd,
    };
    if is_dir(&fd) {
        return mount(Some("tmpfs"), fd_path(&fd).as_str(), Some("tmpfs"), MsFlags::MS_RDONLY, NONE).ctx(|| "mounting a read-only tmpfs");
    }
    // Bind the container's /dev/null, after checking that it really is the null device.
    let null = open("/dev/null", OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty()).ctx(|| "open /dev/null")?;
    let st = fstat(&null).ctx(|| "stat /dev/null")?;
    if st.st_mode & libc::S_IFMT != libc::S_IFCHR || st.st_rdev != makedev(1, 3) {
        return refuse("/dev/null in the container is not the null device");
    }
    mount(Some(fd_path(&null).as_str()), fd_path(&fd).as_str(), NONE, MsFlags::MS_BIND, NONE).ctx(|| "binding /dev/null")
}
