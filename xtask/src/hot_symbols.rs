//! `cargo xtask hot-symbols`: records which functions of the release
//! `kaiyuan` binary running a model executes, into
//! `crates/cli/hot-symbols.txt`, which the CLI's build script hands to the
//! linker so that those functions sit together (see `crates/cli/build.rs`).
//!
//! Each run is `kaiyuan bench generate` on a SmolLM2 GGUF (Q4_0, Q8_0,
//! Q4_1; the same files `cargo xtask bench quant` uses) under valgrind's
//! callgrind, whose output names every function that ran. Valgrind does not
//! emulate AVX-512, so the kernels behind the runtime's AVX-512 and VNNI
//! detection never run there; every function with those names is added.
//! Needs `valgrind` and `nm` (binutils); about three minutes per model.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

const LIST: &str = "crates/cli/hot-symbols.txt";

/// Records the list again.
pub fn run() -> anyhow::Result<()> {
    for tool in ["valgrind", "nm"] {
        let found = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success());
        if !found {
            bail!("`{tool}` is needed (Debian: apt-get install valgrind binutils)");
        }
    }
    // Without the old list, so that nothing depends on what it held.
    let status = crate::run_echoed(
        crate::cargo()
            .args(["build", "--release", "-p", "kaiyuan-cli"])
            .env("KAIYUAN_NO_SYMBOL_ORDER", "1"),
    )?;
    if !status.success() {
        bail!("building the release binary failed ({status})");
    }
    let binary = crate::kaiyuan_release();
    let models = crate::bench_generate::gguf_files(&["Q4_0", "Q8_0", "Q4_1"])?;
    let scratch = Path::new("target/hot-symbols");
    std::fs::create_dir_all(scratch)?;
    let mut executed = BTreeSet::new();
    for (index, model) in models.iter().enumerate() {
        let profile = scratch.join(format!("callgrind.{index}.out"));
        let status = crate::run_echoed(
            Command::new("valgrind")
                .args(["--tool=callgrind", "--demangle=no", "--quiet"])
                .arg(format!("--callgrind-out-file={}", profile.display()))
                .arg(&binary)
                .args(["bench", "generate", "--json", "--model"])
                .arg(model)
                .args(["--threads", "2", "--kv-dtype", "f16", "--repeats", "1"])
                .args(["--prompt-tokens", "64", "--decode-tokens", "4"]),
        )?;
        if !status.success() {
            bail!("the profiled run on {} failed ({status})", model.display());
        }
        let text = std::fs::read_to_string(&profile)
            .with_context(|| format!("reading {}", profile.display()))?;
        executed.extend(callgrind_functions(&text));
    }
    let mangled = nm(&binary, false)?;
    let demangled = nm(&binary, true)?;
    if mangled.len() != demangled.len() {
        bail!(
            "nm listed the symbols of {} twice differently",
            binary.display()
        );
    }
    let hot: BTreeSet<&str> = mangled
        .iter()
        .zip(&demangled)
        .filter(|(name, readable)| executed.contains(name.as_str()) || has_avx512_name(readable))
        .map(|(name, _)| name.as_str())
        .collect();
    let rustc = Command::new("rustc").arg("--version").output()?;
    let rustc = String::from_utf8_lossy(&rustc.stdout).trim().to_string();
    let mut out = format!(
        "# Functions the release `kaiyuan` binary executes running GGUF models,\n\
         # placed first in its code by crates/cli/build.rs. Written by\n\
         # `cargo xtask hot-symbols`; mangled names, valid for this compiler only.\n\
         # recorded with: {rustc}\n"
    );
    for name in &hot {
        out.push_str(name);
        out.push('\n');
    }
    let tmp = Path::new(LIST).with_extension("txt.tmp");
    std::fs::write(&tmp, out).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, LIST).with_context(|| format!("renaming into {LIST}"))?;
    eprintln!("{LIST}: {} functions", hot.len());
    Ok(())
}

/// The function names of a callgrind profile (`fn=(id) name` and
/// `cfn=(id) name` lines; later mentions give only the id). A `'N` suffix
/// marks a recursion depth, not another function.
fn callgrind_functions(profile: &str) -> impl Iterator<Item = String> + '_ {
    profile.lines().filter_map(|line| {
        let rest = line
            .strip_prefix("fn=(")
            .or_else(|| line.strip_prefix("cfn=("))?;
        let (_, name) = rest.split_once(") ")?;
        let name = match name.rsplit_once('\'') {
            Some((base, depth)) if depth.bytes().all(|b| b.is_ascii_digit()) => base,
            _ => name,
        };
        Some(name.to_string())
    })
}

/// Whether a demangled name is one of the AVX-512 / VNNI kernels.
fn has_avx512_name(readable: &str) -> bool {
    let lower = readable.to_ascii_lowercase();
    lower.contains("avx512") || lower.contains("vnni")
}

/// The code symbols `nm` lists for `binary` (demangled or not), in its order.
fn nm(binary: &Path, demangle: bool) -> anyhow::Result<Vec<String>> {
    let mut cmd = Command::new("nm");
    if demangle {
        cmd.arg("-C");
    }
    let out = cmd.arg(binary).output().context("running nm")?;
    if !out.status.success() {
        bail!("nm {} failed", binary.display());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ' ');
            let (_address, kind, name) = (fields.next()?, fields.next()?, fields.next()?);
            matches!(kind, "t" | "T" | "W" | "w").then(|| name.to_string())
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_function_names_and_drops_recursion_depths() {
        let profile =
            "fn=(1) _RNvC1a4main\ncalls=1 0\ncfn=(2) _RNvC1a3run'2\ncfn=(2)\nfn=(3) it's\n";
        let names: Vec<String> = callgrind_functions(profile).collect();
        assert_eq!(names, ["_RNvC1a4main", "_RNvC1a3run", "it's"]);
    }

    #[test]
    fn recognises_avx512_kernels() {
        assert!(has_avx512_name(
            "kaiyuan_tensor::quant::kernels::x86::dot_q4_0_avx512"
        ));
        assert!(has_avx512_name("kaiyuan_tensor::quant::x86::Vnni::dot"));
        assert!(!has_avx512_name(
            "kaiyuan_tensor::quant::kernels::x86::dot_q4_0_avx2"
        ));
    }
}
