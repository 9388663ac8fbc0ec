//! Tensor ops on a CUDA device against the same ops on the CPU: values and
//! gradients (autograd through the device's backward kernels), in f32,
//! bf16 and f16, on random inputs including views (transposes, narrows,
//! broadcasts). The CPU reference runs in f64 on the inputs rounded
//! through the device dtype.
//!
//! Runs with kaiyuan-cuda's `emulator` feature (CI: the kernels on the CPU)
//! or `cuda` (a GPU); skips visibly without a device and fails instead under
//! `REQUIRE_GPU=1`. Tolerances `|x − ref| ≤ atol + rtol·|ref|`: f32 atol
//! 1e-4, rtol 1e-4 (sums in another order); bf16 and f16 atol 3e-2, rtol
//! 3e-2 (each stored result rounded to 8 or 11 bits); gradients 4× those.
#![cfg(any(feature = "cuda", feature = "emulator"))]

mod common;

use kaiyuan_tensor::{
    AttentionOptions, DType, Device, KvBuffer, RotaryEmbedding, RotaryLayout, Tensor, TensorError,
    check_device, scaled_dot_product_attention, scaled_dot_product_attention_cached,
};

const GPU: Device = Device::Cuda(0);

fn gpu(test: &str) -> bool {
    match check_device(GPU) {
        Ok(()) => true,
        Err(error) => {
            if std::env::var("REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("{test}: REQUIRE_GPU=1 but {error}");
            }
            eprintln!("SKIPPED {test}: {error}");
            false
        }
    }
}

fn tol(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F32 => (1e-4, 1e-4),
        _ => (3e-2, 3e-2),
    }
}

fn host(t: &Tensor) -> Vec<f64> {
    t.to_device(Device::Cpu)
        .expect("download")
        .cast(DType::F64)
        .expect("cast")
        .to_vec::<f64>()
        .expect("values")
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor, (atol, rtol): (f64, f64)) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let (got, want) = (host(got), host(want));
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let ok = (g - w).abs() <= atol + rtol * w.abs() || (g.is_nan() && w.is_nan());
        assert!(ok, "{what}: element {i}: got {g}, want {w}");
    }
}

/// A random input of `shape`, representable in `dtype`, as f64 on the CPU.
fn input(shape: &[usize], dtype: DType, seed: u64) -> Tensor {
    let n = shape.iter().product();
    let values = common::rounded(&common::values(n, seed), dtype);
    Tensor::from_vec(values, shape).expect("input")
}

/// Runs `f` on the CPU (f64) and on the device (`dtype`) with `inputs` as
/// gradient leaves; compares the outputs and the gradient of
/// Σ out ⊙ probe with respect to every input.
fn check(
    name: &str,
    dtype: DType,
    inputs: &[Tensor],
    f: impl Fn(&[Tensor]) -> kaiyuan_tensor::Result<Tensor>,
) {
    let what = format!("{name} {dtype}");
    let cpu: Vec<Tensor> = inputs.iter().map(Tensor::with_grad).collect();
    let want = f(&cpu).unwrap_or_else(|e| panic!("{what}: cpu: {e}"));
    let dev: Vec<Tensor> = inputs
        .iter()
        .map(|t| {
            t.cast(dtype)
                .and_then(|t| t.to_device(GPU))
                .expect("upload")
                .with_grad()
        })
        .collect();
    let got = f(&dev).unwrap_or_else(|e| panic!("{what}: device: {e}"));
    assert_eq!(got.device(), GPU, "{what}: the result left the device");
    assert_eq!(got.dtype(), dtype, "{what}: dtype");
    assert_close(&what, &got, &want, tol(dtype));
    let probe = input(want.shape(), dtype, 99);
    let loss = |out: &Tensor, probe: &Tensor| -> Tensor {
        let n = out.elem_count();
        out.mul(probe)
            .and_then(|t| t.reshape(&[n]))
            .and_then(|t| t.sum(0, false))
            .expect("loss")
    };
    let want_grads = loss(&want, &probe).backward().expect("cpu backward");
    let probe_dev = probe
        .cast(dtype)
        .and_then(|p| p.to_device(GPU))
        .expect("probe");
    let got_grads = loss(&got, &probe_dev).backward().expect("device backward");
    for (i, (c, d)) in cpu.iter().zip(&dev).enumerate() {
        let (Some(want), Some(got)) = (want_grads.get(c), got_grads.get(d)) else {
            assert!(
                want_grads.get(c).is_none() && got_grads.get(d).is_none(),
                "{what}: gradient of input {i} on one device only"
            );
            continue;
        };
        assert_eq!(got.device(), GPU, "{what}: gradient {i} left the device");
        let (atol, rtol) = tol(dtype);
        assert_close(
            &format!("{what}: d input {i}"),
            got,
            want,
            (atol * 4.0, rtol * 4.0),
        );
    }
}

