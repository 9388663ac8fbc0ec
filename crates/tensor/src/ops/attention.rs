//! Scaled dot-product attention with grouped-query heads, causal masking,
//! a sliding window and an optional additive mask.

use rayon::prelude::*;

use super::kv::{KvBuffer, KvView};
use crate::cpu::float::{Float, Stored};
use crate::cpu::gemm::tile_fill;
use crate::cpu::rows::softmax_rows;
use crate::cpu::simd::{Kernel, dispatch};
use crate::cpu::spin::{self, SharedOut, columns_to_rows_into};
use crate::layout::{Layout, broadcast_shapes};
use crate::tensor::{FloatValues, FloatVec};
use crate::{DType, Result, Tensor, TensorError};

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
    if options.mask.is_some() && [q, k, v].iter().any(|t| t.device().is_cuda()) {
        return Err(TensorError::on_device(
            OP,
            q.device(),
            "the fused kernels take no additive mask (pad batches to equal length, or run on the CPU)",
        ));
    }
    let (geometry, mask) = prepare(q, (k.shape(), k.dtype()), (v.shape(), v.dtype()), options)?;
    if let Some(out) = attention_on_device(q, k, v, options)? {
        return Ok(out);
    }
    let (b, hq, tq, dv) = (geometry.b, geometry.hq, geometry.tq, geometry.dv);
    let out = attend_values(
        &geometry,
        q.float_values(OP)?,
        k.float_values(OP)?.into(),
        v.float_values(OP)?.into(),
        &mask,
    )?;
    let out = Tensor::from_float_vec(out, &[b, hq, tq, dv], q.dtype());
    if !crate::autograd::tracking(&[q, k, v]) {
        return Ok(out);
    }
    let mask = options.mask.map(Tensor::detach);
    Ok(out.record(OP, &[q, k, v], move || {
        move |g: &Tensor, inputs: &[Tensor]| {
            let (dq, dk, dv) = attention_backward(
                &geometry,
                &inputs[0],
                &inputs[1],
                &inputs[2],
                mask.as_ref(),
                g,
            )?;
            Ok(vec![Some(dq), Some(dk), Some(dv)])
        }
    }))
}

/// [`scaled_dot_product_attention`] with the keys and values of a KV cache
/// read in place from their [`KvBuffer`]s ((B, Hkv, Tk, D) and (B, Hkv, Tk,
/// Dv)): the same results as on `k.to_tensor()` and `v.to_tensor()`,
/// without copying the cache. Records no gradient (inference).
///
/// ```
/// use kaiyuan_tensor::{AttentionOptions, KvBuffer, Tensor, scaled_dot_product_attention,
///     scaled_dot_product_attention_cached};
/// let q = Tensor::rand_uniform(&[1, 2, 1, 4], -1.0, 1.0, 1).unwrap();
/// let mut k = KvBuffer::new(&Tensor::rand_uniform(&[1, 1, 3, 4], -1.0, 1.0, 2).unwrap()).unwrap();
/// k.append(&Tensor::rand_uniform(&[1, 1, 1, 4], -1.0, 1.0, 3).unwrap()).unwrap();
/// let v = KvBuffer::new(&Tensor::rand_uniform(&[1, 1, 4, 4], -1.0, 1.0, 4).unwrap()).unwrap();
/// let opts = AttentionOptions { causal: true, ..Default::default() };
/// let cached = scaled_dot_product_attention_cached(&q, &k, &v, &opts).unwrap();
/// let plain = scaled_dot_product_attention(&q, &k.to_tensor(), &v.to_tensor(), &opts).unwrap();
/// assert_eq!(cached.to_vec::<f32>().unwrap(), plain.to_vec::<f32>().unwrap());
/// ```
pub fn scaled_dot_product_attention_cached(
    q: &Tensor,
    k: &KvBuffer,
    v: &KvBuffer,
    options: &AttentionOptions<'_>,
) -> Result<Tensor> {
    if q.device().is_cuda() {
        // A device cache is one device tensor per buffer.
        return scaled_dot_product_attention(q, &k.to_tensor(), &v.to_tensor(), options);
    }
    let (mut geometry, mask) =
        prepare(q, (&k.shape(), k.dtype()), (&v.shape(), v.dtype()), options)?;
    let ((k, k_stride), (v, v_stride)) = (k.raw()?, v.raw()?);
    geometry.k_head_stride = k_stride;
    geometry.v_head_stride = v_stride;
    let out = attend_values(&geometry, q.float_values(OP)?, k, v, &mask)?;
    let (b, hq, tq, dv) = (geometry.b, geometry.hq, geometry.tq, geometry.dv);
    Ok(Tensor::from_float_vec(out, &[b, hq, tq, dv], q.dtype()))
}

/// The op's name in errors.
const OP: &str = "attention";

