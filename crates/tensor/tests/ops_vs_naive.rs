//! Every op against its naive f64 reference (`kaiyuan_tensor::naive`) over
//! random shapes: large enough to cross the SIMD width (16 lanes) and the
//! threading threshold (32 768 elements), with non-contiguous views and
//! broadcasting. Each check states its tolerance as (atol, rtol) in
//! `|x − ref| ≤ atol + rtol·|ref|`.

mod common;

use common::*;
use kaiyuan_tensor::naive::{NaivePairing, NaiveTensor};
use kaiyuan_tensor::{
    AttentionOptions, DType, RotaryEmbedding, RotaryLayout, Tensor, scaled_dot_product_attention,
};
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn float_dtype() -> impl Strategy<Value = DType> {
    prop_oneof![4 => Just(DType::F32), 1 => Just(DType::F16), 1 => Just(DType::BF16), 1 => Just(DType::F64)]
}

/// A shape of rank 1..=4 whose product is at most about 70 000, often large.
fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        (1usize..=300, 1usize..=300).prop_map(|(a, b)| vec![a, b]),
        (1usize..=600).prop_map(|a| vec![a]),
        (1usize..=8, 1usize..=40, 1usize..=200).prop_map(|(a, b, c)| vec![a, b, c]),
        (1usize..=3, 1usize..=4, 1usize..=30, 1usize..=70)
            .prop_map(|(a, b, c, d)| vec![a, b, c, d]),
    ]
}

fn to_prop(r: Result<(), String>) -> Result<(), TestCaseError> {
    r.map_err(TestCaseError::fail)
}

/// Reference tolerance for f32 sums of `n` terms of magnitude ≤ `scale`:
/// rounding grows with the length of the sum.
fn sum_tol(n: usize, scale: f64) -> (f64, f64) {
    (1e-6 * (n as f64).sqrt() * scale + 1e-6, 1e-5)
}

