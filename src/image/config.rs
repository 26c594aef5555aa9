//! From an image to a bundle: config.json is tinyrt's default spec (runc's, terminal off)
//! with the image config on top (Entrypoint + Cmd, Env, WorkingDir, User, StopSignal,
//! Labels as annotations), and the rootfs declared as an overlay of the image's layers:
//!
//! * `annotations["io.tinyrt.rootfs.lower"]`: the layer dirs, topmost first, `:`-joined
//!   (overlayfs' lowerdir order);
//! * `annotations["io.tinyrt.rootfs.store"]`: the store (where the upper/work dirs go);
//! * `root.path = "rootfs"` (writable): an empty dir in the bundle, the overlay's mount point.
//!
//! `overlay::mount_rootfs` reads these at create; a bundle without them is a plain one.

use super::store::{Digest, ImageRecord, ImageStore, StoreError};
use super::{ANN_IMAGE, ANN_IMAGE_NAME, ANN_LOWER, ANN_STOP_SIGNAL, ANN_STORE};
use serde_json::{Value, json};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("image {image}: {field}: {msg}")]
    Field { image: String, field: &'static str, msg: String },
    #[error("bundle {dir}: {msg}")]
    Bundle { dir: PathBuf, msg: String },
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type Result<T> = std::result::Result<T, ConfigError>;

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// The file `rel` (e.g. "etc/passwd") as the merged image shows it: the topmost layer that
/// has it, or None if a whiteout or an opaque dir hides it first.
fn merged_file(lowers_top_first: &[PathBuf], rel: &str) -> Option<Vec<u8>> {
    for l in lowers_top_first {
        let p = l.join(rel);
        match std::fs::symlink_metadata(&p) {
            Ok(md) if md.is_file() => return std::fs::read(&p).ok(),
            Ok(md) if md.file_type().is_char_device() => return None,
            Ok(_) => return None,
            Err(_) => {}
        }
        // An opaque parent dir hides everything below it.
        let parent = Path::new(rel).parent().unwrap_or(Path::new(""));
        if parent.as_os_str().is_empty() {
            continue;
        }
        let dir = l.join(parent);
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
        let mut b = [0u8; 2];
        let n = unsafe { libc::lgetxattr(c.as_ptr(), c"trusted.overlay.opaque".as_ptr(), b.as_mut_ptr().cast(), 2) };
        if n == 1 && b[0] == b'y' {
            return None;
        }
    }
    None
}

/// Look up `name` in an /etc/passwd or /etc/group text: (id, gid field).
fn lookup(text: Option<&[u8]>, name: &str) -> Option<(u32, u32)> {
    let text = String::from_utf8_lossy(text?).into_owned();
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 3 || f[0] != name {
            return None;
        }
        Some((f[2].parse().ok()?, f.get(3).and_then(|g| g.parse().ok()).unwrap_or(0)))
    })
}

/// The image's `User` ("name", "uid", "uid:gid", "name:group") as (uid, gid), names
/// resolved in the image's own /etc/passwd and /etc/group.
pub fn resolve_user(user: &str, lowers_top_first: &[PathBuf], image: &str) -> Result<(u32, u32)> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let bad = |msg: String| ConfigError::Field {
        image: image.into(),
        field: "config.User",
        msg,
    };
    let passwd = merged_file(lowers_top_first, "etc/passwd");
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let (uid, pw_gid) = match u.parse::<u32>() {
        Ok(n) => {
            let by_uid = passwd.as_deref().and_then(|t| {
                String::from_utf8_lossy(t).lines().find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() >= 4 && f[2] == u).then(|| f[3].parse().ok()).flatten()
                })
            });
            (n, by_uid.unwrap_or(0))
        }
        Err(_) => lookup(passwd.as_deref(), u).ok_or_else(|| bad(format!("user {u:?} is not in the image's /etc/passwd")))?,
    };
    let gid = match g {
        None => pw_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let group = merged_file(lowers_top_first, "etc/group");
                lookup(group.as_deref(), g)
                    .ok_or_else(|| bad(format!("group {g:?} is not in the image's /etc/group")))?
                    .0
            }
        },
    };
    Ok((uid, gid))
}