/// The CUDA arm of [`scaled_dot_product_attention`] (checked shapes):
/// `None` when the operands are on the CPU. The fused kernels take no
/// additive mask and no sliding window shorter than the keys.
fn attention_on_device(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    options: &AttentionOptions<'_>,
) -> Result<Option<Tensor>> {
    let device = q.device();
    if !(device.is_cuda() || k.device().is_cuda() || v.device().is_cuda()) {
        return Ok(None);
    }
    let tk = k.shape()[2];
    if options.sliding_window.is_some_and(|w| w < tk) {
        return Err(TensorError::on_device(
            OP,
            device,
            "the fused kernels take no sliding window shorter than the keys",
        ));
    }
    let d = q.shape()[3];
    let scale = options.scale.unwrap_or(1.0 / (d as f64).sqrt());
    let Some((out, saved)) = crate::gpu::attention(q, k, v, options.causal, scale)? else {
        return Ok(None);
    };
    if !crate::autograd::tracking(&[q, k, v]) {
        return Ok(Some(out));
    }
    Ok(Some(out.record(OP, &[q, k, v], move || {
        move |g: &Tensor, inputs: &[Tensor]| {
            let (dq, dk, dv) =
                crate::gpu::attention_backward(&inputs[0], &inputs[1], &inputs[2], &saved, g)?;
            Ok(vec![Some(dq), Some(dk), Some(dv)])
        }
    })))
}

/// The additive mask's values and their layout broadcast to the scores.
type MaskValues<'a> = Option<(FloatValues<'a>, Layout)>;

