//! Rotary position embeddings (RoPE).

use std::mem::MaybeUninit;
use std::sync::Arc;

use rayon::prelude::*;

use crate::cpu::float::Float;
use crate::cpu::simd::{Kernel, dispatch};
use crate::cpu::{PARALLEL_MIN_ELEMS, rows_per_task, uninit_vec};
use crate::tensor::{FloatValues, FloatVec};
use crate::{Result, Tensor, TensorError};

/// Which pairs of a head's features rotate together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotaryLayout {
    /// Feature `i` pairs with `i + rotary_dim/2` (GPT-NeoX, LLaMA and Qwen in HF transformers).
    HalfSplit,
    /// Feature `2i` pairs with `2i + 1` (GPT-J, GLM, llama.cpp's "normal" mode).
    Interleaved,
}

/// Rotary embedding of the first `rotary_dim` features of each head.
///
/// Pair `k` (of `rotary_dim/2`) at position `p` turns by `p · inv_freq[k]`.
/// Angles are formed in the tensor's compute type (f32 for f32/f16/bf16,
/// as HF transformers does; f64 for f64); features past `rotary_dim` pass
/// through unchanged (partial rotary).
///
/// ```
/// use kaiyuan_tensor::{RotaryEmbedding, RotaryLayout, Tensor};
/// let rope = RotaryEmbedding::new(4, 10_000.0, RotaryLayout::HalfSplit).unwrap();
/// // (B, H, T, D) = (1, 1, 2, 4): position 0 is unchanged.
/// let x = Tensor::from_vec(vec![1.0f32; 8], &[1, 1, 2, 4]).unwrap();
/// let y = rope.apply(&x, 0).unwrap().to_vec::<f32>().unwrap();
/// assert_eq!(&y[..4], &[1.0, 1.0, 1.0, 1.0]);
/// ```
#[derive(Debug)]
pub struct RotaryEmbedding {
    inv_freq: Vec<f64>,
    rotary_dim: usize,
    layout: RotaryLayout,
    /// f32 cos/sin rows for positions `0..n`, grown on demand and shared by
    /// every call (HF's `cos_cached`), so long prompts and every layer of a
    /// model reuse one table.
    f32_table: std::sync::RwLock<Arc<AngleTable<f32>>>,
}

/// cos and sin of `position · inv_freq[k]`, row-major (position, k).
#[derive(Debug, Default)]
struct AngleTable<R> {
    cos: Vec<R>,
    sin: Vec<R>,
    positions: usize,
}

impl Clone for RotaryEmbedding {
    fn clone(&self) -> Self {
        Self {
            inv_freq: self.inv_freq.clone(),
            rotary_dim: self.rotary_dim,
            layout: self.layout,
            f32_table: std::sync::RwLock::new(self.shared_f32_table()),
        }
    }
}

impl RotaryEmbedding {
    /// The standard frequencies `inv_freq[k] = base^(−2k/rotary_dim)`,
    /// computed in f32 as HF transformers does.
    pub fn new(rotary_dim: usize, base: f64, layout: RotaryLayout) -> Result<Self> {
        if !(base.is_finite() && base > 0.0) {
            return Err(TensorError::invalid(
                "rotary",
                format!("base must be positive and finite, got {base}"),
            ));
        }
        let inv_freq = (0..rotary_dim / 2)
            .map(|k| 1.0f32 / (base as f32).powf((2 * k) as f32 / rotary_dim as f32))
            .map(f64::from)
            .collect();
        Self::from_inv_freq(inv_freq, rotary_dim, layout)
    }

    /// Explicit frequencies (for rope scaling schemes), one per pair:
    /// `inv_freq.len()` must be `rotary_dim / 2` and `rotary_dim` even and non-zero.
    pub fn from_inv_freq(
        inv_freq: Vec<f64>,
        rotary_dim: usize,
        layout: RotaryLayout,
    ) -> Result<Self> {
        if rotary_dim == 0 || !rotary_dim.is_multiple_of(2) || inv_freq.len() != rotary_dim / 2 {
            return Err(TensorError::invalid(
                "rotary",
                format!(
                    "rotary_dim must be even and non-zero with rotary_dim/2 frequencies; got rotary_dim {rotary_dim} and {} frequencies",
                    inv_freq.len()
                ),
            ));
        }
        Ok(Self {
            inv_freq,
            rotary_dim,
            layout,
            f32_table: std::sync::RwLock::new(Arc::new(AngleTable::default())),
        })
    }

