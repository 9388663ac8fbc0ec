//! Lays out the `kaiyuan` binary's machine code so that what running a model
//! executes sits together at the start of `.text`.
//!
//! The kernel maps a binary's code into a process in 64 KiB windows around
//! each page it first executes (fault-around), so the few megabytes a run
//! actually executes, spread over 13 MiB of code, kept 7–8 MiB of it
//! resident. `hot-symbols.txt` lists the functions that `bench generate`
//! executes on GGUF models (recorded by `cargo xtask hot-symbols` under
//! valgrind's callgrind, plus the AVX-512 kernels valgrind cannot run);
//! lld's `--symbol-ordering-file` places them first, and the same run then
//! keeps about 3 MiB of code resident (`docs/performance.md`).
//!
//! The names are mangled, and a crate's mangled names change with the
//! compiler, so the file is used only where it can work and be correct to
//! use: release builds for x86_64 Linux with the rustc that recorded it
//! (whose default linker is lld), and no linker chosen by the user. Anywhere
//! else the binary links as usual; a stale or unused list costs memory,
//! never correctness. `KAIYUAN_NO_SYMBOL_ORDER=1` turns it off, and with it
//! the packed relative relocations asked for under the same conditions
//! (see `pack_relative_relocations`).

use std::path::PathBuf;
use std::process::Command;

const LIST: &str = "hot-symbols.txt";

fn main() {
    println!("cargo:rerun-if-changed={LIST}");
    println!("cargo:rerun-if-env-changed=KAIYUAN_NO_SYMBOL_ORDER");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");
    if let Some(reason) = why_not() {
        // Visible with `cargo build -vv`; quiet otherwise.
        println!("[kaiyuan-cli build] symbol ordering off: {reason}");
        return;
    }
    pack_relative_relocations();
    let text = match std::fs::read_to_string(LIST) {
        Ok(text) => text,
        Err(err) => {
            println!("cargo:warning=reading {LIST}: {err}; linking without symbol ordering");
            return;
        }
    };
    let recorded_with = text
        .lines()
        .find_map(|line| line.strip_prefix("# recorded with: "))
        .unwrap_or_default()
        .trim();
    let rustc = rustc_version();
    if recorded_with != rustc {
        println!(
            "cargo:warning={LIST} was recorded with `{recorded_with}`, this is `{rustc}`: \
             linking without symbol ordering (the binary keeps ~5 MiB more code resident); \
             `cargo xtask hot-symbols` records it again"
        );
        return;
    }
    let symbols: String = text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .flat_map(|line| [line.trim(), "\n"])
        .collect();
    let Some(out_dir) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        return;
    };
    let path = out_dir.join(LIST);
    if let Err(err) = std::fs::write(&path, symbols) {
        println!(
            "cargo:warning=writing {}: {err}; linking without symbol ordering",
            path.display()
        );
        return;
    }
    println!(
        "cargo:rustc-link-arg-bin=kaiyuan=-Wl,--symbol-ordering-file={}",
        path.display()
    );
    // Names the list has but this build lacks (another feature set, code
    // changed since) are expected; lld would warn about each.
    println!("cargo:rustc-link-arg-bin=kaiyuan=-Wl,--no-warn-symbol-ordering");
}

/// Asks lld for packed relative relocations (`DT_RELR`) when the binary is
/// built for the machine building it and that machine's glibc (2.36 or
/// later) can load them. The position-independent binary's ~38,000
/// relocations then take about 10 KB instead of 0.9 MB, all of which the
/// loader reads (and so keeps resident) at every start. A binary linked this
/// way does not start on an older glibc (the loader names the missing
/// `GLIBC_ABI_DT_RELR` version), hence the check.
fn pack_relative_relocations() {
    if std::env::var("HOST").ok() != std::env::var("TARGET").ok() {
        return;
    }
    // `getconf GNU_LIBC_VERSION` prints e.g. `glibc 2.36`.
    let version = Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .unwrap_or_default();
    let mut numbers = version
        .trim()
        .strip_prefix("glibc ")
        .unwrap_or_default()
        .split('.')
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    if (major, minor) >= (2, 36) {
        println!("cargo:rustc-link-arg-bin=kaiyuan=-Wl,-z,pack-relative-relocs");
    } else {
        println!(
            "[kaiyuan-cli build] relocations unpacked: glibc {major}.{minor} (DT_RELR needs 2.36)"
        );
    }
}

/// Why this build cannot use the list, if it cannot.
fn why_not() -> Option<String> {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    if !var("KAIYUAN_NO_SYMBOL_ORDER").is_empty() {
        return Some("KAIYUAN_NO_SYMBOL_ORDER is set".into());
    }
    if var("PROFILE") != "release" {
        return Some(format!("profile {}", var("PROFILE")));
    }
    if var("TARGET") != "x86_64-unknown-linux-gnu" {
        return Some(format!("target {}", var("TARGET")));
    }
    // A linker of the user's choice may not be lld (GNU ld has no
    // --symbol-ordering-file).
    if !var("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_empty() {
        return Some("a linker is set".into());
    }
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    if flags.contains("linker") || flags.contains("fuse-ld") {
        return Some("RUSTFLAGS choose the linker".into());
    }
    None
}

/// `rustc --version` of the compiler building this crate.
fn rustc_version() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .unwrap_or_default()
        .trim()
        .to_string()
}
