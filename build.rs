//! Release builds of the `tinyrt` binary are linked with bench/order/symbols.txt as lld's
//! --symbol-ordering-file: the functions the runtime's commands run are placed together at
//! the start of .text, so each short-lived command faults in a few 64 KB windows of the
//! executable instead of most of it (peak RSS and page faults; see bench/order/generate.py).
//! Only where the linker is lld: rustc's default for x86_64-unknown-linux-gnu since 1.90.
//! TINYRT_NO_SYMBOL_ORDER=1 turns it off.

use std::path::Path;
use std::process::Command;

fn main() {
    let order = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/order/symbols.txt");
    println!("cargo:rerun-if-changed={}", order.display());
    println!("cargo:rerun-if-env-changed=TINYRT_NO_SYMBOL_ORDER");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let target = std::env::var("TARGET").unwrap_or_default();
    if !release || target != "x86_64-unknown-linux-gnu" || std::env::var_os("TINYRT_NO_SYMBOL_ORDER").is_some() || !order.exists() {
        return;
    }
    if !rustc_links_with_lld() {
        println!("cargo:warning=rustc older than 1.90 (not linking with lld): no symbol ordering");
        return;
    }
    println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}", order.display());
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
}

/// rustc 1.90 and later link x86_64-unknown-linux-gnu with its own lld.
fn rustc_links_with_lld() -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let minor = text
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok());
    minor.is_some_and(|m| m >= 90)
}
