//! Release builds of the `tinyrt` binary are linked with bench/order/symbols.txt as lld's
//! --symbol-ordering-file: the functions the runtime's commands run are placed together at
//! the start of .text, so each short-lived command faults in a few 64 KB windows of the
//! executable instead of most of it (peak RSS and page faults; see bench/order/generate.py).
//! Only where the linker is lld: rustc's default for x86_64-unknown-linux-gnu since 1.90.
//! TINYRT_NO_SYMBOL_ORDER=1 turns it off.
//!
//! It also builds src/linux/exec_stub.c, the exec trampoline that keeps the runtime's binary
//! out of the container's reach (see src/linux/exec_stub.rs), with the C compiler that links
//! tinyrt anyway ($CC, else cc): -nostdlib -static, a few kilobytes.

use std::path::Path;
use std::process::Command;

fn main() {
    build_exec_stub();
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

fn build_exec_stub() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/linux/exec_stub.c");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-env-changed=CC");
    let out = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("exec_stub");
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() != Ok("x86_64") {
        // No trampoline for this architecture: tinyrt re-executes itself sealed instead.
        std::fs::write(&out, b"").expect("writing OUT_DIR/exec_stub");
        return;
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let st = Command::new(&cc)
        .args([
            "-nostdlib",
            "-static",
            "-no-pie",
            "-Os",
            "-fno-stack-protector",
            "-fno-asynchronous-unwind-tables",
        ])
        .args(["-fcf-protection=none", "-Wl,--build-id=none", "-Wl,-z,noexecstack", "-s", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| panic!("running {cc} for src/linux/exec_stub.c: {e}"));
    assert!(st.success(), "{cc} failed on src/linux/exec_stub.c");
}