/// The spec for a container of `image` (lower dirs from `store`).
pub fn bundle_spec(store: &ImageStore, image: &ImageRecord, name: &str) -> Result<Value> {
    let root = store.root().to_string_lossy();
    if root.contains(':') || root.contains(',') {
        return Err(ConfigError::Bundle {
            dir: store.root().into(),
            msg: "the store path must not contain ':' or ',' (overlay mount options)".into(),
        });
    }
    let mut lowers = Vec::new();
    for l in image.layers.iter().rev() {
        let d = Digest::parse(l)?;
        if !store.has_layer(&d) {
            return Err(ConfigError::Field {
                image: name.into(),
                field: "layers",
                msg: format!("layer {l} is missing from the store"),
            });
        }
        lowers.push(store.layer_dir(&d));
    }
    let cfg = &image.config["config"];
    let mut spec = crate::spec::default_spec(false, 0, 0);
    let p = &mut spec["process"];
    p["terminal"] = json!(false);
    let mut args = strings(&cfg["Entrypoint"]);
    args.extend(strings(&cfg["Cmd"]));
    if args.is_empty() {
        return Err(ConfigError::Field {
            image: name.into(),
            field: "config.Entrypoint/Cmd",
            msg: "the image names no command".into(),
        });
    }
    p["args"] = json!(args);
    let mut env = strings(&cfg["Env"]);
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    p["env"] = json!(env);
    if let Some(w) = cfg["WorkingDir"].as_str().filter(|w| !w.is_empty()) {
        if !w.starts_with('/') {
            return Err(ConfigError::Field {
                image: name.into(),
                field: "config.WorkingDir",
                msg: format!("{w:?} is not absolute"),
            });
        }
        p["cwd"] = json!(w);
    }
    let (uid, gid) = resolve_user(cfg["User"].as_str().unwrap_or(""), &lowers, name)?;
    p["user"] = json!({"uid": uid, "gid": gid});
    spec["root"] = json!({"path": "rootfs", "readonly": false});
    let mut ann = serde_json::Map::new();
    if let Some(labels) = cfg["Labels"].as_object() {
        for (k, v) in labels {
            if let Some(s) = v.as_str() {
                ann.insert(k.clone(), json!(s));
            }
        }
    }
    if let Some(s) = cfg["StopSignal"].as_str().filter(|s| !s.is_empty()) {
        ann.insert(ANN_STOP_SIGNAL.into(), json!(s));
    }
    let lower: Vec<String> = lowers.iter().map(|l| l.to_string_lossy().into_owned()).collect();
    ann.insert(ANN_LOWER.into(), json!(lower.join(":")));
    ann.insert(ANN_STORE.into(), json!(root));
    ann.insert(ANN_IMAGE.into(), json!(image.id));
    ann.insert(ANN_IMAGE_NAME.into(), json!(name));
    spec["annotations"] = Value::Object(ann);
    Ok(spec)
}

/// `tinyrt image bundle IMAGE DIR`: write DIR/config.json and make DIR/rootfs (the overlay's
/// mount point). DIR may exist but must not hold a config.json.
pub fn make_bundle(store: &ImageStore, image: &str, dir: &Path) -> Result<PathBuf> {
    let rec = store.find_image(image)?;
    let dir = std::path::absolute(dir).map_err(|err| ConfigError::Io { path: dir.into(), err })?;
    let spec = bundle_spec(store, &rec, image)?;
    let cfg = dir.join("config.json");
    if cfg.exists() {
        return Err(ConfigError::Bundle {
            dir,
            msg: "config.json exists: remove it first".into(),
        });
    }
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).map_err(|err| ConfigError::Io { path: rootfs.clone(), err })?;
    crate::state::write_atomic(
        &cfg,
        (serde_json::to_string_pretty(&spec).expect("spec serializes") + "\n").as_bytes(),
        0o644,
    )
    .map_err(|e| ConfigError::Bundle {
        dir: dir.clone(),
        msg: e.to_string(),
    })?;
    store.add_bundle(&dir, &rec.id)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::unpack::tests::Scratch;

    #[test]
    fn users_resolve_in_the_image() {
        let s = Scratch::new("users");
        let (top, bottom) = (s.0.join("top"), s.0.join("bottom"));
        std::fs::create_dir_all(top.join("etc")).unwrap();
        std::fs::create_dir_all(bottom.join("etc")).unwrap();
        std::fs::write(bottom.join("etc/passwd"), "root:x:0:0::/:/bin/sh\nweb:x:33:44::/:/bin/sh\n").unwrap();
        std::fs::write(top.join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let l = vec![top, bottom];
        assert_eq!(resolve_user("", &l, "i").unwrap(), (0, 0));
        assert_eq!(resolve_user("web", &l, "i").unwrap(), (33, 44));
        assert_eq!(resolve_user("33", &l, "i").unwrap(), (33, 44));
        assert_eq!(resolve_user("web:staff", &l, "i").unwrap(), (33, 50));
        assert_eq!(resolve_user("1000:1000", &l, "i").unwrap(), (1000, 1000));
        assert!(resolve_user("nobody", &l, "i").unwrap_err().to_string().contains("config.User"));
    }
}
