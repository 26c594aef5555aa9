//! Images end to end, no registry: a docker-archive tarball and an OCI layout written here
//! (a busybox rootfs layer plus layers that add, change and delete files, with an opaque
//! dir), imported with `tinyrt image import`, bundled with `tinyrt image bundle`, and run
//! with tinyrt, whose `create` mounts the overlay rootfs and whose `delete` unmounts it.
//! Needs root, overlayfs and busybox-static.

#[path = "../conformance/support/fault_seed.rs"]
mod fault_seed;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use tinyrt::image::overlay::{container_key, lowers_of};

const BIN: &str = env!("CARGO_BIN_EXE_tinyrt");

/// One test at a time: reaping orphans (waitpid(-1)) must not steal another test's children.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn sha(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// The test's directory (store, state root, bundles, archives), torn down on drop even when
/// the test fails: containers deleted, mounts under it detached, files removed, children reaped.
struct TestDir {
    dir: PathBuf,
}

impl TestDir {
    fn new_tagged(tag: &str) -> TestDir {
        let dir = std::env::temp_dir().join(format!("tinyrt-image-it-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TestDir { dir }
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
    fn store(&self) -> PathBuf {
        self.p("store")
    }
    fn root(&self) -> PathBuf {
        self.p("run")
    }
}

fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect()
}

fn reap() {
    while let Ok(s) = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(-1), Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
        if s == nix::sys::wait::WaitStatus::StillAlive {
            break;
        }
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if let Ok(rd) = std::fs::read_dir(self.root()) {
            for e in rd.flatten() {
                let _ = Command::new(BIN)
                    .arg("--root")
                    .arg(self.root())
                    .args(["delete", "-f"])
                    .arg(e.file_name())
                    .output();
            }
        }
        for m in mounts_under(&self.dir).iter().rev() {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        reap();
    }
}

fn tinyrt(t: &TestDir, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("--root")
        .arg(t.root())
        .arg("image")
        .arg("--store")
        .arg(t.store())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tinyrt image {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A layer tar of (path, content) files; content "->x" is a symlink to x, "=>x" a hard link.
fn layer(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, c) in files {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        if let Some(t) = c.strip_prefix("->") {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            b.append_link(&mut h, p, t).unwrap();
        } else if let Some(t) = c.strip_prefix("=>") {
            h.set_entry_type(tar::EntryType::Link);
            h.set_mode(0o644);
            h.set_size(0);
            b.append_link(&mut h, p, t).unwrap();
        } else if p.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            b.append_data(&mut h, p, &b""[..]).unwrap();
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(c.len() as u64);
            b.append_data(&mut h, p, c.as_bytes()).unwrap();
        }
    }
    b.into_inner().unwrap()
}

fn dir_layer(dir: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", dir).unwrap();
    b.into_inner().unwrap()
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// Paths (relative, no leading /) under `dir`, not following symlinks.
fn tree(dir: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, d: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            out.insert(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut s = BTreeSet::new();
    walk(dir, dir, &mut s);
    s
}

fn config_json(diff_ids: &[String], cmd: &[&str]) -> Vec<u8> {
    let ids: Vec<String> = diff_ids.iter().map(|d| format!("sha256:{d}")).collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/bin:/usr/bin:/sbin:/usr/sbin", "FOO=bar"], "WorkingDir": "/data",
                   "Labels": {"org.example.label": "yes"}, "StopSignal": "SIGINT", "User": "root"},
        "rootfs": {"type": "layers", "diff_ids": ids}
    }))
    .unwrap()
}

/// A `docker save` tarball (the classic `<id>/layer.tar` form) of `blobs` (any compression).
fn docker_archive(path: &Path, tag: &str, config: &[u8], blobs: &[Vec<u8>]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    let add = |b: &mut tar::Builder<std::fs::File>, name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data).unwrap();
    };
    let cfg_name = format!("{}.json", sha(config));
    add(&mut b, &cfg_name, config);
    let mut layers = vec![];
    for (i, blob) in blobs.iter().enumerate() {
        let n = format!("l{i}/layer.tar");
        add(&mut b, &n, blob);
        layers.push(n);
    }
    let m = serde_json::json!([{"Config": cfg_name, "RepoTags": [tag], "Layers": layers}]);
    add(&mut b, "manifest.json", &serde_json::to_vec(&m).unwrap());
    b.into_inner().unwrap().flush().unwrap();
}