/// Checks the shapes, dtypes and options of an attention and returns its
/// geometry (contiguous keys and values) and mask.
fn prepare<'m>(
    q: &Tensor,
    (k_shape, k_dtype): (&[usize], DType),
    (v_shape, v_dtype): (&[usize], DType),
    options: &AttentionOptions<'m>,
) -> Result<(Geometry, MaskValues<'m>)> {
    for (shape, expected) in [
        (q.shape(), "rank 4 query (B, Hq, Tq, D)"),
        (k_shape, "rank 4 key (B, Hkv, Tk, D)"),
        (v_shape, "rank 4 value (B, Hkv, Tk, Dv)"),
    ] {
        if shape.len() != 4 {
            return Err(TensorError::Rank {
                op: OP,
                expected,
                shape: shape.to_vec(),
            });
        }
    }
    let [b, hq, tq, d] = [q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]];
    let [bk, hkv, tk, dk] = [k_shape[0], k_shape[1], k_shape[2], k_shape[3]];
    let dv = v_shape[3];
    if bk != b || dk != d {
        return Err(TensorError::shapes(
            OP,
            q.shape(),
            k_shape,
            "query and key must agree on B and D",
        ));
    }
    if v_shape[..3] != k_shape[..3] {
        return Err(TensorError::shapes(
            OP,
            k_shape,
            v_shape,
            "key and value must agree on B, Hkv and Tk",
        ));
    }
    if hkv == 0 || hq % hkv != 0 {
        return Err(TensorError::invalid(
            OP,
            format!(
                "{hq} query heads are not a multiple of {hkv} key/value heads (q {:?}, k {:?})",
                q.shape(),
                k_shape
            ),
        ));
    }
    if options.causal && tq > tk {
        return Err(TensorError::shapes(
            OP,
            q.shape(),
            k_shape,
            "causal attention needs Tq ≤ Tk",
        ));
    }
    if options.sliding_window == Some(0) {
        return Err(TensorError::invalid(
            OP,
            "sliding window of 0 hides every key",
        ));
    }
    for dtype in [k_dtype, v_dtype] {
        if dtype != q.dtype() {
            return Err(TensorError::DTypeMismatch {
                op: OP,
                lhs: q.dtype(),
                rhs: dtype,
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
        k_head_stride: tk * d,
        v_head_stride: tk * dv,
    };
    Ok((geometry, mask))
}

/// Runs [`attend`] on values of one compute type (keys and values may be
/// stored as f16 or bf16 under f32 queries).
fn attend_values(
    g: &Geometry,
    q: FloatValues<'_>,
    k: KvView<'_>,
    v: KvView<'_>,
    mask: &MaskValues<'_>,
) -> Result<FloatVec> {
    fn rows_f32<'a>(view: &'a KvView<'_>) -> Option<KvRows<'a, f32>> {
        match view {
            KvView::F32(v) => Some(KvRows::Wide(v)),
            KvView::F16(v) => Some(KvRows::F16(v)),
            KvView::Bf16(v) => Some(KvRows::Bf16(v)),
            KvView::F64(_) => None,
        }
    }
    Ok(match q {
        FloatValues::F32(q) => {
            let (Some(k), Some(v)) = (rows_f32(&k), rows_f32(&v)) else {
                return Err(TensorError::invalid(OP, "mixed compute types"));
            };
            let mask = match mask {
                Some((FloatValues::F32(m), l)) => Some((&m[..], l)),
                _ => None,
            };
            FloatVec::F32(attend(g, &q, k, v, mask))
        }
        FloatValues::F64(q) => {
            let (KvView::F64(k), KvView::F64(v)) = (&k, &v) else {
                return Err(TensorError::invalid(OP, "mixed compute types"));
            };
            let mask = match mask {
                Some((FloatValues::F64(m), l)) => Some((&m[..], l)),
                _ => None,
            };
            FloatVec::F64(attend(g, &q, KvRows::Wide(k), KvRows::Wide(v), mask))
        }
    })
}

/// Keys or values (heads × stride) as [`attend`] reads them: in the
/// compute type, or stored as f16/bf16 and widened one head's rows at a
/// time (exactly, so the results are those of the widened values).
#[derive(Clone, Copy)]
enum KvRows<'a, F> {
    Wide(&'a [F]),
    F16(&'a [half::f16]),
    Bf16(&'a [half::bf16]),
}

impl<F: Float> KvRows<'_, F> {
    /// Elements `start..start + len` in the compute type: borrowed, or
    /// widened into `scratch` (as the decode kernels widen them).
    fn rows<'s>(&'s self, start: usize, len: usize, scratch: &'s mut Vec<F>) -> &'s [F] {
        fn widen<F: Float, S: Stored<F>>(src: &[S], scratch: &mut Vec<F>) {
            scratch.clear();
            scratch.resize(src.len(), F::zero());
            S::widen_slice(src, scratch);
        }
        match *self {
            KvRows::Wide(v) => return &v[start..][..len],
            KvRows::F16(v) => widen(&v[start..][..len], scratch),
            KvRows::Bf16(v) => widen(&v[start..][..len], scratch),
        }
        scratch
    }
}

/// Gradients (dq, dk, dv) of attention given the output's gradient
/// `dout` (B, Hq, Tq, Dv). Probabilities are recomputed, not stored.
fn attention_backward(
    geometry: &Geometry,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    dout: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "attention backward";
    let g = geometry;
    let scores_shape = [g.b, g.hq, g.tq, g.tk];
    let mask = match mask {
        Some(m) => Some((
            m.float_values(OP)?,
            Layout::contiguous(m.shape()).broadcast_to(&scores_shape),
        )),
        None => None,
    };
    let values = (
        q.float_values(OP)?,
        k.float_values(OP)?,
        v.float_values(OP)?,
        dout.float_values(OP)?,
    );
    let (dq, dk, dv) = match values {
        (FloatValues::F32(q), FloatValues::F32(k), FloatValues::F32(v), FloatValues::F32(o)) => {
            let mask = match &mask {
                Some((FloatValues::F32(m), l)) => Some((&m[..], l)),
                _ => None,
            };
            let (dq, dk, dv) = attend_backward(g, &q, &k, &v, mask, &o);
            (FloatVec::F32(dq), FloatVec::F32(dk), FloatVec::F32(dv))
        }
        (FloatValues::F64(q), FloatValues::F64(k), FloatValues::F64(v), FloatValues::F64(o)) => {
            let mask = match &mask {
                Some((FloatValues::F64(m), l)) => Some((&m[..], l)),
                _ => None,
            };
            let (dq, dk, dv) = attend_backward(g, &q, &k, &v, mask, &o);
            (FloatVec::F64(dq), FloatVec::F64(dk), FloatVec::F64(dv))
        }
        _ => return Err(TensorError::invalid(OP, "mixed compute types")),
    };
    let dtype = q.dtype();
    Ok((
        Tensor::from_float_vec(dq, q.shape(), dtype),
        Tensor::from_float_vec(dk, k.shape(), dtype),
        Tensor::from_float_vec(dv, v.shape(), dtype),
    ))
}

#[derive(Clone, Copy)]
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
    /// Elements from one key (value) head to the next: Tk·D (Tk·Dv) for
    /// contiguous tensors, capacity·D for a [`KvBuffer`]. `attend` only.
    k_head_stride: usize,
    v_head_stride: usize,
}

fn attend<F: Float>(
    g: &Geometry,
    q: &[F],
    k: KvRows<'_, F>,
    v: KvRows<'_, F>,
    mask: Option<(&[F], &Layout)>,
) -> Vec<F> {
    let (tq, dv) = (g.tq, g.dv);
    let mut out = vec![F::zero(); g.b * g.hq * tq * dv];
    if out.is_empty() {
        return out;
    }
    if tq == 1 {
        // Decoding: short tasks on the spinning workers of the decode GEMVs
        // (rayon would wake parked threads, which then share the cores with
        // the spinning ones). A task takes `per_task` consecutive query
        // heads of one group, about four tasks per thread: whole groups
        // share their key and value reads best, but SmolLM2's three groups
        // on two threads would leave one thread with two of them.
        let group = g.hq / g.hkv;
        let wanted = 4 * rayon::current_num_threads();
        let per_task = (g.b * g.hq).div_ceil(wanted).clamp(1, group);
        let per_group = group.div_ceil(per_task);
        let shared = SharedOut(out.as_mut_ptr());
        spin::run(g.b * g.hkv * per_group, &|task| {
            let (kv, part) = (task / per_group, task % per_group);
            let first = part * per_task;
            let heads = first..(first + per_task).min(group);
            // SAFETY: this task writes only the rows of query heads
            // `heads` of group `kv`, out[(kv·group + first)·Dv..][..len],
            // disjoint from every other task's; `out` outlives `run`.
            let out = unsafe {
                std::slice::from_raw_parts_mut(
                    shared.get().add((kv * group + first) * dv),
                    heads.len() * dv,
                )
            };
            let (ks, vs) = (kv * g.k_head_stride, kv * g.v_head_stride);
            let (kn, vn) = (g.tk * g.d, g.tk * g.dv);
            // Narrow storage is widened inside the kernels, as it is read.
            match (k, v) {
                (KvRows::F16(k), KvRows::F16(v)) => {
                    attend_group_decode(g, kv, heads, q, &k[ks..][..kn], &v[vs..][..vn], mask, out)
                }
                (KvRows::Bf16(k), KvRows::Bf16(v)) => {
                    attend_group_decode(g, kv, heads, q, &k[ks..][..kn], &v[vs..][..vn], mask, out)
                }
                (k, v) => {
                    let (mut k_scratch, mut v_scratch) = (Vec::new(), Vec::new());
                    let k = k.rows(ks, kn, &mut k_scratch);
                    let v = v.rows(vs, vn, &mut v_scratch);
                    attend_group_decode(g, kv, heads, q, k, v, mask, out)
                }
            }
        });
    } else {
        out.par_chunks_mut(tq * dv)
            .enumerate()
            .for_each(|(bh, out)| {
                let group = g.hq / g.hkv;
                let kv_head = (bh / g.hq) * g.hkv + (bh % g.hq) / group;
                let (mut k_scratch, mut v_scratch) = (Vec::new(), Vec::new());
                let k = k.rows(kv_head * g.k_head_stride, g.tk * g.d, &mut k_scratch);
                let v = v.rows(kv_head * g.v_head_stride, g.tk * g.dv, &mut v_scratch);
                attend_head(g, bh, q, k, v, mask, out)
            });
    }
    out
}

/// One query head `bh` (batch·Hq + head) of [`attend`] with Tq > 1, given
/// its key/value head's rows `k` (Tk, D) and `v` (Tk, Dv): its output rows
/// (Tq, Dv) into `out`.
fn attend_head<F: Float>(
    g: &Geometry,
    bh: usize,
    q: &[F],
    k: &[F],
    v: &[F],
    mask: Option<(&[F], &Layout)>,
    out: &mut [F],
) {
    let (tq, tk, d, dv) = (g.tq, g.tk, g.d, g.dv);
    let (batch, head) = (bh / g.hq, bh % g.hq);
    let q = &q[bh * tq * d..(bh + 1) * tq * d];
    let probs = probabilities(g, batch, head, q, k, mask);
    // out (Tq, Dv) = probs (Tq, Tk) · v (Tk, Dv)
    product(
        tq,
        dv,
        tk,
        (&probs, tk, 1),
        (v, dv, 1),
        out,
        &mut Vec::new(),
    );
}

/// A matrix operand of [`product`]: values, row stride, column stride.
type Operand<'a, F> = (&'a [F], usize, usize);

/// `c` (m×n, row-major) = A (m×k) · B (k×n). Where the GEMM's tiles fill
/// better with n rows and m columns (a head dimension of 32 as the columns
/// leaves half of each 64-wide AVX-512 tile empty), it computes Cᵀ = Bᵀ·Aᵀ
/// into `scratch` and transposes that into `c`. Each element is the same
/// chain of products in the same order either way, so the bits agree. The
/// f64 reference path (plain loops) always computes `c` directly.
fn product<F: Float>(
    m: usize,
    n: usize,
    k: usize,
    (a, a_rs, a_cs): Operand<'_, F>,
    (b, b_rs, b_cs): Operand<'_, F>,
    c: &mut [F],
    scratch: &mut Vec<F>,
) {
    if F::TILED_GEMM && tile_fill(n, m) > 1.05 * tile_fill(m, n) {
        scratch.clear();
        scratch.resize(n * m, F::zero());
        F::gemm(n, m, k, b, b_cs, b_rs, a, a_cs, a_rs, scratch, m);
        columns_to_rows_into(scratch, m, n, c);
    } else {
        F::gemm(m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, c, n);
    }
}

/// softmax(q·kᵀ·scale + mask) (Tq, Tk) of one head, with causal and
/// window masking; `q` (Tq, D) and `k` (Tk, D) are that head's rows.
fn probabilities<F: Float>(
    g: &Geometry,
    batch: usize,
    head: usize,
    q: &[F],
    k: &[F],
    mask: Option<(&[F], &Layout)>,
) -> Vec<F> {
    let (tq, tk, d) = (g.tq, g.tk, g.d);
    // scores (Tq, Tk) = q (Tq, D) · kᵀ (D, Tk)
    let mut scores = vec![F::zero(); tq * tk];
    if tq == 1 {
        // Decoding: one dot product per key (no packing for a single row).
        for (s, key) in scores.iter_mut().zip(k.chunks_exact(d.max(1))) {
            *s = dot_lanes(q, key);
        }
    } else {
        F::gemm(tq, tk, d, q, d, 1, k, 1, d, &mut scores, tk);
    }
    scores_to_probabilities(g, batch, head, scores, mask)
}

/// Scales one head's raw scores q·kᵀ (Tq, Tk), adds the mask, hides the
/// future and keys outside the window (−∞), and takes the softmax of each
/// row.
fn scores_to_probabilities<F: Float>(
    g: &Geometry,
    batch: usize,
    head: usize,
    mut scores: Vec<F>,
    mask: Option<(&[F], &Layout)>,
) -> Vec<F> {
    let (tq, tk) = (g.tq, g.tk);
    let scale = F::of(g.scale);
    for (i, row) in scores.chunks_exact_mut(tk.max(1)).enumerate() {
        let position = tk as isize - tq as isize + i as isize;
        for (j, s) in row.iter_mut().enumerate() {
            *s = *s * scale;
            if let Some((m, layout)) = mask {
                let st = layout.strides();
                *s = *s + m[layout.offset() + batch * st[0] + head * st[1] + i * st[2] + j * st[3]];
            }
            let j = j as isize;
            let future = g.causal && j > position;
            let too_old = g.window.is_some_and(|w| j + w as isize <= position);
            if future || too_old {
                *s = F::neg_infinity();
            }
        }
    }
    softmax_rows(&scores, tk, false)
}

/// Decoding (Tq = 1) for one key/value head `kv` (batch·Hkv + head), whose
/// rows are `k` (Tk, D) and `v` (Tk, Dv), and query heads `heads` (indices
/// within its group) that share it: each key
/// and value row is read once for all of them instead of once per query
/// head. `out` is their output rows (heads, Dv). Keys and values stored
/// narrower than F are widened as they are read. Every score and output is
/// the same chain of operations as [`attend_head`] gives on the widened
/// values, so the bits agree.
#[allow(clippy::too_many_arguments)]
fn attend_group_decode<F: Float, S: Stored<F>>(
    g: &Geometry,
    kv: usize,
    heads: std::ops::Range<usize>,
    q: &[F],
    k: &[S],
    v: &[S],
    mask: Option<(&[F], &Layout)>,
    out: &mut [F],
) {
    let (tk, d, dv) = (g.tk, g.d, g.dv);
    let group = g.hq / g.hkv;
    let (batch, first_head) = (kv / g.hkv, (kv % g.hkv) * group + heads.start);
    let qg = &q[(batch * g.hq + first_head) * d..][..heads.len() * d];
    let mut scores = vec![vec![F::zero(); tk]; heads.len()];
    dispatch(GroupScores {
        queries: qg,
        keys: k,
        d,
        scores: &mut scores,
    });
    let probs: Vec<Vec<F>> = scores
        .into_iter()
        .enumerate()
        .map(|(gi, row)| scores_to_probabilities(g, batch, first_head + gi, row, mask))
        .collect();
    dispatch(GroupValues {
        probs: &probs,
        values: v,
        dv,
        out,
    });
}

/// Raw scores of a group of query rows against every key row (each key
/// read once for the whole group), compiled for this CPU's vector width.
struct GroupScores<'a, F, S> {
    /// (group, D)
    queries: &'a [F],
    /// (Tk, D)
    keys: &'a [S],
    d: usize,
    /// group rows of Tk scores
    scores: &'a mut [Vec<F>],
}