fn each_dtype(test: &str, run: impl Fn(DType)) {
    if !gpu(test) {
        return;
    }
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        run(dtype);
    }
}

#[test]
fn transfers_round_trip_and_views_become_dense() {
    if !gpu("transfers") {
        return;
    }
    let x = input(&[2, 3, 4], DType::F32, 1).cast(DType::F32).unwrap();
    let d = x.to_device(GPU).unwrap();
    assert_eq!(d.device(), GPU);
    assert_eq!(host(&d), host(&x));
    for (name, view, want) in [
        (
            "transpose",
            d.transpose(0, 2).unwrap(),
            x.transpose(0, 2).unwrap(),
        ),
        (
            "narrow",
            d.narrow(1, 1, 2).unwrap(),
            x.narrow(1, 1, 2).unwrap(),
        ),
        (
            "broadcast",
            d.narrow(2, 0, 1).unwrap().broadcast_as(&[2, 3, 5]).unwrap(),
            x.narrow(2, 0, 1).unwrap().broadcast_as(&[2, 3, 5]).unwrap(),
        ),
    ] {
        let dense = view.contiguous().unwrap();
        assert!(dense.is_contiguous());
        assert_eq!(dense.device(), GPU, "{name}");
        assert_eq!(host(&dense), host(&want), "{name}");
        // to_vec reads a device view directly.
        assert_eq!(
            view.to_vec::<f32>().unwrap(),
            want.to_vec::<f32>().unwrap(),
            "{name}"
        );
    }
    let reshaped = d.transpose(1, 2).unwrap().reshape(&[2, 12]).unwrap();
    assert_eq!(
        host(&reshaped),
        host(&x.transpose(1, 2).unwrap().reshape(&[2, 12]).unwrap())
    );
    let ids = Tensor::from_vec(vec![3u32, 1, 4], &[3])
        .unwrap()
        .to_device(GPU)
        .unwrap();
    assert_eq!(ids.to_vec::<u32>().unwrap(), vec![3, 1, 4]);
    assert!(
        x.cast(DType::F64).unwrap().to_device(GPU).is_err(),
        "f64 has no device storage"
    );
    // Empty tensors: views, joins and reductions as on the CPU.
    let empty = Tensor::zeros(&[0, 4], DType::F32)
        .unwrap()
        .to_device(GPU)
        .unwrap();
    assert_eq!(empty.t().unwrap().contiguous().unwrap().shape(), &[4, 0]);
    let joined = Tensor::concat(&[&empty, &empty], 0).unwrap();
    assert_eq!(joined.shape(), &[0, 4]);
    assert_eq!(host(&empty.sum(0, false).unwrap()), vec![0.0; 4]);
    assert!(
        host(&empty.max(0, false).unwrap())
            .iter()
            .all(|v| *v == f64::NEG_INFINITY)
    );
    // Mismatched dtypes are named, not a storage mix-up.
    let w = Tensor::zeros(&[4], DType::F32)
        .unwrap()
        .to_device(GPU)
        .unwrap();
    let xb = d.cast(DType::BF16).unwrap();
    assert!(matches!(
        xb.rms_norm(&w, 1e-5),
        Err(TensorError::DTypeMismatch { .. })
    ));
}

