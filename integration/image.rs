//! Images end to end, no registry: a docker-archive tarball and an OCI layout written here
//! (a busybox rootfs layer plus layers that add, change and delete files, with an opaque
//! dir), imported with `tinyrt image import`, bundled with `tinyrt image bundle`, mounted
//! with `tinyrt::image::overlay::mount_rootfs` (until create calls it) and run with
//! `tinyrt run`. Needs root, overlayfs and busybox-static.

use sha2::{Digest as _, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use tinyrt::image::overlay::{OverlayMount, mount_rootfs, unmount_rootfs};

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

/// `tinyrt run` the bundle with `args`; its stdout.
fn run(t: &TestDir, bundle: &Path, id: &str, args: &[&str]) -> String {
    let mut spec = spec_of(bundle);
    spec["process"]["args"] = serde_json::json!(args);
    std::fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    let out = Command::new(BIN)
        .arg("--root")
        .arg(t.root())
        .args(["run", "-b"])
        .arg(bundle)
        .arg(id)
        .output()
        .unwrap();
    reap();
    assert!(out.status.success(), "run {id} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn mount(t: &TestDir, bundle: &Path, id: &str) -> OverlayMount {
    mount_rootfs(&annotations(bundle), &bundle.join("rootfs"), &t.root().join(id))
        .expect("mount_rootfs")
        .expect("the bundle declares an overlay")
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

    // Two containers of one image: shared lower dirs, separate uppers.
    let m1 = mount(&t, &b1, "c1");
    let m2 = mount(&t, &b2, "c2");
    assert_eq!(m1.lowers, m2.lowers);
    assert_ne!(m1.upper, m2.upper);
    assert_eq!(run(&t, &b1, "c1", &["cat", "/etc/hostname"]), "layer3\n");
    let seen: BTreeSet<String> = run(&t, &b1, "c1", &["find", "/", "-xdev"]).lines().map(String::from).collect();
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
        run(
            &t,
            &b1,
            "c1",
            &[
                "sh",
                "-c",
                "cat /etc/hard; readlink /etc/link; stat -c %h /etc/hard; pwd; echo $FOO"
            ]
        ),
        "layer3\nhostname\n2\n/data\nbar\n"
    );
    // Writes land in the container's upper dir, never in a layer, never in the other container.
    run(&t, &b1, "c1", &["sh", "-c", "echo c1 > /data/written && rm /etc/group"]);
    assert_eq!(std::fs::read_to_string(m1.upper.join("data/written")).unwrap(), "c1\n");
    let wh = std::fs::symlink_metadata(m1.upper.join("etc/group")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "a deletion is a whiteout in the upper dir"
    );
    for l in &m1.lowers {
        assert!(!l.join("data/written").exists(), "a write reached layer {}", l.display());
    }
    assert!(rootfs.join("etc/group").exists());
    assert_eq!(
        run(&t, &b2, "c2", &["sh", "-c", "ls /data; cat /etc/group | head -1"]),
        "new\nroot:x:0:\n"
    );

    // Removing the image while containers and bundles use its layers collects none of them.
    tinyrt(&t, &["rm", "test/busy:1", "busy:oci"]);
    let layers: serde_json::Value = serde_json::from_str(&tinyrt(&t, &["ls", "--layers", "--format", "json"])).unwrap();
    assert_eq!(layers.as_array().unwrap().len(), 3, "layers in use were collected");

    // Unmount c1: no mount, no upper dir left.
    assert_eq!(
        unmount_rootfs(&annotations(&b1), &b1.join("rootfs"), &t.root().join("c1")).unwrap(),
        None
    );
    assert!(!mounts_under(&t.dir).contains(&b1.join("rootfs")));
    assert!(!m1.upper.exists() && !m1.work.exists());

    // c2 keeps its upper: `image diff` exports it with whiteouts as .wh. entries.
    run(&t, &b2, "c2", &["sh", "-c", "echo n > /opt/new && rm /data/new"]);
    let mut keep = annotations(&b2);
    keep.insert("io.tinyrt.rootfs.keep-upper".into(), "true".into());
    let kept = unmount_rootfs(&keep, &b2.join("rootfs"), &t.root().join("c2")).unwrap();
    assert_eq!(kept.as_deref(), Some(m2.upper.as_path()));
    assert!(mounts_under(&t.dir).is_empty(), "{:?}", mounts_under(&t.dir));
    tinyrt(&t, &["diff", "c2", t.p("diff.tar").to_str().unwrap()]);
    let mut names = BTreeSet::new();
    for e in tar::Archive::new(std::fs::File::open(t.p("diff.tar")).unwrap()).entries().unwrap() {
        names.insert(e.unwrap().path().unwrap().display().to_string());
    }
    assert!(names.contains("opt/new") && names.contains("data/.wh.new"), "{names:?}");
    tinyrt(&t, &["rm", "--upper", "c2"]);
    assert!(!m2.upper.exists());

    // Bundles gone: every layer is collected.
    tinyrt(&t, &["rm", "--bundle", b1.to_str().unwrap(), b2.to_str().unwrap()]);
    let layers: serde_json::Value = serde_json::from_str(&tinyrt(&t, &["ls", "--layers", "--format", "json"])).unwrap();
    assert_eq!(layers.as_array().unwrap().len(), 0, "{layers}");
    assert!(!b1.exists() && !b2.exists());
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
    let out = tinyrt(&t, &["import", "-q", t.p("many.tar").to_str().unwrap()]);
    assert!(out.contains("layers=66 unpacked=66"), "{out}");
    let b = t.p("b");
    tinyrt(&t, &["bundle", "many:1", b.to_str().unwrap()]);
    assert!(annotations(&b)["io.tinyrt.rootfs.lower"].len() > 4096);
    let m = mount(&t, &b, "m1");
    assert_eq!(m.lowers.len(), 66);
    assert_eq!(
        run(&t, &b, "m1", &["sh", "-c", "cat /top; ls /layers | wc -l"])
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["65", "65"]
    );
    unmount_rootfs(&annotations(&b), &b.join("rootfs"), &t.root().join("m1")).unwrap();
    assert!(mounts_under(&t.dir).is_empty());
}
