//! GPU-vs-CPU parity of `kernels/attention.cu` (skips without a GPU): the
//! fused forward (o, lse) and backward (dq, dk, dv) against a naive f64
//! softmax attention with its analytical gradients. The reference itself is
//! checked without a GPU: its forward against kaiyuan-tensor's attention,
//! its gradients against finite differences. The device tests exist in the
//! `cuda` build (skipping visibly without a GPU, failing under
//! `REQUIRE_GPU=1`) and the `emulator` build.

mod common;

use common::*;
use kaiyuan_cuda::ops::attention::Attention;

/// The f64 reference: outputs and gradients.
struct Reference {
    o: Vec<f64>,
    lse: Vec<f64>,
    dq: Vec<f64>,
    dk: Vec<f64>,
    dv: Vec<f64>,
}

/// Naive softmax attention and its gradients for the loss Σ o ∘ dout.
/// P = softmax(S), S = scale·q·kᵀ (masked keys −∞); dV = Pᵀ·dO,
/// dS = P ∘ (dO·Vᵀ − rowsum(P ∘ dO·Vᵀ)), dQ = scale·dS·K, dK = scale·dSᵀ·Q.
fn reference(spec: &Attention, q: &[f32], k: &[f32], v: &[f32], dout: &[f32]) -> Reference {
    let (b, hq, hkv, tq, tk, d) = (
        spec.batch,
        spec.q_heads,
        spec.kv_heads,
        spec.q_len,
        spec.kv_len,
        spec.head_dim,
    );
    let scale = spec.scale as f64;
    let group = hq / hkv;
    let offset = tk as i64 - tq as i64;
    let mut r = Reference {
        o: vec![0.0; b * hq * tq * d],
        lse: vec![f64::NEG_INFINITY; b * hq * tq],
        dq: vec![0.0; b * hq * tq * d],
        dk: vec![0.0; b * hkv * tk * d],
        dv: vec![0.0; b * hkv * tk * d],
    };
    for bi in 0..b {
        for h in 0..hq {
            let kvh = bi * hkv + h / group;
            let qh = bi * hq + h;
            for i in 0..tq {
                let row = qh * tq + i;
                let qi = &q[row * d..(row + 1) * d];
                let doi = &dout[row * d..(row + 1) * d];
                let visible: Vec<usize> = (0..tk)
                    .filter(|&j| !spec.causal || j as i64 <= i as i64 + offset)
                    .collect();
                if visible.is_empty() {
                    continue;
                }
                let scores: Vec<f64> = visible
                    .iter()
                    .map(|&j| {
                        let kj = &k[(kvh * tk + j) * d..(kvh * tk + j + 1) * d];
                        scale
                            * qi.iter()
                                .zip(kj)
                                .map(|(&x, &y)| x as f64 * y as f64)
                                .sum::<f64>()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                r.lse[row] = max + sum.ln();
                let p: Vec<f64> = scores.iter().map(|s| (s - max).exp() / sum).collect();
                let dp: Vec<f64> = visible
                    .iter()
                    .map(|&j| {
                        let vj = &v[(kvh * tk + j) * d..(kvh * tk + j + 1) * d];
                        doi.iter()
                            .zip(vj)
                            .map(|(&x, &y)| x as f64 * y as f64)
                            .sum::<f64>()
                    })
                    .collect();
                let delta: f64 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
                for (n, &j) in visible.iter().enumerate() {
                    let krow = kvh * tk + j;
                    let ds = p[n] * (dp[n] - delta) * scale;
                    for c in 0..d {
                        r.o[row * d + c] += p[n] * v[krow * d + c] as f64;
                        r.dq[row * d + c] += ds * k[krow * d + c] as f64;
                        r.dk[krow * d + c] += ds * qi[c] as f64;
                        r.dv[krow * d + c] += p[n] * doi[c] as f64;
                    }
                }
            }
        }
    }
    r
}

#[cfg(any(feature = "cuda", feature = "emulator"))]
mod on_device {
    use super::*;
    use kaiyuan_cuda::kernels::ATTENTION;
    use kaiyuan_cuda::ops::attention::{self, AttentionKernel, AttentionWorkspace};
    use kaiyuan_cuda::{CudaError, GpuFloat};

    /// (B, Hq, Hkv, Tq, Tk, D, causal).
    type Case = (usize, usize, usize, usize, usize, usize, bool);

    const CASES: [Case; 9] = [
        (1, 9, 3, 20, 20, 64, true),    // SmolLM2's 9 query / 3 kv heads
        (2, 2, 2, 1, 37, 64, true),     // decoding with a KV cache: Tq = 1 sees every key
        (1, 2, 1, 33, 100, 80, true),   // Tq < Tk, partial tiles
        (1, 1, 1, 100, 50, 128, true),  // Tq > Tk: the first 50 queries see no key
        (1, 2, 2, 45, 130, 96, false),  // not causal
        (1, 4, 2, 130, 130, 32, true),  // several query and key tiles
        (2, 3, 1, 200, 200, 128, true), // multi-query, D = 128
        (1, 2, 2, 64, 64, 64, false),   // exact tiles
        (1, 6, 2, 129, 77, 64, false),  // Tq > Tk without the mask
    ];

    fn narrow(values: &[f64]) -> Vec<f32> {
        values.iter().map(|&x| x as f32).collect()
    }

    fn max_abs(values: &[f64]) -> f32 {
        values.iter().fold(0.0f64, |m, x| m.max(x.abs())) as f32
    }

    /// lse: rows that see no key must be exactly −∞, the rest close.
    fn assert_lse(what: &str, got: &[f32], want: &[f64], atol: f32, rtol: f32) {
        let mut finite_got = Vec::new();
        let mut finite_want = Vec::new();
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            if w == f64::NEG_INFINITY {
                assert_eq!(
                    g,
                    f32::NEG_INFINITY,
                    "{what}: lse[{i}] of a row that sees no key"
                );
            } else {
                finite_got.push(g);
                finite_want.push(w as f32);
            }
        }
        assert_close(what, &finite_got, &finite_want, atol, rtol);
    }

    fn attention_matches<T: GpuFloat>(kernel: AttentionKernel) {
        let name = format!("attention {kernel:?} {}", T::SUFFIX);
        let Some(device) = gpu_for(&name, &[&ATTENTION]) else {
            return;
        };
        let half = T::SUFFIX != "f32";
        let mut rng = Rng::new(11);
        for (b, hq, hkv, tq, tk, d, causal) in CASES {
            let spec = Attention::new(b, hq, hkv, tq, tk, d)
                .with_causal(causal)
                .with_kernel(kernel);
            let what =
                format!("{name} B={b} Hq={hq} Hkv={hkv} Tq={tq} Tk={tk} D={d} causal={causal}");
            let (nq, nk, rows) = (
                spec.q_len_elements().unwrap(),
                spec.kv_len_elements().unwrap(),
                spec.rows().unwrap(),
            );
            // q, k in [-2, 2] give peaked softmaxes; v, dout in [-1, 1].
            let (q_stored, q) = through::<T>(&rng.vec(nq, -2.0, 2.0));
            let (k_stored, k) = through::<T>(&rng.vec(nk, -2.0, 2.0));
            let (v_stored, v) = through::<T>(&rng.vec(nk, -1.0, 1.0));
            let (do_stored, dout) = through::<T>(&rng.vec(nq, -1.0, 1.0));
            let want = reference(&spec, &q, &k, &v, &dout);
            let qb = device.upload(&q_stored).expect("upload q");
            let kb = device.upload(&k_stored).expect("upload k");
            let vb = device.upload(&v_stored).expect("upload v");
            let dob = device.upload(&do_stored).expect("upload do");

            let mut o = poisoned::<T>(&device, nq);
            let mut lse = poisoned::<f32>(&device, rows);
            attention::attention_forward_into(&device, &spec, &qb, &kb, &vb, &mut o, &mut lse)
                .expect("forward");
            let (atol, rtol) = tolerance::<T>();
            // f32: exp2 and the online rescaling cost a few ulps more than 1e-5.
            let (atol, rtol) = if half { (atol, rtol) } else { (2e-5, 2e-5) };
            assert_close(
                &format!("{what}: o"),
                &fetch(&device, &o),
                &narrow(&want.o),
                atol,
                rtol,
            );
            // lse sums exact products of the stored inputs in f32.
            let lse_tol = if half { 1e-3 } else { 1e-5 };
            assert_lse(
                &format!("{what}: lse"),
                &fetch(&device, &lse),
                &want.lse,
                lse_tol,
                lse_tol,
            );

            // Backward twice with one workspace: the second call must clear dq_acc.
            let mut workspace = AttentionWorkspace::new(&device, &spec).expect("workspace");
            for pass in 0..2 {
                let mut dq = poisoned::<T>(&device, nq);
                let mut dk = poisoned::<T>(&device, nk);
                let mut dv = poisoned::<T>(&device, nk);
                attention::attention_backward_into(
                    &device,
                    &spec,
                    &qb,
                    &kb,
                    &vb,
                    &o,
                    &lse,
                    &dob,
                    &mut workspace,
                    &mut dq,
                    &mut dk,
                    &mut dv,
                )
                .expect("backward");
                // Gradients sum over up to Tk keys (dq) or Tq·group queries (dk,
                // dv); the tensor-core kernels round P and dS to the storage type
                // before their products, as flash-attention does. Tolerances are
                // relative to the gradient's largest element.
                let rel = if half { 2e-2 } else { 1e-4 };
                for (grad, got, want) in [
                    ("dq", &dq, &want.dq),
                    ("dk", &dk, &want.dk),
                    ("dv", &dv, &want.dv),
                ] {
                    let atol = rel * max_abs(want).max(1.0);
                    assert_close(
                        &format!("{what}: {grad} (pass {pass})"),
                        &fetch(&device, got),
                        &narrow(want),
                        atol,
                        rel,
                    );
                }
            }
        }
    }

    #[test]
    fn tensor_core_bf16() {
        attention_matches::<half::bf16>(AttentionKernel::Auto);
    }

    #[test]
    fn tensor_core_f16() {
        attention_matches::<half::f16>(AttentionKernel::TensorCore);
    }

    #[test]
    fn simt_f32() {
        attention_matches::<f32>(AttentionKernel::Auto);
    }

    #[test]
    fn simt_bf16() {
        attention_matches::<half::bf16>(AttentionKernel::Simt);
    }

    #[test]
    fn simt_f16() {
        attention_matches::<half::f16>(AttentionKernel::Simt);
    }

    #[test]
    fn allocating_wrappers_match_the_into_launchers() {
        let Some(device) = gpu_for("attention wrappers", &[&ATTENTION]) else {
            return;
        };
        let spec = Attention::new(1, 4, 2, 40, 40, 64);
        let mut rng = Rng::new(2);
        let n = spec.q_len_elements().unwrap();
        let (q, _) = through::<half::bf16>(&rng.vec(n, -1.0, 1.0));
        let (k, _) = through::<half::bf16>(&rng.vec(spec.kv_len_elements().unwrap(), -1.0, 1.0));
        let (dout, _) = through::<half::bf16>(&rng.vec(n, -1.0, 1.0));
        let (qb, kb, dob) = (
            device.upload(&q).unwrap(),
            device.upload(&k).unwrap(),
            device.upload(&dout).unwrap(),
        );
        let out = attention::attention_forward(&device, &spec, &qb, &kb, &kb).expect("forward");
        let grads =
            attention::attention_backward(&device, &spec, &qb, &kb, &kb, &out.o, &out.lse, &dob)
                .expect("backward");
        let mut o = poisoned::<half::bf16>(&device, n);
        let mut lse = poisoned::<f32>(&device, spec.rows().unwrap());
        attention::attention_forward_into(&device, &spec, &qb, &kb, &kb, &mut o, &mut lse)
            .expect("into");
        assert_close("o", &fetch(&device, &o), &fetch(&device, &out.o), 0.0, 0.0);
        assert_close(
            "lse",
            &fetch(&device, &lse),
            &fetch(&device, &out.lse),
            0.0,
            0.0,
        );
        for (name, g) in [("dq", &grads.dq), ("dk", &grads.dk), ("dv", &grads.dv)] {
            assert!(
                fetch(&device, g).iter().all(|x| x.is_finite()),
                "{name} not finite"
            );
        }
    }

    #[test]
    fn unsupported_geometry_is_a_shape_error() {
        let Some(device) = gpu_for("attention shape errors", &[&ATTENTION]) else {
            return;
        };
        let q = device
            .upload(&vec![half::bf16::ONE; 2 * 3 * 48])
            .expect("upload");
        for spec in [
            Attention::new(1, 2, 2, 3, 3, 48), // D = 48
            Attention::new(1, 3, 2, 3, 3, 32), // 3 heads over 2
            Attention::new(1, 2, 2, 3, 3, 32).with_kernel(AttentionKernel::TensorCore), // lengths
        ] {
            let error = attention::attention_forward(&device, &spec, &q, &q, &q).unwrap_err();
            assert!(matches!(error, CudaError::Shape { .. }), "{error}");
        }
        let f = device.upload(&vec![1.0f32; 2 * 3 * 32]).expect("upload");
        let spec = Attention::new(1, 2, 2, 3, 3, 32).with_kernel(AttentionKernel::TensorCore);
        let error = attention::attention_forward(&device, &spec, &f, &f, &f).unwrap_err();
        assert!(matches!(error, CudaError::Shape { .. }), "{error}");
    }
}

// ---- the reference itself (no GPU needed) -----------------------------------

#[test]
fn reference_forward_matches_the_tensor_crate() {
    use kaiyuan_tensor::{AttentionOptions, Tensor, scaled_dot_product_attention};
    let mut rng = Rng::new(4);
    for causal in [false, true] {
        // Tq ≤ Tk: every query sees a key (the tensor crate gives NaN otherwise).
        let spec = Attention::new(2, 4, 2, 7, 11, 32).with_causal(causal);
        let q = rng.vec(spec.q_len_elements().unwrap(), -2.0, 2.0);
        let k = rng.vec(spec.kv_len_elements().unwrap(), -2.0, 2.0);
        let v = rng.vec(spec.kv_len_elements().unwrap(), -1.0, 1.0);
        let dout = vec![0.0f32; q.len()];
        let ours = reference(&spec, &q, &k, &v, &dout);
        let to64 = |x: &[f32]| x.iter().map(|&v| v as f64).collect::<Vec<f64>>();
        let tq = Tensor::from_vec(to64(&q), &[2, 4, 7, 32]).unwrap();
        let tk = Tensor::from_vec(to64(&k), &[2, 2, 11, 32]).unwrap();
        let tv = Tensor::from_vec(to64(&v), &[2, 2, 11, 32]).unwrap();
        let options = AttentionOptions {
            causal,
            scale: Some(spec.scale as f64),
            ..Default::default()
        };
        let theirs = scaled_dot_product_attention(&tq, &tk, &tv, &options)
            .unwrap()
            .to_vec::<f64>()
            .unwrap();
        assert_eq!(theirs.len(), ours.o.len());
        for (i, (a, b)) in ours.o.iter().zip(&theirs).enumerate() {
            assert!((a - b).abs() < 1e-9, "causal={causal} o[{i}]: {a} vs {b}");
        }
    }
}

#[test]
fn reference_gradients_match_finite_differences() {
    let mut rng = Rng::new(6);
    // Tq > Tk and GQA: some rows see no key, kv heads serve two query heads.
    let spec = Attention::new(1, 4, 2, 5, 4, 32).with_causal(true);
    let q = rng.vec(spec.q_len_elements().unwrap(), -2.0, 2.0);
    let k = rng.vec(spec.kv_len_elements().unwrap(), -2.0, 2.0);
    let v = rng.vec(spec.kv_len_elements().unwrap(), -1.0, 1.0);
    let dout = rng.vec(q.len(), -1.0, 1.0);
    let r = reference(&spec, &q, &k, &v, &dout);
    let loss = |q: &[f32], k: &[f32], v: &[f32]| -> f64 {
        let o = reference(&spec, q, k, v, &dout).o;
        o.iter().zip(&dout).map(|(a, &b)| a * b as f64).sum()
    };
    // Central differences on f32 inputs: step 1e-2, error O(h²).
    let h = 1e-2f32;
    let numeric = |which: usize, i: usize| -> f64 {
        let mut inputs = [q.clone(), k.clone(), v.clone()];
        let x = inputs[which][i];
        inputs[which][i] = x + h;
        let up = loss(&inputs[0], &inputs[1], &inputs[2]);
        inputs[which][i] = x - h;
        let down = loss(&inputs[0], &inputs[1], &inputs[2]);
        let step = ((x + h) as f64) - ((x - h) as f64);
        (up - down) / step
    };
    for (which, analytic) in [(0usize, &r.dq), (1, &r.dk), (2, &r.dv)] {
        for i in (0..analytic.len()).step_by(7) {
            let n = numeric(which, i);
            assert!(
                (n - analytic[i]).abs() < 2e-3 * (1.0 + analytic[i].abs()),
                "input {which} [{i}]: finite difference {n} vs analytic {}",
                analytic[i]
            );
        }
    }
}

#[test]
fn flop_counts() {
    let full = Attention::new(2, 3, 1, 4, 6, 64).with_causal(false);
    assert_eq!(full.visible_pairs(), 24);
    // Causal, Tk − Tq = 2: query i sees i + 3 keys.
    let causal = full.with_causal(true);
    assert_eq!(causal.visible_pairs(), 3 + 4 + 5 + 6);
    assert_eq!(causal.forward_flops(), 4.0 * 2.0 * 3.0 * 64.0 * 18.0);
    // Tq > Tk: the first queries see nothing.
    assert_eq!(Attention::new(1, 1, 1, 5, 2, 32).visible_pairs(), 1 + 2);
}