#[test]
fn mixed_devices_and_missing_kernels_are_errors() {
    if !gpu("errors") {
        return;
    }
    let x = input(&[2, 3], DType::F32, 2).cast(DType::F32).unwrap();
    let d = x.to_device(GPU).unwrap();
    match d.add(&x) {
        Err(TensorError::DeviceMismatch { .. }) => {}
        other => panic!("expected a device mismatch, got {other:?}"),
    }
    // An op without a kernel names itself and the way out.
    // Targets and ids outside the table are named, as on the CPU.
    let logits = Tensor::zeros(&[6, 4], DType::F32)
        .unwrap()
        .to_device(GPU)
        .unwrap();
    let targets = Tensor::from_vec(vec![1i64, -100, 3, 4, 0, 0], &[6]).unwrap();
    assert!(matches!(
        logits.cross_entropy(&targets),
        Err(TensorError::IndexOutOfRange {
            id: 4,
            position: 3,
            ..
        })
    ));
    let bad_ids = Tensor::from_vec(vec![0u32, 6], &[2]).unwrap();
    assert!(matches!(
        logits.embedding(&bad_ids),
        Err(TensorError::IndexOutOfRange {
            id: 6,
            position: 1,
            ..
        })
    ));
    let ids = Tensor::from_vec(vec![1u32, 2], &[2])
        .unwrap()
        .to_device(GPU)
        .unwrap();
    let error = ids.cast(DType::F32).unwrap_err();
    assert!(error.to_string().contains("cuda:0"), "{error}");
    let q = input(&[1, 2, 3, 32], DType::F32, 3)
        .cast(DType::F32)
        .unwrap()
        .to_device(GPU)
        .unwrap();
    let mask = Tensor::zeros(&[1, 1, 3, 3], DType::F32)
        .unwrap()
        .to_device(GPU)
        .unwrap();
    let options = AttentionOptions {
        causal: true,
        mask: Some(&mask),
        ..Default::default()
    };
    match scaled_dot_product_attention(&q, &q, &q, &options) {
        Err(TensorError::UnsupportedOnDevice { .. }) => {}
        other => panic!("expected an unsupported mask, got {other:?}"),
    }
}

#[test]
fn elementwise_ops_and_their_gradients() {
    each_dtype("elementwise", |dtype| {
        for (a, b) in [
            (&[2usize, 3, 4][..], &[4usize][..]),
            (&[2, 1, 4], &[3, 1]),
            (&[3, 5], &[3, 5]),
        ] {
            let inputs = [
                input(a, dtype, 10),
                input(b, dtype, 11).affine(0.25, 1.5).unwrap(),
            ];
            check("add", dtype, &inputs, |x| x[0].add(&x[1]));
            check("sub", dtype, &inputs, |x| x[0].sub(&x[1]));
            check("mul", dtype, &inputs, |x| x[0].mul(&x[1]));
            check("div", dtype, &inputs, |x| x[0].div(&x[1]));
        }
        let x = [input(&[4, 33], dtype, 12)];
        check("silu", dtype, &x, |x| x[0].silu());
        check("gelu_tanh", dtype, &x, |x| x[0].gelu_tanh());
        check("gelu_erf", dtype, &x, |x| x[0].gelu_erf());
        check("exp", dtype, &x, |x| x[0].exp());
        check("affine", dtype, &x, |x| x[0].affine(-0.5, 2.0));
        // Through views: the transpose of a narrow.
        check("silu of a view", dtype, &x, |x| {
            x[0].narrow(1, 3, 20)?.t()?.silu()
        });
        let other = if dtype == DType::F32 {
            DType::BF16
        } else {
            DType::F32
        };
        check("cast", dtype, &x, |x| {
            x[0].cast(other)?.affine(1.0, 0.0)?.cast(x[0].dtype())
        });
    });
}

