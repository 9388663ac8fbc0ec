//! `cargo xtask gpu-bundle`: builds here, for a GPU machine that has CUDA
//! but no Rust toolchain, the `--features cuda` test binaries of
//! `kaiyuan-cuda` and its `gpu_bench` example, the device tests of the
//! tensor ops (`cuda_ops`) and of training (`cuda_train`), into
//! `target/gpu-bundle/bin/`, and the `kaiyuan` binary into
//! `target/gpu-bundle/tools/` (release, stripped when `strip` exists,
//! gzipped: `check.sh` unpacks them). There,
//! `bash crates/cuda/gpu/check.sh` runs every parity test with
//! `REQUIRE_GPU=1` and prints the benchmark table last.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Where the bundle goes (ignored by git, carried to the GPU machine).
pub const BUNDLE: &str = "target/gpu-bundle";

/// The most the device tool carries with a call.
const CARRY_LIMIT: u64 = 64 << 20;

/// The executables a `cargo … --message-format=json` run reports, with the
/// name of the target that produced each.
fn executables(json_lines: &str) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    for line in json_lines.lines() {
        if !line.contains("\"reason\":\"compiler-artifact\"") {
            continue;
        }
        let (Some(executable), Some(name)) = (
            string_field(line, "\"executable\":\""),
            string_field(line, "\"target\":{\"name\":\"")
                .or_else(|| string_field(line, "\"name\":\"")),
        ) else {
            continue;
        };
        found.push((name, PathBuf::from(executable)));
    }
    found
}

/// The JSON string after `key` (which ends with the opening quote),
/// unescaping `\\` and `\"`.
fn string_field(line: &str, key: &str) -> Option<String> {
    let start = line.find(key)? + key.len();
    let mut out = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => out.push(chars.next()?),
            _ => out.push(c),
        }
    }
    None
}

fn cargo_json(args: &[&str]) -> anyhow::Result<String> {
    let output = crate::cargo()
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !output.status.success() {
        bail!("cargo {} failed ({})", args.join(" "), output.status);
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The newest `GLIBC_x.y` symbol version a binary needs (objdump, when installed).
fn newest_glibc(binary: &Path) -> Option<String> {
    let output = std::process::Command::new("objdump")
        .arg("-T")
        .arg(binary)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut versions: Vec<Vec<u32>> = text
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|word| word.strip_prefix("GLIBC_"))
        .filter_map(|v| v.split('.').map(|n| n.parse().ok()).collect())
        .collect();
    versions.sort();
    versions.last().map(|v| {
        let parts: Vec<String> = v.iter().map(u32::to_string).collect();
        format!("GLIBC_{}", parts.join("."))
    })
}

pub fn run() -> anyhow::Result<()> {
    let tests = cargo_json(&[
        "test",
        "-p",
        "kaiyuan-cuda",
        "--features",
        "cuda",
        "--release",
        "--no-run",
    ])?;
    let bench = cargo_json(&[
        "build",
        "-p",
        "kaiyuan-cuda",
        "--features",
        "cuda",
        "--release",
        "--example",
        "gpu_bench",
    ])?;
    let device_tests = cargo_json(&[
        "test",
        "-p",
        "kaiyuan-tensor",
        "-p",
        "kaiyuan-train",
        "--features",
        "kaiyuan-tensor/cuda,kaiyuan-train/cuda",
        "--release",
        "--no-run",
        "--test",
        "cuda_ops",
        "--test",
        "cuda_train",
    ])?;
    let cli = cargo_json(&[
        "build",
        "-p",
        "kaiyuan-cli",
        "--features",
        "cuda",
        "--release",
        "--bin",
        "kaiyuan",
    ])?;
    let kaiyuan = executables(&cli)
        .into_iter()
        .find(|(name, _)| name == "kaiyuan")
        .map(|(_, path)| path)
        .context("cargo built no kaiyuan executable")?;
    // `cargo test` also builds the example (test profile); keep the
    // release build of it, which comes last.
    let mut binaries: Vec<(String, PathBuf)> = Vec::new();
    for (name, path) in executables(&tests)
        .into_iter()
        .chain(executables(&device_tests))
        .chain(executables(&bench))
    {
        binaries.retain(|(seen, _)| *seen != name);
        binaries.push((name, path));
    }
    if !binaries.iter().any(|(name, _)| name == "gpu_bench") {
        bail!("cargo built no gpu_bench executable");
    }
    let bin = Path::new(BUNDLE).join("bin");
    if bin.exists() {
        std::fs::remove_dir_all(&bin).with_context(|| format!("clearing {}", bin.display()))?;
    }
    std::fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    let tools = Path::new(BUNDLE).join("tools");
    if tools.exists() {
        std::fs::remove_dir_all(&tools).with_context(|| format!("clearing {}", tools.display()))?;
    }
    std::fs::create_dir_all(&tools).with_context(|| format!("creating {}", tools.display()))?;
    let mut total = 0;
    let placed = binaries
        .iter()
        .map(|(name, path)| (bin.join(name), path))
        .chain(std::iter::once((tools.join("kaiyuan"), &kaiyuan)));
    for (target, path) in placed {
        let name = target.display().to_string();
        std::fs::copy(path, &target)
            .with_context(|| format!("copying {} to {}", path.display(), target.display()))?;
        // Debug line tables are no use there; the bundle must stay small.
        let _ = std::process::Command::new("strip").arg(&target).status();
        let glibc = newest_glibc(&target);
        // Compressed (check.sh unpacks): the whole working tree that
        // travels with a device call must fit in its limit.
        let status = std::process::Command::new("gzip")
            .args(["-9", "-n", "-f"])
            .arg(&target)
            .status()
            .context("running gzip")?;
        if !status.success() {
            bail!("gzip {} failed ({status})", target.display());
        }
        let packed = PathBuf::from(format!("{}.gz", target.display()));
        let size = std::fs::metadata(&packed)?.len();
        total += size;
        println!(
            "{:<40} {:>6.1} MiB gzipped, needs {}",
            name,
            size as f64 / (1 << 20) as f64,
            glibc.unwrap_or_else(|| "(objdump not installed)".into())
        );
    }
    println!(
        "{} binaries, {:.1} MiB in {}",
        binaries.len() + 1,
        total as f64 / (1 << 20) as f64,
        BUNDLE
    );
    if total > CARRY_LIMIT {
        bail!(
            "the bundle is {:.1} MiB, over the {} MiB a device call carries",
            total as f64 / (1 << 20) as f64,
            CARRY_LIMIT >> 20
        );
    }
    println!("on the GPU machine (carrying {BUNDLE}): bash crates/cuda/gpu/check.sh {BUNDLE}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_test_and_example_executables() {
        let lines = concat!(
            r#"{"reason":"compiler-artifact","package_id":"x","target":{"name":"parity_ops","kind":["test"]},"profile":{"test":true},"executable":"/t/release/deps/parity_ops-1a"}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"name":"kaiyuan_cuda","kind":["lib"]},"executable":null}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"name":"gpu_bench","kind":["example"]},"executable":"/t/release/examples/gpu\\bench"}"#,
        );
        let found = executables(lines);
        assert_eq!(
            found,
            vec![
                (
                    "parity_ops".to_string(),
                    PathBuf::from("/t/release/deps/parity_ops-1a")
                ),
                (
                    "gpu_bench".to_string(),
                    PathBuf::from("/t/release/examples/gpu\\bench")
                ),
            ]
        );
    }
}
