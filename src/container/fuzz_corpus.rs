//! The `cli_values` fuzzer's findings as tests on stable: every input under
//! `fuzz/corpus/cli_values/` and `fuzz/regressions/cli_values/` goes through the signal,
//! duration and size parsers. Errors are expected; a panic fails the test and names the file.

use super::{parse_duration, parse_signal, parse_size};
use std::path::Path;

#[test]
fn fuzz_cli_value_inputs_do_not_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for d in ["fuzz/corpus/cli_values", "fuzz/regressions/cli_values"] {
        let dir = root.join(d);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // regressions/<target>/ exists only once that target has found a crash.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && d.starts_with("fuzz/regressions") => continue,
            Err(e) => panic!("{}: {e}", dir.display()),
        };
        files.extend(entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()));
    }
    assert!(!files.is_empty(), "no fuzz inputs found");
    for f in &files {
        // The fuzz target takes `&str`: libFuzzer skips inputs that are not UTF-8.
        let Ok(s) = String::from_utf8(std::fs::read(f).unwrap()) else {
            continue;
        };
        let outcome = std::panic::catch_unwind(|| {
            let _ = parse_signal(&s);
            let _ = parse_duration(&s);
            let _ = parse_size(&s);
        });
        assert!(outcome.is_ok(), "a CLI value parser panicked on {}", f.display());
    }
}
