//! Gradient checks: every op's backward against central finite differences
//! in f64, over random shapes (proptest).
//!
//! Each check turns the op's output into a scalar with a fixed random
//! projection, `L = Σ out ⊙ R`, and compares ∂L/∂input from `backward` with
//! `(L(x + h) − L(x − h)) / 2h`, h = 1e-6, within
//! `|g − fd| ≤ 1e-6 + 1e-5·|fd|`.

mod common;

use common::values;
use kaiyuan_tensor::{
    AttentionOptions, DType, RotaryEmbedding, RotaryLayout, Tensor, no_grad,
    scaled_dot_product_attention,
};
use proptest::prelude::*;

const H: f64 = 1e-6;
const ATOL: f64 = 1e-6;
const RTOL: f64 = 1e-5;

fn f64_tensor(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(values(n, seed), shape).unwrap()
}

/// `Σ out ⊙ R` for a projection `R` fixed by the output's shape.
fn project(out: &Tensor) -> Tensor {
    let r = f64_tensor(out.shape(), 99);
    let flat = out
        .mul(&r)
        .unwrap()
        .reshape(&[out.elem_count().max(1)])
        .unwrap();
    if out.elem_count() == 0 {
        return Tensor::zeros(&[], DType::F64).unwrap();
    }
    flat.sum(0, false).unwrap()
}

/// Checks the gradient of `f` with respect to each of `inputs`.
fn check(name: &str, inputs: Vec<Tensor>, f: impl Fn(&[Tensor]) -> Tensor) {
    let leaves: Vec<Tensor> = inputs.iter().map(Tensor::with_grad).collect();
    let loss = project(&f(&leaves));
    let grads = loss.backward().unwrap();
    for (i, input) in inputs.iter().enumerate() {
        let analytic = grads
            .get(&leaves[i])
            .map(|g| g.to_vec::<f64>().unwrap())
            .unwrap_or_else(|| vec![0.0; input.elem_count()]);
        assert_eq!(
            analytic.len(),
            input.elem_count(),
            "{name}: gradient size of input {i}"
        );
        let base = input.to_vec::<f64>().unwrap();
        for j in 0..base.len() {
            let eval = |delta: f64| -> f64 {
                let mut v = base.clone();
                v[j] += delta;
                let mut args = inputs.to_vec();
                args[i] = Tensor::from_vec(v, input.shape()).unwrap();
                no_grad(|| project(&f(&args)).to_scalar::<f64>().unwrap())
            };
            let fd = (eval(H) - eval(-H)) / (2.0 * H);
            let g = analytic[j];
            assert!(
                (g - fd).abs() <= ATOL + RTOL * fd.abs(),
                "{name}: input {i} (shape {:?}) element {j}: backward {g}, finite difference {fd}",
                input.shape()
            );
        }
    }
}

fn shape_strategy(max_rank: usize, max_dim: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1..=max_dim, 1..=max_rank)
}