impl<F: Float, S: Stored<F>> Kernel for GroupScores<'_, F, S> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let d = self.d.max(1);
        if S::IS_COMPUTE {
            group_scores::<F, S, true>(self.queries, self.keys, d, self.scores, 0);
            return;
        }
        let (scores, queries) = (self.scores, self.queries);
        widened_blocks(self.keys, d, |first, keys: &[F]| {
            group_scores::<F, F, false>(queries, keys, d, scores, first)
        });
    }
}

/// Scores of key rows `first..` (`keys`, rows of `d`) for every query row
/// (each key read once for all of them). With `PREFETCH` (keys read from
/// the cache itself, not a widened copy in L1), each key row's lines
/// [`KV_PREFETCH_AHEAD`] bytes on are hinted into L2 as it is read.
#[inline(always)]
fn group_scores<F: Float, S: Stored<F>, const PREFETCH: bool>(
    queries: &[F],
    keys: &[S],
    d: usize,
    scores: &mut [Vec<F>],
    first: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if let (Some(queries), Some(keys), Some(scores)) =
        (as_f32(queries), as_f32(keys), as_f32_rows(scores))
        && d.is_multiple_of(8)
        && scores_x86::available()
    {
        // SAFETY: `available` checked AVX; every slice has the sizes the
        // callers give `group_scores` (d divides `keys` and each query
        // row, and each score row holds `first + keys.len() / d`).
        unsafe { scores_x86::group_scores::<PREFETCH>(queries, keys, d, scores, first) };
        return;
    }
    for (j, key) in keys.chunks_exact(d).enumerate() {
        if PREFETCH {
            prefetch_ahead(key);
        }
        for (row, q) in scores.iter_mut().zip(queries.chunks_exact(d)) {
            row[first + j] = dot_lanes(q, key);
        }
    }
}

