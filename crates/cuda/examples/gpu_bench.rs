//! Times the main kernels on a GPU and prints one table: GEMM TFLOP/s (ours
//! and cuBLAS, bf16 4096³), attention TFLOP/s, and the bandwidth of the
//! memory-bound kernels as a fraction of the measured device-to-device copy
//! bandwidth. Run by `crates/cuda/gpu/check.sh` (from `cargo xtask
//! gpu-bundle`); medians of CUDA-event timings.
//!
//! ```text
//! cargo run -p kaiyuan-cuda --features cuda --release --example gpu_bench
//! ```

use half::bf16;
use kaiyuan_cuda::ops::attention::{self, Attention, AttentionKernel};
use kaiyuan_cuda::ops::gemm::{
    self, Cublas, Gemm, GemmKernel, TC_TUNING_TILES, TcTile, WGMMA_TILES,
};
use kaiyuan_cuda::ops::{adamw, norm, reduce};
use kaiyuan_cuda::{GpuBuffer, GpuDevice, GpuFloat, Result};

const REPEATS: usize = 7;

/// One row of the result table.
struct Row {
    what: String,
    value: f64,
    unit: &'static str,
    note: String,
}

fn filled<T: GpuFloat>(device: &GpuDevice, n: usize, seed: u32) -> Result<GpuBuffer<T>> {
    // A cheap deterministic pattern in [-1, 1): timing does not need randomness,
    // but zeros could take fast paths.
    let host: Vec<T> = (0..n)
        .map(|i| {
            let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed);
            T::from_f32((x >> 8) as f32 / (1u32 << 23) as f32 - 1.0)
        })
        .collect();
    device.upload(&host)
}

fn gb_per_s(bytes: f64, ms: f64) -> f64 {
    bytes / (ms * 1e-3) / 1e9
}

fn bandwidth(device: &GpuDevice, rows: &mut Vec<Row>) -> Result<()> {
    // Copy: 256 MiB each way.
    let n = 64 << 20;
    let source = filled::<f32>(device, n, 1)?;
    let mut target = device.zeros::<f32>(n)?;
    let ms = device.time_ms(REPEATS, 5, || device.copy(&source, &mut target))?;
    let copy = gb_per_s(2.0 * 4.0 * n as f64, ms);
    rows.push(Row {
        what: "device copy (256 MiB)".into(),
        value: copy,
        unit: "GB/s",
        note: "the reference bandwidth".into(),
    });
    drop((source, target));

    let mut share = |what: String, bytes: f64, ms: f64| {
        let rate = gb_per_s(bytes, ms);
        rows.push(Row {
            what,
            value: rate,
            unit: "GB/s",
            note: format!("{:.0}% of copy", 100.0 * rate / copy),
        });
    };

    // Softmax over rows of 8192 f32 (256 MiB in, 256 MiB out).
    let (r, c) = (8192, 8192);
    let x = filled::<f32>(device, r * c, 2)?;
    let mut y = device.zeros::<f32>(r * c)?;
    let ms = device.time_ms(REPEATS, 3, || {
        reduce::softmax(device, &x, (r, c), false, &mut y)
    })?;
    share(
        "softmax f32 (8192 × 8192)".into(),
        2.0 * 4.0 * (r * c) as f64,
        ms,
    );
    drop((x, y));

    // RMSNorm, bf16, 16384 rows of 4096.
    let (r, c) = (16384, 4096);
    let x = filled::<bf16>(device, r * c, 3)?;
    let w = filled::<bf16>(device, c, 4)?;
    let mut y = device.zeros::<bf16>(r * c)?;
    let mut rstd = device.zeros::<f32>(r)?;
    let ms = device.time_ms(REPEATS, 3, || {
        norm::rms_norm(device, &x, &w, (r, c), 1e-6, &mut y, &mut rstd)
    })?;
    share(
        "rms_norm bf16 (16384 × 4096)".into(),
        2.0 * 2.0 * (r * c) as f64,
        ms,
    );
    drop((x, w, y, rstd));

    // RMSNorm and LayerNorm backward, bf16, 16384 rows of 4096. Bytes
    // counted: x and dy read, dx written (3 · rows · cols · 2) plus w; the
    // row statistics and the f32 dW (and dB) are left out (under 0.1%).
    let (r, c) = (16384, 4096);
    let x = filled::<bf16>(device, r * c, 9)?;
    let w = filled::<bf16>(device, c, 10)?;
    let dy = filled::<bf16>(device, r * c, 11)?;
    let mut dx = device.zeros::<bf16>(r * c)?;
    let mut dw = device.zeros::<f32>(c)?;
    let mut db = device.zeros::<f32>(c)?;
    let mut stats = norm::LayerNormStats {
        mean: device.zeros::<f32>(r)?,
        rstd: device.zeros::<f32>(r)?,
    };
    let mut y = device.zeros::<bf16>(r * c)?;
    norm::layer_norm(device, &x, Some(&w), None, (r, c), 1e-5, &mut y, &mut stats)?;
    drop(y);
    let bytes = 2.0 * (3 * r * c + c) as f64;
    let ms = device.time_ms(REPEATS, 3, || {
        norm::rms_norm_backward(device, &x, &w, &stats.rstd, &dy, (r, c), &mut dx, &mut dw)
    })?;
    share("rms_norm_backward bf16 (16384 × 4096)".into(), bytes, ms);
    let ms = device.time_ms(REPEATS, 3, || {
        norm::layer_norm_backward(
            device,
            &x,
            Some(&w),
            &stats,
            &dy,
            (r, c),
            &mut dx,
            &mut dw,
            &mut db,
        )
    })?;
    share("layer_norm_backward bf16 (16384 × 4096)".into(), bytes, ms);
    drop((x, w, dy, dx, dw, db, stats));

    // AdamW over 64 Mi f32 parameters with bf16 gradients and a bf16 copy:
    // reads p, g, m, v; writes p, m, v, copy.
    let n = 64 << 20;
    let mut p = filled::<f32>(device, n, 5)?;
    let g = filled::<bf16>(device, n, 6)?;
    let mut m = device.zeros::<f32>(n)?;
    let mut v = device.zeros::<f32>(n)?;
    let mut copy = device.zeros::<bf16>(n)?;
    let step = adamw::AdamWStep::new(1e-4, 0.9, 0.95, 1e-8, 0.1, 10, true);
    let ms = device.time_ms(REPEATS, 3, || {
        adamw::adamw(device, &mut p, &g, (&mut m, &mut v), step, Some(&mut copy))
    })?;
    share(
        "adamw f32 master, bf16 grads (64 Mi)".into(),
        (4.0 * 6.0 + 2.0 + 2.0) * n as f64,
        ms,
    );
    Ok(())
}

