//! GPU-vs-CPU parity of the elementwise, reduction, norm, rotary, embedding,
//! loss and optimiser kernels, forward and backward, in f32, bf16 and f16.
//! The references are the CPU backend's ops (`kaiyuan-tensor`, in f64 on the
//! inputs rounded through the kernel's dtype; gradients by its autograd).
//! Outputs are poisoned with NaN before every launch. Skips without a GPU;
//! fails instead under `REQUIRE_GPU=1`.
//!
//! Tolerances `|x − ref| ≤ atol + rtol·|ref|`: f32 1e-5/1e-5 for maps, 1e-4
//! for reductions over hundreds of elements (the GPU sums in another order);
//! bf16 and f16 1e-2/1e-2 on outputs rounded to that dtype (bf16 keeps 8
//! bits: one rounding of a value near 2 is 8e-3).

// Built with the `cuda` feature (CI runs it so, skipping visibly without a
// GPU) or the `emulator` feature (CI runs the kernels on the CPU); without
// either no device can exist.
#![cfg(any(feature = "cuda", feature = "emulator"))]

mod common;

use common::*;
use kaiyuan_cuda::ops::{adamw, elementwise, embedding, loss, norm, reduce, rope};
use kaiyuan_cuda::{CudaError, GpuDevice, GpuFloat};
use kaiyuan_tensor::{RotaryEmbedding, RotaryLayout, Tensor};

type UnaryRef = fn(&Tensor) -> kaiyuan_tensor::Result<Tensor>;
type BinaryRef = fn(&Tensor, &Tensor) -> kaiyuan_tensor::Result<Tensor>;

fn cpu(values: &[f32], shape: &[usize]) -> Tensor {
    let wide: Vec<f64> = values.iter().map(|&v| v as f64).collect();
    Tensor::from_vec(wide, shape).expect("cpu tensor")
}

fn host(t: &Tensor) -> Vec<f32> {
    t.to_vec::<f64>()
        .expect("f64")
        .into_iter()
        .map(|v| v as f32)
        .collect()
}

/// The tolerance of a map in `T`, widened for reductions in f32.
fn tol<T: GpuFloat>(reduction: bool) -> (f32, f32) {
    match (T::SUFFIX, reduction) {
        ("f32", false) => (1e-5, 1e-5),
        ("f32", true) => (1e-4, 1e-4),
        _ => (1e-2, 1e-2),
    }
}

struct Input<T: GpuFloat> {
    host: Vec<f32>,
    device: kaiyuan_cuda::GpuBuffer<T>,
}

fn input<T: GpuFloat>(device: &GpuDevice, rng: &mut Rng, n: usize, lo: f32, hi: f32) -> Input<T> {
    let (stored, host) = through::<T>(&rng.vec(n, lo, hi));
    Input {
        host,
        device: device.upload(&stored).expect("upload"),
    }
}

fn unary_matches<T: GpuFloat>() {
    let Some(device) = gpu(&format!("unary_{}", T::SUFFIX)) else {
        return;
    };
    let mut rng = Rng::new(11);
    let ops: [(elementwise::Unary, UnaryRef); 4] = [
        (elementwise::Unary::Exp, Tensor::exp),
        (elementwise::Unary::Silu, Tensor::silu),
        (elementwise::Unary::GeluTanh, Tensor::gelu_tanh),
        (elementwise::Unary::GeluErf, Tensor::gelu_erf),
    ];
    for n in [1usize, 255, 4099] {
        let x = input::<T>(&device, &mut rng, n, -4.0, 4.0);
        let dy = input::<T>(&device, &mut rng, n, -1.0, 1.0);
        let mut y = poisoned::<T>(&device, n);
        elementwise::affine(&device, &x.device, 1.5, -0.25, &mut y).expect("affine");
        let want = cpu(&x.host, &[n]).affine(1.5, -0.25).expect("cpu affine");
        let (atol, rtol) = tol::<T>(false);
        assert_close(
            &format!("affine {} n={n}", T::SUFFIX),
            &fetch(&device, &y),
            &host(&want),
            atol,
            rtol,
        );
        for (op, reference) in ops {
            let (atol, rtol) = tol::<T>(false);
            let mut y = poisoned::<T>(&device, n);
            elementwise::unary(&device, op, &x.device, &mut y).expect("unary");
            let leaf = cpu(&x.host, &[n]).with_grad();
            let want = reference(&leaf).expect("cpu op");
            assert_close(
                &format!("{op:?} {} n={n}", T::SUFFIX),
                &fetch(&device, &y),
                &host(&want),
                atol,
                rtol,
            );
            let mut dx = poisoned::<T>(&device, n);
            elementwise::unary_backward(&device, op, &x.device, &dy.device, &mut dx)
                .expect("unary backward");
            let grads = want.backward_with(&cpu(&dy.host, &[n])).expect("backward");
            let want_dx = host(grads.get(&leaf).expect("dx"));
            assert_close(
                &format!("{op:?} backward {} n={n}", T::SUFFIX),
                &fetch(&device, &dx),
                &want_dx,
                atol,
                rtol,
            );
        }
    }
}

