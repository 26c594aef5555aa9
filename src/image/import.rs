//! Importing images, offline: a `docker save` tarball (manifest.json; the old `<id>/layer.tar`
//! form and the newer OCI-inside form) or an OCI image layout (a directory, or a tar of one:
//! what `skopeo copy ... oci:DIR[:REF]` writes). Every blob is checked against its digest;
//! every layer lands in the store once.

use super::store::{Digest, ImageRecord, ImageStore, LayerSource, StoreError};
use serde_json::Value;
use std::collections::HashMap;
use std::fs::File;
use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{src}: {msg}")]
    Format { src: String, msg: String },
    #[error("{src}: no {entry:?} in it")]
    Missing { src: String, entry: String },
    #[error("{src}: {entry}: {err}")]
    Io { src: String, entry: String, err: std::io::Error },
    #[error("{src}: {0}", src = .1)]
    Store(#[source] Box<StoreError>, String),
}

pub type Result<T> = std::result::Result<T, ImportError>;

#[derive(Debug, Clone, Default)]
pub struct ImportOpts {
    /// A name to give the image (besides those in the archive).
    pub name: Option<String>,
    /// For an OCI layout with several images: the `org.opencontainers.image.ref.name` to take.
    pub reference: Option<String>,
    /// Draw a progress line on stderr if it is a terminal.
    pub progress: bool,
}

#[derive(Debug, Clone)]
pub struct ImportReport {
    pub image: ImageRecord,
    pub layers_total: usize,
    pub layers_unpacked: usize,
    pub bytes_read: u64,
}

/// Files of an image source: a directory or a tar.
trait Source {
    fn name(&self) -> &str;
    fn open(&self, entry: &str) -> Result<Box<dyn Read + '_>>;
    fn exists(&self, entry: &str) -> bool;
    fn read(&self, entry: &str) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.open(entry)?.read_to_end(&mut v).map_err(|err| ImportError::Io {
            src: self.name().into(),
            entry: entry.into(),
            err,
        })?;
        Ok(v)
    }
    fn json(&self, entry: &str) -> Result<Value> {
        let b = self.read(entry)?;
        serde_json::from_slice(&b).map_err(|e| ImportError::Format {
            src: self.name().into(),
            msg: format!("{entry}: not valid JSON: {e}"),
        })
    }
}

struct DirSource {
    dir: PathBuf,
    name: String,
}

impl Source for DirSource {
    fn name(&self) -> &str {
        &self.name
    }
    fn open(&self, entry: &str) -> Result<Box<dyn Read + '_>> {
        let rel = super::unpack::clean_path(entry.as_bytes()).map_err(|why| ImportError::Format {
            src: self.name.clone(),
            msg: format!("{entry:?}: {why}"),
        })?;
        let p: PathBuf = self.dir.join(rel.iter().collect::<PathBuf>());
        match File::open(&p) {
            Ok(f) => Ok(Box::new(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ImportError::Missing {
                src: self.name.clone(),
                entry: entry.into(),
            }),
            Err(err) => Err(ImportError::Io {
                src: self.name.clone(),
                entry: entry.into(),
                err,
            }),
        }
    }
    fn exists(&self, entry: &str) -> bool {
        super::unpack::clean_path(entry.as_bytes()).is_ok_and(|r| self.dir.join(r.iter().collect::<PathBuf>()).is_file())
    }
}

/// A tar read by seeking: an index of its regular files (links resolved) to offsets.
struct TarSource {
    path: PathBuf,
    name: String,
    index: HashMap<String, (u64, u64)>,
}

fn norm(p: &str) -> String {
    p.split('/').filter(|c| !c.is_empty() && *c != ".").collect::<Vec<_>>().join("/")
}