proptest! {
    #![proptest_config(config(24))]

    #[test]
    fn broadcasting_arithmetic(out in shape(), drop_mask in 0u8..16, lead in 0usize..2, view in view_strategy(), dtype in float_dtype(), seed in any::<u64>()) {
        // rhs: drop `lead` leading axes and set to 1 the axes chosen by drop_mask.
        let rhs_shape: Vec<usize> = out.iter().enumerate().skip(lead.min(out.len() - 1))
            .map(|(i, &d)| if drop_mask >> (i % 4) & 1 == 1 { 1 } else { d }).collect();
        let (a, na) = input(&out, view, seed, dtype);
        let (b, nb) = input(&rhs_shape, View::Contiguous, seed ^ 1, dtype);
        let (atol, rtol) = tol_for(dtype);
        to_prop(check_close("add", &a.add(&b).unwrap(), &na.zip(&nb, |x, y| x + y), atol, rtol))?;
        to_prop(check_close("sub", &a.sub(&b).unwrap(), &na.zip(&nb, |x, y| x - y), atol, rtol))?;
        to_prop(check_close("mul", &a.mul(&b).unwrap(), &na.zip(&nb, |x, y| x * y), atol, rtol))?;
        // Operands are in [-2, 2): keep the divisor away from 0.
        let shift = b.affine(1.0, 3.0).unwrap();
        let nshift = NaiveTensor::new(nb.shape.clone(), nb.data.iter().map(|x| x + 3.0).collect());
        to_prop(check_close("div", &a.div(&shift).unwrap(), &na.zip(&nshift, |x, y| x / y), atol, rtol))?;
        // Broadcasting is symmetric: rhs on the left.
        to_prop(check_close("sub (rhs broadcast left)", &b.sub(&a).unwrap(), &nb.zip(&na, |x, y| x - y), atol, rtol))?;
    }

    #[test]
    fn in_place_ops_equal_out_of_place(s in shape(), view in view_strategy(), dtype in float_dtype(), seed in any::<u64>(), broadcast in any::<bool>(), shared in any::<bool>()) {
        // The in-place forms (written over a sole owner's dense f32 buffer,
        // else computed out of place) must give exactly the out-of-place
        // values, and must never write through to a clone that shares the
        // buffer.
        let (a, _) = input(&s, view, seed, dtype);
        let rhs_shape: Vec<usize> = if broadcast { s[1..].to_vec() } else { s.clone() };
        let (b, _) = input(&rhs_shape, View::Contiguous, seed ^ 7, dtype);
        let bits = |t: &Tensor| t.cast(DType::F64).unwrap().to_vec::<f64>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        // A fresh dense copy owns its buffer alone (unless `shared` keeps a clone).
        let fresh = || {
            let copy = Tensor::from_vec(a.cast(DType::F64).unwrap().to_vec::<f64>().unwrap(), a.shape()).unwrap();
            copy.cast(dtype).unwrap()
        };
        type Binary = fn(&Tensor, &Tensor) -> kaiyuan_tensor::Result<Tensor>;
        type BinaryAssign = fn(&mut Tensor, &Tensor) -> kaiyuan_tensor::Result<()>;
        let binaries: [(&str, Binary, BinaryAssign); 4] = [
            ("add", Tensor::add, Tensor::add_assign),
            ("sub", Tensor::sub, Tensor::sub_assign),
            ("mul", Tensor::mul, Tensor::mul_assign),
            ("div", Tensor::div, Tensor::div_assign),
        ];
        for (name, op, op_assign) in binaries {
            for lhs in [a.clone(), fresh()] {
                let expected = op(&lhs, &b).unwrap();
                let before = bits(&lhs);
                let mut out = lhs.clone();
                let keep = if shared { Some(out.clone()) } else { None };
                drop(lhs);
                op_assign(&mut out, &b).unwrap();
                prop_assert_eq!(out.shape(), expected.shape(), "{}", name);
                prop_assert!(bits(&out) == bits(&expected), "{} in place differs", name);
                if let Some(keep) = keep {
                    prop_assert!(bits(&keep) == before, "{} wrote through to a shared buffer", name);
                }
            }
        }
        type Unary = fn(&Tensor) -> kaiyuan_tensor::Result<Tensor>;
        type UnaryAssign = fn(&mut Tensor) -> kaiyuan_tensor::Result<()>;
        let unaries: [(&str, Unary, UnaryAssign); 4] = [
            ("silu", Tensor::silu, Tensor::silu_assign),
            ("gelu_tanh", Tensor::gelu_tanh, Tensor::gelu_tanh_assign),
            ("gelu_erf", Tensor::gelu_erf, Tensor::gelu_erf_assign),
            ("exp", Tensor::exp, Tensor::exp_assign),
        ];
        for (name, op, op_assign) in unaries {
            let mut out = fresh();
            let expected = op(&out).unwrap();
            let keep = if shared { Some(out.clone()) } else { None };
            op_assign(&mut out).unwrap();
            prop_assert!(bits(&out) == bits(&expected), "{} in place differs", name);
            if let Some(keep) = keep {
                prop_assert!(bits(&keep) == bits(&fresh()), "{} wrote through to a shared buffer", name);
            }
        }
    }

    #[test]
    fn unary_maps(s in shape(), view in view_strategy(), dtype in float_dtype(), seed in any::<u64>(), mul in -3.0f64..3.0, add in -3.0f64..3.0) {
        let (x, nx) = input(&s, view, seed, dtype);
        let (atol, rtol) = tol_for(dtype);
        // f32 transcendental functions: our exp is within 2 ulp, erff within 1 ulp.
        let (atol, rtol) = (atol.max(if dtype == DType::F64 { 0.0 } else { 2e-6 }), rtol.max(if dtype == DType::F64 { 0.0 } else { 2e-6 }));
        to_prop(check_close("affine", &x.affine(mul, add).unwrap(), &nx.map(|v| v * mul + add), atol, rtol))?;
        to_prop(check_close("silu", &x.silu().unwrap(), &nx.silu(), atol, rtol))?;
        to_prop(check_close("gelu_tanh", &x.gelu_tanh().unwrap(), &nx.gelu_tanh(), atol, rtol))?;
        to_prop(check_close("gelu_erf", &x.gelu_erf().unwrap(), &nx.gelu_erf(), atol, rtol))?;
        to_prop(check_close("exp", &x.exp().unwrap(), &nx.map(f64::exp), atol, rtol))?;
    }

    #[test]
    fn reductions(s in shape(), axis_pick in 0usize..4, keep in any::<bool>(), view in view_strategy(), dtype in float_dtype(), seed in any::<u64>()) {
        let axis = axis_pick % s.len();
        let (x, nx) = input(&s, view, seed, dtype);
        let n = s[axis];
        let (atol, rtol) = if dtype == DType::F32 { sum_tol(n, 2.0) } else { tol_for(dtype) };
        let (atol, rtol) = if matches!(dtype, DType::F16 | DType::BF16) { (atol * (n as f64).sqrt() * 2.0, rtol) } else { (atol, rtol) };
        to_prop(check_close("sum", &x.sum(axis as isize, keep).unwrap(), &nx.sum(axis, keep), atol, rtol))?;
        to_prop(check_close("mean", &x.mean(axis as isize, keep).unwrap(), &nx.mean(axis, keep), atol, rtol))?;
        // max is exact: it picks an input.
        to_prop(check_close("max", &x.max(axis as isize, keep).unwrap(), &nx.max(axis, keep), 0.0, 0.0))?;
        if dtype == DType::F32 || dtype == DType::F64 {
            let arg = x.argmax(axis as isize, keep).unwrap();
            prop_assert_eq!(arg.dtype(), DType::U32);
            to_prop(check_close("argmax", &arg, &nx.argmax(axis, keep), 0.0, 0.0))?;
        }
    }

    #[test]
    fn softmax_and_log_softmax(s in shape(), axis_pick in 0usize..4, view in view_strategy(), dtype in float_dtype(), seed in any::<u64>(), scale in 0.1f64..20.0) {
        let axis = axis_pick % s.len();
        let (x, nx) = input(&s, view, seed, dtype);
        let x = x.affine(scale, 0.0).unwrap();
        let nx = NaiveTensor::new(nx.shape.clone(), as_f64(&x));
        let (atol, rtol) = tol_for(dtype);
        // Probabilities: absolute error dominates; log-probabilities grow with |x|·scale.
        let (atol, rtol) = if dtype == DType::F32 { (2e-6, 2e-5) } else { (atol, rtol) };
        to_prop(check_close("softmax", &x.softmax(axis as isize).unwrap(), &nx.softmax(axis), atol, rtol))?;
        to_prop(check_close("log_softmax", &x.log_softmax(axis as isize).unwrap(), &nx.log_softmax(axis), atol * 40.0, rtol))?;
    }

    #[test]
    fn norms(s in shape(), view in view_strategy(), dtype in float_dtype(), seed in any::<u64>(), eps in 1e-6f64..1e-2, with_w in any::<bool>(), with_b in any::<bool>()) {
        let (x, nx) = input(&s, view, seed, dtype);
        let c = *s.last().unwrap();
        let w_vals = rounded(&values(c, seed ^ 7), dtype);
        let b_vals = rounded(&values(c, seed ^ 9), dtype);
        let w = tensor(&w_vals, &[c], dtype);
        let b = tensor(&b_vals, &[c], dtype);
        let (atol, rtol) = tol_for(dtype);
        // Normalised values are O(√C) at most; f32 mean-square sums need (C)-scaled atol.
        let (atol, rtol) = if dtype == DType::F32 { (1e-5, 2e-5) } else { (atol * 4.0, rtol) };
        to_prop(check_close("rms_norm", &x.rms_norm(&w, eps).unwrap(), &nx.rms_norm(&w_vals, eps), atol, rtol))?;
        let got = x.layer_norm(with_w.then_some(&w), with_b.then_some(&b), eps).unwrap();
        let want = nx.layer_norm(with_w.then_some(&w_vals[..]), with_b.then_some(&b_vals[..]), eps);
        to_prop(check_close("layer_norm", &got, &want, atol, rtol))?;
    }

    #[test]
    fn rotary(b in 1usize..3, h in 1usize..5, t in 1usize..40, half in 1usize..40, extra in 0usize..9, interleaved in any::<bool>(), base in 100.0f64..1e6, offset in 0usize..200, view in view_strategy(), dtype in float_dtype(), seed in any::<u64>()) {
        let rot = 2 * half;
        let d = rot + extra;
        let layout = if interleaved { RotaryLayout::Interleaved } else { RotaryLayout::HalfSplit };
        let pairing = if interleaved { NaivePairing::Interleaved } else { NaivePairing::HalfSplit };
        let rope = RotaryEmbedding::new(rot, base, layout).unwrap();
        let (x, nx) = input(&[b, h, t, d], view, seed, dtype);
        let positions: Vec<usize> = (offset..offset + t).collect();
        // The reference turns by exact f64 angles; ours forms angles in f32 as
        // HF does, so at position p the angle is off by up to p·2⁻²⁴ rad.
        let angle_err = (offset + t) as f64 * 6e-8 * 2.0 * 2.0;
        let (atol, rtol) = tol_for(dtype);
        let atol = if dtype == DType::F64 { 1e-9 } else { atol + angle_err + 1e-6 };
        to_prop(check_close("rotary", &rope.apply(&x, offset).unwrap(), &nx.rotary(rope.inv_freq(), pairing, &positions), atol, rtol))?;
        // Explicit positions give the same result.
        let shuffled: Vec<usize> = positions.iter().rev().copied().collect();
        to_prop(check_close("rotary_at", &rope.apply_at(&x, &shuffled).unwrap(), &nx.rotary(rope.inv_freq(), pairing, &shuffled), atol, rtol))?;
    }
}

