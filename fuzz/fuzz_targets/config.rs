//! config.json as `create` reads it: the bytes go through `parse_json::<Spec>` and then
//! `validate`, against a real bundle directory holding `rootfs/` so validation gets past
//! the root check. Errors are the expected outcome; a panic is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci_spec::runtime::Spec;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn bundle() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join("tinyrt-fuzz-bundle");
        std::fs::create_dir_all(dir.join("rootfs")).expect("creating the fuzz bundle");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let bundle = bundle();
    let file = bundle.join("config.json");
    if let Ok(spec) = tinyrt::spec::parse_json::<Spec>(data, &file) {
        let _ = tinyrt::spec::validate(&spec, bundle);
    }
});