impl TarSource {
    fn new(path: &Path) -> Result<TarSource> {
        let name = path.display().to_string();
        let ioe = |entry: &str, err| ImportError::Io {
            src: name.clone(),
            entry: entry.into(),
            err,
        };
        let f = File::open(path).map_err(|e| ioe("(open)", e))?;
        let mut ar = tar::Archive::new(std::io::BufReader::new(f));
        let mut index = HashMap::new();
        let mut links: Vec<(String, String)> = Vec::new();
        for e in ar.entries().map_err(|e| ioe("(read)", e))? {
            let e = e.map_err(|e| ioe("(read)", e))?;
            let p = norm(&String::from_utf8_lossy(&e.path_bytes()));
            match e.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    index.insert(p, (e.raw_file_position(), e.size()));
                }
                tar::EntryType::Symlink => {
                    let t = String::from_utf8_lossy(&e.link_name_bytes().unwrap_or_default()).into_owned();
                    // Relative to the link's directory (docker save links duplicate layers so).
                    let dir = p.rsplit_once('/').map(|(d, _)| d.to_string()).unwrap_or_default();
                    let mut parts: Vec<&str> = if t.starts_with('/') {
                        vec![]
                    } else {
                        dir.split('/').filter(|c| !c.is_empty()).collect()
                    };
                    for c in t.split('/') {
                        match c {
                            "" | "." => {}
                            ".." => {
                                parts.pop();
                            }
                            c => parts.push(c),
                        }
                    }
                    links.push((p, parts.join("/")));
                }
                tar::EntryType::Link => {
                    let t = norm(&String::from_utf8_lossy(&e.link_name_bytes().unwrap_or_default()));
                    links.push((p, t));
                }
                _ => {}
            }
        }
        for _ in 0..8 {
            for (from, to) in &links {
                if let Some(v) = index.get(to).copied() {
                    index.entry(from.clone()).or_insert(v);
                }
            }
        }
        Ok(TarSource {
            path: path.to_path_buf(),
            name,
            index,
        })
    }
}

impl Source for TarSource {
    fn name(&self) -> &str {
        &self.name
    }
    fn open(&self, entry: &str) -> Result<Box<dyn Read + '_>> {
        let Some((off, size)) = self.index.get(&norm(entry)).copied() else {
            return Err(ImportError::Missing {
                src: self.name.clone(),
                entry: entry.into(),
            });
        };
        let ioe = |err| ImportError::Io {
            src: self.name.clone(),
            entry: entry.into(),
            err,
        };
        let mut f = File::open(&self.path).map_err(ioe)?;
        f.seek(SeekFrom::Start(off)).map_err(ioe)?;
        Ok(Box::new(std::io::BufReader::with_capacity(1 << 16, f.take(size))))
    }
    fn exists(&self, entry: &str) -> bool {
        self.index.contains_key(&norm(entry))
    }
}

/// A layer to fetch: where in the source, and what it must hash to.
struct LayerRef {
    entry: String,
    blob_digest: Option<Digest>,
    diff_id: Digest,
}

/// One image found in a source, before import.
struct Found {
    config: Vec<u8>,
    names: Vec<String>,
    layers: Vec<LayerRef>,
}

fn fmt_err(src: &dyn Source, msg: impl Into<String>) -> ImportError {
    ImportError::Format {
        src: src.name().into(),
        msg: msg.into(),
    }
}