proptest! {
    #![proptest_config(config(16))]

    #[test]
    fn matmul_batched_transposed(batch in prop_oneof![Just(vec![]), (1usize..4).prop_map(|b| vec![b]), (1usize..3, 1usize..3).prop_map(|(a, b)| vec![a, b])],
                                 bcast in 0u8..4, m in 1usize..150, n in 1usize..150, k in 1usize..150,
                                 ta in any::<bool>(), tb in any::<bool>(), dtype in float_dtype(), seed in any::<u64>()) {
        let mut a_batch = batch.clone();
        let mut b_batch = batch.clone();
        if bcast & 1 == 1 && let Some(x) = a_batch.first_mut() { *x = 1; }
        if bcast & 2 == 2 { b_batch.truncate(b_batch.len().saturating_sub(1)); }
        let a_shape: Vec<usize> = a_batch.iter().copied().chain([m, k]).collect();
        let b_shape: Vec<usize> = b_batch.iter().copied().chain([k, n]).collect();
        let (a, na) = input(&a_shape, if ta { View::Transposed } else { View::Contiguous }, seed, dtype);
        let (b, nb) = input(&b_shape, if tb { View::Transposed } else { View::Narrowed }, seed ^ 3, dtype);
        // A dot product of k terms of magnitude ≤ 4 in f32.
        let (atol, rtol) = match dtype {
            DType::F32 => (2e-6 * k as f64, 1e-5),
            DType::F64 => (1e-12 * k as f64, 1e-12),
            other => { let (a0, r0) = tol_for(other); (a0 * 4.0 + 2e-6 * k as f64, r0) }
        };
        to_prop(check_close("matmul", &a.matmul(&b).unwrap(), &na.matmul(&nb), atol, rtol))?;
    }

    /// Decoding's shape, which takes the GEMV path: (B, T, K) with B·T ≤ 4
    /// rows times a transposed row-major (N, K) weight.
    #[test]
    fn matmul_decode_rows_times_transposed_weight(b in 1usize..3, t in 1usize..3, n in 1usize..300, k in 1usize..300,
                                                   dtype in float_dtype(), seed in any::<u64>()) {
        let (a, na) = input(&[b, t, k], View::Contiguous, seed, dtype);
        let (w, nw) = input(&[k, n], View::Transposed, seed ^ 7, dtype);
        prop_assert_eq!(w.layout().strides(), &[1, k][..]);
        let (atol, rtol) = match dtype {
            DType::F32 => (2e-6 * k as f64, 1e-5),
            DType::F64 => (1e-12 * k as f64, 1e-12),
            other => { let (a0, r0) = tol_for(other); (a0 * 4.0 + 2e-6 * k as f64, r0) }
        };
        to_prop(check_close("matmul (gemv)", &a.matmul(&w).unwrap(), &na.matmul(&nw), atol, rtol))?;
    }

    /// Several weights on one input (`matmul_t_many`) give each product
    /// bit for bit as `matmul` one by one, on the single-job path (≤ 4
    /// rows, row-major weights, a narrowed one at an offset) and off it (5
    /// rows, a transposed view, a gradient-tracked weight), and the products
    /// match the naive reference; mismatched dtypes are refused as by
    /// `matmul`.
    #[test]
    fn matmul_t_many_equals_products_one_by_one(rows in 1usize..6, k in 1usize..200, ns in proptest::collection::vec(1usize..300, 1..4),
                                                 dtype in float_dtype(), odd in 0u8..4, seed in any::<u64>()) {
        let (x, nx) = input(&[rows, k], View::Contiguous, seed, dtype);
        let mut weights = Vec::new();
        let mut naive = Vec::new();
        for (i, &n) in ns.iter().enumerate() {
            let view = match (odd, i) {
                (1, 0) => View::Transposed,
                (2, 0) => View::Narrowed,
                _ => View::Contiguous,
            };
            let (w, nw) = input(&[n, k], view, seed ^ (i as u64 + 3), dtype);
            let w = if odd == 3 && i == 0 { w.with_grad() } else { w };
            weights.push(w);
            naive.push(nw);
        }
        let refs: Vec<&Tensor> = weights.iter().collect();
        let many = x.matmul_t_many(&refs).unwrap();
        prop_assert_eq!(many.len(), weights.len());
        for ((got, w), nw) in many.iter().zip(&weights).zip(&naive) {
            let one = x.matmul(&w.t().unwrap()).unwrap();
            prop_assert_eq!(got.shape(), one.shape());
            prop_assert_eq!(got.dtype(), one.dtype());
            let (g, o) = (got.cast(DType::F64).unwrap().to_vec::<f64>().unwrap(), one.cast(DType::F64).unwrap().to_vec::<f64>().unwrap());
            prop_assert!(g.iter().zip(&o).all(|(a, b)| a.to_bits() == b.to_bits()), "matmul_t_many differs from matmul");
            let (atol, rtol) = match dtype {
                DType::F32 => (2e-6 * k as f64, 1e-5),
                DType::F64 => (1e-12 * k as f64, 1e-12),
                other => { let (a0, r0) = tol_for(other); (a0 * 4.0 + 2e-6 * k as f64, r0) }
            };
            to_prop(check_close("matmul_t_many", got, &nx.matmul(&nw.transpose(0, 1)), atol, rtol))?;
        }
        let other = if dtype == DType::F32 { DType::F16 } else { DType::F32 };
        let (mixed, _) = input(&[ns[0], k], View::Contiguous, seed ^ 99, other);
        prop_assert!(x.matmul_t_many(&[&weights[0], &mixed]).is_err());
    }

    /// Prefill's shape, which takes the GEMM path: more than 4 rows times a
    /// transposed half-precision weight, 2-D or batched (a dense view, which
    /// is widened in memory order and read back with its strides).
    #[test]
    fn matmul_rows_times_transposed_half_weight(t in 5usize..40, n in 1usize..200, k in 1usize..200,
                                                batched in any::<bool>(), bf in any::<bool>(), seed in any::<u64>()) {
        let dtype = if bf { DType::BF16 } else { DType::F16 };
        let (a, na) = input(&[t, k], View::Contiguous, seed, dtype);
        let w_shape: &[usize] = if batched { &[2, k, n] } else { &[k, n] };
        let (w, nw) = input(w_shape, View::Transposed, seed ^ 7, dtype);
        let (a0, r0) = tol_for(dtype);
        to_prop(check_close("matmul (half weight)", &a.matmul(&w).unwrap(), &na.matmul(&nw), a0 * 4.0 + 2e-6 * k as f64, r0))?;
    }

    #[test]
    fn attention_gqa_causal_window_mask(b in 1usize..3, hkv in 1usize..4, group in 1usize..4, tq in 1usize..40, past in 0usize..40, d in 1usize..48, dv in 1usize..48,
                                        causal in any::<bool>(), window in prop_oneof![Just(None), (1usize..30).prop_map(Some)],
                                        mask_kind in 0u8..3, dtype in float_dtype(), seed in any::<u64>()) {
        let hq = hkv * group;
        let tk = tq + past;
        let (q, nq) = input(&[b, hq, tq, d], View::Transposed, seed, dtype);
        let (k, nk) = input(&[b, hkv, tk, d], View::Narrowed, seed ^ 5, dtype);
        let (v, nv) = input(&[b, hkv, tk, dv], View::Contiguous, seed ^ 11, dtype);
        // Masks: none, per (Tq, Tk) broadcast over B and H, or full.
        let mask_shape = match mask_kind { 1 => vec![1, 1, tq, tk], _ => vec![b, hq, tq, tk] };
        let mask_vals = rounded(&values(mask_shape.iter().product(), seed ^ 13), dtype);
        let mask = tensor(&mask_vals, &mask_shape, dtype);
        let naive_mask = NaiveTensor::new(mask_shape.clone(), mask_vals).zip(&NaiveTensor::new(vec![b, hq, tq, tk], vec![0.0; b * hq * tq * tk]), |m, z| m + z);
        let options = AttentionOptions { causal, sliding_window: window, scale: None, mask: (mask_kind > 0).then_some(&mask) };
        let got = scaled_dot_product_attention(&q, &k, &v, &options).unwrap();
        let want = NaiveTensor::attention(&nq, &nk, &nv, causal, window, 1.0 / (d as f64).sqrt(), (mask_kind > 0).then_some(&naive_mask));
        let (atol, rtol) = match dtype { DType::F32 => (1e-5, 1e-4), other => { let (a0, r0) = tol_for(other); (a0 * 4.0, r0 * 2.0) } };
        to_prop(check_close("attention", &got, &want, atol, rtol))?;
    }

    /// Decoding (one query row), the path that reads each key and value row
    /// once for a whole group of query heads: grouped heads always, long
    /// caches, masks and windows.
    #[test]
    fn attention_decode_grouped_heads(b in 1usize..3, hkv in 1usize..4, group in 2usize..5, past in 0usize..300, d in 1usize..72, dv in 1usize..72,
                                      window in prop_oneof![Just(None), (1usize..200).prop_map(Some)],
                                      with_mask in any::<bool>(), dtype in float_dtype(), seed in any::<u64>()) {
        let (hq, tq) = (hkv * group, 1);
        let tk = tq + past;
        let (q, nq) = input(&[b, hq, tq, d], View::Contiguous, seed, dtype);
        let (k, nk) = input(&[b, hkv, tk, d], View::Contiguous, seed ^ 5, dtype);
        let (v, nv) = input(&[b, hkv, tk, dv], View::Contiguous, seed ^ 11, dtype);
        let mask_shape = vec![b, hq, tq, tk];
        let mask_vals = rounded(&values(mask_shape.iter().product(), seed ^ 13), dtype);
        let mask = tensor(&mask_vals, &mask_shape, dtype);
        let naive_mask = NaiveTensor::new(mask_shape.clone(), mask_vals);
        let options = AttentionOptions { causal: true, sliding_window: window, scale: None, mask: with_mask.then_some(&mask) };
        let got = scaled_dot_product_attention(&q, &k, &v, &options).unwrap();
        let want = NaiveTensor::attention(&nq, &nk, &nv, true, window, 1.0 / (d as f64).sqrt(), with_mask.then_some(&naive_mask));
        let (atol, rtol) = match dtype { DType::F32 => (1e-5, 1e-4), other => { let (a0, r0) = tol_for(other); (a0 * 4.0, r0 * 2.0) } };
        to_prop(check_close("decode attention", &got, &want, atol, rtol))?;
    }

    #[test]
    fn embedding_gather(v in 1usize..500, c in 1usize..200, n in 1usize..400, use_i64 in any::<bool>(), dtype in float_dtype(), seed in any::<u64>()) {
        let (table, ntable) = input(&[v, c], View::Contiguous, seed, dtype);
        let ids: Vec<usize> = values(n, seed ^ 17).iter().map(|x| ((x + 2.0) / 4.0 * v as f64) as usize % v).collect();
        let id_tensor = if use_i64 {
            Tensor::from_vec(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), &[n]).unwrap()
        } else {
            Tensor::from_vec(ids.iter().map(|&i| i as u32).collect::<Vec<_>>(), &[n]).unwrap()
        };
        let id_tensor = id_tensor.reshape(&[1, n]).unwrap();
        to_prop(check_close("embedding", &table.embedding(&id_tensor).unwrap(), &ntable.embedding(&ids, &[1, n]), 0.0, 0.0))?;
    }

    #[test]
    fn views_and_copies(s in (1usize..9, 1usize..20, 1usize..300), order in Just(vec![0usize, 1, 2]).prop_shuffle(), cut in 0usize..20, dtype in float_dtype(), seed in any::<u64>()) {
        let shape = [s.0, s.1, s.2];
        let (x, nx) = input(&shape, View::Narrowed, seed, dtype);
        // permute + contiguous: exact.
        let p = x.permute(&order).unwrap();
        to_prop(check_close("permute", &p.contiguous().expect("contiguous"), &nx.permute(&order), 0.0, 0.0))?;
        // narrow along the middle axis.
        let start = cut % s.1;
        let len = s.1 - start;
        to_prop(check_close("narrow", &x.narrow(1, start, len).unwrap(), &nx.narrow(1, start, len), 0.0, 0.0))?;
        // split then concat gives the input back; pieces match naive narrows.
        let pieces = x.split(1, &[start, len]).unwrap();
        to_prop(check_close("split[1]", &pieces[1], &nx.narrow(1, start, len), 0.0, 0.0))?;
        let joined = Tensor::concat(&[&pieces[0], &pieces[1]], 1).unwrap();
        to_prop(check_close("concat", &joined, &nx, 0.0, 0.0))?;
        let (y, ny) = input(&[s.0, 3, s.2], View::Transposed, seed ^ 1, dtype);
        let joined = Tensor::concat(&[&x, &y], -2).unwrap();
        to_prop(check_close("concat mixed views", &joined, &NaiveTensor::concat(&[nx.clone(), ny], 1), 0.0, 0.0))?;
        // reshape of a non-contiguous view copies in logical order.
        let r = p.reshape(&[p.elem_count()]).unwrap();
        to_prop(check_close("reshape", &r, &nx.permute(&order).reshape(vec![p.elem_count()]), 0.0, 0.0))?;
        // cast to f64 and back is exact for every float dtype.
        let back = x.cast(DType::F64).unwrap().cast(dtype).unwrap();
        to_prop(check_close("cast round trip", &back, &nx, 0.0, 0.0))?;
    }
}

