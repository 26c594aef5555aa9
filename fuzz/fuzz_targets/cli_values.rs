//! The command-line values tinyrt parses itself rather than through clap's types:
//! `kill SIGNAL`, `events --interval DURATION` and `update --memory SIZE`-style sizes.
//! Each gets the same string; errors are expected, a panic is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    let _ = tinyrt::container::parse_signal(s);
    let _ = tinyrt::container::parse_duration(s);
    let _ = tinyrt::container::parse_size(s);
});