#[test]
fn matmul_in_every_operand_layout() {
    each_dtype("matmul", |dtype| {
        let cases: [(&[usize], &[usize]); 3] = [
            (&[5, 7], &[7, 3]),
            (&[2, 5, 7], &[7, 3]),
            (&[2, 5, 7], &[2, 7, 3]),
        ];
        for (a, b) in cases {
            let inputs = [input(a, dtype, 20), input(b, dtype, 21)];
            check("matmul", dtype, &inputs, |x| x[0].matmul(&x[1]));
        }
        // nn.Linear: x · Wᵀ with W stored (out, in), read in place.
        let inputs = [input(&[2, 5, 7], dtype, 22), input(&[3, 7], dtype, 23)];
        check("linear", dtype, &inputs, |x| x[0].matmul(&x[1].t()?));
        // Both operands transposed, batched, and a broadcast batch.
        let inputs = [input(&[2, 7, 5], dtype, 24), input(&[1, 3, 7], dtype, 25)];
        check("batched transposes", dtype, &inputs, |x| {
            x[0].transpose(1, 2)?.matmul(&x[1].transpose(1, 2)?)
        });
    });
}

#[test]
fn reductions_softmax_and_argmax() {
    each_dtype("reductions", |dtype| {
        let x = [input(&[3, 40, 5], dtype, 30)];
        for axis in [0isize, 1, -1] {
            check("sum", dtype, &x, |x| x[0].sum(axis, false));
            check("mean", dtype, &x, |x| x[0].mean(axis, true));
            check("max", dtype, &x, |x| x[0].max(axis, false));
            let on_device = x[0].cast(dtype).unwrap().to_device(GPU).unwrap();
            assert_eq!(
                on_device
                    .argmax(axis, false)
                    .unwrap()
                    .to_vec::<u32>()
                    .unwrap(),
                x[0].cast(dtype)
                    .unwrap()
                    .argmax(axis, false)
                    .unwrap()
                    .to_vec::<u32>()
                    .unwrap(),
                "argmax {axis} {dtype}"
            );
        }
        for axis in [-1isize, 0] {
            check("softmax", dtype, &x, |x| x[0].softmax(axis));
            check("log_softmax", dtype, &x, |x| x[0].log_softmax(axis));
        }
    });
}

#[test]
fn norms_with_their_weight_and_bias_gradients() {
    each_dtype("norms", |dtype| {
        let inputs = [
            input(&[2, 3, 64], dtype, 40),
            input(&[64], dtype, 41),
            input(&[64], dtype, 42),
        ];
        check("rms_norm", dtype, &inputs, |x| x[0].rms_norm(&x[1], 1e-5));
        check("layer_norm", dtype, &inputs, |x| {
            x[0].layer_norm(Some(&x[1]), Some(&x[2]), 1e-5)
        });
        check("layer_norm without affine", dtype, &inputs[..1], |x| {
            x[0].layer_norm(None, None, 1e-5)
        });
        // An odd width takes the kernels' scalar path.
        let inputs = [input(&[5, 37], dtype, 43), input(&[37], dtype, 44)];
        check("rms_norm odd width", dtype, &inputs, |x| {
            x[0].rms_norm(&x[1], 1e-6)
        });
    });
}

