//! The compile check: every kernel file compiles with NVRTC for sm_80 and
//! sm_90 (the sm_90a-only files for sm_90a), with ptxas's report parsed, and no kernel spills registers to
//! local memory. Needs NVRTC (the `nvidia-cuda-nvrtc` wheel is enough, no
//! GPU); skips visibly without it, and fails instead when
//! `REQUIRE_NVRTC=1` (as `.ci/run` sets it).
//!
//! The report is written to `target/cuda/ptxas-report.md`, the table
//! `docs/performance.md` keeps.

use std::fmt::Write as _;

use kaiyuan_cuda::compile::Compiler;
use kaiyuan_cuda::kernels;

const ARCHES: [&str; 2] = ["sm_80", "sm_90"];

fn compiler() -> Option<Compiler> {
    match Compiler::with_cache_dir(None) {
        Ok(compiler) => Some(compiler),
        Err(error) => {
            if std::env::var("REQUIRE_NVRTC").as_deref() == Ok("1") {
                panic!("REQUIRE_NVRTC=1 but {error}");
            }
            eprintln!("SKIPPED: the kernel compile check needs NVRTC: {error}");
            None
        }
    }
}

#[test]
fn every_kernel_file_compiles_for_sm80_and_sm90_without_spills() {
    let Some(compiler) = compiler() else { return };
    let version = compiler.version().expect("NVRTC version");
    let mut report = String::new();
    let _ = writeln!(
        report,
        "NVRTC {}.{}; options: {}\n",
        version.0,
        version.1,
        kaiyuan_cuda::compile::BASE_OPTIONS.join(" ")
    );
    let _ = writeln!(
        report,
        "| file | kernel | arch | registers | spill stores | spill loads | stack | static smem |"
    );
    let _ = writeln!(report, "|---|---|---|---:|---:|---:|---:|---:|");
    let mut failures = Vec::new();
    let mut kernels_seen = 0;
    for file in kernels::ALL {
        // Hopper-only files (wgmma) compile for sm_90a alone.
        let arches: &[&str] = if file.sm90a { &["sm_90a"] } else { &ARCHES };
        for &arch in arches {
            let started = std::time::Instant::now();
            let compiled = match compiler.compile_fresh(file, arch) {
                Ok(compiled) => compiled,
                Err(error) => {
                    failures.push(format!("{error}"));
                    continue;
                }
            };
            eprintln!(
                "kernels/{}.cu for {arch}: {} kernels, {} bytes of cubin, {:.2} s",
                file.name,
                compiled.resources.len(),
                compiled.cubin.len(),
                started.elapsed().as_secs_f64()
            );
            if compiled.resources.is_empty() {
                failures.push(format!(
                    "kernels/{}.cu for {arch}: no entry function",
                    file.name
                ));
            }
            if compiled.cubin.is_empty() {
                failures.push(format!("kernels/{}.cu for {arch}: empty cubin", file.name));
            }
            for kernel in &compiled.resources {
                kernels_seen += 1;
                let _ = writeln!(
                    report,
                    "| {} | {} | {arch} | {} | {} | {} | {} | {} |",
                    file.name,
                    kernel.function,
                    kernel.registers,
                    kernel.spill_stores,
                    kernel.spill_loads,
                    kernel.stack_frame,
                    kernel.shared
                );
                if kernel.spills() {
                    failures.push(format!(
                        "{} ({arch}) spills: {} bytes stored, {} loaded",
                        kernel.function, kernel.spill_stores, kernel.spill_loads
                    ));
                }
            }
        }
    }
    let path = std::env::var_os("KAIYUAN_PTXAS_REPORT").map_or_else(
        || {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/cuda/ptxas-report.md")
        },
        std::path::PathBuf::from,
    );
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(&path, &report);
    eprintln!("{kernels_seen} kernel builds; report in {}", path.display());
    assert!(
        failures.is_empty(),
        "kernel compile check failed:\n{}",
        failures.join("\n")
    );
    assert!(kernels_seen > 0, "no kernel was compiled");
}