fn binary_matches<T: GpuFloat>() {
    let Some(device) = gpu(&format!("binary_{}", T::SUFFIX)) else {
        return;
    };
    let mut rng = Rng::new(12);
    let shapes: [(&[usize], &[usize]); 4] = [
        (&[3, 5], &[3, 5]),
        (&[2, 1, 7], &[4, 1]),
        (&[6], &[5, 6]),
        (&[1], &[2, 3, 4]),
    ];
    let ops: [(elementwise::Binary, BinaryRef); 4] = [
        (elementwise::Binary::Add, Tensor::add),
        (elementwise::Binary::Sub, Tensor::sub),
        (elementwise::Binary::Mul, Tensor::mul),
        (elementwise::Binary::Div, Tensor::div),
    ];
    for (a_shape, b_shape) in shapes {
        let a = input::<T>(&device, &mut rng, a_shape.iter().product(), -2.0, 2.0);
        // Divisors kept away from zero.
        let b = input::<T>(&device, &mut rng, b_shape.iter().product(), 0.5, 2.0);
        for (op, reference) in ops {
            let want = reference(&cpu(&a.host, a_shape), &cpu(&b.host, b_shape)).expect("cpu op");
            let mut y = poisoned::<T>(&device, want.shape().iter().product());
            let shape =
                elementwise::binary(&device, op, &a.device, a_shape, &b.device, b_shape, &mut y)
                    .expect("binary");
            assert_eq!(shape, want.shape());
            let (atol, rtol) = tol::<T>(false);
            assert_close(
                &format!("{op:?} {} {a_shape:?}·{b_shape:?}", T::SUFFIX),
                &fetch(&device, &y),
                &host(&want),
                atol,
                rtol,
            );
        }
    }
}

fn reductions_match<T: GpuFloat>() {
    let Some(device) = gpu(&format!("reduce_{}", T::SUFFIX)) else {
        return;
    };
    let mut rng = Rng::new(13);
    for (outer, len, inner) in [
        (3usize, 1000usize, 1usize),
        (1, 7, 1),
        (4, 33, 5),
        (2, 300, 64),
    ] {
        let shape = [outer, len, inner];
        let x = input::<T>(&device, &mut rng, outer * len * inner, -1.0, 1.0);
        let t = cpu(&x.host, &shape);
        let cases: [(reduce::Reduction, Tensor); 3] = [
            (reduce::Reduction::Sum, t.sum(1, false).expect("sum")),
            (reduce::Reduction::Max, t.max(1, false).expect("max")),
            (reduce::Reduction::Mean, t.mean(1, false).expect("mean")),
        ];
        for (how, want) in cases {
            let mut y = poisoned::<T>(&device, outer * inner);
            reduce::reduce(&device, how, &x.device, (outer, len, inner), &mut y).expect("reduce");
            let (atol, rtol) = tol::<T>(true);
            // A sum of hundreds of bf16 values rounds to 8 bits once more.
            let atol = if how == reduce::Reduction::Sum && T::SUFFIX != "f32" {
                atol * 10.0
            } else {
                atol
            };
            assert_close(
                &format!("{how:?} {} {shape:?}", T::SUFFIX),
                &fetch(&device, &y),
                &host(&want),
                atol,
                rtol,
            );
        }
    }
    // argmax over rows; ties are impossible with these random values.
    let (rows, cols) = (5usize, 777usize);
    let (stored, values) = through::<T>(&rng.vec(rows * cols, -10.0, 10.0));
    let x = device.upload(&stored).expect("upload");
    let mut y = device.upload(&vec![u32::MAX; rows]).expect("poison");
    reduce::argmax_rows(&device, &x, (rows, cols), &mut y).expect("argmax");
    let want: Vec<u32> = values
        .chunks(cols)
        .map(|row| {
            let mut best = 0;
            for (j, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = j;
                }
            }
            best as u32
        })
        .collect();
    assert_eq!(
        device.download(&y).expect("download"),
        want,
        "argmax {}",
        T::SUFFIX
    );
}