    fn shared_f32_table(&self) -> Arc<AngleTable<f32>> {
        match self.f32_table.read() {
            Ok(t) => Arc::clone(&t),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The f32 table covering positions `0..needed`, grown (doubling) when short.
    fn f32_table_for(&self, needed: usize) -> Arc<AngleTable<f32>> {
        let current = self.shared_f32_table();
        if current.positions >= needed {
            return current;
        }
        let positions = needed.max(2 * current.positions).max(64);
        let all: Vec<usize> = (0..positions).collect();
        let (cos, sin) = angle_table::<f32>(&self.inv_freq, &all);
        let table = Arc::new(AngleTable {
            cos,
            sin,
            positions,
        });
        let mut slot = match self.f32_table.write() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        if slot.positions < table.positions {
            *slot = Arc::clone(&table);
        }
        table
    }

    /// Number of rotated features per head.
    pub fn rotary_dim(&self) -> usize {
        self.rotary_dim
    }

    /// The frequencies, one per rotated pair.
    pub fn inv_freq(&self) -> &[f64] {
        &self.inv_freq
    }

    /// Rotates `x` of shape (…, T, D), D ≥ rotary_dim — usually (B, H, T, D) —
    /// with positions `offset..offset + T` along the T axis.
    pub fn apply(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let t = self.check("rotary", x)?.0;
        let positions: Vec<usize> = (offset..offset + t).collect();
        self.apply_at(x, &positions)
    }

    /// Rotates `x` of shape (…, T, D) with an explicit position per step of
    /// the T axis (`positions.len() == T`).
    pub fn apply_at(&self, x: &Tensor, positions: &[usize]) -> Result<Tensor> {
        let out = self.rotate_at(x, positions, false)?;
        if !crate::autograd::tracking(&[x]) {
            return Ok(out);
        }
        // The rotation is orthogonal: its transpose rotates by −angle.
        let (rope, positions) = (self.clone(), positions.to_vec());
        Ok(out.record("rotary", &[x], move || {
            move |g: &Tensor, _: &[Tensor]| Ok(vec![Some(rope.rotate_at(g, &positions, true)?)])
        }))
    }

    /// Rotates by the angles of `positions`, or by their negatives when `inverse`.
    fn rotate_at(&self, x: &Tensor, positions: &[usize], inverse: bool) -> Result<Tensor> {
        const OP: &str = "rotary";
        let (t, d) = self.check(OP, x)?;
        if positions.len() != t {
            return Err(TensorError::invalid(
                OP,
                format!(
                    "{} positions given for T = {t} (shape {:?})",
                    positions.len(),
                    x.shape()
                ),
            ));
        }
        let interleaved = self.layout == RotaryLayout::Interleaved;
        if let Some(out) = crate::gpu::rotary(
            x,
            &self.inv_freq,
            positions,
            self.rotary_dim,
            interleaved,
            inverse,
        )? {
            return Ok(out);
        }
        let half = self.rotary_dim / 2;
        let layout = self.layout;
        let out = match x.float_values(OP)? {
            FloatValues::F32(v) => {
                // Rows of the shared table for these positions.
                let needed = positions.iter().max().map_or(0, |&p| p + 1);
                let table = self.f32_table_for(needed);
                let rows = |src: &[f32]| -> Vec<f32> {
                    let mut out = Vec::with_capacity(t * half);
                    for &p in positions {
                        out.extend_from_slice(&src[p * half..(p + 1) * half]);
                    }
                    out
                };
                let (cos, mut sin) = (rows(&table.cos), rows(&table.sin));
                if inverse {
                    sin.iter_mut().for_each(|s| *s = -*s);
                }
                let fill =
                    |out: &mut [MaybeUninit<f32>]| rotate(&v, out, &cos, &sin, t, d, half, layout);
                // SAFETY: `rotate` writes every feature of every row, and `v`
                // is a whole number of rows of `d` features.
                FloatVec::F32(unsafe { uninit_vec(v.len(), fill) })
            }
            FloatValues::F64(v) => {
                let (cos, mut sin) = angle_table::<f64>(&self.inv_freq, positions);
                if inverse {
                    sin.iter_mut().for_each(|s| *s = -*s);
                }
                let fill =
                    |out: &mut [MaybeUninit<f64>]| rotate(&v, out, &cos, &sin, t, d, half, layout);
                // SAFETY: as above.
                FloatVec::F64(unsafe { uninit_vec(v.len(), fill) })
            }
        };
        Ok(Tensor::from_float_vec(out, x.shape(), x.dtype()))
    }

    fn check(&self, op: &'static str, x: &Tensor) -> Result<(usize, usize)> {
        let shape = x.shape();
        if shape.len() < 2 {
            return Err(TensorError::Rank {
                op,
                expected: "rank ≥ 2 (…, T, D)",
                shape: shape.to_vec(),
            });
        }
        let (t, d) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        if d < self.rotary_dim {
            return Err(TensorError::invalid(
                op,
                format!(
                    "head dim {d} is smaller than rotary_dim {} (shape {shape:?})",
                    self.rotary_dim
                ),
            ));
        }
        Ok((t, d))
    }
}

/// cos and sin of `p · inv_freq[k]` for each position, angles formed in the
/// compute type `R` (as HF does in f32); built in parallel for long tables.
fn angle_table<R: Float>(inv_freq: &[f64], positions: &[usize]) -> (Vec<R>, Vec<R>) {
    let half = inv_freq.len();
    let mut cos = vec![R::of(0.0); positions.len() * half];
    let mut sin = vec![R::of(0.0); positions.len() * half];
    if half == 0 {
        return (cos, sin);
    }
    let fill = |(p, (cos, sin)): (&usize, (&mut [R], &mut [R]))| {
        for ((c, s), &f) in cos.iter_mut().zip(sin.iter_mut()).zip(inv_freq) {
            let angle = R::of(*p as f64) * R::of(f);
            (*s, *c) = angle.sin_cos();
        }
    };
    if positions.len() * half >= 4096 {
        positions
            .par_iter()
            .zip(cos.par_chunks_mut(half).zip(sin.par_chunks_mut(half)))
            .with_min_len(16)
            .for_each(fill);
    } else {
        positions
            .iter()
            .zip(cos.chunks_mut(half).zip(sin.chunks_mut(half)))
            .for_each(fill);
    }
    (cos, sin)
}

/// Rotates rows of `d` features from `src` into `data`; row `r` is at step `r % t`.
#[allow(clippy::too_many_arguments)]
fn rotate<F: Float>(
    src: &[F],
    data: &mut [MaybeUninit<F>],
    cos: &[F],
    sin: &[F],
    t: usize,
    d: usize,
    half: usize,
    layout: RotaryLayout,
) {
    if data.is_empty() {
        return;
    }
    struct Rows<'a, F> {
        src: &'a [F],
        data: &'a mut [MaybeUninit<F>],
        first_row: usize,
        cos: &'a [F],
        sin: &'a [F],
        t: usize,
        d: usize,
        half: usize,
        layout: RotaryLayout,
    }
    impl<F: Float> Kernel for Rows<'_, F> {
        type Output = ();
        #[inline(always)]
        fn run(self) {
            let half = self.half;
            let rows = self
                .data
                .chunks_exact_mut(self.d)
                .zip(self.src.chunks_exact(self.d));
            for (i, (row, x)) in rows.enumerate() {
                for (o, &v) in row[2 * half..].iter_mut().zip(&x[2 * half..]) {
                    o.write(v);
                }
                let step = (self.first_row + i) % self.t;
                let c = &self.cos[step * half..(step + 1) * half];
                let s = &self.sin[step * half..(step + 1) * half];
                match self.layout {
                    RotaryLayout::HalfSplit => {
                        let (lo, rest) = row.split_at_mut(half);
                        let hi = &mut rest[..half];
                        let (x_lo, x_hi) = x[..2 * half].split_at(half);
                        let pairs = lo.iter_mut().zip(hi.iter_mut()).zip(x_lo.iter().zip(x_hi));
                        for (((lo, hi), (&a, &b)), (&c, &s)) in pairs.zip(c.iter().zip(s)) {
                            lo.write(a * c - b * s);
                            hi.write(b * c + a * s);
                        }
                    }
                    RotaryLayout::Interleaved => {
                        let pairs = row[..2 * half]
                            .chunks_exact_mut(2)
                            .zip(x[..2 * half].chunks_exact(2));
                        for (k, (pair, xp)) in pairs.enumerate() {
                            let (a, b) = (xp[0], xp[1]);
                            pair[0].write(a * c[k] - b * s[k]);
                            pair[1].write(b * c[k] + a * s[k]);
                        }
                    }
                }
            }
        }
    }
    let task_rows = rows_per_task(d);
    if data.len() >= PARALLEL_MIN_ELEMS {
        data.par_chunks_mut(task_rows * d)
            .zip(src.par_chunks(task_rows * d))
            .enumerate()
            .for_each(|(k, (chunk, src))| {
                dispatch(Rows {
                    src,
                    data: chunk,
                    first_row: k * task_rows,
                    cos,
                    sin,
                    t,
                    d,
                    half,
                    layout,
                })
            });
    } else {
        dispatch(Rows {
            src,
            data,
            first_row: 0,
            cos,
            sin,
            t,
            d,
            half,
            layout,
        });
    }
}
