//! How release builds of `tether` are linked: relative relocations are packed (`DT_RELR`)
//! where the C library reads them (glibc 2.36 and later); the loader otherwise reads about
//! 770 KB of them at every start, and they stay resident (see "Resident code" in
//! docs/performance.md).
//!
//! Only for x86_64 Linux with glibc, where rustc links with its own lld by default. Set
//! `TETHER_PLAIN_LINK=1` when linking with a linker that lacks the option.

use std::env;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=TETHER_PLAIN_LINK");
    let release = env::var("PROFILE").is_ok_and(|profile| profile == "release");
    let target = env::var("TARGET").unwrap_or_default();
    if !release
        || target != "x86_64-unknown-linux-gnu"
        || env::var_os("TETHER_PLAIN_LINK").is_some()
    {
        return;
    }
    if env::var("HOST").is_ok_and(|host| host == target) && glibc_reads_relr() {
        println!("cargo:rustc-link-arg-bins=-Wl,-zpack-relative-relocs");
    }
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