fn digest_of(src: &dyn Source, v: &Value, what: &str) -> Result<Digest> {
    let s = v.as_str().ok_or_else(|| fmt_err(src, format!("{what}: no digest")))?;
    Digest::parse(s).map_err(|e| fmt_err(src, format!("{what}: {e}")))
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// The diff_ids in an image config.
fn diff_ids(src: &dyn Source, config: &[u8]) -> Result<Vec<Digest>> {
    let v: Value = serde_json::from_slice(config).map_err(|e| fmt_err(src, format!("image config: not valid JSON: {e}")))?;
    let ids = v["rootfs"]["diff_ids"]
        .as_array()
        .ok_or_else(|| fmt_err(src, "image config has no rootfs.diff_ids"))?;
    ids.iter()
        .enumerate()
        .map(|(i, d)| digest_of(src, d, &format!("rootfs.diff_ids[{i}]")))
        .collect()
}

/// Images of a `docker save` archive (manifest.json).
fn docker_images(src: &dyn Source) -> Result<Vec<Found>> {
    let m = src.json("manifest.json")?;
    let list = m.as_array().ok_or_else(|| fmt_err(src, "manifest.json is not a list"))?;
    let mut out = Vec::new();
    for (i, img) in list.iter().enumerate() {
        let cfg_entry = img["Config"]
            .as_str()
            .ok_or_else(|| fmt_err(src, format!("manifest.json[{i}]: no Config")))?;
        let config = src.read(cfg_entry)?;
        // The config's file name is its digest (`<hex>.json` or `blobs/sha256/<hex>`).
        let base = cfg_entry.rsplit('/').next().unwrap_or(cfg_entry).trim_end_matches(".json");
        if base.len() == 64 && Digest::of(&config).hex() != base {
            return Err(ImportError::Store(
                Box::new(StoreError::DigestMismatch {
                    what: format!("image config {cfg_entry}"),
                    kind: "config",
                    expected: format!("sha256:{base}"),
                    actual: Digest::of(&config).to_string(),
                }),
                src.name().into(),
            ));
        }
        let ids = diff_ids(src, &config)?;
        let layers = img["Layers"]
            .as_array()
            .ok_or_else(|| fmt_err(src, format!("manifest.json[{i}]: no Layers")))?;
        if layers.len() != ids.len() {
            return Err(fmt_err(
                src,
                format!(
                    "manifest.json[{i}]: {} layers but the config has {} diff_ids",
                    layers.len(),
                    ids.len()
                ),
            ));
        }
        let mut refs = Vec::new();
        for (l, diff_id) in layers.iter().zip(ids) {
            let entry = l
                .as_str()
                .ok_or_else(|| fmt_err(src, format!("manifest.json[{i}]: a layer is not a string")))?;
            // Newer docker: blobs/sha256/<hex> (the blob's own digest); older: <id>/layer.tar.
            let blob_digest = entry
                .strip_prefix("blobs/sha256/")
                .and_then(|h| Digest::parse(&format!("sha256:{h}")).ok());
            refs.push(LayerRef {
                entry: entry.into(),
                blob_digest,
                diff_id,
            });
        }
        let names = img["RepoTags"]
            .as_array()
            .map(|a| a.iter().filter_map(|n| n.as_str().map(String::from)).collect())
            .unwrap_or_default();
        out.push(Found {
            config,
            names,
            layers: refs,
        });
    }
    Ok(out)
}

/// Read and verify a blob named by a descriptor.
fn read_blob(src: &dyn Source, desc: &Value, what: &str) -> Result<(Digest, Vec<u8>)> {
    let d = digest_of(src, &desc["digest"], what)?;
    let b = src.read(&blob_path(&d))?;
    if Digest::of(&b) != d {
        return Err(ImportError::Store(
            Box::new(StoreError::DigestMismatch {
                what: format!("{what} {}", blob_path(&d)),
                kind: "blob",
                expected: d.to_string(),
                actual: Digest::of(&b).to_string(),
            }),
            src.name().into(),
        ));
    }
    Ok((d, b))
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    }
}