fn tflops(flops: f64, ms: f64) -> f64 {
    flops / (ms * 1e-3) / 1e12
}

/// bf16 4096³ (C = A·B and the nn.Linear layout C = X·Wᵀ): ours (tensor
/// cores) against cuBLAS in the same run.
fn gemm_rows(device: &GpuDevice, rows: &mut Vec<Row>) -> Result<()> {
    let size = 4096;
    let a = filled::<bf16>(device, size * size, 7)?;
    let b = filled::<bf16>(device, size * size, 8)?;
    let mut c = device.zeros::<bf16>(size * size)?;
    let blas = Cublas::new(device)?;
    for (label, layout, spec) in [
        ("A·B", "nn", Gemm::new(size, size, size)),
        ("X·Wᵀ", "nt", Gemm::linear(size, size, size)),
    ] {
        let theirs = device.time_ms(REPEATS, 3, || {
            gemm::gemm_cublas_into(&blas, &spec, &a, &b, &mut c)
        })?;
        let theirs = tflops(spec.flops(), theirs);
        // cuBLAS's product is the reference each of ours is compared with
        // (largest difference as a fraction of the largest |C|).
        let reference: Vec<f32> = device.download(&c)?.iter().map(|v| v.to_f32()).collect();
        let scale = reference
            .iter()
            .fold(0.0f32, |m, v| m.max(v.abs()))
            .max(f32::MIN_POSITIVE);
        let mut ours_row = |what: String, kernel: GemmKernel, c: &mut GpuBuffer<bf16>| {
            let ours_spec = spec.with_kernel(kernel);
            let measured = device
                .time_ms(REPEATS, 3, || {
                    gemm::gemm_into(device, &ours_spec, &a, &b, c)
                })
                .and_then(|ms| Ok((ms, device.download(c)?)));
            let (value, note) = match measured {
                Ok((ms, got)) => {
                    let ours = tflops(spec.flops(), ms);
                    let worst = got
                        .iter()
                        .zip(&reference)
                        .fold(0.0f32, |m, (g, r)| m.max((g.to_f32() - r).abs()))
                        / scale;
                    let verdict = if worst <= 1e-2 { "" } else { " MISMATCH" };
                    (
                        ours,
                        format!(
                            "{:.2}× cuBLAS; max |Δ| {worst:.1e} of max |C|{verdict}",
                            ours / theirs
                        ),
                    )
                }
                // A kernel that fails must not hide the rest of the table.
                Err(error) => (0.0, format!("FAILED: {error}")),
            };
            rows.push(Row {
                what,
                value,
                unit: "TFLOP/s",
                note,
            });
        };
        // The default tile, then every candidate tile.
        let candidates = TC_TUNING_TILES
            .into_iter()
            .filter(|tile| tile.candidate_layouts().contains(&layout));
        for tile in std::iter::once(TcTile::DEFAULT).chain(candidates) {
            let default = if tile == TcTile::DEFAULT {
                ", default"
            } else {
                ""
            };
            ours_row(
                format!("GEMM bf16 4096³ {label}, ours {}{default}", tile.name()),
                GemmKernel::TensorCoreTile(tile),
                &mut c,
            );
        }
        if layout == "nt" && device.info().arch() == "sm_90" {
            for tile in WGMMA_TILES {
                ours_row(
                    format!("GEMM bf16 4096³ {label}, ours wgmma {}", tile.name()),
                    GemmKernel::Wgmma(tile),
                    &mut c,
                );
            }
        }
        rows.push(Row {
            what: format!("GEMM bf16 4096³ {label}, cuBLAS"),
            value: theirs,
            unit: "TFLOP/s",
            note: "cublasGemmEx, f32 compute; the reference".into(),
        });
    }
    Ok(())
}