/// An OCI image layout (what `skopeo copy ... oci:DIR:REF` writes).
fn oci_layout(dir: &Path, reference: &str, config: &[u8], blobs: &[(Vec<u8>, &str)]) {
    let bd = dir.join("blobs/sha256");
    std::fs::create_dir_all(&bd).unwrap();
    let put = |b: &[u8]| {
        std::fs::write(bd.join(sha(b)), b).unwrap();
        format!("sha256:{}", sha(b))
    };
    let layers: Vec<_> = blobs
        .iter()
        .map(|(b, mt)| serde_json::json!({"mediaType": mt, "digest": put(b), "size": b.len()}))
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(config), "size": config.len()},
        "layers": layers
    }))
    .unwrap();
    let md = put(&manifest);
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": reference}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

fn spec_of(bundle: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap()
}

fn annotations(bundle: &Path) -> HashMap<String, String> {
    serde_json::from_value(spec_of(bundle)["annotations"].clone()).unwrap()
}

/// Output of a `tinyrt --root R ...` command.
struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// `tinyrt --root R args...` with `env` added to its environment, stdin from /dev/null and
/// stdout/stderr to files of the test (a detached container's init inherits them: a pipe
/// would not reach EOF while it lives).
fn rt_env(t: &TestDir, env: &[(&str, &str)], args: &[&str]) -> Out {
    // The container ids here are short and fixed: give each container a cgroup unique to this
    // process, so two runs of the suite (or other suites) never share one.
    if matches!(args.first(), Some(&"run" | &"create"))
        && let (Some(i), Some(id)) = (args.iter().position(|a| *a == "-b"), args.last())
    {
        let bundle = Path::new(args[i + 1]);
        let mut spec = spec_of(bundle);
        spec["linux"]["cgroupsPath"] = serde_json::json!(format!("tinyrt-image-it-{}-{id}", std::process::id()));
        std::fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    }
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (out, err) = (t.p(&format!("cmd{n}.out")), t.p(&format!("cmd{n}.err")));
    let status = Command::new(BIN)
        .arg("--root")
        .arg(t.root())
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .status()
        .unwrap();
    reap();
    Out {
        ok: status.success(),
        stdout: std::fs::read_to_string(&out).unwrap(),
        stderr: std::fs::read_to_string(&err).unwrap(),
    }
}

fn rt_ok(t: &TestDir, args: &[&str]) -> String {
    rt_env_ok(t, &[], args)
}

fn rt_env_ok(t: &TestDir, env: &[(&str, &str)], args: &[&str]) -> String {
    let o = rt_env(t, env, args);
    assert!(o.ok, "tinyrt {args:?} ({env:?}): {}", o.stderr);
    o.stdout
}

/// The environment that makes tinyrt's `create` mount the overlay with mount(2), as on a
/// kernel without `lowerdir+`.
const LEGACY: &[(&str, &str)] = &[("TINYRT_OVERLAY_LEGACY", "1")];

fn set_args(bundle: &Path, args: &[&str]) {
    let mut spec = spec_of(bundle);
    spec["process"]["args"] = serde_json::json!(args);
    std::fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
}

/// `tinyrt run` the bundle with `args` in the foreground (create mounts the overlay, the
/// delete at the end unmounts it); its stdout.
fn run(t: &TestDir, bundle: &Path, id: &str, args: &[&str]) -> String {
    set_args(bundle, args);
    rt_ok(t, &["run", "-b", bundle.to_str().unwrap(), id])
}

/// A long-running container of the bundle (`sleep 3600`, `run --detach`), for `exec`.
fn start_sleeper(t: &TestDir, bundle: &Path, id: &str) {
    set_args(bundle, &["sleep", "3600"]);
    rt_ok(t, &["run", "--detach", "-b", bundle.to_str().unwrap(), id]);
    let st: serde_json::Value = serde_json::from_str(&rt_ok(t, &["state", id])).unwrap();
    assert_eq!(st["status"], "running", "{st}");
}