/// Elements of narrow keys or values widened at a time by the decode
/// kernels (16 KiB of f32: the block stays in L1 while it is used).
const WIDEN_BLOCK: usize = 4096;

/// How far ahead, in bytes, decode attention hints the KV cache's rows into
/// L2. A decode step streams every layer's keys and values once, after the
/// weights have pushed them out of the caches, so they come from DRAM.
const KV_PREFETCH_AHEAD: usize = 2 * crate::cpu::PREFETCH_AHEAD;

/// Hints L2 to fetch each line of the bytes [`KV_PREFETCH_AHEAD`] on from
/// those of `rows` (contiguous rows about to be read in order). Only a
/// hint: addresses past the cache's end are never read.
#[inline(always)]
fn prefetch_ahead<S>(rows: &[S]) {
    let start = rows.as_ptr().cast::<u8>().wrapping_add(KV_PREFETCH_AHEAD);
    for line in (0..std::mem::size_of_val(rows)).step_by(64) {
        crate::cpu::prefetch_l2(start.wrapping_add(line));
    }
}

/// Calls `f(first, rows)` for blocks of rows of `src` (rows of `width`),
/// widened to `F` a block at a time; `first` is the block's first row.
/// Each block's source bytes are hinted into L2 a block ahead of its
/// widening.
#[inline(always)]
fn widened_blocks<F: Float, S: Stored<F>>(src: &[S], width: usize, mut f: impl FnMut(usize, &[F])) {
    let rows = (WIDEN_BLOCK / width).max(1);
    let mut wide = vec![F::zero(); rows * width];
    for (block, part) in src.chunks(rows * width).enumerate() {
        if let Some(next) = src.get((block + 1) * rows * width..) {
            let next = &next[..next.len().min(rows * width)];
            let start = next.as_ptr().cast::<u8>();
            for line in (0..std::mem::size_of_val(next)).step_by(64) {
                crate::cpu::prefetch_l2(start.wrapping_add(line));
            }
        }
        let wide = &mut wide[..part.len()];
        S::widen_slice(part, wide);
        f(block * rows, wide);
    }
}