/// The image of an OCI layout (index.json), chosen by `reference` if several.
fn oci_images(src: &dyn Source, reference: Option<&str>) -> Result<Vec<Found>> {
    let index = src.json("index.json")?;
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    let ref_of = |d: &Value| d["annotations"]["org.opencontainers.image.ref.name"].as_str().map(String::from);
    let chosen: Vec<&Value> = match reference {
        Some(r) => manifests.iter().filter(|d| ref_of(d).as_deref() == Some(r)).collect(),
        None => manifests.iter().collect(),
    };
    if chosen.is_empty() {
        return Err(fmt_err(
            src,
            format!("index.json: no image with ref.name {:?}", reference.unwrap_or("")),
        ));
    }
    if chosen.len() > 1 {
        let refs: Vec<String> = chosen.iter().map(|d| ref_of(d).unwrap_or_else(|| "(unnamed)".into())).collect();
        return Err(fmt_err(
            src,
            format!(
                "index.json holds {} images ({}): choose one with --ref",
                chosen.len(),
                refs.join(", ")
            ),
        ));
    }
    let desc = chosen[0];
    let name = ref_of(desc);
    let mut manifest_desc = desc.clone();
    // An index (multi-platform): take the host's platform.
    for _ in 0..4 {
        let mt = manifest_desc["mediaType"].as_str().unwrap_or("");
        if !(mt.ends_with("image.index.v1+json") || mt.ends_with("manifest.list.v2+json")) {
            break;
        }
        let (_, b) = read_blob(src, &manifest_desc, "image index")?;
        let idx: Value = serde_json::from_slice(&b).map_err(|e| fmt_err(src, format!("image index: {e}")))?;
        let list = idx["manifests"].as_array().cloned().unwrap_or_default();
        manifest_desc = list
            .iter()
            .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == host_arch())
            .or(list.first())
            .cloned()
            .ok_or_else(|| fmt_err(src, "image index lists no manifest"))?;
    }
    let (_, mb) = read_blob(src, &manifest_desc, "manifest")?;
    let manifest: Value = serde_json::from_slice(&mb).map_err(|e| fmt_err(src, format!("manifest: {e}")))?;
    let (_, config) = read_blob(src, &manifest["config"], "image config")?;
    let ids = diff_ids(src, &config)?;
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    if layers.len() != ids.len() {
        return Err(fmt_err(
            src,
            format!("manifest has {} layers but the config has {} diff_ids", layers.len(), ids.len()),
        ));
    }
    let mut refs = Vec::new();
    for (i, (l, diff_id)) in layers.iter().zip(ids).enumerate() {
        let mt = l["mediaType"].as_str().unwrap_or("");
        if !(mt.is_empty() || mt.contains("tar") || mt.contains("rootfs")) {
            return Err(fmt_err(src, format!("layer {i}: unsupported media type {mt}")));
        }
        let d = digest_of(src, &l["digest"], &format!("layer {i}"))?;
        refs.push(LayerRef {
            entry: blob_path(&d),
            blob_digest: Some(d),
            diff_id,
        });
    }
    Ok(vec![Found {
        config,
        names: name.into_iter().collect(),
        layers: refs,
    }])
}

/// Progress on stderr: `layers done/total, bytes`, redrawn in place; only on a terminal.
struct Progress {
    on: bool,
    label: String,
    total: usize,
    done: usize,
    bytes: std::rc::Rc<std::cell::Cell<u64>>,
    last: std::rc::Rc<std::cell::Cell<u64>>,
}

