//! Quantized GEMV (one activation row, decoding) at SmolLM2-135M's shapes
//! and at 4096 × 4096, beside a memory-bandwidth bound measured in the
//! same run: streaming-summing a 256 MiB buffer on the same threads.
//!
//! Each case cycles through enough copies of its weight (≥ 160 MiB in
//! all) that every product reads its weight from DRAM, as a decode step of
//! a whole model does, not from the 48 MiB L3 of the development machine.
//! Threads: rayon's global pool (`RAYON_NUM_THREADS=1 cargo bench -p
//! kaiyuan-tensor --bench quant_gemv`). After criterion's report a table
//! prints each case's median, GB/s of weight bytes and its ratio to the
//! bound.
//!
//! Napkin maths: a 4096 × 4096 int8 GEMV reads 16.8 MB; at a DRAM
//! bandwidth of ~12 GB/s per core that is ~1.4 ms, while the VNNI kernel
//! needs ~2 cycles per 32 weights (~0.2 ms at 2.8 GHz), so the product is
//! bound by memory and should reach most of the bound.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use half::f16;
use kaiyuan_tensor::Tensor;
use kaiyuan_tensor::quant::{BlockType, KernelIsa, QBytes, QMatrix};
use rayon::prelude::*;

const SHAPES: [(usize, usize); 5] = [
    (576, 576),
    (1536, 576),
    (576, 1536),
    (49152, 576),
    (4096, 4096),
];

#[derive(Clone, Copy)]
enum Fmt {
    Block(BlockType),
    Int4G128,
    Int8Channel,
}