fn softmax_matches<T: GpuFloat>() {
    let Some(device) = gpu(&format!("softmax_{}", T::SUFFIX)) else {
        return;
    };
    let mut rng = Rng::new(14);
    // The paths (kernels/common.cuh, "Rows in registers"): widths that are a
    // multiple of the vector width (4 f32, 8 bf16/f16) keep the row in
    // registers up to 32768 columns (the f32 backward up to 16384: (1, 32768)
    // is the largest row of both forwards, 8 vectors a thread of 1024 in f32,
    // and falls back in the f32 backward); (1, 1), (3, 50) and (2, 50) are odd
    // widths and (1, 40000) too long: the scalar loop. The rows marked with
    // −inf: every 7th element of row 0 (a −inf leads the row), all but one of
    // row 1, and all of row 2 (NaN, as on the CPU; not compared).
    for (rows, cols, with_inf) in [
        (1usize, 1usize, false),
        (3, 50, false),
        (4, 1000, false),
        (2, 5000, false),
        (2, 8192, false),
        (1, 32768, false),
        (1, 40000, false),
        (3, 1024, true),
        (2, 50, true),
    ] {
        let mut values = rng.vec(rows * cols, -6.0, 6.0);
        if with_inf {
            for (r, row) in values.chunks_mut(cols).enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    if (r == 0 && j % 7 == 0) || (r == 1 && j != cols / 2) || r == 2 {
                        *v = f32::NEG_INFINITY;
                    }
                }
            }
        }
        let (stored, host_values) = through::<T>(&values);
        let x = Input {
            host: host_values,
            device: device.upload(&stored).expect("upload"),
        };
        let dy = input::<T>(&device, &mut rng, rows * cols, -1.0, 1.0);
        for log in [false, true] {
            let leaf = cpu(&x.host, &[rows, cols]).with_grad();
            let want = if log {
                leaf.log_softmax(-1)
            } else {
                leaf.softmax(-1)
            }
            .expect("cpu softmax");
            let mut y = poisoned::<T>(&device, rows * cols);
            reduce::softmax(&device, &x.device, (rows, cols), log, &mut y).expect("softmax");
            let (atol, rtol) = tol::<T>(cols >= 100);
            let what = format!(
                "{}softmax {} ({rows}, {cols})",
                if log { "log_" } else { "" },
                T::SUFFIX
            );
            assert_close(&what, &fetch(&device, &y), &host(&want), atol, rtol);
            let grads = want
                .backward_with(&cpu(&dy.host, &[rows, cols]))
                .expect("backward");
            let mut dx = poisoned::<T>(&device, rows * cols);
            reduce::softmax_backward(&device, &y, &dy.device, (rows, cols), log, &mut dx)
                .expect("softmax backward");
            assert_close(
                &format!("{what} backward"),
                &fetch(&device, &dx),
                &host(grads.get(&leaf).expect("dx")),
                atol,
                rtol,
            );
        }
    }
}