/// `tinyrt exec ID sh -c CMD`; its stdout.
fn exec(t: &TestDir, id: &str, cmd: &str) -> String {
    rt_ok(t, &["exec", id, "sh", "-c", cmd])
}

/// The container's upper and work dirs, where `mount_rootfs` puts them:
/// `<store>/containers/<id>-<hash of the state dir>/`.
fn upper_work(t: &TestDir, id: &str) -> (PathBuf, PathBuf) {
    let d = t.store().join("containers").join(container_key(&t.root().join(id)));
    (d.join("upper"), d.join("work"))
}

/// The overlay mounted on `rootfs` (from /proc/self/mountinfo): its upperdir and lower dirs
/// (topmost first); None if `rootfs` is no overlay mount point.
fn overlay_on(rootfs: &Path) -> Option<(PathBuf, Vec<PathBuf>)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let unescape = |s: &str| s.replace("\\040", " ").replace("\\072", ":").replace("\\054", ",");
    let line = text.lines().rev().find(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        f.get(4).is_some_and(|m| Path::new(&unescape(m)) == rootfs)
    })?;
    let (_, sb) = line.split_once(" - ").unwrap();
    let sb: Vec<&str> = sb.split(' ').collect();
    if sb[0] != "overlay" {
        return None;
    }
    let (mut upper, mut lowers) = (None, vec![]);
    for opt in sb[2].split(',') {
        match opt.split_once('=') {
            Some(("upperdir", v)) => upper = Some(PathBuf::from(unescape(v))),
            Some(("lowerdir", v)) => lowers.extend(v.split(':').map(|l| PathBuf::from(unescape(l)))),
            Some(("lowerdir+", v)) => lowers.push(PathBuf::from(unescape(v))),
            _ => {}
        }
    }
    Some((upper.expect("an overlay with an upperdir"), lowers))
}

/// The container's dir of short links to its layers (mount(2) with many layers).
fn link_dir(t: &TestDir, id: &str) -> PathBuf {
    upper_work(t, id).0.parent().unwrap().join("l")
}

/// After `delete`: no overlay on the bundle's rootfs, no upper/work dir of the container,
/// no links to its layers.
fn assert_gone(t: &TestDir, bundle: &Path, id: &str) {
    assert!(overlay_on(&bundle.join("rootfs")).is_none(), "{id}: rootfs still mounted");
    assert!(!mounts_under(&t.dir).contains(&bundle.join("rootfs")));
    let (upper, work) = upper_work(t, id);
    assert!(!upper.exists() && !work.exists(), "{id}: upper/work left: {}", upper.display());
    assert!(!link_dir(t, id).exists(), "{id}: layer links left");
    assert!(!upper.parent().unwrap().exists());
}

