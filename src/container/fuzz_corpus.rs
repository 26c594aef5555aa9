//! The `cli_values` fuzzer's findings as tests on stable: every input under
//! `fuzz/corpus/cli_values/` and `fuzz/regressions/cli_values/` goes through the signal,
//! duration and size parsers. Errors are expected; a panic fails the test and names the file.

use super::{parse_duration, parse_signal, parse_size};

#[test]
fn fuzz_cli_value_inputs_do_not_panic() {
    let files = crate::spec::fuzz_corpus::inputs(&["fuzz/corpus/cli_values", "fuzz/regressions/cli_values"]);
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
