//! Scaled dot-product attention with grouped-query heads, causal masking,
//! a sliding window and an optional additive mask.

use rayon::prelude::*;

use crate::cpu::float::Float;
use crate::cpu::rows::softmax_rows;
use crate::layout::{Layout, broadcast_shapes};
use crate::tensor::{FloatValues, FloatVec};
use crate::{Result, Tensor, TensorError};

/// Options of [`scaled_dot_product_attention`].
#[derive(Clone, Copy, Debug, Default)]
pub struct AttentionOptions<'a> {
    /// Mask keys after each query. Queries are the last `Tq` of the `Tk`
    /// positions (query `i` sits at position `Tk − Tq + i`), as with a KV cache.
    pub causal: bool,
    /// Also mask keys `w` or more positions before the query (Mistral/Qwen2
    /// sliding window: a query sees itself and the `w − 1` keys before it).
    pub sliding_window: Option<usize>,
    /// Score scale; `1/√D` when absent.
    pub scale: Option<f64>,
    /// Additive mask broadcastable to (B, Hq, Tq, Tk), added to the scaled scores
    /// (use −∞ to hide a key).
    pub mask: Option<&'a Tensor>,
}

/// `softmax(q·kᵀ·scale + mask) · v` per head.
///
/// Shapes: `q` (B, Hq, Tq, D), `k` (B, Hkv, Tk, D), `v` (B, Hkv, Tk, Dv) →
/// (B, Hq, Tq, Dv). Query head `h` reads key/value head `h / (Hq / Hkv)`
/// (grouped-query attention; Hkv = 1 is multi-query). A query with every key
/// masked gets NaN, as in PyTorch. f16/bf16 compute in f32.
///
/// ```
/// use kaiyuan_tensor::{AttentionOptions, Tensor, scaled_dot_product_attention};
/// let q = Tensor::from_vec(vec![1.0f32; 2 * 3 * 4], &[1, 2, 3, 4]).unwrap();
/// let kv = Tensor::from_vec(vec![0.5f32; 3 * 4], &[1, 1, 3, 4]).unwrap();
/// let opts = AttentionOptions { causal: true, ..Default::default() };
/// let out = scaled_dot_product_attention(&q, &kv, &kv, &opts).unwrap();
/// assert_eq!(out.shape(), &[1, 2, 3, 4]);
/// ```
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    options: &AttentionOptions<'_>,
) -> Result<Tensor> {
    const OP: &str = "attention";
    for (t, expected) in [
        (q, "rank 4 query (B, Hq, Tq, D)"),
        (k, "rank 4 key (B, Hkv, Tk, D)"),
        (v, "rank 4 value (B, Hkv, Tk, Dv)"),
    ] {
        if t.rank() != 4 {
            return Err(TensorError::Rank {
                op: OP,
                expected,
                shape: t.shape().to_vec(),
            });
        }
    }
    let [b, hq, tq, d] = [q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]];
    let [bk, hkv, tk, dk] = [k.shape()[0], k.shape()[1], k.shape()[2], k.shape()[3]];
    let dv = v.shape()[3];
    if bk != b || dk != d {
        return Err(TensorError::shapes(
            OP,
            q.shape(),
            k.shape(),
            "query and key must agree on B and D",
        ));
    }
    if v.shape()[..3] != k.shape()[..3] {
        return Err(TensorError::shapes(
            OP,
            k.shape(),
            v.shape(),
            "key and value must agree on B, Hkv and Tk",
        ));
    }
    if hkv == 0 || hq % hkv != 0 {
        return Err(TensorError::invalid(
            OP,
            format!(
                "{hq} query heads are not a multiple of {hkv} key/value heads (q {:?}, k {:?})",
                q.shape(),
                k.shape()
            ),
        ));
    }
    if options.causal && tq > tk {
        return Err(TensorError::shapes(
            OP,
            q.shape(),
            k.shape(),
            "causal attention needs Tq ≤ Tk",
        ));
    }
    if options.sliding_window == Some(0) {
        return Err(TensorError::invalid(
            OP,
            "sliding window of 0 hides every key",
        ));
    }
    for t in [k, v] {
        if t.dtype() != q.dtype() {
            return Err(TensorError::DTypeMismatch {
                op: OP,
                lhs: q.dtype(),
                rhs: t.dtype(),
            });
        }
    }
    let scores_shape = [b, hq, tq, tk];
    let mask = match options.mask {
        Some(m) => {
            let target = broadcast_shapes(OP, m.shape(), &scores_shape)?;
            if target != scores_shape {
                return Err(TensorError::shapes(
                    OP,
                    m.shape(),
                    &scores_shape,
                    "mask must broadcast to (B, Hq, Tq, Tk)",
                ));
            }
            if m.dtype() != q.dtype() {
                return Err(TensorError::DTypeMismatch {
                    op: OP,
                    lhs: q.dtype(),
                    rhs: m.dtype(),
                });
            }
            Some((
                m.float_values(OP)?,
                Layout::contiguous(m.shape()).broadcast_to(&scores_shape),
            ))
        }
        None => None,
    };
    let scale = options.scale.unwrap_or(1.0 / (d as f64).sqrt());
    let geometry = Geometry {
        b,
        hq,
        hkv,
        tq,
        tk,
        d,
        dv,
        scale,
        causal: options.causal,
        window: options.sliding_window,
    };
    let (qv, kv, vv) = (
        q.float_values(OP)?,
        k.float_values(OP)?,
        v.float_values(OP)?,
    );
    let out = match (qv, kv, vv) {
        (FloatValues::F32(q), FloatValues::F32(k), FloatValues::F32(v)) => {
            let mask = match &mask {
                Some((FloatValues::F32(m), l)) => Some((&m[..], l)),
                _ => None,
            };
            FloatVec::F32(attend(&geometry, &q, &k, &v, mask))
        }
        (FloatValues::F64(q), FloatValues::F64(k), FloatValues::F64(v)) => {
            let mask = match &mask {
                Some((FloatValues::F64(m), l)) => Some((&m[..], l)),
                _ => None,
            };
            FloatVec::F64(attend(&geometry, &q, &k, &v, mask))
        }
        _ => return Err(TensorError::invalid(OP, "mixed compute types")),
    };
    Ok(Tensor::from_float_vec(out, &[b, hq, tq, dv], q.dtype()))
}