fn norms_match<T: GpuFloat>() {
    let Some(device) = gpu(&format!("norm_{}", T::SUFFIX)) else {
        return;
    };
    let mut rng = Rng::new(15);
    // (1, 8), (7, 576), (2, 4096), (2, 16384) and (1, 32768) keep the row in
    // registers (kernels/common.cuh, "Rows in registers"; (2, 16384) the
    // backwards only in bf16/f16, at their limit of 512 threads × 4 vectors,
    // (1, 32768) only the forwards), (3, 2049) (odd) and (1, 40000) (too
    // long) take the scalar loop. (2000, 64) and (600, 1024) (registers) and
    // (2000, 63) (scalar) have more rows than the backwards' 512 blocks
    // (ops/norm.rs), so a block sums dw and db over several rows.
    for (rows, cols) in [
        (1usize, 8usize),
        (7, 576),
        (2, 4096),
        (2, 16384),
        (1, 32768),
        (3, 2049),
        (1, 40000),
        (2000, 64),
        (600, 1024),
        (2000, 63),
    ] {
        let x = input::<T>(&device, &mut rng, rows * cols, -2.0, 2.0);
        let w = input::<T>(&device, &mut rng, cols, 0.5, 1.5);
        let b = input::<T>(&device, &mut rng, cols, -0.5, 0.5);
        let dy = input::<T>(&device, &mut rng, rows * cols, -1.0, 1.0);
        let (atol, rtol) = tol::<T>(true);
        let upstream = cpu(&dy.host, &[rows, cols]);

        // RMSNorm.
        let (xl, wl) = (
            cpu(&x.host, &[rows, cols]).with_grad(),
            cpu(&w.host, &[cols]).with_grad(),
        );
        let want = xl.rms_norm(&wl, 1e-6).expect("cpu rms_norm");
        let mut y = poisoned::<T>(&device, rows * cols);
        let mut rstd = poisoned::<f32>(&device, rows);
        norm::rms_norm(
            &device,
            &x.device,
            &w.device,
            (rows, cols),
            1e-6,
            &mut y,
            &mut rstd,
        )
        .expect("rms_norm");
        assert_close(
            &format!("rms_norm {} ({rows}, {cols})", T::SUFFIX),
            &fetch(&device, &y),
            &host(&want),
            atol,
            rtol,
        );
        let grads = want.backward_with(&upstream).expect("backward");
        let mut dx = poisoned::<T>(&device, rows * cols);
        let mut dw = poisoned::<f32>(&device, cols);
        norm::rms_norm_backward(
            &device,
            &x.device,
            &w.device,
            &rstd,
            &dy.device,
            (rows, cols),
            &mut dx,
            &mut dw,
        )
        .expect("rms_norm backward");
        assert_close(
            &format!("rms_norm dx {}", T::SUFFIX),
            &fetch(&device, &dx),
            &host(grads.get(&xl).expect("dx")),
            atol,
            rtol,
        );
        // dw is f32 whatever T: only the inputs were rounded.
        assert_close(
            &format!("rms_norm dw {}", T::SUFFIX),
            &fetch(&device, &dw),
            &host(grads.get(&wl).expect("dw")),
            1e-4,
            1e-4,
        );

        // LayerNorm, with and without the affine parameters.
        for affine in [true, false] {
            let xl = cpu(&x.host, &[rows, cols]).with_grad();
            let (wl, bl) = (
                cpu(&w.host, &[cols]).with_grad(),
                cpu(&b.host, &[cols]).with_grad(),
            );
            let want = if affine {
                xl.layer_norm(Some(&wl), Some(&bl), 1e-5)
            } else {
                xl.layer_norm(None, None, 1e-5)
            }
            .expect("cpu layer_norm");
            let mut y = poisoned::<T>(&device, rows * cols);
            let mut stats = norm::LayerNormStats {
                mean: poisoned::<f32>(&device, rows),
                rstd: poisoned::<f32>(&device, rows),
            };
            let (wd, bd) = if affine {
                (Some(&w.device), Some(&b.device))
            } else {
                (None, None)
            };
            norm::layer_norm(
                &device,
                &x.device,
                wd,
                bd,
                (rows, cols),
                1e-5,
                &mut y,
                &mut stats,
            )
            .expect("layer_norm");
            let what = format!("layer_norm affine={affine} {} ({rows}, {cols})", T::SUFFIX);
            assert_close(&what, &fetch(&device, &y), &host(&want), atol, rtol);
            let grads = want.backward_with(&upstream).expect("backward");
            let mut dx = poisoned::<T>(&device, rows * cols);
            let mut dw = poisoned::<f32>(&device, cols);
            let mut db = poisoned::<f32>(&device, cols);
            norm::layer_norm_backward(
                &device,
                &x.device,
                wd,
                &stats,
                &dy.device,
                (rows, cols),
                &mut dx,
                &mut dw,
                &mut db,
            )
            .expect("layer_norm backward");
            assert_close(
                &format!("{what} dx"),
                &fetch(&device, &dx),
                &host(grads.get(&xl).expect("dx")),
                atol,
                rtol,
            );
            if affine {
                assert_close(
                    &format!("{what} dw"),
                    &fetch(&device, &dw),
                    &host(grads.get(&wl).expect("dw")),
                    1e-4,
                    1e-4,
                );
                assert_close(
                    &format!("{what} db"),
                    &fetch(&device, &db),
                    &host(grads.get(&bl).expect("db")),
                    1e-4,
                    1e-4,
                );
            }
        }
    }
}