/// `out[g] += Σ_j probs[g][j] · values[j]` in increasing j, each value row
/// read once for the whole group.
struct GroupValues<'a, F, S> {
    probs: &'a [Vec<F>],
    /// (Tk, Dv)
    values: &'a [S],
    dv: usize,
    /// (group, Dv)
    out: &'a mut [F],
}

impl<F: Float, S: Stored<F>> Kernel for GroupValues<'_, F, S> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let dv = self.dv.max(1);
        if S::IS_COMPUTE {
            accumulate_values::<F, S, true>(self.out, self.probs, dv, self.values, 0);
            return;
        }
        let (out, probs) = (self.out, self.probs);
        widened_blocks(self.values, dv, |first, rows: &[F]| {
            accumulate_values::<F, F, false>(out, probs, dv, rows, first)
        });
    }
}

/// `out[g] += probs[g][j] · rows[j − first]` for each query head g of the
/// group and each row j from `first`, two rows per pass over `out` (each
/// output's sums still in increasing j, so the bits are those of one row
/// at a time). `PREFETCH` as for [`group_scores`].
#[inline(always)]
fn accumulate_values<F: Float, S: Stored<F>, const PREFETCH: bool>(
    out: &mut [F],
    probs: &[Vec<F>],
    dv: usize,
    rows: &[S],
    first: usize,
) {
    let mut pairs = rows.chunks_exact(2 * dv);
    let mut j = first;
    for pair in pairs.by_ref() {
        if PREFETCH {
            prefetch_ahead(pair);
        }
        let (r0, r1) = pair.split_at(dv);
        for (o, p) in out.chunks_exact_mut(dv).zip(probs) {
            let (p0, p1) = (p[j], p[j + 1]);
            for ((o, &x0), &x1) in o.iter_mut().zip(r0).zip(r1) {
                *o = (*o + p0 * x0.widen()) + p1 * x1.widen();
            }
        }
        j += 2;
    }
    for row in pairs.remainder().chunks_exact(dv) {
        for (o, p) in out.chunks_exact_mut(dv).zip(probs) {
            let p = p[j];
            for (o, &x) in o.iter_mut().zip(row) {
                *o = *o + p * x.widen();
            }
        }
        j += 1;
    }
}

/// `Σ a[p]·b[p]` over eight lane accumulators folded pairwise (so the
/// loop vectorises), `b` widened as it is read.
#[inline(always)]
fn dot_lanes<F: Float, S: Stored<F>>(a: &[F], b: &[S]) -> F {
    let mut lanes = [F::zero(); 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let (a_tail, b_tail) = (a8.remainder(), b8.remainder());
    for (x, y) in a8.zip(b8) {
        for l in 0..8 {
            lanes[l] = lanes[l] + x[l] * y[l].widen();
        }
    }
    for (l, (&x, &y)) in a_tail.iter().zip(b_tail).enumerate() {
        lanes[l] = lanes[l] + x * y.widen();
    }
    ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6]))
        + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]))
}

/// `values` as f32 when `T` is f32.
fn as_f32<T: 'static>(values: &[T]) -> Option<&[f32]> {
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()).then(|| {
        // SAFETY: T is f32 (the same type id), so the memory is the same.
        unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<f32>(), values.len()) }
    })
}

/// `rows` as rows of f32 when `T` is f32.
fn as_f32_rows<T: 'static>(rows: &mut [Vec<T>]) -> Option<&mut [Vec<f32>]> {
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()).then(|| {
        // SAFETY: T is f32 (the same type id), so `Vec<T>` is `Vec<f32>`.
        unsafe { std::slice::from_raw_parts_mut(rows.as_mut_ptr().cast::<Vec<f32>>(), rows.len()) }
    })
}

