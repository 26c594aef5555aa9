//! The content-addressed store: layers (by diff_id), images, bundle and container records,
//! and the garbage collection that ties them together. See the layout in `super`.

use super::unpack::{self, UnpackError};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{what}: {kind} digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        kind: &'static str,
        expected: String,
        actual: String,
    },
    #[error("layer {layer} ({what}): {source}")]
    Unpack {
        layer: String,
        what: String,
        #[source]
        source: UnpackError,
    },
    #[error("layer {layer} ({what}): decompressing: {err}")]
    Decompress { layer: String, what: String, err: std::io::Error },
    #[error("invalid digest {0:?}: only sha256:<64 hex digits> is supported")]
    BadDigest(String),
    #[error("no image {0:?} in the store")]
    NoImage(String),
    #[error("{0:?} names more than one image: {1}")]
    Ambiguous(String, String),
    #[error("{path}: corrupt: {msg}")]
    Corrupt { path: PathBuf, msg: String },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |err| StoreError::Io {
        path: path.to_path_buf(),
        err,
    }
}

/// A sha256 digest (`sha256:<hex>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Result<Digest> {
        let hex = s.strip_prefix("sha256:").ok_or_else(|| StoreError::BadDigest(s.into()))?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(StoreError::BadDigest(s.into()));
        }
        Ok(Digest(hex.to_string()))
    }
    pub fn from_hasher(h: Sha256) -> Digest {
        Digest(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }
    pub fn of(bytes: &[u8]) -> Digest {
        let mut h = Sha256::new();
        h.update(bytes);
        Digest::from_hasher(h)
    }
    pub fn hex(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

/// A reader that hashes and counts what passes through it.
pub struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    pub n: u64,
    tick: Option<Box<dyn FnMut(u64) + 'static>>,
}

impl<R: Read> HashReader<R> {
    pub fn new(inner: R) -> Self {
        HashReader {
            inner,
            hasher: Sha256::new(),
            n: 0,
            tick: None,
        }
    }
    pub fn digest(self) -> Digest {
        Digest::from_hasher(self.hasher)
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.hasher.update(&buf[..k]);
        self.n += k as u64;
        if let Some(t) = &mut self.tick {
            t(k as u64);
        }
        Ok(k)
    }
}

/// How a layer blob is compressed (from its first bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Where a layer comes from, for messages and checks.
#[derive(Debug, Clone)]
pub struct LayerSource {
    /// e.g. "blobs/sha256/ab.. in busybox.tar"
    pub what: String,
    /// The digest of the blob as shipped (compressed), when the source names it.
    pub blob_digest: Option<Digest>,
    /// The digest of the uncompressed tar (the image config's rootfs.diff_ids).
    pub diff_id: Digest,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerRecord {
    pub diff_id: String,
    #[serde(default)]
    pub blobs: Vec<String>,
    pub size: u64,
    pub entries: u64,
    pub created: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `sha256:<hex>` of the image config.
    pub id: String,
    #[serde(default)]
    pub names: Vec<String>,
    /// diff_ids, bottom layer first (the config's order).
    pub layers: Vec<String>,
    pub config: serde_json::Value,
    pub created: String,
    #[serde(default)]
    pub source: String,
}

impl ImageRecord {
    pub fn short_id(&self) -> &str {
        let h = self.id.strip_prefix("sha256:").unwrap_or(&self.id);
        &h[..12.min(h.len())]
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleRecord {
    pub dir: PathBuf,
    pub image: String,
    pub created: String,
}

/// What a container's overlay needs recorded (in `<store>/containers/<key>/mount.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub key: String,
    pub id: String,
    pub state_dir: PathBuf,
    pub rootfs: PathBuf,
    pub lowers: Vec<PathBuf>,
    pub keep_upper: bool,
    pub mounted: bool,
    pub created: String,
}

/// An flock on `<store>/lock`, held while this lives.
pub struct StoreLock(#[allow(dead_code)] File);

#[derive(Debug, Default)]
pub struct GcReport {
    pub layers_removed: Vec<String>,
    pub bytes_freed: u64,
    pub stale_containers: Vec<String>,
    pub stale_bundles: Vec<PathBuf>,
}

pub struct ImageStore {
    root: PathBuf,
}

fn now() -> String {
    crate::state::rfc3339(std::time::SystemTime::now())
}

fn mkdir(p: &Path, mode: u32) -> Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(mode).create(p).map_err(io(p))
}

fn read_json<T: serde::de::DeserializeOwned>(p: &Path) -> Result<T> {
    let text = std::fs::read(p).map_err(io(p))?;
    serde_json::from_slice(&text).map_err(|e| StoreError::Corrupt {
        path: p.to_path_buf(),
        msg: e.to_string(),
    })
}

pub(crate) fn write_json<T: Serialize>(p: &Path, v: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(v).expect("records serialize");
    crate::state::write_atomic(p, &bytes, 0o600).map_err(|e| StoreError::Invalid(e.to_string()))
}

/// Size in bytes of everything under `p` (not following symlinks).
fn du(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(md) = std::fs::symlink_metadata(p) else { return 0 };
    let mut n = md.blocks() * 512;
    if md.is_dir()
        && let Ok(rd) = std::fs::read_dir(p)
    {
        n += rd.flatten().map(|e| du(&e.path())).sum::<u64>();
    }
    n
}

/// Whether `path` is a mount point in our mount namespace.
pub fn is_mountpoint(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    text.lines()
        .any(|l| l.split(' ').nth(4).map(unescape_mountinfo).as_deref() == Some(want.as_os_str().as_encoded_bytes()))
}

fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b.get(i + 1..i + 4).filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        if b[i] == b'\\'
            && let Some(d) = oct
        {
            out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

impl ImageStore {
    /// Open (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<ImageStore> {
        let root = std::path::absolute(root).map_err(io(root))?;
        let s = ImageStore { root };
        for d in ["layers", "images", "bundles", "containers", "tmp"] {
            mkdir(&s.root.join(d), 0o700)?;
        }
        Ok(s)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock(&self, how: i32) -> Result<StoreLock> {
        let p = self.root.join("lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io(&p))?;
        if unsafe { libc::flock(f.as_raw_fd(), how) } != 0 {
            return Err(io(&p)(std::io::Error::last_os_error()));
        }
        Ok(StoreLock(f))
    }
    /// For anything that adds or removes layers and images.
    pub fn lock_exclusive(&self) -> Result<StoreLock> {
        self.lock(libc::LOCK_EX)
    }
    /// For recording a container's use of layers (GC waits for it).
    pub fn lock_shared(&self) -> Result<StoreLock> {
        self.lock(libc::LOCK_SH)
    }

    /// The directory of a layer's content (an overlay lower dir).
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex()).join("diff")
    }

    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.root.join("layers").join(diff_id.hex()).join("layer.json").is_file()
    }

    /// The diff_id of a lower dir of this store (`<store>/layers/<hex>/diff`), if it is one.
    pub fn layer_of_dir(&self, dir: &Path) -> Option<String> {
        let rest = dir.strip_prefix(self.root.join("layers")).ok()?;
        let mut c = rest.components();
        let hex = c.next()?.as_os_str().to_str()?.to_string();
        (c.next()?.as_os_str() == "diff" && c.next().is_none()).then_some(hex)
    }

    /// Unpack `blob` as layer `src.diff_id` unless the store has it. The blob's digest (when
    /// known) and the uncompressed digest are checked; the layer appears in the store only
    /// whole and verified. Returns whether it was unpacked (false: it was already there).
    /// `tick` is told of every compressed byte read. Call with the exclusive lock held.
    pub fn add_layer(&self, blob: impl Read, src: &LayerSource, tick: Option<Box<dyn FnMut(u64)>>) -> Result<bool> {
        if self.has_layer(&src.diff_id) {
            return Ok(false);
        }
        let tmp = self.root.join("tmp").join(format!("{}-{}", src.diff_id.hex(), std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let res = self.unpack_into(blob, src, &tmp, tick);
        let res = res.and_then(|rec| {
            write_json(&tmp.join("layer.json"), &rec)?;
            let dest = self.root.join("layers").join(src.diff_id.hex());
            // A layer dir without layer.json is a leftover (crash between rename and write,
            // impossible here, or an old format): replace it.
            if dest.exists() {
                std::fs::remove_dir_all(&dest).map_err(io(&dest))?;
            }
            std::fs::rename(&tmp, &dest).map_err(io(&dest))
        });
        if res.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        res.map(|()| true)
    }

    fn unpack_into(&self, blob: impl Read, src: &LayerSource, tmp: &Path, tick: Option<Box<dyn FnMut(u64)>>) -> Result<LayerRecord> {
        let layer = src.diff_id.to_string();
        mkdir(&tmp.join("diff"), 0o755)?;
        let mut comp = HashReader::new(blob);
        comp.tick = tick;
        let dec_err = |err| StoreError::Decompress {
            layer: layer.clone(),
            what: src.what.clone(),
            err,
        };
        let mut buf = BufReader::with_capacity(1 << 16, &mut comp);
        let kind = Compression::sniff(buf.fill_buf().map_err(dec_err)?);
        let stream: Box<dyn Read + '_> = match kind {
            Compression::None => Box::new(buf),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buf)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buf).map_err(dec_err)?),
        };
        let mut raw = HashReader::new(stream);
        let stats = unpack::unpack(&mut raw, &tmp.join("diff")).map_err(|e| match e {
            // A read error under the tar reader is the decompressor's (truncated, corrupt).
            UnpackError::Tar(err) if kind != Compression::None => dec_err(err),
            e => StoreError::Unpack {
                layer: layer.clone(),
                what: src.what.clone(),
                source: e,
            },
        })?;
        // The tar's end-of-archive padding and anything after it count for the digest.
        std::io::copy(&mut raw, &mut std::io::sink()).map_err(dec_err)?;
        let size = raw.n;
        let diff = raw.digest();
        std::io::copy(&mut comp, &mut std::io::sink()).map_err(dec_err)?;
        let blob_digest = comp.digest();
        if diff != src.diff_id {
            return Err(StoreError::DigestMismatch {
                what: format!("layer {} ({})", src.diff_id, src.what),
                kind: "uncompressed (diff_id)",
                expected: src.diff_id.to_string(),
                actual: diff.to_string(),
            });
        }
        if let Some(want) = &src.blob_digest
            && *want != blob_digest
        {
            return Err(StoreError::DigestMismatch {
                what: format!("layer {} ({})", src.diff_id, src.what),
                kind: "compressed blob",
                expected: want.to_string(),
                actual: blob_digest.to_string(),
            });
        }
        Ok(LayerRecord {
            diff_id: diff.to_string(),
            blobs: vec![blob_digest.to_string()],
            size,
            entries: stats.entries,
            created: now(),
        })
    }

    pub fn layers(&self) -> Result<Vec<(LayerRecord, PathBuf)>> {
        let mut out = Vec::new();
        let d = self.root.join("layers");
        for e in std::fs::read_dir(&d).map_err(io(&d))?.flatten() {
            let p = e.path().join("layer.json");
            if let Ok(r) = read_json::<LayerRecord>(&p) {
                out.push((r, e.path().join("diff")));
            }
        }
        out.sort_by(|a, b| a.0.diff_id.cmp(&b.0.diff_id));
        Ok(out)
    }

    // ---- images ----

    fn image_path(&self, id: &str) -> PathBuf {
        self.root
            .join("images")
            .join(format!("{}.json", id.strip_prefix("sha256:").unwrap_or(id)))
    }

    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let d = self.root.join("images");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&d).map_err(io(&d))?.flatten() {
            if e.path().extension().is_some_and(|x| x == "json") {
                out.push(read_json::<ImageRecord>(&e.path())?);
            }
        }
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// An image by name, full id, or id prefix (at least 4 hex digits).
    pub fn find_image(&self, what: &str) -> Result<ImageRecord> {
        let all = self.images()?;
        if let Some(i) = all.iter().find(|i| i.names.iter().any(|n| n == what)) {
            return Ok(i.clone());
        }
        let with_latest = format!("{what}:latest");
        if let Some(i) = all.iter().find(|i| i.names.contains(&with_latest)) {
            return Ok(i.clone());
        }
        let hex = what.strip_prefix("sha256:").unwrap_or(what);
        if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let m: Vec<&ImageRecord> = all
                .iter()
                .filter(|i| i.id.strip_prefix("sha256:").unwrap_or(&i.id).starts_with(hex))
                .collect();
            match m.len() {
                1 => return Ok(m[0].clone()),
                0 => {}
                _ => {
                    return Err(StoreError::Ambiguous(
                        what.into(),
                        m.iter().map(|i| i.short_id()).collect::<Vec<_>>().join(", "),
                    ));
                }
            }
        }
        Err(StoreError::NoImage(what.into()))
    }

    /// Record an image (its layers must be in the store). Names move to it from any other
    /// image that had them, as tags do.
    pub fn put_image(&self, mut rec: ImageRecord) -> Result<ImageRecord> {
        for other in self.images()? {
            if other.id == rec.id {
                // Older names first, then the new ones.
                let mut names = other.names;
                names.extend(rec.names.iter().filter(|n| !names.contains(n)).cloned().collect::<Vec<_>>());
                rec.names = names;
                rec.created = other.created;
            } else if other.names.iter().any(|n| rec.names.contains(n)) {
                let mut o = other.clone();
                o.names.retain(|n| !rec.names.contains(n));
                write_json(&self.image_path(&o.id), &o)?;
            }
        }
        write_json(&self.image_path(&rec.id), &rec)?;
        Ok(rec)
    }

    /// Remove an image record (by name or id); its layers go at the next GC. Given a name of
    /// an image with several names, only that name goes.
    pub fn remove_image(&self, what: &str) -> Result<ImageRecord> {
        let mut rec = self.find_image(what)?;
        if rec.names.len() > 1 && rec.names.iter().any(|n| n == what) {
            rec.names.retain(|n| n != what);
            write_json(&self.image_path(&rec.id), &rec)?;
            return Ok(rec);
        }
        let p = self.image_path(&rec.id);
        std::fs::remove_file(&p).map_err(io(&p))?;
        rec.names.clear();
        Ok(rec)
    }

    // ---- bundles ----

    fn bundle_key(dir: &Path) -> String {
        Digest::of(dir.as_os_str().as_encoded_bytes()).hex()[..16].to_string()
    }

    pub fn add_bundle(&self, dir: &Path, image: &str) -> Result<()> {
        let p = self.root.join("bundles").join(format!("{}.json", Self::bundle_key(dir)));
        write_json(
            &p,
            &BundleRecord {
                dir: dir.to_path_buf(),
                image: image.into(),
                created: now(),
            },
        )
    }

    pub fn bundles(&self) -> Result<Vec<BundleRecord>> {
        let d = self.root.join("bundles");
        let mut out: Vec<BundleRecord> = Vec::new();
        for e in std::fs::read_dir(&d).map_err(io(&d))?.flatten() {
            if let Ok(r) = read_json(&e.path()) {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.dir.cmp(&b.dir));
        Ok(out)
    }

    pub fn forget_bundle(&self, dir: &Path) -> Result<()> {
        let p = self.root.join("bundles").join(format!("{}.json", Self::bundle_key(dir)));
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&p)(e)),
            _ => Ok(()),
        }
    }

    /// Remove a bundle made by `image bundle`: its config.json and its (unmounted, empty)
    /// rootfs dir, the dir itself if then empty, and the record.
    pub fn remove_bundle(&self, dir: &Path) -> Result<()> {
        let dir = std::path::absolute(dir).map_err(io(dir))?;
        if !self.bundles()?.iter().any(|b| b.dir == dir) {
            return Err(StoreError::Invalid(format!(
                "{} is not a bundle made by tinyrt image bundle",
                dir.display()
            )));
        }
        let rootfs = dir.join("rootfs");
        if is_mountpoint(&rootfs) {
            return Err(StoreError::Invalid(format!(
                "{}: still mounted (a container uses it)",
                rootfs.display()
            )));
        }
        let cfg = dir.join("config.json");
        if let Err(e) = std::fs::remove_file(&cfg)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(io(&cfg)(e));
        }
        let _ = std::fs::remove_dir(&rootfs);
        let _ = std::fs::remove_dir(&dir);
        self.forget_bundle(&dir)
    }

    // ---- containers ----

    pub fn container_dir(&self, key: &str) -> PathBuf {
        self.root.join("containers").join(key)
    }

    pub fn containers(&self) -> Result<Vec<ContainerRecord>> {
        let d = self.root.join("containers");
        let mut out: Vec<ContainerRecord> = Vec::new();
        for e in std::fs::read_dir(&d).map_err(io(&d))?.flatten() {
            if let Ok(r) = read_json(&e.path().join("mount.json")) {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// A container record by key, or by container id when that is unique.
    pub fn find_container(&self, what: &str) -> Result<ContainerRecord> {
        let all = self.containers()?;
        if let Some(c) = all.iter().find(|c| c.key == what) {
            return Ok(c.clone());
        }
        let m: Vec<&ContainerRecord> = all.iter().filter(|c| c.id == what).collect();
        match m.len() {
            1 => Ok(m[0].clone()),
            0 => Err(StoreError::Invalid(format!("no container upper dir {what:?} in the store"))),
            _ => Err(StoreError::Ambiguous(
                what.into(),
                m.iter().map(|c| c.key.as_str()).collect::<Vec<_>>().join(", "),
            )),
        }
    }

    pub fn put_container(&self, rec: &ContainerRecord) -> Result<()> {
        write_json(&self.container_dir(&rec.key).join("mount.json"), rec)
    }

    /// Remove a container's upper/work dirs and record (it must not be mounted).
    pub fn remove_container(&self, key: &str) -> Result<()> {
        let d = self.container_dir(key);
        match std::fs::remove_dir_all(&d) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&d)(e)),
            _ => Ok(()),
        }
    }

    // ---- gc ----

    /// Remove every layer no image, bundle or container uses; forget bundles whose dir is
    /// gone and containers whose state dir is gone (unmounted, upper not kept); clear tmp/.
    pub fn gc(&self) -> Result<GcReport> {
        let _lock = self.lock_exclusive()?;
        let mut rep = GcReport::default();
        let mut used: HashSet<String> = HashSet::new();
        for i in self.images()? {
            for l in &i.layers {
                used.insert(Digest::parse(l)?.hex().to_string());
            }
        }
        for b in self.bundles()? {
            match bundle_lowers(&b.dir) {
                Some(lowers) => used.extend(lowers.iter().filter_map(|l| self.layer_of_dir(l))),
                None => {
                    self.forget_bundle(&b.dir)?;
                    rep.stale_bundles.push(b.dir);
                }
            }
        }
        for c in self.containers()? {
            let live = is_mountpoint(&c.rootfs) || c.keep_upper || c.state_dir.exists();
            if live {
                used.extend(c.lowers.iter().filter_map(|l| self.layer_of_dir(l)));
            } else {
                self.remove_container(&c.key)?;
                rep.stale_containers.push(c.key);
            }
        }
        let d = self.root.join("layers");
        let mut names: BTreeSet<String> = BTreeSet::new();
        for e in std::fs::read_dir(&d).map_err(io(&d))?.flatten() {
            names.insert(e.file_name().to_string_lossy().into_owned());
        }
        for hex in names {
            if used.contains(&hex) {
                continue;
            }
            let p = d.join(&hex);
            rep.bytes_freed += du(&p);
            // Out of layers/ first (atomic), then deleted.
            let doomed = self.root.join("tmp").join(format!("gc-{hex}"));
            std::fs::rename(&p, &doomed).map_err(io(&p))?;
            std::fs::remove_dir_all(&doomed).map_err(io(&doomed))?;
            rep.layers_removed.push(format!("sha256:{hex}"));
        }
        let t = self.root.join("tmp");
        for e in std::fs::read_dir(&t).map_err(io(&t))?.flatten() {
            let _ = std::fs::remove_dir_all(e.path());
        }
        Ok(rep)
    }
}