fn rope_matches<T: GpuFloat>() {
    let Some(device) = gpu(&format!("rope_{}", T::SUFFIX)) else {
        return;
    };
    let mut rng = Rng::new(16);
    for (layout, interleaved) in [
        (RotaryLayout::HalfSplit, false),
        (RotaryLayout::Interleaved, true),
    ] {
        for (outer, t, d, rotary_dim, offset) in [
            (2usize, 5usize, 64usize, 64usize, 0usize),
            (3, 4, 80, 32, 1000),
        ] {
            let rope_cpu = RotaryEmbedding::new(rotary_dim, 10_000.0, layout).expect("rope");
            let positions: Vec<usize> = (offset..offset + t).collect();
            let (cos, sin) = rope::angle_tables(rope_cpu.inv_freq(), &positions);
            let (cos, sin) = (
                device.upload(&cos).expect("cos"),
                device.upload(&sin).expect("sin"),
            );
            let x = input::<T>(&device, &mut rng, outer * t * d, -2.0, 2.0);
            // The CPU reference in f32 forms its angles in f32, as the table does.
            let xs = Tensor::from_vec(x.host.clone(), &[outer, t, d]).expect("x");
            let (atol, rtol) = tol::<T>(false);
            for inverse in [false, true] {
                let want: Vec<f32> = if inverse {
                    // The gradient: rotating by −angle is the transpose.
                    let leaf = xs.with_grad();
                    let y = rope_cpu.apply_at(&leaf, &positions).expect("cpu rope");
                    let grads = y.backward_with(&xs).expect("backward");
                    grads.get(&leaf).expect("dx").to_vec::<f32>().expect("f32")
                } else {
                    rope_cpu
                        .apply_at(&xs, &positions)
                        .expect("cpu rope")
                        .to_vec::<f32>()
                        .expect("f32")
                };
                let want: Vec<f32> = want.iter().map(|&v| T::from_f32(v).to_f32()).collect();
                let mut y = poisoned::<T>(&device, outer * t * d);
                rope::rope(
                    &device,
                    &x.device,
                    (outer, t, d),
                    rotary_dim,
                    interleaved,
                    (&cos, &sin),
                    inverse,
                    &mut y,
                )
                .expect("rope");
                assert_close(
                    &format!(
                        "rope {layout:?} inverse={inverse} {} d={d} rotary={rotary_dim}",
                        T::SUFFIX
                    ),
                    &fetch(&device, &y),
                    &want,
                    atol.max(2e-5),
                    rtol,
                );
            }
        }
    }
}