#[test]
fn image_import_bundle_run() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = TestDir::new_tagged("main");
    let rootfs = t.p("busybox");
    let ok = Command::new("sh")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/bundle-examples/mkrootfs.sh"))
        .arg(&rootfs)
        .status()
        .unwrap();
    assert!(ok.success(), "mkrootfs.sh");

    // Layer 0: busybox. Layer 1 adds and changes. Layer 2 deletes (whiteouts), makes /data
    // opaque, adds links, changes /etc/hostname again.
    let gone_applet = ["bin/vi", "usr/bin/vi", "bin/ping"]
        .into_iter()
        .find(|a| rootfs.join(a).exists())
        .unwrap();
    let l0 = dir_layer(&rootfs);
    let l1 = layer(&[
        ("etc/motd", "hello\n"),
        ("etc/hostname", "layer1\n"),
        ("data/a", "a"),
        ("data/b", "b"),
        ("data/sub/c", "c"),
        ("opt/keep/x", "x"),
    ]);
    let (dir, name) = gone_applet.rsplit_once('/').unwrap();
    let wh = format!("{dir}/.wh.{name}");
    let l2 = layer(&[
        ("etc/.wh.motd", ""),
        ("data/", ""),
        ("data/.wh..wh..opq", ""),
        ("data/new", "new"),
        ("etc/hostname", "layer3\n"),
        ("etc/link", "->hostname"),
        ("etc/hard", "=>etc/hostname"),
        (&wh, ""),
    ]);
    let diff_ids: Vec<String> = [&l0, &l1, &l2].iter().map(|l| sha(l)).collect();
    let config = config_json(&diff_ids, &["cat", "/etc/hostname"]);
    let (g1, z2) = (gzip(&l1), zstd::encode_all(&l2[..], 3).unwrap());

    // Import: docker-archive (plain, gzip, zstd layers), then the same layers as an OCI layout.
    docker_archive(&t.p("img.tar"), "test/busy:1", &config, &[l0.clone(), g1.clone(), z2.clone()]);
    let out = tinyrt(&t, &["import", "-q", t.p("img.tar").to_str().unwrap()]);
    assert!(out.contains("layers=3 unpacked=3"), "{out}");
    let out = tinyrt(&t, &["import", "-q", t.p("img.tar").to_str().unwrap()]);
    assert!(out.contains("layers=3 unpacked=0"), "second import unpacks nothing: {out}");
    oci_layout(
        &t.p("oci"),
        "busy:oci",
        &config,
        &[
            (gzip(&l0), "application/vnd.oci.image.layer.v1.tar+gzip"),
            (g1, "application/vnd.oci.image.layer.v1.tar+gzip"),
            (z2, "application/vnd.oci.image.layer.v1.tar+zstd"),
        ],
    );
    let out = tinyrt(&t, &["import", "-q", &format!("oci:{}:busy:oci", t.p("oci").display())]);
    assert!(out.contains("layers=3 unpacked=0"), "OCI layout shares the layers: {out}");
    let ls: serde_json::Value = serde_json::from_str(&tinyrt(&t, &["ls", "--format", "json"])).unwrap();
    assert_eq!(ls.as_array().unwrap().len(), 1, "{ls}");
    assert_eq!(ls[0]["names"], serde_json::json!(["test/busy:1", "busy:oci"]));

    // Bundles.
    let (b1, b2) = (t.p("b1"), t.p("b2"));
    tinyrt(&t, &["bundle", "test/busy:1", b1.to_str().unwrap()]);
    tinyrt(&t, &["bundle", "busy:oci", b2.to_str().unwrap()]);
    let spec = spec_of(&b1);
    assert_eq!(spec["process"]["args"], serde_json::json!(["cat", "/etc/hostname"]));
    assert_eq!(spec["process"]["cwd"], "/data");
    assert_eq!(spec["process"]["terminal"], false);
    assert!(spec["process"]["env"].as_array().unwrap().contains(&serde_json::json!("FOO=bar")));
    let ann = annotations(&b1);
    assert_eq!(ann["org.example.label"], "yes");
    assert_eq!(ann["org.opencontainers.image.stopSignal"], "SIGINT");
    assert_eq!(ann["io.tinyrt.rootfs.lower"].split(':').count(), 3);

    // Two containers of one image, long-running so that several commands see one upper:
    // `create` mounts each overlay, on each bundle's rootfs. c2 keeps its upper at delete.
    let mut spec = spec_of(&b2);
    spec["annotations"]["io.tinyrt.rootfs.keep-upper"] = serde_json::json!("true");
    std::fs::write(b2.join("config.json"), serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    start_sleeper(&t, &b1, "c1");
    start_sleeper(&t, &b2, "c2");
    // Shared lower dirs (the layers), separate uppers.
    let lowers = lowers_of(&annotations(&b1)).unwrap().expect("an image bundle");
    assert_eq!(lowers.len(), 3);
    assert_eq!(lowers_of(&annotations(&b2)).unwrap().as_ref(), Some(&lowers));
    let ((up1, work1), (up2, _)) = (upper_work(&t, "c1"), upper_work(&t, "c2"));
    assert_ne!(up1, up2);
    for (b, up) in [(&b1, &up1), (&b2, &up2)] {
        let (mounted_upper, mounted_lowers) = overlay_on(&b.join("rootfs")).expect("create mounted the overlay");
        assert_eq!(&mounted_upper, up);
        if !mounted_lowers.is_empty() {
            assert_eq!(mounted_lowers, lowers);
        }
        assert!(up.is_dir());
    }
    assert_eq!(exec(&t, "c1", "cat /etc/hostname"), "layer3\n");
    let seen: BTreeSet<String> = exec(&t, "c1", "find / -xdev").lines().map(String::from).collect();
    let mut want: BTreeSet<String> = tree(&rootfs).into_iter().map(|p| format!("/{p}")).collect();
    want.insert("/".into());
    for p in [
        "/etc/hostname",
        "/data",
        "/data/new",
        "/opt",
        "/opt/keep",
        "/opt/keep/x",
        "/etc/link",
        "/etc/hard",
    ] {
        want.insert(p.into());
    }
    want.remove(&format!("/{gone_applet}"));
    assert_eq!(
        seen,
        want,
        "\nonly in container: {:?}\nmissing: {:?}",
        seen.difference(&want).collect::<Vec<_>>(),
        want.difference(&seen).collect::<Vec<_>>()
    );
    assert_eq!(
        exec(&t, "c1", "cat /etc/hard; readlink /etc/link; stat -c %h /etc/hard; pwd; echo $FOO"),
        "layer3\nhostname\n2\n/data\nbar\n"
    );
    // Writes land in the container's upper dir, never in a layer, never in the other container.
    exec(&t, "c1", "echo c1 > /data/written && rm /etc/group");
    assert_eq!(std::fs::read_to_string(up1.join("data/written")).unwrap(), "c1\n");
    let wh = std::fs::symlink_metadata(up1.join("etc/group")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "a deletion is a whiteout in the upper dir"
    );
    for l in &lowers {
        assert!(!l.join("data/written").exists(), "a write reached layer {}", l.display());
    }
    assert!(lowers[2].join("etc/group").exists(), "a deletion reached the bottom layer");
    assert!(!up2.join("data/written").exists());
    assert!(rootfs.join("etc/group").exists());
    assert_eq!(exec(&t, "c2", "ls /data; cat /etc/group | head -1"), "new\nroot:x:0:\n");
    // ... and the next command in c1 sees both.
    assert_eq!(exec(&t, "c1", "cat /data/written; test -e /etc/group || echo gone"), "c1\ngone\n");

    // Removing the image while containers and bundles use its layers collects none of them.
    tinyrt(&t, &["rm", "test/busy:1", "busy:oci"]);
    let layers: serde_json::Value = serde_json::from_str(&tinyrt(&t, &["ls", "--layers", "--format", "json"])).unwrap();
    assert_eq!(layers.as_array().unwrap().len(), 3, "layers in use were collected");
    assert!(lowers.iter().all(|l| l.is_dir()));

    // Delete c1: no mount, no upper dir left.
    rt_ok(&t, &["delete", "--force", "c1"]);
    assert!(!up1.exists() && !work1.exists());
    assert_gone(&t, &b1, "c1");
    // `run` (create, start, wait, delete) of the same bundle: its own fresh upper, gone after.
    assert_eq!(
        run(&t, &b1, "c3", &["sh", "-c", "ls /data; cat /etc/group | head -1"]),
        "new\nroot:x:0:\n"
    );
    assert_gone(&t, &b1, "c3");

    // c2 keeps its upper: `image diff` exports it with whiteouts as .wh. entries.
    exec(&t, "c2", "echo n > /opt/new && rm /data/new");
    rt_ok(&t, &["delete", "--force", "c2"]);
    assert!(overlay_on(&b2.join("rootfs")).is_none());
    assert!(mounts_under(&t.dir).is_empty(), "{:?}", mounts_under(&t.dir));
    assert_eq!(std::fs::read_to_string(up2.join("opt/new")).unwrap(), "n\n");
    tinyrt(&t, &["diff", "c2", t.p("diff.tar").to_str().unwrap()]);
    let mut names = BTreeSet::new();
    for e in tar::Archive::new(std::fs::File::open(t.p("diff.tar")).unwrap()).entries().unwrap() {
        names.insert(e.unwrap().path().unwrap().display().to_string());
    }
    assert!(names.contains("opt/new") && names.contains("data/.wh.new"), "{names:?}");
    tinyrt(&t, &["rm", "--upper", "c2"]);
    assert!(!up2.exists());

    // Bundles gone: every layer is collected.
    tinyrt(&t, &["rm", "--bundle", b1.to_str().unwrap(), b2.to_str().unwrap()]);
    let layers: serde_json::Value = serde_json::from_str(&tinyrt(&t, &["ls", "--layers", "--format", "json"])).unwrap();
    assert_eq!(layers.as_array().unwrap().len(), 0, "{layers}");
    assert!(!b1.exists() && !b2.exists());
}