/// A shape and a second shape that broadcasts against it (axes dropped or set to 1).
fn broadcast_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    shape_strategy(3, 4)
        .prop_flat_map(|shape| {
            let n = shape.len();
            (Just(shape), prop::collection::vec(any::<bool>(), n), 0..=n)
        })
        .prop_map(|(shape, ones, drop)| {
            let other: Vec<usize> = shape
                .iter()
                .zip(&ones)
                .map(|(&d, &one)| if one { 1 } else { d })
                .skip(drop)
                .collect();
            (shape, other)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn arithmetic_with_broadcasting((a, b) in broadcast_pair(), swap in any::<bool>(), seed in 0u64..1000) {
        let (a, b) = if swap { (b, a) } else { (a, b) };
        let x = f64_tensor(&a, seed);
        // Keep divisors away from 0.
        let y = f64_tensor(&b, seed + 1).affine(0.25, 3.0).unwrap();
        check("add", vec![x.clone(), y.clone()], |t| t[0].add(&t[1]).unwrap());
        check("sub", vec![x.clone(), y.clone()], |t| t[0].sub(&t[1]).unwrap());
        check("mul", vec![x.clone(), y.clone()], |t| t[0].mul(&t[1]).unwrap());
        check("div", vec![x.clone(), y.clone()], |t| t[0].div(&t[1]).unwrap());
        check("affine", vec![x], |t| t[0].affine(-1.5, 0.25).unwrap());
    }

    #[test]
    fn activations(shape in shape_strategy(3, 5), seed in 0u64..1000) {
        let x = f64_tensor(&shape, seed).affine(2.0, 0.0).unwrap();
        check("silu", vec![x.clone()], |t| t[0].silu().unwrap());
        check("gelu_tanh", vec![x.clone()], |t| t[0].gelu_tanh().unwrap());
        check("gelu_erf", vec![x.clone()], |t| t[0].gelu_erf().unwrap());
        check("exp", vec![x], |t| t[0].exp().unwrap());
    }

    #[test]
    fn reductions(shape in shape_strategy(3, 5), axis_pick in 0usize..3, keep in any::<bool>(), seed in 0u64..1000) {
        let axis = (axis_pick % shape.len()) as isize;
        let x = f64_tensor(&shape, seed);
        check("sum", vec![x.clone()], |t| t[0].sum(axis, keep).unwrap());
        check("mean", vec![x.clone()], |t| t[0].mean(axis, keep).unwrap());
        check("max", vec![x], |t| t[0].max(axis, keep).unwrap());
    }

    #[test]
    fn softmaxes(shape in shape_strategy(3, 5), axis_pick in 0usize..3, seed in 0u64..1000) {
        let axis = (axis_pick % shape.len()) as isize;
        let x = f64_tensor(&shape, seed).affine(3.0, 0.0).unwrap();
        check("softmax", vec![x.clone()], |t| t[0].softmax(axis).unwrap());
        check("log_softmax", vec![x], |t| t[0].log_softmax(axis).unwrap());
    }

    #[test]
    fn norms(rows in 1usize..4, c in 1usize..9, seed in 0u64..1000) {
        let x = f64_tensor(&[rows, c], seed);
        let w = f64_tensor(&[c], seed + 1);
        let b = f64_tensor(&[c], seed + 2);
        check("rms_norm", vec![x.clone(), w.clone()], |t| t[0].rms_norm(&t[1], 1e-5).unwrap());
        check("layer_norm", vec![x.clone(), w.clone(), b], |t| {
            t[0].layer_norm(Some(&t[1]), Some(&t[2]), 1e-5).unwrap()
        });
        check("layer_norm without bias", vec![x.clone(), w], |t| t[0].layer_norm(Some(&t[1]), None, 1e-5).unwrap());
        check("layer_norm without affine", vec![x], |t| t[0].layer_norm(None, None, 1e-5).unwrap());
    }

    #[test]
    fn matmul_batched_and_transposed(
        m in 1usize..5, k in 1usize..5, n in 1usize..5, batch in 1usize..3,
        lhs_batched in any::<bool>(), rhs_batched in any::<bool>(), rhs_t in any::<bool>(),
        seed in 0u64..1000,
    ) {
        let a_shape = if lhs_batched { vec![batch, m, k] } else { vec![m, k] };
        let b_shape = match (rhs_batched, rhs_t) {
            (true, true) => vec![batch, n, k],
            (true, false) => vec![batch, k, n],
            (false, true) => vec![n, k],
            (false, false) => vec![k, n],
        };
        let a = f64_tensor(&a_shape, seed);
        let b = f64_tensor(&b_shape, seed + 1);
        check("matmul", vec![a, b], |t| {
            let rhs = if rhs_t { t[1].t().unwrap() } else { t[1].clone() };
            t[0].matmul(&rhs).unwrap()
        });
    }

    #[test]
    fn views_and_copies(shape in shape_strategy(3, 4), seed in 0u64..1000, pick in 0usize..3) {
        let x = f64_tensor(&shape, seed);
        let rank = shape.len();
        let axis = pick % rank;
        let n: usize = shape.iter().product();
        check("reshape", vec![x.clone()], |t| t[0].reshape(&[n]).unwrap());
        check("transpose+contiguous", vec![x.clone()], |t| t[0].transpose(0, -1).unwrap().contiguous().unwrap());
        let order: Vec<usize> = (0..rank).rev().collect();
        check("permute", vec![x.clone()], |t| t[0].permute(&order).unwrap().contiguous().unwrap());
        let len = shape[axis];
        let start = len / 3;
        let width = (len - start).max(1).min(len - start);
        check("narrow", vec![x.clone()], |t| t[0].narrow(axis as isize, start, width).unwrap());
        check("split", vec![x.clone()], |t| {
            let parts = t[0].split(axis as isize, &[start, len - start]).unwrap();
            parts[1].mul(&parts[1]).unwrap()
        });
        check("concat", vec![x.clone(), x.clone()], |t| {
            Tensor::concat(&[&t[0], &t[1].affine(2.0, 0.0).unwrap()], axis as isize).unwrap()
        });
        check("unsqueeze+squeeze", vec![x.clone()], |t| {
            t[0].unsqueeze(axis).unwrap().mul(&t[0].unsqueeze(axis).unwrap()).unwrap().squeeze(axis as isize).unwrap()
        });
        let mut big = vec![2];
        big.extend(&shape);
        check("broadcast_as", vec![x], |t| t[0].broadcast_as(&big).unwrap().contiguous().unwrap());
    }

    #[test]
    fn embedding_rows(vocab in 1usize..6, width in 1usize..5, count in 1usize..8, seed in 0u64..1000) {
        let table = f64_tensor(&[vocab, width], seed);
        let ids: Vec<u32> = (0..count).map(|i| ((i as u64 * 7 + seed) % vocab as u64) as u32).collect();
        let ids = Tensor::from_vec(ids, &[count]).unwrap();
        check("embedding", vec![table], |t| t[0].embedding(&ids).unwrap());
    }

    #[test]
    fn rotary(t in 1usize..5, half in 1usize..3, extra in 0usize..3, interleaved in any::<bool>(), offset in 0usize..4, seed in 0u64..1000) {
        let rotary_dim = 2 * half;
        let layout = if interleaved { RotaryLayout::Interleaved } else { RotaryLayout::HalfSplit };
        let rope = RotaryEmbedding::new(rotary_dim, 10_000.0, layout).unwrap();
        let x = f64_tensor(&[1, 2, t, rotary_dim + extra], seed);
        check("rotary", vec![x], |x| rope.apply(&x[0], offset).unwrap());
    }

    #[test]
    fn attention(
        b in 1usize..3, hkv in 1usize..3, group in 1usize..3, tq in 1usize..4, extra_k in 0usize..3,
        d in 1usize..4, dv in 1usize..4, causal in any::<bool>(), window in prop::option::of(1usize..4),
        with_mask in any::<bool>(), seed in 0u64..1000,
    ) {
        let hq = hkv * group;
        let tk = tq + extra_k;
        let q = f64_tensor(&[b, hq, tq, d], seed);
        let k = f64_tensor(&[b, hkv, tk, d], seed + 1);
        let v = f64_tensor(&[b, hkv, tk, dv], seed + 2);
        let mask = f64_tensor(&[b, 1, 1, tk], seed + 3);
        let options = AttentionOptions {
            causal,
            sliding_window: window,
            scale: None,
            mask: with_mask.then_some(&mask),
        };
        check("attention", vec![q, k, v], |t| scaled_dot_product_attention(&t[0], &t[1], &t[2], &options).unwrap());
    }

    #[test]
    fn cross_entropy(n in 1usize..6, v in 1usize..6, seed in 0u64..1000) {
        let logits = f64_tensor(&[n, v], seed).affine(2.0, 0.0).unwrap();
        let targets: Vec<i64> = (0..n)
            .map(|i| if i % 3 == 2 { -100 } else { ((i as u64 + seed) % v as u64) as i64 })
            .collect();
        let targets = Tensor::from_vec(targets, &[n]).unwrap();
        check("cross_entropy", vec![logits], |t| {
            let loss = t[0].cross_entropy(&targets).unwrap();
            // Guard the all-ignored NaN case out of the finite differences.
            if loss.to_scalar::<f64>().unwrap().is_nan() { t[0].sum(0, false).unwrap().sum(0, false).unwrap().affine(0.0, 0.0).unwrap() } else { loss }
        });
    }
}

#[test]
fn gradient_accumulates_over_reuse_and_reaches_only_leaves() {
    let x = Tensor::from_vec(vec![1.0f64, -2.0, 3.0], &[3])
        .unwrap()
        .with_grad();
    // L = Σ x² + Σ 3x → dL/dx = 2x + 3
    let loss = x
        .mul(&x)
        .unwrap()
        .add(&x.affine(3.0, 0.0).unwrap())
        .unwrap()
        .sum(0, false)
        .unwrap();
    let grads = loss.backward().unwrap();
    assert_eq!(
        grads.get(&x).unwrap().to_vec::<f64>().unwrap(),
        vec![5.0, -1.0, 9.0]
    );
    assert_eq!(grads.len(), 1);
}

#[test]
fn inference_records_nothing() {
    let x = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap();
    let y = x
        .silu()
        .unwrap()
        .matmul(&x.reshape(&[2, 1]).unwrap().t().unwrap().t().unwrap());
    // (2)·(2,1) is a rank error, which is fine: what matters is no node.
    assert!(y.is_err());
    let z = x.exp().unwrap().add(&x).unwrap();
    assert!(!z.requires_grad());
    let err = z.sum(0, false).unwrap().backward().unwrap_err();
    assert!(err.to_string().contains("backward"), "{err}");
    let w = x.with_grad();
    assert!(!no_grad(|| w.exp().unwrap()).requires_grad());
    assert!(w.exp().unwrap().requires_grad());
}

#[test]
fn backward_refuses_non_scalar_without_seed() {
    let x = Tensor::from_vec(vec![1.0f32, 2.0], &[2])
        .unwrap()
        .with_grad();
    let y = x.exp().unwrap();
    let err = y.backward().unwrap_err();
    assert!(err.to_string().contains("one element"), "{err}");
    let seed = Tensor::from_vec(vec![1.0f32, 0.5], &[2]).unwrap();
    let g = y.backward_with(&seed).unwrap();
    let expected: Vec<f32> = vec![1.0f32.exp(), 0.5 * 2.0f32.exp()];
    let got = g.get(&x).unwrap().to_vec::<f32>().unwrap();
    for (a, b) in got.iter().zip(&expected) {
        assert!((a - b).abs() <= 1e-6 * b.abs());
    }
}

#[test]
fn cast_passes_gradients_back_in_the_input_dtype() {
    let x = Tensor::from_vec(vec![0.5f64, -1.5], &[2])
        .unwrap()
        .with_grad();
    let loss = x
        .cast(DType::F32)
        .unwrap()
        .mul(&Tensor::from_vec(vec![2.0f32, 3.0], &[2]).unwrap())
        .unwrap()
        .sum(0, false)
        .unwrap();
    let g = loss.backward().unwrap();
    let gx = g.get(&x).unwrap();
    assert_eq!(gx.dtype(), DType::F64);
    assert_eq!(gx.to_vec::<f64>().unwrap(), vec![2.0, 3.0]);
}

/// The f32 attention backward (the packed GEMM, each product computed as
/// Cᵀ = Bᵀ·Aᵀ where that fills its tiles better, heads of a group stacked)
/// against the f64 backward (plain loops), on shapes large enough to take
/// both orientations: head dims 32, 40 and 64, grouped and plain heads,
/// causal and not, Tq < Tk. Tolerance per element: 1e-4 + 1e-3·|ref|.
#[test]
fn attention_backward_in_f32_matches_f64() {
    for (hq, hkv, tq, tk, d, dv, causal) in [
        (4, 2, 70, 70, 32, 32, true),
        (2, 1, 33, 50, 40, 64, false),
        (3, 3, 128, 128, 64, 32, true),
    ] {
        let inputs = [
            f64_tensor(&[2, hq, tq, d], 1),
            f64_tensor(&[2, hkv, tk, d], 2),
            f64_tensor(&[2, hkv, tk, dv], 3),
        ];
        let options = AttentionOptions {
            causal,
            ..Default::default()
        };
        let grads_in = |dtype: DType| -> Vec<Vec<f64>> {
            let leaves: Vec<Tensor> = inputs
                .iter()
                .map(|t| t.cast(dtype).unwrap().with_grad())
                .collect();
            let out = scaled_dot_product_attention(&leaves[0], &leaves[1], &leaves[2], &options)
                .unwrap()
                .cast(DType::F64)
                .unwrap();
            let grads = project(&out).backward().unwrap();
            leaves
                .iter()
                .map(|l| {
                    grads
                        .get(l)
                        .unwrap()
                        .cast(DType::F64)
                        .unwrap()
                        .to_vec::<f64>()
                        .unwrap()
                })
                .collect()
        };
        let (want, got) = (grads_in(DType::F64), grads_in(DType::F32));
        for (input, (w, g)) in want.iter().zip(&got).enumerate() {
            for (j, (&w, &g)) in w.iter().zip(g).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-4 + 1e-3 * w.abs(),
                    "hq {hq} hkv {hkv} tq {tq} tk {tk} d {d} dv {dv}: input {input} element {j}: f32 {g}, f64 {w}"
                );
            }
        }
    }
}