/// The decode scores of [`group_scores`] eight keys at a time with AVX:
/// one 8-lane accumulator per key, the same multiplies and adds as
/// [`dot_lanes`] in the same order, and the eight folds done together by a
/// transposing add network that keeps each key's pairwise order
/// `((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))`, so every score has
/// the bits of `dot_lanes`'.
#[cfg(target_arch = "x86_64")]
mod scores_x86 {
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    /// Whether this CPU has AVX (checked once).
    pub(super) fn available() -> bool {
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        *AVAILABLE.get_or_init(|| std::arch::is_x86_feature_detected!("avx"))
    }

    /// Eight accumulators' folds: lane t of the result is key t's sum.
    #[inline(always)]
    unsafe fn fold8(acc: &[__m256; 8]) -> [f32; 8] {
        // SAFETY: AVX is enabled by the calling function's target features.
        unsafe {
            // Per pair of keys (A, B): [A0+A4 .. A3+A7 | B0+B4 .. B3+B7].
            let pair = |a: __m256, b: __m256| {
                _mm256_add_ps(
                    _mm256_permute2f128_ps::<0x20>(a, b),
                    _mm256_permute2f128_ps::<0x31>(a, b),
                )
            };
            let (ab, cd) = (pair(acc[0], acc[1]), pair(acc[2], acc[3]));
            let (ef, gh) = (pair(acc[4], acc[5]), pair(acc[6], acc[7]));
            // (l0+l4)+(l2+l6) and (l1+l5)+(l3+l7) per key:
            // [A, A, C, C | B, B, D, D] and likewise for E..H.
            let half = |x: __m256, y: __m256| {
                _mm256_add_ps(
                    _mm256_shuffle_ps::<0x44>(x, y),
                    _mm256_shuffle_ps::<0xEE>(x, y),
                )
            };
            let (abcd, efgh) = (half(ab, cd), half(ef, gh));
            // Their sum per key: [A, C, E, G | B, D, F, H].
            let sums = _mm256_add_ps(
                _mm256_shuffle_ps::<0x88>(abcd, efgh),
                _mm256_shuffle_ps::<0xDD>(abcd, efgh),
            );
            let mut lanes = [0.0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), sums);
            [
                lanes[0], lanes[4], lanes[1], lanes[5], lanes[2], lanes[6], lanes[3], lanes[7],
            ]
        }
    }

    /// [`super::group_scores`] for f32 queries and keys, `d` a multiple of 8.
    ///
    /// # Safety
    /// The CPU has AVX; `d % 8 == 0`, `keys.len()` is a multiple of `d`,
    /// `queries` holds `scores.len()` rows of `d`, and every score row
    /// holds at least `first + keys.len() / d` entries.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn group_scores<const PREFETCH: bool>(
        queries: &[f32],
        keys: &[f32],
        d: usize,
        scores: &mut [Vec<f32>],
        first: usize,
    ) {
        let n = keys.len() / d;
        let full = n - n % 8;
        let mut j = 0;
        while j < full {
            let block = &keys[j * d..(j + 8) * d];
            if PREFETCH {
                super::prefetch_ahead(block);
            }
            for (row, q) in scores.iter_mut().zip(queries.chunks_exact(d)) {
                // SAFETY: c + 8 <= d for every chunk, so each load stays
                // inside `q` and inside key t's row of `block`.
                let sums = unsafe {
                    let mut acc = [_mm256_setzero_ps(); 8];
                    for c in (0..d).step_by(8) {
                        let x = _mm256_loadu_ps(q.as_ptr().add(c));
                        for (t, acc) in acc.iter_mut().enumerate() {
                            let y = _mm256_loadu_ps(block.as_ptr().add(t * d + c));
                            *acc = _mm256_add_ps(*acc, _mm256_mul_ps(x, y));
                        }
                    }
                    fold8(&acc)
                };
                row[first + j..first + j + 8].copy_from_slice(&sums);
            }
            j += 8;
        }
        for (t, key) in keys[full * d..].chunks_exact(d).enumerate() {
            for (row, q) in scores.iter_mut().zip(queries.chunks_exact(d)) {
                row[first + full + t] = super::dot_lanes(q, key);
            }
        }
    }
}