/// A bundle (at `<test dir>/b`) of an image of 66 layers: busybox, then layer i adds
/// `/layers/fi` and sets `/top` to i. Their paths are more than fit in mount(2)'s one-page
/// option string.
fn many_layers_bundle(t: &TestDir) -> PathBuf {
    let rootfs = t.p("busybox");
    assert!(
        Command::new("sh")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/bundle-examples/mkrootfs.sh"))
            .arg(&rootfs)
            .status()
            .unwrap()
            .success()
    );
    let mut blobs = vec![dir_layer(&rootfs)];
    for i in 1..=65 {
        let n = format!("{i}\n");
        blobs.push(layer(&[(&format!("layers/f{i}"), "x"), ("top", &n)]));
    }
    let ids: Vec<String> = blobs.iter().map(|b| sha(b)).collect();
    docker_archive(&t.p("many.tar"), "many:1", &config_json(&ids, &["cat", "/top"]), &blobs);
    let out = tinyrt(t, &["import", "-q", t.p("many.tar").to_str().unwrap()]);
    assert!(out.contains("layers=66 unpacked=66"), "{out}");
    let b = t.p("b");
    tinyrt(t, &["bundle", "many:1", b.to_str().unwrap()]);
    assert!(annotations(&b)["io.tinyrt.rootfs.lower"].len() > 4096);
    assert_eq!(lowers_of(&annotations(&b)).unwrap().map(|l| l.len()), Some(66));
    b
}