#[test]
fn embedding_rotary_and_cross_entropy() {
    each_dtype("ids", |dtype| {
        let table = [input(&[11, 16], dtype, 50)];
        let ids = Tensor::from_vec(vec![3u32, 0, 10, 3, 7, 3], &[2, 3]).unwrap();
        check("embedding", dtype, &table, |x| {
            let ids = if x[0].device().is_cuda() {
                ids.to_device(GPU)?
            } else {
                ids.clone()
            };
            x[0].embedding(&ids)
        });
        // Ids on the host work as well.
        check("embedding, host ids", dtype, &table, |x| {
            x[0].embedding(&ids)
        });
        let x = [input(&[2, 3, 6, 32], dtype, 51)];
        for (layout, rotary_dim) in [
            (RotaryLayout::HalfSplit, 32),
            (RotaryLayout::Interleaved, 32),
            (RotaryLayout::HalfSplit, 16),
        ] {
            let rope = RotaryEmbedding::new(rotary_dim, 10_000.0, layout).unwrap();
            check("rotary", dtype, &x, |x| rope.apply(&x[0], 4));
            check("rotary at", dtype, &x, |x| {
                rope.apply_at(&x[0], &[9, 3, 0, 1, 2, 7])
            });
        }
        let logits = [input(&[6, 50], dtype, 52)];
        let targets = Tensor::from_vec(vec![1i64, -100, 49, 0, 7, 7], &[6]).unwrap();
        check("cross_entropy", dtype, &logits, |x| {
            x[0].cross_entropy(&targets)
        });
        let targets = Tensor::from_vec(vec![1u32, 2, 49, 0, 7, 7], &[6]).unwrap();
        check("cross_entropy, u32 targets", dtype, &logits, |x| {
            let t = if x[0].device().is_cuda() {
                targets.to_device(GPU)?
            } else {
                targets.clone()
            };
            x[0].cross_entropy(&t)
        });
    });
}

#[test]
fn attention_causal_grouped_and_cached_shapes() {
    each_dtype("attention", |dtype| {
        for (hq, hkv, tq, tk, causal) in
            [(4, 2, 5, 5, true), (2, 2, 3, 7, true), (2, 1, 4, 4, false)]
        {
            let inputs = [
                input(&[1, hq, tq, 32], dtype, 60),
                input(&[1, hkv, tk, 32], dtype, 61),
                input(&[1, hkv, tk, 32], dtype, 62),
            ];
            let options = AttentionOptions {
                causal,
                ..Default::default()
            };
            check(
                &format!("attention hq {hq} hkv {hkv} tq {tq} tk {tk} causal {causal}"),
                dtype,
                &inputs,
                |x| scaled_dot_product_attention(&x[0], &x[1], &x[2], &options),
            );
        }
    });
}

#[test]
fn concat_and_the_gradient_of_a_narrow() {
    each_dtype("concat", |dtype| {
        let inputs = [input(&[2, 3, 4], dtype, 70), input(&[2, 5, 4], dtype, 71)];
        check("concat", dtype, &inputs, |x| {
            Tensor::concat(&[&x[0], &x[1]], 1)
        });
        check("concat of views", dtype, &inputs, |x| {
            Tensor::concat(&[&x[0].transpose(0, 1)?, &x[1].transpose(0, 1)?], 0)
        });
        // A narrow's backward pads with zeros on the device.
        check("narrow", dtype, &inputs[1..], |x| {
            x[0].narrow(1, 1, 3)?.affine(2.0, 0.0)
        });
    });
}

#[test]
fn kv_cache_on_the_device_appends_and_keeps_rows() {
    each_dtype("kv cache", |dtype| {
        let on = |t: &Tensor| t.cast(dtype).unwrap().to_device(GPU).unwrap();
        let k0 = input(&[3, 2, 4, 32], dtype, 80);
        let k1 = input(&[3, 2, 1, 32], dtype, 81);
        let q = input(&[3, 4, 1, 32], dtype, 82);
        let (mut cpu_k, mut dev_k) = (
            KvBuffer::new(&k0.cast(dtype).unwrap()).unwrap(),
            KvBuffer::new(&on(&k0)).unwrap(),
        );
        cpu_k.append(&k1.cast(dtype).unwrap()).unwrap();
        dev_k.append(&on(&k1)).unwrap();
        assert_eq!(dev_k.shape(), [3, 2, 5, 32]);
        assert_eq!(dev_k.to_tensor().device(), GPU);
        assert_close(
            "kv append",
            &dev_k.to_tensor(),
            &cpu_k.to_tensor(),
            (0.0, 0.0),
        );
        let options = AttentionOptions {
            causal: true,
            ..Default::default()
        };
        let want =
            scaled_dot_product_attention_cached(&q.cast(dtype).unwrap(), &cpu_k, &cpu_k, &options)
                .unwrap();
        let got = scaled_dot_product_attention_cached(&on(&q), &dev_k, &dev_k, &options).unwrap();
        assert_close(
            &format!("cached attention {dtype}"),
            &got,
            &want,
            tol(dtype),
        );
        cpu_k.retain_rows(&[2, 0]).unwrap();
        dev_k.retain_rows(&[2, 0]).unwrap();
        assert_eq!(dev_k.shape(), [2, 2, 5, 32]);
        assert_close(
            "kv retain",
            &dev_k.to_tensor(),
            &cpu_k.to_tensor(),
            (0.0, 0.0),
        );
    });
}