/// Backward of [`attend`], one task per (batch, key/value head): the query
/// heads sharing a key/value head are stacked as one (group·Tq)-row matrix,
/// so their dK and dV add up inside one product, in a fixed order.
///
/// With P the stacked probabilities and dO the output gradient:
/// dV = Pᵀ·dO; dP = dO·Vᵀ; dS = P ⊙ (dP − rowsum(dP ⊙ P))·scale;
/// dQ = dS·K; dK = dSᵀ·Q.
fn attend_backward<F: Float>(
    g: &Geometry,
    q: &[F],
    k: &[F],
    v: &[F],
    mask: Option<(&[F], &Layout)>,
    dout: &[F],
) -> (Vec<F>, Vec<F>, Vec<F>) {
    let (tq, tk, d, dv) = (g.tq, g.tk, g.d, g.dv);
    let group = g.hq / g.hkv;
    let rows = group * tq;
    let mut dq = vec![F::zero(); g.b * g.hq * tq * d];
    let mut dk = vec![F::zero(); g.b * g.hkv * tk * d];
    let mut dvv = vec![F::zero(); g.b * g.hkv * tk * dv];
    if dq.is_empty() || dk.is_empty() || dvv.is_empty() {
        return (dq, dk, dvv);
    }
    let scale = F::of(g.scale);
    dq.par_chunks_mut(rows * d)
        .zip(dk.par_chunks_mut(tk * d).zip(dvv.par_chunks_mut(tk * dv)))
        .enumerate()
        .for_each(|(kv, (dq, (dk, dvh)))| {
            let batch = kv / g.hkv;
            let first_head = (kv % g.hkv) * group;
            let first_row = batch * g.hq + first_head;
            let kh = &k[kv * tk * d..(kv + 1) * tk * d];
            let vh = &v[kv * tk * dv..(kv + 1) * tk * dv];
            let qg = &q[first_row * tq * d..][..rows * d];
            let dog = &dout[first_row * tq * dv..][..rows * dv];
            let mut p = Vec::with_capacity(rows * tk);
            for (gi, qh) in qg.chunks_exact(tq * d).enumerate() {
                p.extend(probabilities(g, batch, first_head + gi, qh, kh, mask));
            }
            let mut scratch = Vec::new();
            // dV (Tk, Dv) = Pᵀ (Tk, group·Tq) · dO (group·Tq, Dv)
            product(tk, dv, rows, (&p, 1, tk), (dog, dv, 1), dvh, &mut scratch);
            // dP (group·Tq, Tk) = dO (group·Tq, Dv) · Vᵀ (Dv, Tk)
            let mut ds = vec![F::zero(); rows * tk];
            product(
                rows,
                tk,
                dv,
                (dog, dv, 1),
                (vh, 1, dv),
                &mut ds,
                &mut scratch,
            );
            for (prow, dprow) in p.chunks(tk).zip(ds.chunks_mut(tk)) {
                let dot = prow
                    .iter()
                    .zip(dprow.iter())
                    .map(|(&a, &b)| a * b)
                    .sum::<F>();
                for (ds, &pv) in dprow.iter_mut().zip(prow) {
                    *ds = if pv == F::zero() {
                        F::zero()
                    } else {
                        pv * (*ds - dot) * scale
                    };
                }
            }
            // dQ (group·Tq, D) = dS (group·Tq, Tk) · K (Tk, D)
            product(rows, d, tk, (&ds, tk, 1), (kh, d, 1), dq, &mut scratch);
            // dK (Tk, D) = dSᵀ (Tk, group·Tq) · Q (group·Tq, D)
            product(tk, d, rows, (&ds, 1, tk), (qg, d, 1), dk, &mut scratch);
        });
    (dq, dk, dvv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        (0..n as u64)
            .map(|i| {
                let x = (i.wrapping_add(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f32;
                x / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    proptest! {
        /// The AVX scores, eight keys at a time, have the bits of
        /// `dot_lanes` for every key (the tail past a multiple of eight
        /// included), query row and starting offset.
        #[cfg(target_arch = "x86_64")]
        #[test]
        fn avx_scores_equal_dot_lanes(
            chunks in 1usize..17,
            tk in 0usize..30,
            heads in 1usize..4,
            first in 0usize..5,
            seed in any::<u64>(),
        ) {
            if !scores_x86::available() {
                eprintln!("SKIPPED: the AVX decode scores (this CPU has no AVX)");
                return Ok(());
            }
            let d = 8 * chunks;
            let keys = values(tk * d, seed);
            let queries = values(heads * d, seed ^ 5);
            let mut got = vec![vec![f32::NAN; first + tk]; heads];
            // SAFETY: AVX is present; d is a multiple of 8, the keys hold tk
            // rows of d, the queries `heads` rows, each score row first + tk.
            unsafe { scores_x86::group_scores::<true>(&queries, &keys, d, &mut got, first) };
            for (h, row) in got.iter().enumerate() {
                for (j, key) in keys.chunks_exact(d).enumerate() {
                    let want = dot_lanes(&queries[h * d..][..d], key);
                    prop_assert_eq!(row[first + j].to_bits(), want.to_bits(), "head {} key {}", h, j);
                }
            }
        }

        /// Two value rows per pass give the sums of one row at a time.
        #[test]
        fn two_rows_per_pass_equal_one_at_a_time(
            dv in 1usize..70,
            tk in 1usize..9,
            heads in 1usize..4,
            seed in any::<u64>(),
        ) {
            let rows = values(tk * dv, seed);
            let probs: Vec<Vec<f32>> = (0..heads).map(|h| values(tk, seed ^ (h as u64 + 7))).collect();
            let mut out = values(heads * dv, seed ^ 99);
            let mut reference = out.clone();
            accumulate_values::<f32, f32, true>(&mut out, &probs, dv, &rows, 0);
            for (j, row) in rows.chunks_exact(dv).enumerate() {
                for (o, p) in reference.chunks_exact_mut(dv).zip(&probs) {
                    for (o, &x) in o.iter_mut().zip(row) {
                        *o += p[j] * x;
                    }
                }
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&out), bits(&reference));
        }
    }
}