impl Fmt {
    fn name(self) -> String {
        match self {
            Fmt::Block(ty) => ty.name().to_string(),
            Fmt::Int4G128 => "int4-g128".into(),
            Fmt::Int8Channel => "int8-channel".into(),
        }
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// A random valid matrix (random codes, f16 scales near 0.01).
fn matrix(fmt: Fmt, rows: usize, cols: usize, seed: u64) -> QMatrix {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    match fmt {
        Fmt::Block(ty) => {
            let mut bytes = vec![0u8; rows * cols / ty.block_size() * ty.type_size()];
            rng.fill(&mut bytes);
            let d = f16::from_f32(0.01).to_le_bytes();
            for blk in bytes.chunks_exact_mut(ty.type_size()) {
                let at: &[usize] = match ty {
                    BlockType::Q4_1 | BlockType::Q4_K | BlockType::Q5_K => &[0, 2],
                    BlockType::Q6_K => &[208],
                    _ => &[0],
                };
                for &i in at {
                    blk[i..i + 2].copy_from_slice(&d);
                }
            }
            QMatrix::from_blocks(ty, rows, cols, QBytes::Owned(bytes)).expect("valid blocks")
        }
        Fmt::Int4G128 | Fmt::Int8Channel => {
            let (bits, group) = match fmt {
                // 576 is not a multiple of 128: such rows take group 64.
                Fmt::Int4G128 if !cols.is_multiple_of(128) => (4, 64),
                Fmt::Int4G128 => (4, 128),
                _ => (8, cols),
            };
            let mut codes = vec![0u8; rows * cols];
            rng.fill(&mut codes);
            if bits == 4 {
                codes.iter_mut().for_each(|c| *c &= 0x0F);
            }
            let groups = rows * cols / group;
            QMatrix::from_int(
                bits,
                group,
                rows,
                cols,
                &codes,
                vec![0.01; groups],
                vec![-0.05; groups],
                None,
            )
            .expect("valid int matrix")
        }
    }
}

/// Median seconds of `f` over repeated runs of about `budget` in all.
fn median_secs(budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut times = Vec::new();
    while start.elapsed() < budget || times.len() < 5 {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn stream_sum(buf: &[u64]) -> u64 {
    buf.par_chunks(1 << 16)
        .map(|c| c.iter().fold(0u64, |a, &v| a.wrapping_add(v)))
        .reduce(|| 0, u64::wrapping_add)
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(10);
    let threads = rayon::current_num_threads();
    println!("threads: {threads}, kernels: {:?}", KernelIsa::detected());

    let buf: Vec<u64> = (0..(256usize << 20) / 8).map(|i| i as u64).collect();
    let bytes = (buf.len() * 8) as u64;
    let mut group = c.benchmark_group(format!("bandwidth-t{threads}"));
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("stream_sum_256MiB", |b| {
        b.iter(|| black_box(stream_sum(&buf)))
    });
    group.finish();
    let bound = bytes as f64
        / median_secs(Duration::from_secs(2), || {
            black_box(stream_sum(&buf));
        })
        / 1e9;
    drop(buf);

    let formats = [
        Fmt::Block(BlockType::Q4_0),
        Fmt::Block(BlockType::Q8_0),
        Fmt::Block(BlockType::Q4_K),
        Fmt::Block(BlockType::Q6_K),
        Fmt::Int4G128,
        Fmt::Int8Channel,
    ];
    let mut table = Vec::new();
    for fmt in formats {
        let mut group = c.benchmark_group(format!("gemv-{}-t{threads}", fmt.name()));
        for (rows, cols) in SHAPES {
            if let Fmt::Block(ty) = fmt
                && cols % ty.block_size() != 0
            {
                continue; // (GGUF files store such rows as Q5_0/Q8_0)
            }
            let first = matrix(fmt, rows, cols, 1);
            let size = first.byte_size();
            let copies = ((160usize << 20).div_ceil(size)).max(2);
            let ws: Vec<QMatrix> = std::iter::once(first)
                .chain((1..copies).map(|s| matrix(fmt, rows, cols, 1 + s as u64)))
                .collect();
            let x = Tensor::rand_uniform(&[1, cols], -1.0, 1.0, 7).expect("x");
            group.throughput(Throughput::Bytes(size as u64));
            let mut k = 0;
            let mut step = || {
                k = (k + 1) % ws.len();
                black_box(ws[k].matmul_t(&x).expect("gemv"));
            };
            group.bench_function(format!("{rows}x{cols}"), |b| b.iter(&mut step));
            let secs = median_secs(Duration::from_millis(400), &mut step);
            let label = match (fmt, cols % 128) {
                (Fmt::Int4G128, 0) | (Fmt::Block(_) | Fmt::Int8Channel, _) => fmt.name(),
                _ => "int4-g64".to_string(),
            };
            table.push((label, rows, cols, secs, size as f64 / secs / 1e9));
            if (rows, cols) == (4096, 4096) {
                // The same product on each instruction set.
                for isa in KernelIsa::supported() {
                    let mut k = 0;
                    let secs = median_secs(Duration::from_millis(400), || {
                        k = (k + 1) % ws.len();
                        black_box(ws[k].matmul_t_on(&x, isa).expect("gemv"));
                    });
                    let name = format!("{} {isa:?}", fmt.name());
                    table.push((name, rows, cols, secs, size as f64 / secs / 1e9));
                }
            }
        }
        group.finish();
    }
    // Prefill (compute-bound; one weight copy): the fused kernels at 8
    // rows, `matmul_t` at 128 rows (dequantized tiles + dense GEMM, see
    // `QMatrix::DENSE_MIN_ROWS`), and the dense f32 GEMM of a weight
    // dequantized beforehand, in GFLOP/s.
    let mut prefill = Vec::new();
    for fmt in [
        Fmt::Block(BlockType::Q4_0),
        Fmt::Block(BlockType::Q4_K),
        Fmt::Int8Channel,
    ] {
        let (rows, cols) = (4096, 4096);
        let w = matrix(fmt, rows, cols, 1);
        let dense = Tensor::from_vec(w.dequantize(), &[rows, cols]).expect("dense");
        let dense_t = dense.t().expect("view");
        let mut rates = Vec::new();
        for (m, raw) in [(8, false), (128, false), (128, true)] {
            let x = Tensor::rand_uniform(&[m, cols], -1.0, 1.0, 7).expect("x");
            let secs = median_secs(Duration::from_secs(1), || {
                if raw {
                    black_box(x.matmul(&dense_t).expect("gemm"));
                } else {
                    black_box(w.matmul_t(&x).expect("fused"));
                }
            });
            rates.push(2.0 * (m * rows * cols) as f64 / secs / 1e9);
        }
        prefill.push((fmt.name(), rates));
    }
    println!(
        "\nprefill, m × 4096 · (4096 × 4096)ᵀ, GFLOP/s: fused m=8 | matmul_t m=128 | dense f32 GEMM m=128"
    );
    for (name, r) in prefill {
        println!("{name:<14} {:>8.1} {:>8.1} {:>8.1}", r[0], r[1], r[2]);
    }
    println!("\nmemory bound (stream-sum 256 MiB, {threads} threads): {bound:.1} GB/s");
    println!(
        "{:<26} {:>12} {:>11} {:>9} {:>9}",
        "format", "shape", "median µs", "GB/s", "of bound"
    );
    for (name, rows, cols, secs, gbs) in table {
        println!(
            "{name:<26} {:>12} {:>11.1} {gbs:>9.2} {:>8.0}%",
            format!("{rows}x{cols}"),
            secs * 1e6,
            100.0 * gbs / bound
        );
    }
    c.final_summary();
}