/// 66 layers: more lower dirs than fit in mount(2)'s one-page option string.
#[test]
fn many_layers() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = TestDir::new_tagged("many");
    let b = many_layers_bundle(&t);
    // The run mounts all 66 layers (f1..f65 each from its own layer, sh from the bottom one).
    assert_eq!(
        run(&t, &b, "m1", &["sh", "-c", "cat /top; ls /layers | wc -l"])
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["65", "65"]
    );
    assert_gone(&t, &b, "m1");
    assert!(mounts_under(&t.dir).is_empty());
}

/// The 66 layers by mount(2) (forced, as on a kernel before 6.8 without `lowerdir+`): their
/// full paths do not fit in its page, so it gets short links to them, relative to the
/// container's dir; the links go at delete, with the upper dir or without it.
#[test]
fn many_layers_legacy_mount() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = TestDir::new_tagged("legacy");
    let b = many_layers_bundle(&t);
    let lowers = lowers_of(&annotations(&b)).unwrap().unwrap();
    let want_files: BTreeSet<String> = (1..=65).map(|i| format!("f{i}")).collect();
    let base36 = |mut i: usize| {
        let mut s = String::new();
        loop {
            s.insert(0, char::from_digit((i % 36) as u32, 36).unwrap());
            i /= 36;
            if i == 0 {
                return s;
            }
        }
    };

    // `create` with the switch, the rest without: the mount is made by create alone.
    set_args(&b, &["sleep", "3600"]);
    rt_env_ok(&t, LEGACY, &["create", "-b", b.to_str().unwrap(), "g1"]);
    rt_ok(&t, &["start", "g1"]);
    let (upper, work) = upper_work(&t, "g1");
    let (mounted_upper, mounted_lowers) = overlay_on(&b.join("rootfs")).expect("create mounted the overlay");
    // mount(2)'s options as given: relative, the layers by their links (no lowerdir+).
    assert_eq!(mounted_upper, Path::new("upper"));
    let names: Vec<PathBuf> = (0..66).map(|i| PathBuf::from(format!("l/{}", base36(i)))).collect();
    assert_eq!(mounted_lowers, names);
    assert_eq!(names[65], Path::new("l/1t"));
    let links = link_dir(&t, "g1");
    assert_eq!(std::fs::read_dir(&links).unwrap().count(), 66);
    for (n, l) in names.iter().zip(&lowers) {
        assert_eq!(&std::fs::read_link(upper.parent().unwrap().join(n)).unwrap(), l);
    }
    // Every layer is seen: the top one's /top, each one's /layers/fi, the bottom one's sh.
    let out = exec(&t, "g1", "cat /top; ls /layers; test -x /bin/sh && echo sh");
    let mut lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"65"), "{out}");
    assert_eq!(lines.pop(), Some("sh"), "{out}");
    let seen: BTreeSet<String> = lines[1..].iter().map(|s| s.to_string()).collect();
    assert_eq!(seen, want_files);
    // The relative upper and work dirs are the container's.
    exec(&t, "g1", "echo w > /written; rm /layers/f1");
    assert_eq!(std::fs::read_to_string(upper.join("written")).unwrap(), "w\n");
    assert!(
        std::fs::symlink_metadata(upper.join("layers/f1"))
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert!(work.is_dir());
    assert!(lowers.iter().all(|l| !l.join("written").exists()));
    rt_ok(&t, &["delete", "--force", "g1"]);
    assert_gone(&t, &b, "g1");
    assert!(mounts_under(&t.dir).is_empty(), "{:?}", mounts_under(&t.dir));
    assert!(lowers.iter().all(|l| l.is_dir()), "a layer removed through its link");

    // `run` with the switch (create, start, wait, delete in one): the same view, nothing left.
    set_args(&b, &["sh", "-c", "cat /top; ls /layers | wc -l"]);
    let out = rt_env_ok(&t, LEGACY, &["run", "-b", b.to_str().unwrap(), "g3"]);
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["65", "65"]);
    assert_gone(&t, &b, "g3");

    // A kept upper stays for `image diff`; the links do not.
    let mut spec = spec_of(&b);
    spec["annotations"]["io.tinyrt.rootfs.keep-upper"] = serde_json::json!("true");
    spec["process"]["args"] = serde_json::json!(["sh", "-c", "echo k > /kept"]);
    std::fs::write(b.join("config.json"), serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    rt_env_ok(&t, LEGACY, &["run", "-b", b.to_str().unwrap(), "g4"]);
    let (upper, _) = upper_work(&t, "g4");
    assert_eq!(std::fs::read_to_string(upper.join("kept")).unwrap(), "k\n");
    assert!(!link_dir(&t, "g4").exists(), "links left with the kept upper");
    assert!(overlay_on(&b.join("rootfs")).is_none());
    tinyrt(&t, &["rm", "--upper", "g4"]);
    assert_gone(&t, &b, "g4");
    assert!(mounts_under(&t.dir).is_empty(), "{:?}", mounts_under(&t.dir));
}