fn embedding_matches<T: GpuFloat>() {
    let Some(device) = gpu(&format!("embedding_{}", T::SUFFIX)) else {
        return;
    };
    let mut rng = Rng::new(17);
    let (vocab, width, n) = (50usize, 24usize, 37usize);
    let table = input::<T>(&device, &mut rng, vocab * width, -1.0, 1.0);
    // Repeated ids, so the backward must add.
    let ids: Vec<u32> = (0..n).map(|_| rng.below(10) * 5).collect();
    let ids_device = device.upload(&ids).expect("ids");
    let dy = input::<T>(&device, &mut rng, n * width, -1.0, 1.0);
    let leaf = cpu(&table.host, &[vocab, width]).with_grad();
    let id_tensor = Tensor::from_vec(ids.clone(), &[n]).expect("ids");
    let want = leaf.embedding(&id_tensor).expect("cpu embedding");
    let mut out = poisoned::<T>(&device, n * width);
    // Ids checked here: the kernel's rows are the same without a read-back.
    for check in [
        embedding::IdCheck::ReadBack,
        embedding::IdCheck::DoneByCaller,
    ] {
        embedding::embedding(
            &device,
            &ids_device,
            &table.device,
            (vocab, width),
            &mut out,
            check,
        )
        .expect("embedding");
    }
    assert_close(
        &format!("embedding {}", T::SUFFIX),
        &fetch(&device, &out),
        &host(&want),
        0.0,
        0.0,
    );
    let grads = want
        .backward_with(&cpu(&dy.host, &[n, width]))
        .expect("backward");
    let mut dtable = poisoned::<f32>(&device, vocab * width);
    embedding::embedding_backward(
        &device,
        &ids_device,
        &dy.device,
        (vocab, width),
        &mut dtable,
    )
    .expect("backward");
    assert_close(
        &format!("embedding backward {}", T::SUFFIX),
        &fetch(&device, &dtable),
        &host(grads.get(&leaf).expect("dtable")),
        1e-5,
        1e-5,
    );

    let bad_ids = device.upload(&[1u32, 2, vocab as u32 + 3, 4]).expect("ids");
    let mut out = poisoned::<T>(&device, 4 * width);
    match embedding::embedding(
        &device,
        &bad_ids,
        &table.device,
        (vocab, width),
        &mut out,
        embedding::IdCheck::ReadBack,
    ) {
        Err(CudaError::BadInput { detail, .. }) => {
            assert!(
                detail.contains(&format!("id {} at position 2", vocab + 3)),
                "{detail}"
            )
        }
        other => panic!("an id outside the vocabulary must be refused, got {other:?}"),
    }
}

fn cross_entropy_matches<T: GpuFloat>() {
    let Some(device) = gpu(&format!("cross_entropy_{}", T::SUFFIX)) else {
        return;
    };
    let mut rng = Rng::new(18);
    for (rows, vocab) in [(1usize, 5usize), (9, 1000), (4, 49_152)] {
        let logits = input::<T>(&device, &mut rng, rows * vocab, -8.0, 8.0);
        let mut targets: Vec<i32> = (0..rows).map(|_| rng.below(vocab as u32) as i32).collect();
        if rows > 2 {
            targets[1] = loss::IGNORE_INDEX;
        }
        let targets_device = device.upload(&targets).expect("targets");
        let leaf = cpu(&logits.host, &[rows, vocab]).with_grad();
        let target_tensor = Tensor::from_vec(
            targets.iter().map(|&t| t as i64).collect::<Vec<_>>(),
            &[rows],
        )
        .expect("t");
        let want = leaf
            .cross_entropy(&target_tensor)
            .expect("cpu cross_entropy");
        let forward = loss::cross_entropy(
            &device,
            &logits.device,
            &targets_device,
            (rows, vocab),
            embedding::IdCheck::ReadBack,
        )
        .expect("cross_entropy");
        let got = fetch(&device, &forward.mean);
        let (atol, rtol) = tol::<T>(true);
        assert_close(
            &format!("cross_entropy {} ({rows}, {vocab})", T::SUFFIX),
            &got[..1],
            &host(&want),
            1e-4,
            1e-4,
        );
        let kept = targets.iter().filter(|&&t| t != loss::IGNORE_INDEX).count();
        assert_eq!(got[1], kept as f32);
        let grads = want
            .backward_with(&Tensor::from_vec(vec![0.75f64], &[]).expect("g"))
            .expect("backward");
        let mut dlogits = poisoned::<T>(&device, rows * vocab);
        let upstream = device.upload(&[0.75f32]).expect("upstream");
        loss::cross_entropy_backward(
            &device,
            &logits.device,
            &targets_device,
            &forward,
            (rows, vocab),
            &upstream,
            &mut dlogits,
        )
        .expect("cross_entropy backward");
        assert_close(
            &format!("cross_entropy backward {} ({rows}, {vocab})", T::SUFFIX),
            &fetch(&device, &dlogits),
            &host(grads.get(&leaf).expect("dlogits")),
            atol,
            rtol,
        );
    }
    let logits = input::<T>(&device, &mut rng, 3 * 10, -1.0, 1.0);
    let bad = device.upload(&[1i32, 10, 2]).expect("targets");
    match loss::cross_entropy(
        &device,
        &logits.device,
        &bad,
        (3, 10),
        embedding::IdCheck::ReadBack,
    ) {
        Err(CudaError::BadInput { detail, .. }) => {
            assert!(detail.contains("target 10 of row 1"), "{detail}")
        }
        other => panic!("a target outside the vocabulary must be refused, got {other:?}"),
    }
}