fn human(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

impl Progress {
    fn draw(on: bool, label: &str, done: usize, total: usize, bytes: u64) {
        if on {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r\x1b[Kimporting {label}: layers {done}/{total}, {}", human(bytes));
            let _ = e.flush();
        }
    }
    fn tick(&self) -> Box<dyn FnMut(u64)> {
        let (bytes, last, on, label, done, total) = (
            self.bytes.clone(),
            self.last.clone(),
            self.on,
            self.label.clone(),
            self.done,
            self.total,
        );
        Box::new(move |n| {
            bytes.set(bytes.get() + n);
            if bytes.get() - last.get() >= 1 << 20 {
                last.set(bytes.get());
                Progress::draw(on, &label, done, total, bytes.get());
            }
        })
    }
    fn layer_done(&mut self) {
        self.done += 1;
        Progress::draw(self.on, &self.label, self.done, self.total, self.bytes.get());
    }
    fn finish(&self) {
        if self.on {
            eprintln!();
        }
    }
}

/// How to read `spec`: `docker-archive:PATH`, `oci:DIR[:REF]`, `oci-archive:PATH[:REF]`, or a
/// bare path (a directory is an OCI layout; a file is a tar, docker-archive if it has a
/// manifest.json, else an OCI layout in a tar). Returns the source, whether it is a
/// docker-archive, and the REF from the spec.
fn open_source(spec: &str) -> Result<(Box<dyn Source>, bool, Option<String>)> {
    let (kind, rest) = match spec.split_once(':') {
        Some((k @ ("docker-archive" | "oci" | "oci-archive"), r)) => (Some(k), r),
        _ => (None, spec),
    };
    // oci:DIR:REF, as skopeo takes it.
    let (path, reference) = match kind {
        // As skopeo: the path ends at the first ':' (the ref, e.g. "busybox:1.36", may hold more).
        Some("oci" | "oci-archive") if !Path::new(rest).exists() => match rest.split_once(':') {
            Some((p, r)) if Path::new(p).exists() => (p.to_string(), Some(r.to_string())),
            _ => (rest.to_string(), None),
        },
        _ => (rest.to_string(), None),
    };
    let p = Path::new(&path);
    let md = std::fs::metadata(p).map_err(|err| ImportError::Io {
        src: path.clone(),
        entry: "(open)".into(),
        err,
    })?;
    let src: Box<dyn Source> = if md.is_dir() {
        Box::new(DirSource {
            dir: p.to_path_buf(),
            name: path.clone(),
        })
    } else {
        Box::new(TarSource::new(p)?)
    };
    let docker = match kind {
        Some("docker-archive") => true,
        Some(_) => false,
        None => !md.is_dir() && src.exists("manifest.json"),
    };
    if !docker && !src.exists("index.json") {
        return Err(ImportError::Missing {
            src: path,
            entry: "index.json (an OCI layout) or manifest.json (a docker-archive)".into(),
        });
    }
    Ok((src, docker, reference))
}

/// Import every image of `spec` (see [`open_source`] for the forms) into the store.
pub fn import(store: &ImageStore, spec: &str, opts: &ImportOpts) -> Result<Vec<ImportReport>> {
    let (src, docker, spec_ref) = open_source(spec)?;
    let src = src.as_ref();
    let found = if docker {
        docker_images(src)?
    } else {
        oci_images(src, opts.reference.as_deref().or(spec_ref.as_deref()))?
    };
    if opts.name.is_some() && found.len() > 1 {
        return Err(fmt_err(src, format!("{} images in it: --name needs exactly one", found.len())));
    }
    let serr = |e: StoreError| ImportError::Store(Box::new(e), src.name().into());
    let _lock = store.lock_exclusive().map_err(serr)?;
    let mut out = Vec::new();
    for f in found {
        let id = Digest::of(&f.config);
        let mut prog = Progress {
            on: opts.progress && std::io::stderr().is_terminal(),
            label: f.names.first().cloned().unwrap_or_else(|| id.hex()[..12].to_string()),
            total: f.layers.len(),
            done: 0,
            bytes: Default::default(),
            last: Default::default(),
        };
        let mut unpacked = 0;
        for (i, l) in f.layers.iter().enumerate() {
            let what = format!("layer {} of {}: {} in {}", i + 1, f.layers.len(), l.entry, src.name());
            let ls = LayerSource {
                what,
                blob_digest: l.blob_digest.clone(),
                diff_id: l.diff_id.clone(),
            };
            if !store.has_layer(&l.diff_id) {
                let r = src.open(&l.entry)?;
                if store.add_layer(r, &ls, Some(prog.tick())).map_err(serr)? {
                    unpacked += 1;
                }
            }
            prog.layer_done();
        }
        prog.finish();
        let config: Value = serde_json::from_slice(&f.config).map_err(|e| fmt_err(src, format!("image config: {e}")))?;
        let mut names = f.names.clone();
        if let Some(n) = &opts.name
            && !names.contains(n)
        {
            names.push(n.clone());
        }
        let rec = ImageRecord {
            id: id.to_string(),
            names,
            layers: f.layers.iter().map(|l| l.diff_id.to_string()).collect(),
            config,
            created: crate::state::rfc3339(std::time::SystemTime::now()),
            source: src.name().into(),
        };
        let rec = store.put_image(rec).map_err(serr)?;
        out.push(ImportReport {
            image: rec,
            layers_total: f.layers.len(),
            layers_unpacked: unpacked,
            bytes_read: prog.bytes.get(),
        });
    }
    Ok(out)
}