struct Geometry {
    b: usize,
    hq: usize,
    hkv: usize,
    tq: usize,
    tk: usize,
    d: usize,
    dv: usize,
    scale: f64,
    causal: bool,
    window: Option<usize>,
}

fn attend<F: Float>(
    g: &Geometry,
    q: &[F],
    k: &[F],
    v: &[F],
    mask: Option<(&[F], &Layout)>,
) -> Vec<F> {
    let (tq, tk, d, dv) = (g.tq, g.tk, g.d, g.dv);
    let group = g.hq / g.hkv;
    let mut out = vec![F::zero(); g.b * g.hq * tq * dv];
    if out.is_empty() {
        return out;
    }
    let scale = F::of(g.scale);
    out.par_chunks_mut(tq * dv)
        .enumerate()
        .for_each(|(bh, out)| {
            let (batch, head) = (bh / g.hq, bh % g.hq);
            let kv_head = batch * g.hkv + head / group;
            let q = &q[bh * tq * d..(bh + 1) * tq * d];
            let k = &k[kv_head * tk * d..(kv_head + 1) * tk * d];
            let v = &v[kv_head * tk * dv..(kv_head + 1) * tk * dv];
            // scores (Tq, Tk) = q (Tq, D) · kᵀ (D, Tk)
            let mut scores = vec![F::zero(); tq * tk];
            F::gemm(tq, tk, d, q, d, 1, k, 1, d, &mut scores, tk);
            for (i, row) in scores.chunks_exact_mut(tk.max(1)).enumerate() {
                let row_index = i;
                let position = tk as isize - tq as isize + i as isize;
                for (j, s) in row.iter_mut().enumerate() {
                    *s = *s * scale;
                    if let Some((m, layout)) = mask {
                        let st = layout.strides();
                        *s = *s
                            + m[layout.offset()
                                + batch * st[0]
                                + head * st[1]
                                + row_index * st[2]
                                + j * st[3]];
                    }
                    let j = j as isize;
                    let future = g.causal && j > position;
                    let too_old = g.window.is_some_and(|w| j + w as isize <= position);
                    if future || too_old {
                        *s = F::neg_infinity();
                    }
                }
            }
            let probs = softmax_rows(&scores, tk, false);
            // out (Tq, Dv) = probs (Tq, Tk) · v (Tk, Dv)
            F::gemm(tq, dv, tk, &probs, tk, 1, v, dv, 1, out, dv);
        });
    out
}