/// A mount(2) by short links that the kernel refuses (more layers than overlayfs stacks,
/// 500) fails `create` and leaves nothing: no mount, no container dir, no links.
#[test]
fn legacy_mount_failure_leaves_nothing() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = TestDir::new_tagged("legacy-fail");
    let blob = layer(&[("etc/passwd", "root:x:0:0:root:/:/bin/sh\n"), ("top", "1\n")]);
    docker_archive(&t.p("one.tar"), "one:1", &config_json(&[sha(&blob)], &["cat", "/top"]), &[blob]);
    tinyrt(&t, &["import", "-q", t.p("one.tar").to_str().unwrap()]);
    let b = t.p("b");
    tinyrt(&t, &["bundle", "one:1", b.to_str().unwrap()]);
    // 600 lower dirs with long paths: over the page in full, under it by links.
    let long = t.p(&"d".repeat(200));
    let dirs: Vec<String> = (0..600)
        .map(|i| {
            let d = long.join(format!("layer-{i:04}"));
            std::fs::create_dir_all(&d).unwrap();
            d.display().to_string()
        })
        .collect();
    let mut spec = spec_of(&b);
    spec["annotations"]["io.tinyrt.rootfs.lower"] = serde_json::json!(dirs.join(":"));
    std::fs::write(b.join("config.json"), serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    let o = rt_env(&t, LEGACY, &["create", "-b", b.to_str().unwrap(), "f1"]);
    assert!(!o.ok, "600 layers mounted?");
    assert!(
        o.stderr.contains("mount(2) overlay") && o.stderr.contains("links in"),
        "{}",
        o.stderr
    );
    assert_gone(&t, &b, "f1");
    assert!(mounts_under(&t.dir).is_empty(), "{:?}", mounts_under(&t.dir));
    let cdirs: Vec<_> = std::fs::read_dir(t.store().join("containers"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(cdirs.is_empty(), "{cdirs:?}");
    assert!(!t.root().join("f1").exists(), "state dir left");
    assert!(dirs.iter().all(|d| Path::new(d).is_dir()));
}

/// Issue 8 with an overlay rootfs: tinyrt SIGKILLed at a random instant of `create` (the
/// overlay mounted or half-mounted, with and without the short-link fallback), or of a
/// `delete --force` of a running container. A later `delete --force` leaves no mount, no
/// upper or work dir, no layer links and no state dir. Seeded by TINYRT_FAULT_SEED,
/// TINYRT_FAULT_ITERS iterations (default 20).
#[test]
fn killed_mid_verb_leaves_no_overlay() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = TestDir::new_tagged("faults");
    let rootfs = t.p("busybox");
    let ok = Command::new("sh")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/bundle-examples/mkrootfs.sh"))
        .arg(&rootfs)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success(), "mkrootfs.sh");
    let l0 = dir_layer(&rootfs);
    let l1 = layer(&[("etc/motd", "hello\n")]);
    let config = config_json(&[sha(&l0), sha(&l1)], &["sleep", "3600"]);
    docker_archive(&t.p("img.tar"), "faults:1", &config, &[l0, l1]);
    tinyrt(&t, &["import", "-q", t.p("img.tar").to_str().unwrap()]);
    let iters = fault_seed::iterations(20);
    let mut rng = fault_seed::Rng(fault_seed::seed());
    let mut rand = |max_us: u64| rng.delay(max_us);
    let (mut cut_create, mut cut_delete) = (0, 0);
    for i in 0..iters {
        let id = format!("k{i}");
        let b = t.p(&format!("b{i}"));
        tinyrt(&t, &["bundle", "faults:1", b.to_str().unwrap()]);
        let mut spec = spec_of(&b);
        spec["linux"]["cgroupsPath"] = serde_json::json!(format!("tinyrt-image-it-{}-{id}", std::process::id()));
        std::fs::write(b.join("config.json"), serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
        let spawn = |args: &[&str], env: &[(&str, &str)]| {
            Command::new(BIN)
                .arg("--root")
                .arg(t.root())
                .args(args)
                .envs(env.iter().copied())
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        };
        let env: &[(&str, &str)] = if i % 2 == 0 { LEGACY } else { &[] };
        let mut create = spawn(&["create", "-b", b.to_str().unwrap(), &id], env);
        std::thread::sleep(rand(60_000));
        let _ = create.kill();
        if !create.wait().unwrap().success() {
            cut_create += 1;
        } else if rt_env(&t, &[], &["start", &id]).ok {
            let mut delete = spawn(&["delete", "--force", &id], &[]);
            // (No reaping meanwhile: the only process of the container is its init, whose
            // exit tinyrt sees through a pidfd, and reap() would take `delete` itself.)
            std::thread::sleep(rand(15_000));
            let _ = delete.kill();
            if !delete.wait().unwrap().success() {
                cut_delete += 1;
            }
        }
        let o = rt_env(&t, &[], &["delete", "--force", &id]);
        assert!(
            o.ok || o.stderr.contains("does not exist"),
            "iteration {i}: delete --force: {}",
            o.stderr
        );
        reap();
        assert_gone(&t, &b, &id);
        assert!(mounts_under(&t.dir).is_empty(), "iteration {i}: {:?}", mounts_under(&t.dir));
        assert!(!t.root().join(&id).exists(), "iteration {i}: state dir left");
        let cdirs: Vec<_> = std::fs::read_dir(t.store().join("containers"))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(cdirs.is_empty(), "iteration {i}: {cdirs:?}");
    }
    eprintln!("killed_mid_verb_leaves_no_overlay: {iters} creates killed: {cut_create} cut short; {cut_delete} deletes cut short");
    assert!(cut_create > 0, "no kill landed inside create");
}