/// The trainer's CPU AdamW step (crates/train/src/optim.rs), element by element.
fn adamw_reference(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: adamw::AdamWStep) {
    for i in 0..p.len() {
        p[i] *= s.decay;
        m[i] += (g[i] - m[i]) * (1.0 - s.beta1);
        v[i] = v[i] * s.beta2 + (1.0 - s.beta2) * g[i] * g[i];
        let denom = v[i].sqrt() / s.bias2_sqrt + s.eps;
        p[i] -= s.step_size * (m[i] / denom);
    }
}

fn adamw_matches<G: GpuFloat>() {
    let Some(device) = gpu(&format!("adamw_{}", G::SUFFIX)) else {
        return;
    };
    let mut rng = Rng::new(19);
    let n = 10_007;
    let mut p = rng.vec(n, -1.0, 1.0);
    let mut m = rng.vec(n, -0.1, 0.1);
    let mut v = rng.vec(n, 0.0, 0.01);
    let (mut pd, mut md, mut vd) = (
        device.upload(&p).expect("p"),
        device.upload(&m).expect("m"),
        device.upload(&v).expect("v"),
    );
    let mut copy = poisoned::<G>(&device, n);
    for t in 1..=3 {
        let (stored, g) = through::<G>(&rng.vec(n, -1.0, 1.0));
        let gd = device.upload(&stored).expect("g");
        let step = adamw::AdamWStep::new(1e-3, 0.9, 0.999, 1e-8, 0.1, t, t != 2);
        adamw::adamw(
            &device,
            &mut pd,
            &gd,
            (&mut md, &mut vd),
            step,
            Some(&mut copy),
        )
        .expect("adamw");
        adamw_reference(&mut p, &g, &mut m, &mut v, step);
    }
    assert_close(
        &format!("adamw p {}", G::SUFFIX),
        &fetch(&device, &pd),
        &p,
        1e-6,
        1e-5,
    );
    assert_close(
        &format!("adamw m {}", G::SUFFIX),
        &fetch(&device, &md),
        &m,
        1e-6,
        1e-5,
    );
    assert_close(
        &format!("adamw v {}", G::SUFFIX),
        &fetch(&device, &vd),
        &v,
        1e-7,
        1e-5,
    );
    let rounded: Vec<f32> = p.iter().map(|&x| G::from_f32(x).to_f32()).collect();
    let (atol, rtol) = tol::<G>(false);
    assert_close(
        &format!("adamw copy {}", G::SUFFIX),
        &fetch(&device, &copy),
        &rounded,
        atol,
        rtol,
    );
}

fn cast_matches<Src: GpuFloat, Dst: GpuFloat>() {
    let Some(device) = gpu(&format!("cast_{}_{}", Src::SUFFIX, Dst::SUFFIX)) else {
        return;
    };
    let mut rng = Rng::new(20);
    let x = input::<Src>(&device, &mut rng, 3001, -100.0, 100.0);
    let mut y = poisoned::<Dst>(&device, 3001);
    elementwise::cast(&device, &x.device, &mut y).expect("cast");
    let want: Vec<f32> = x.host.iter().map(|&v| Dst::from_f32(v).to_f32()).collect();
    // Round to nearest even on both sides: bit-identical.
    assert_close(
        &format!("cast {} → {}", Src::SUFFIX, Dst::SUFFIX),
        &fetch(&device, &y),
        &want,
        0.0,
        0.0,
    );
}

