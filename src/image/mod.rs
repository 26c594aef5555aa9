//! Images: import (`docker save` tarballs and OCI image layouts), a content-addressed layer
//! store, bundles whose rootfs is an overlay of the image's layers, and the overlay mount
//! itself (a per-container upper dir).
//!
//! Store layout (default `/var/lib/tinyrt`, or `--store` / `TINYRT_IMAGE_ROOT`):
//!
//! ```text
//! <store>/lock                           flock: exclusive for import/rm/gc, shared for mounts
//! <store>/layers/<diff_id hex>/diff      an unpacked layer (overlayfs whiteouts), read-only use
//! <store>/layers/<diff_id hex>/layer.json its digests and size
//! <store>/images/<config hex>.json       an image: names, layer diff_ids (bottom first), config
//! <store>/bundles/<key>.json             a bundle made by `image bundle` (its dir, its image)
//! <store>/containers/<key>/              a container's upper/ and work/ dirs, and mount.json
//! <store>/containers/<key>/l/<n>         while mounted by mount(2) with too many layers for
//!                                        their full paths: short links to them (overlay)
//! <store>/tmp/                           layers being unpacked (renamed into layers/ when whole)
//! ```
//!
//! Layers are keyed by their diff_id (the digest of the uncompressed tar), so the same layer
//! shipped gzip- or zstd-compressed, in any number of images, is unpacked once.

pub mod config;
pub mod import;
pub mod overlay;
pub mod store;
pub mod unpack;

pub use store::{Digest, ImageRecord, ImageStore, StoreError};

use std::path::PathBuf;

/// Where the store is when nothing says otherwise.
pub const DEFAULT_ROOT: &str = "/var/lib/tinyrt";
/// The environment variable naming the store (the `--store` flag wins over it).
pub const ROOT_ENV: &str = "TINYRT_IMAGE_ROOT";

/// Annotation: the overlay's lower dirs, topmost first, joined with `:` (overlayfs' own order).
pub const ANN_LOWER: &str = "io.tinyrt.rootfs.lower";
/// Annotation: the store holding the layers and the per-container upper dirs.
pub const ANN_STORE: &str = "io.tinyrt.rootfs.store";
/// Annotation: `true` keeps the upper dir after unmount (for `tinyrt image diff`).
pub const ANN_KEEP_UPPER: &str = "io.tinyrt.rootfs.keep-upper";
/// Annotation: the image id the bundle was made from.
pub const ANN_IMAGE: &str = "io.tinyrt.image";
/// Annotation: the image name the bundle was made from (as given to `image bundle`).
pub const ANN_IMAGE_NAME: &str = "io.tinyrt.image.name";
/// Annotation for the image's StopSignal (the key containerd uses).
pub const ANN_STOP_SIGNAL: &str = "org.opencontainers.image.stopSignal";

/// The store root: the flag, else `$TINYRT_IMAGE_ROOT`, else `/var/lib/tinyrt`.
pub fn root_from(flag: Option<&std::path::Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os(ROOT_ENV) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(DEFAULT_ROOT),
    }
}