/// Causal attention, bf16, B = 4, 32 heads (GQA 32/8), T = 2048, D = 128:
/// forward and backward.
fn attention_rows(device: &GpuDevice, rows: &mut Vec<Row>) -> Result<()> {
    let spec = Attention::new(4, 32, 8, 2048, 2048, 128).with_kernel(AttentionKernel::TensorCore);
    let q = filled::<bf16>(device, spec.q_len_elements()?, 9)?;
    let k = filled::<bf16>(device, spec.kv_len_elements()?, 10)?;
    let v = filled::<bf16>(device, spec.kv_len_elements()?, 11)?;
    let mut o = device.zeros::<bf16>(spec.q_len_elements()?)?;
    let mut lse = device.zeros::<f32>(spec.rows()?)?;
    let ms = device.time_ms(REPEATS, 3, || {
        attention::attention_forward_into(device, &spec, &q, &k, &v, &mut o, &mut lse)
    })?;
    rows.push(Row {
        what: "attention fwd bf16 (4×32/8 heads, T 2048, D 128, causal)".into(),
        value: tflops(spec.forward_flops(), ms),
        unit: "TFLOP/s",
        note: format!("{ms:.3} ms"),
    });
    let dout = filled::<bf16>(device, spec.q_len_elements()?, 12)?;
    let mut workspace = attention::AttentionWorkspace::new(device, &spec)?;
    let mut dq = device.zeros::<bf16>(spec.q_len_elements()?)?;
    let mut dk = device.zeros::<bf16>(spec.kv_len_elements()?)?;
    let mut dv = device.zeros::<bf16>(spec.kv_len_elements()?)?;
    let ms = device.time_ms(REPEATS, 3, || {
        attention::attention_backward_into(
            device,
            &spec,
            &q,
            &k,
            &v,
            &o,
            &lse,
            &dout,
            &mut workspace,
            &mut dq,
            &mut dk,
            &mut dv,
        )
    })?;
    rows.push(Row {
        what: "attention bwd bf16 (same shapes)".into(),
        value: tflops(spec.backward_flops(), ms),
        unit: "TFLOP/s",
        note: format!("{ms:.3} ms"),
    });
    Ok(())
}

/// A named part of the benchmark.
type Section = (&'static str, fn(&GpuDevice, &mut Vec<Row>) -> Result<()>);

fn main() -> std::process::ExitCode {
    let device = match GpuDevice::new(0) {
        Ok(device) => device,
        Err(error) => {
            eprintln!("gpu_bench: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let info = device.info().clone();
    let mut rows = Vec::new();
    let sections: [Section; 3] = [
        ("gemm", gemm_rows),
        ("attention", attention_rows),
        ("bandwidth", bandwidth),
    ];
    let mut failed = false;
    for (name, section) in sections {
        if let Err(error) = section(&device, &mut rows) {
            eprintln!("gpu_bench: {name}: {error}");
            failed = true;
        }
    }
    println!(
        "\n## {} ({}, {} GiB)\n",
        info.name,
        info.arch(),
        info.total_memory >> 30
    );
    println!("| measurement | value | unit | note |\n|---|---:|---|---|");
    for row in &rows {
        println!(
            "| {} | {:.1} | {} | {} |",
            row.what, row.value, row.unit, row.note
        );
    }
    // A kernel whose product disagrees with cuBLAS, or that failed, fails
    // the run (after the whole table is printed).
    let bad_rows = rows
        .iter()
        .filter(|row| row.note.contains("MISMATCH") || row.note.starts_with("FAILED"))
        .count();
    if bad_rows > 0 {
        eprintln!("gpu_bench: {bad_rows} kernels failed or disagree with cuBLAS");
    }
    if failed || bad_rows > 0 {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