/// The lower dirs a bundle's config.json declares; None if the bundle is gone.
pub fn bundle_lowers(dir: &Path) -> Option<Vec<PathBuf>> {
    let text = std::fs::read(dir.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    let lower = v["annotations"][super::ANN_LOWER].as_str().unwrap_or("");
    Some(lower.split(':').filter(|s| !s.is_empty()).map(PathBuf::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::unpack::tests::{Scratch, raw_entry, tar_of};
    use std::io::Write;

    fn gz(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    fn sample() -> Vec<u8> {
        tar_of(|b| {
            raw_entry(b, b"etc/", tar::EntryType::Directory, None, b"");
            raw_entry(b, b"etc/hostname", tar::EntryType::Regular, None, &[b'x'; 5000]);
        })
    }

    /// Everything under the store except the lock file.
    fn snapshot(s: &ImageStore) -> Vec<String> {
        let mut v = Vec::new();
        for d in ["layers", "images", "tmp", "containers", "bundles"] {
            for e in std::fs::read_dir(s.root().join(d)).unwrap().flatten() {
                v.push(format!("{d}/{}", e.file_name().to_string_lossy()));
            }
        }
        v.sort();
        v
    }

    fn src(diff: Digest, blob: Option<Digest>) -> LayerSource {
        LayerSource {
            what: "test".into(),
            blob_digest: blob,
            diff_id: diff,
        }
    }

    #[test]
    fn layer_verified_and_unpacked_once() {
        let s = Scratch::new("store");
        let st = ImageStore::open(&s.0.join("store")).unwrap();
        let t = sample();
        let z = zstd::encode_all(&t[..], 3).unwrap();
        let g = gz(&t);
        assert!(st.add_layer(&g[..], &src(Digest::of(&t), Some(Digest::of(&g))), None).unwrap());
        assert!(st.layer_dir(&Digest::of(&t)).join("etc/hostname").is_file());
        // The same content zstd-compressed: already there, nothing unpacked.
        assert!(!st.add_layer(&z[..], &src(Digest::of(&t), Some(Digest::of(&z))), None).unwrap());
        st.gc().unwrap();
        assert!(snapshot(&st).is_empty());
        assert!(st.add_layer(&z[..], &src(Digest::of(&t), Some(Digest::of(&z))), None).unwrap());
    }

    #[test]
    fn bad_layers_leave_the_store_unchanged() {
        let s = Scratch::new("store-bad");
        let st = ImageStore::open(&s.0.join("store")).unwrap();
        let t = sample();
        let g = gz(&t);
        let other = Digest::of(b"something else");
        let hostile = tar_of(|b| {
            raw_entry(b, b"ok", tar::EntryType::Regular, None, b"fine");
            raw_entry(b, b"../escape", tar::EntryType::Regular, None, b"pwned");
        });
        let symlink_out = tar_of(|b| {
            raw_entry(b, b"ok", tar::EntryType::Regular, None, b"fine");
            raw_entry(b, b"l", tar::EntryType::Symlink, Some(b"../../.."), b"");
            raw_entry(b, b"l/pwned", tar::EntryType::Regular, None, b"pwned");
        });
        let cases: Vec<(&str, Vec<u8>, LayerSource)> = vec![
            ("diff_id mismatch", g.clone(), src(other.clone(), None)),
            ("blob digest mismatch", g.clone(), src(Digest::of(&t), Some(other.clone()))),
            ("truncated gzip", g[..g.len() / 2].to_vec(), src(Digest::of(&t), None)),
            ("traversal", hostile.clone(), src(Digest::of(&hostile), None)),
            ("symlink out", symlink_out.clone(), src(Digest::of(&symlink_out), None)),
        ];
        let before = snapshot(&st);
        for (what, blob, src) in cases {
            let err = st.add_layer(&blob[..], &src, None).expect_err(what);
            let msg = err.to_string();
            assert!(msg.contains("sha256:"), "{what}: {msg}");
            assert_eq!(snapshot(&st), before, "{what}: store changed");
        }
        assert!(!s.0.join("escape").exists() && !s.0.join("pwned").exists());
    }
}
