//! How release builds of `tether` are linked, to keep the server's resident memory near what
//! it runs (see "Resident code" in docs/performance.md):
//!
//! - The functions a serving Tether runs (`hot-symbols.txt`, written by
//!   `scripts/hot-symbols.sh`) go together at the front of `.text`. The kernel maps a binary's
//!   code in windows around each page touched, so hot functions scattered through 14 MB of
//!   code kept most of it resident.
//! - Relative relocations are packed (`DT_RELR`) where the C library reads them (glibc 2.36
//!   and later): the loader otherwise reads 770 KB of them at every start.
//!
//! Only for x86_64 Linux with glibc, where rustc links with its own lld by default. Set
//! `TETHER_PLAIN_LINK=1` when linking with a linker that lacks these options.

use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=hot-symbols.txt");
    println!("cargo:rerun-if-env-changed=TETHER_PLAIN_LINK");
    let release = env::var("PROFILE").is_ok_and(|profile| profile == "release");
    let target = env::var("TARGET").unwrap_or_default();
    if !release
        || target != "x86_64-unknown-linux-gnu"
        || env::var_os("TETHER_PLAIN_LINK").is_some()
    {
        return;
    }
    let manifest_dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let order = Path::new(&manifest_dir).join("hot-symbols.txt");
    // A name the list gives that this build lacks is skipped, not an error: the list is a
    // layout hint, and a stale one only costs resident memory.
    linker_arg(&format!("--symbol-ordering-file={}", order.display()));
    linker_arg("--no-warn-symbol-ordering");
    if env::var("HOST").is_ok_and(|host| host == target) && glibc_reads_relr() {
        linker_arg("-zpack-relative-relocs");
    }
}

/// Passes `arg` to the linker through the C compiler driver as it is (`-Wl,` would split a
/// path at its commas).
fn linker_arg(arg: &str) {
    println!("cargo:rustc-link-arg-bins=-Xlinker");
    println!("cargo:rustc-link-arg-bins={arg}");
}

/// Whether this machine's glibc is 2.36 or later; `getconf` prints "glibc 2.36".
fn glibc_reads_relr() -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.trim().strip_prefix("glibc ") else {
        return false;
    };
    let mut numbers = version.split('.').map(|n| n.parse::<u32>().unwrap_or(0));
    let major = numbers.next().unwrap_or(0);
    let minor = numbers.next().unwrap_or(0);
    (major, minor) >= (2, 36)
}