/// The same ops with 1, 2 and 3 threads give bit-identical results.
#[test]
fn results_do_not_depend_on_thread_count() {
    let x = Tensor::rand_uniform(&[64, 3000], -3.0, 3.0, 1).unwrap();
    let w = Tensor::rand_uniform(&[3000], 0.5, 1.5, 2).unwrap();
    let a = Tensor::rand_uniform(&[300, 257], -1.0, 1.0, 3).unwrap();
    let bm = Tensor::rand_uniform(&[257, 310], -1.0, 1.0, 4).unwrap();
    let long = Tensor::rand_uniform(&[2, 200_000], -1.0, 1.0, 5).unwrap();
    let q = Tensor::rand_uniform(&[1, 8, 100, 64], -1.0, 1.0, 6).unwrap();
    let kv = Tensor::rand_uniform(&[1, 2, 130, 64], -1.0, 1.0, 7).unwrap();
    let rope = RotaryEmbedding::new(64, 10_000.0, RotaryLayout::HalfSplit).unwrap();
    let run = || -> Vec<Vec<u32>> {
        let bits = |t: Tensor| {
            t.to_vec::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<u32>>()
        };
        let opts = AttentionOptions {
            causal: true,
            sliding_window: Some(50),
            ..Default::default()
        };
        vec![
            bits(x.sum(-1, false).unwrap()),
            bits(x.sum(0, false).unwrap()),
            bits(long.sum(-1, false).unwrap()),
            bits(long.mean(1, false).unwrap()),
            bits(x.softmax(-1).unwrap()),
            bits(x.log_softmax(0).unwrap()),
            bits(x.rms_norm(&w, 1e-5).unwrap()),
            bits(x.layer_norm(Some(&w), None, 1e-5).unwrap()),
            bits(a.matmul(&bm).unwrap()),
            bits(bm.t().unwrap().matmul(&a.t().unwrap()).unwrap()),
            bits(rope.apply(&q, 7).unwrap()),
            bits(scaled_dot_product_attention(&q, &kv, &kv, &opts).unwrap()),
        ]
    };
    let with_threads = |n: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
            .install(run)
    };
    let one = with_threads(1);
    for n in [2, 3] {
        let other = with_threads(n);
        for (i, (p, q)) in one.iter().zip(&other).enumerate() {
            assert!(p == q, "result {i} differs between 1 and {n} threads");
        }
    }
}
