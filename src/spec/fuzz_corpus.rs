//! The fuzzer's findings as tests on stable: every input under `fuzz/corpus/config/` (the
//! minimized corpus of `cargo fuzz run config`) and `fuzz/regressions/config/` (inputs that
//! once crashed it) goes through the path `create` takes, parse then validate. Errors are
//! expected; a panic fails the test and names the file.

use super::{parse_json, validate};
use oci_spec::runtime::Spec;
use std::path::{Path, PathBuf};

/// Every file under `dirs` (relative to the crate; a missing regressions dir is skipped).
pub(crate) fn inputs(dirs: &[&str]) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for d in dirs {
        let dir = root.join(d);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // regressions/<target>/ exists only once that target has found a crash.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && d.starts_with("fuzz/regressions") => continue,
            Err(e) => panic!("{}: {e}", dir.display()),
        };
        files.extend(entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()));
    }
    files.sort();
    files
}

#[test]
fn fuzz_config_inputs_do_not_panic() {
    let bundle = std::env::temp_dir().join(format!("tinyrt-fuzz-corpus-{}", std::process::id()));
    std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
    let files = inputs(&["fuzz/corpus/config", "fuzz/regressions/config"]);
    assert!(!files.is_empty(), "no fuzz inputs found");
    for f in &files {
        let data = std::fs::read(f).unwrap();
        let outcome = std::panic::catch_unwind(|| {
            if let Ok(spec) = parse_json::<Spec>(&data, &bundle.join("config.json")) {
                let _ = validate(&spec, &bundle);
            }
        });
        assert!(outcome.is_ok(), "parse+validate panicked on {}", f.display());
    }
    std::fs::remove_dir_all(&bundle).unwrap();
}