/// Strided copies against the CPU backend's views: a transpose, a narrow
/// with an offset, a broadcast (zero stride) and a rank-0 element made
/// contiguous, then a piece written into the middle of a larger poisoned
/// tensor (the rest must stay poisoned).
fn copy_strided_matches<T: GpuFloat + elementwise::CopyValue>() {
    let Some(device) = gpu(&format!("copy_strided_{}", T::SUFFIX)) else {
        return;
    };
    let mut rng = Rng::new(21);
    let x = input::<T>(&device, &mut rng, 2 * 3 * 4, -2.0, 2.0);
    let base = cpu(&x.host, &[2, 3, 4]);
    let views: [(&str, Tensor); 4] = [
        ("permute", base.permute(&[2, 0, 1]).expect("permute")),
        (
            "narrow",
            base.narrow(1, 1, 2)
                .expect("narrow")
                .transpose(0, 2)
                .expect("t"),
        ),
        (
            "broadcast",
            base.narrow(2, 3, 1)
                .expect("narrow")
                .broadcast_as(&[2, 3, 5])
                .expect("b"),
        ),
        (
            "scalar",
            base.narrow(0, 1, 1)
                .expect("n")
                .narrow(1, 2, 1)
                .expect("n")
                .narrow(2, 1, 1)
                .expect("n")
                .reshape(&[])
                .expect("r"),
        ),
    ];
    for (name, view) in views {
        let shape = view.shape().to_vec();
        let n: usize = shape.iter().product();
        let mut y = poisoned::<T>(&device, n);
        let mut row_major = vec![1usize; shape.len()];
        for axis in (0..shape.len().saturating_sub(1)).rev() {
            row_major[axis] = row_major[axis + 1] * shape[axis + 1];
        }
        let from = elementwise::View {
            shape: &shape,
            strides: view.layout().strides(),
            offset: view.layout().offset(),
        };
        let to = elementwise::View {
            shape: &shape,
            strides: &row_major,
            offset: 0,
        };
        elementwise::copy_strided(&device, &x.device, from, &mut y, to).expect("copy");
        assert_close(
            &format!("copy_strided {name} {}", T::SUFFIX),
            &fetch(&device, &y),
            &host(&view.contiguous().expect("contiguous")),
            0.0,
            0.0,
        );
    }
    // x (2, 3, 4) into columns 2..6 of a (2, 3, 7) target.
    let mut y = poisoned::<T>(&device, 2 * 3 * 7);
    let from = elementwise::View {
        shape: &[2, 3, 4],
        strides: &[12, 4, 1],
        offset: 0,
    };
    let to = elementwise::View {
        shape: &[2, 3, 4],
        strides: &[21, 7, 1],
        offset: 2,
    };
    elementwise::copy_strided(&device, &x.device, from, &mut y, to).expect("copy into");
    let got = fetch(&device, &y);
    for (i, value) in got.iter().enumerate() {
        let (outer, col) = (i / 7, i % 7);
        if (2..6).contains(&col) {
            assert_eq!(*value, x.host[outer * 4 + col - 2], "element {i}");
        } else {
            assert!(
                value.is_nan(),
                "element {i} outside the piece was written: {value}"
            );
        }
    }
    // A view reaching past its buffer is refused before any launch.
    let past = elementwise::View {
        shape: &[2, 3, 4],
        strides: &[12, 4, 1],
        offset: 1,
    };
    let to = elementwise::View {
        shape: &[2, 3, 4],
        strides: &[12, 4, 1],
        offset: 0,
    };
    let mut y = poisoned::<T>(&device, 24);
    assert!(matches!(
        elementwise::copy_strided(&device, &x.device, past, &mut y, to),
        Err(CudaError::Shape { .. })
    ));
}

macro_rules! per_dtype {
    ($($name:ident => $generic:ident),* $(,)?) => {
        mod f32_ {
            $(#[test] fn $name() { super::$generic::<f32>(); })*
        }
        mod bf16_ {
            $(#[test] fn $name() { super::$generic::<half::bf16>(); })*
        }
        mod f16_ {
            $(#[test] fn $name() { super::$generic::<half::f16>(); })*
        }
    };
}

per_dtype! {
    unary => unary_matches,
    binary => binary_matches,
    reductions => reductions_match,
    softmax => softmax_matches,
    norms => norms_match,
    rope => rope_matches,
    embedding => embedding_matches,
    cross_entropy => cross_entropy_matches,
    adamw => adamw_matches,
    copy_strided => copy_strided_matches,
}

#[test]
fn casts() {
    cast_matches::<f32, half::bf16>();
    cast_matches::<f32, half::f16>();
    cast_matches::<half::bf16, f32>();
    cast_matches::<half::f16, f32>();
    cast_matches::<half::bf16, half::f16>();
    cast_matches::<half::f16, half::bf16>();
}

#[test]
fn a_build_without_a_device_reports_no_cuda_device() {
    if let Err(error) = GpuDevice::new(0) {
        assert!(error.to_string().starts_with("no CUDA device"), "{error}");
    }
}