#[test]
fn fused_adamw_matches_the_update_written_out() {
    if !gpu("adamw") {
        return;
    }
    let n = 1000;
    let f32s = |seed| {
        Tensor::from_vec(
            common::values(n, seed)
                .iter()
                .map(|&v| v as f32)
                .collect::<Vec<_>>(),
            &[n],
        )
        .unwrap()
    };
    let (p, g, m) = (f32s(90), f32s(91), f32s(92));
    let v = f32s(93).mul(&f32s(93)).unwrap();
    let step = kaiyuan_tensor::AdamWStep::new(1e-2, 0.9, 0.95, 1e-8, 0.1, 3, true);
    let on = |t: &Tensor| t.to_device(GPU).unwrap();
    // Sole owners: updated in their own buffers.
    let (mut p2, mut m2, mut v2) = (on(&p), on(&m), on(&v));
    let before = p2.layout().clone();
    kaiyuan_tensor::adamw_step(&mut p2, &on(&g), &mut m2, &mut v2, step).unwrap();
    assert_eq!(p2.layout(), &before);
    // A parameter shared with another tensor is replaced by an updated
    // copy; the other tensor keeps the old values.
    let mut shared = on(&p);
    let other = shared.clone();
    let (mut m3, mut v3) = (on(&m), on(&v));
    kaiyuan_tensor::adamw_step(&mut shared, &on(&g), &mut m3, &mut v3, step).unwrap();
    assert!(!shared.shares_storage_with(&other));
    assert_eq!(other.to_vec::<f32>().unwrap(), p.to_vec::<f32>().unwrap());
    assert_eq!(shared.to_vec::<f32>().unwrap(), p2.to_vec::<f32>().unwrap());
    // A view (a narrow) is copied first, too.
    let wide = on(&Tensor::concat(&[&p, &p], 0).unwrap());
    let mut view = wide.narrow(0, n, n).unwrap();
    let (mut m4, mut v4) = (on(&m), on(&v));
    kaiyuan_tensor::adamw_step(&mut view, &on(&g), &mut m4, &mut v4, step).unwrap();
    assert_eq!(view.to_vec::<f32>().unwrap(), p2.to_vec::<f32>().unwrap());
    let (mut p, g, mut m, mut v) = (
        p.to_vec::<f32>().unwrap(),
        g.to_vec::<f32>().unwrap(),
        m.to_vec::<f32>().unwrap(),
        v.to_vec::<f32>().unwrap(),
    );
    for i in 0..n {
        p[i] *= step.decay;
        m[i] += (g[i] - m[i]) * (1.0 - step.beta1);
        v[i] = v[i] * step.beta2 + (1.0 - step.beta2) * g[i] * g[i];
        p[i] -= step.step_size * (m[i] / (v[i].sqrt() / step.bias2_sqrt + step.eps));
    }
    let want = |x: Vec<f32>| Tensor::from_vec(x, &[n]).unwrap();
    assert_close("adamw param", &p2, &want(p), (1e-6, 1e-5));
    assert_close("adamw m", &m2, &want(m), (1e-6, 1e-5));
    assert_close("adamw v", &v2, &want(v), (1e-6, 1e-5));
    // Host operands are refused.
    let host = Tensor::zeros(&[n], DType::F32).unwrap();
    let (mut hp, mut hm, mut hv) = (host.clone(), host.clone(), host.clone());
    assert!(kaiyuan_tensor::adamw_step(&mut hp, &host, &mut hm, &mut hv, step).is_err());
}
