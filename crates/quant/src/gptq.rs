//! Round-to-nearest and GPTQ (Frantar et al., 2022) for one linear layer.
//!
//! Both produce [`IntWeights`]: unsigned codes `q ∈ [0, 2^bits)` with a scale
//! and an integer zero point per (row, group), `w ≈ scale·(q − zero)`, the
//! quantizer of GPTQ's reference code (min/max including 0; symmetric takes
//! `max(|min|, max)` and the zero point `(maxq + 1) / 2`; all-zero groups get
//! the range [−1, 1]; rounding half to even).
//!
//! [`gptq`] follows the reference algorithm step by step, in f64 (the
//! reference runs in f32): dead inputs (`H_jj = 0`) are zeroed; act-order
//! visits columns by decreasing `H_jj`; `H` is damped by a fraction of its
//! mean diagonal (multiplied by ten, up to 1, while the factorisation
//! fails); `U` with `Uᵀ·U = H⁻¹` drives the error feedback; columns are
//! processed in lazy blocks (128): each column is quantized, its error
//! divided by `U_ii` updates the block's later columns, and after the block
//! the accumulated errors update every later column with one matrix product.
//! `tests/gptq.rs` checks codes and scales against a NumPy transcription
//! (`fixtures/quant/gptq/`).
//!
//! Layout: the weight is (rows = out features, cols = in features),
//! row-major, like `nn.Linear.weight`; internally the algorithm works on its
//! transpose so that a column is contiguous.

use rayon::prelude::*;

use crate::linalg::inverse_upper_factor;
use crate::{QuantError, Result};

/// How to quantize a layer.
#[derive(Clone, Debug, PartialEq)]
pub struct GptqSettings {
    /// Bits per weight: 4 or 8.
    pub bits: u8,
    /// Columns per group; `None` for one group per row (per channel).
    pub group_size: Option<usize>,
    /// Symmetric (zero point fixed at `2^(bits−1)`) or asymmetric.
    pub sym: bool,
    /// GPTQ: visit columns by decreasing Hessian diagonal (`desc_act`).
    pub act_order: bool,
    /// GPTQ: compute every group's scale and zero from the original weight
    /// before any error feedback.
    pub static_groups: bool,
    /// GPTQ: damping, a fraction of the mean of H's diagonal (0.01).
    pub damp_percent: f64,
    /// GPTQ: columns per lazy batch update (128).
    pub block_size: usize,
}

impl Default for GptqSettings {
    fn default() -> Self {
        Self {
            bits: 4,
            group_size: Some(128),
            sym: true,
            act_order: false,
            static_groups: false,
            damp_percent: 0.01,
            block_size: 128,
        }
    }
}

impl GptqSettings {
    /// The largest code, `2^bits − 1`.
    pub fn maxq(&self) -> u32 {
        (1u32 << self.bits) - 1
    }

    /// The group size for a layer of `cols` columns.
    pub fn group_for(&self, cols: usize) -> usize {
        self.group_size.unwrap_or(cols)
    }

    /// Refuses settings and shapes this layer cannot be quantized with.
    pub fn check(&self, layer: &str, rows: usize, cols: usize) -> Result<()> {
        if self.bits != 4 && self.bits != 8 {
            return Err(QuantError::invalid(
                "bits",
                format!("{} (supported: 4, 8)", self.bits),
            ));
        }
        if rows == 0 || cols == 0 {
            return Err(QuantError::invalid(
                layer,
                format!("empty weight ({rows} × {cols})"),
            ));
        }
        let group = self.group_for(cols);
        if group == 0 {
            return Err(QuantError::invalid("group_size", "must be at least 1"));
        }
        if self.block_size == 0 {
            return Err(QuantError::invalid("block_size", "must be at least 1"));
        }
        if !(self.damp_percent.is_finite() && self.damp_percent >= 0.0 && self.damp_percent <= 1.0)
        {
            return Err(QuantError::invalid(
                "damp_percent",
                format!("{} is not in [0, 1]", self.damp_percent),
            ));
        }
        Ok(())
    }
}

/// A layer quantized to integers: `w[r][c] ≈ scales[r][g]·(codes[r][c] −
/// zeros[r][g])` with `g = g_idx[c]`.
#[derive(Clone, Debug, PartialEq)]
pub struct IntWeights {
    /// 4 or 8.
    pub bits: u8,
    /// Columns per group (`cols` for per-channel).
    pub group_size: usize,
    /// Whether the zero points are the fixed symmetric ones.
    pub sym: bool,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// rows × cols codes in the layer's own column order.
    pub codes: Vec<u8>,
    /// rows × groups scales.
    pub scales: Vec<f64>,
    /// rows × groups zero points (whole numbers in [0, maxq]).
    pub zeros: Vec<f64>,
    /// The group of each input column (not monotone under act-order).
    pub g_idx: Vec<u32>,
}

impl IntWeights {
    /// Number of groups per row: `ceil(cols / group_size)` (when the group
    /// size does not divide the columns the last group is shorter, as in
    /// GPTQ's reference and the HF layout).
    pub fn groups(&self) -> usize {
        self.cols.div_ceil(self.group_size)
    }

    /// The quantized weight, rows × cols.
    pub fn dequantize(&self) -> Vec<f64> {
        let groups = self.groups();
        let mut out = vec![0.0; self.rows * self.cols];
        for r in 0..self.rows {
            for c in 0..self.cols {
                let g = self.g_idx[c] as usize;
                let s = self.scales[r * groups + g];
                let z = self.zeros[r * groups + g];
                out[r * self.cols + c] = s * (f64::from(self.codes[r * self.cols + c]) - z);
            }
        }
        out
    }
}

/// What [`gptq`] reports besides the weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GptqStats {
    /// The reference's loss: Σ (w − ŵ)² / U_ii² / 2.
    pub loss: f64,
    /// The damping that succeeded (fraction of the mean diagonal).
    pub damp: f64,
}

/// Scale and zero of each row of the `(width, rows)` column block `cols`
/// (row-major by column), as the reference's `find_params`.
fn find_params(columns: &[f64], rows: usize, settings: &GptqSettings) -> (Vec<f64>, Vec<f64>) {
    let maxq = f64::from(settings.maxq());
    let mut xmin = vec![0.0f64; rows];
    let mut xmax = vec![0.0f64; rows];
    for column in columns.chunks_exact(rows) {
        for ((lo, hi), &w) in xmin.iter_mut().zip(&mut xmax).zip(column) {
            *lo = lo.min(w);
            *hi = hi.max(w);
        }
    }
    let mut scale = vec![0.0; rows];
    let mut zero = vec![0.0; rows];
    for r in 0..rows {
        let (mut lo, mut hi) = (xmin[r], xmax[r]);
        if settings.sym {
            hi = lo.abs().max(hi);
            if lo < 0.0 {
                lo = -hi;
            }
        }
        if lo == 0.0 && hi == 0.0 {
            lo = -1.0;
            hi = 1.0;
        }
        scale[r] = (hi - lo) / maxq;
        zero[r] = if settings.sym {
            (maxq + 1.0) / 2.0
        } else {
            (-lo / scale[r]).round_ties_even()
        };
    }
    (scale, zero)
}

/// `clamp(round(w / scale) + zero, 0, maxq)`.
fn code(w: f64, scale: f64, zero: f64, maxq: f64) -> f64 {
    ((w / scale).round_ties_even() + zero).clamp(0.0, maxq)
}

fn check_weight(layer: &str, weight: &[f64], rows: usize, cols: usize) -> Result<()> {
    if weight.len() != rows * cols {
        return Err(QuantError::invalid(
            layer,
            format!("{} weight values for a {rows} × {cols} layer", weight.len()),
        ));
    }
    if let Some(i) = weight.iter().position(|w| !w.is_finite()) {
        return Err(QuantError::invalid(
            layer,
            format!(
                "weight [{}, {}] is {} (NaN/Inf weights cannot be quantized)",
                i / cols,
                i % cols,
                weight[i]
            ),
        ));
    }
    Ok(())
}

fn transpose(weight: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut t = vec![0.0; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = weight[r * cols + c];
        }
    }
    t
}

/// Round-to-nearest: every group's scale and zero from its own weights, no
/// error feedback (GPTQ paper's RTN baseline).
///
/// ```
/// use kaiyuan_quant::gptq::{rtn, GptqSettings};
/// let s = GptqSettings { bits: 4, group_size: None, sym: false, ..GptqSettings::default() };
/// let q = rtn("demo", &[0.0, 0.5, 1.0, 1.5], 1, 4, &s).unwrap();
/// assert_eq!(q.codes, vec![0, 5, 10, 15]);
/// assert_eq!(q.dequantize(), vec![0.0, 0.5, 1.0, 1.5]);
/// ```
pub fn rtn(
    layer: &str,
    weight: &[f64],
    rows: usize,
    cols: usize,
    settings: &GptqSettings,
) -> Result<IntWeights> {
    settings.check(layer, rows, cols)?;
    check_weight(layer, weight, rows, cols)?;
    let group = settings.group_for(cols);
    let groups = cols.div_ceil(group);
    let maxq = f64::from(settings.maxq());
    let wt = transpose(weight, rows, cols);
    let mut codes = vec![0u8; rows * cols];
    let mut scales = vec![0.0; rows * groups];
    let mut zeros = vec![0.0; rows * groups];
    for g in 0..groups {
        let block = &wt[g * group * rows..((g + 1) * group).min(cols) * rows];
        let (scale, zero) = find_params(block, rows, settings);
        for r in 0..rows {
            scales[r * groups + g] = scale[r];
            zeros[r * groups + g] = zero[r];
        }
        for (k, column) in block.chunks_exact(rows).enumerate() {
            let c = g * group + k;
            for r in 0..rows {
                codes[r * cols + c] = code(column[r], scale[r], zero[r], maxq) as u8;
            }
        }
    }
    Ok(IntWeights {
        bits: settings.bits,
        group_size: group,
        sym: settings.sym,
        rows,
        cols,
        codes,
        scales,
        zeros,
        g_idx: (0..cols).map(|c| (c / group) as u32).collect(),
    })
}

/// GPTQ of one layer: `weight` (rows × cols) and its Hessian `hessian`
/// (cols × cols, `2/n·XᵀX` of the layer's inputs X).
///
/// Errors: bad settings or shapes, NaN/Inf weights or Hessian entries, and
/// a Hessian that stays indefinite at damping 1.
pub fn gptq(
    layer: &str,
    weight: &[f64],
    rows: usize,
    cols: usize,
    hessian: &[f64],
    settings: &GptqSettings,
) -> Result<(IntWeights, GptqStats)> {
    settings.check(layer, rows, cols)?;
    check_weight(layer, weight, rows, cols)?;
    if hessian.len() != cols * cols {
        return Err(QuantError::invalid(
            layer,
            format!(
                "Hessian has {} values; a layer with {cols} inputs needs {cols} × {cols}",
                hessian.len()
            ),
        ));
    }
    if hessian.iter().any(|h| !h.is_finite()) {
        return Err(QuantError::invalid(
            layer,
            "the Hessian has NaN/Inf entries (the calibration activations overflowed)",
        ));
    }
    let group = settings.group_for(cols);
    let groups = cols.div_ceil(group);
    let maxq = f64::from(settings.maxq());
    let mut h = hessian.to_vec();
    // W transposed: column c of W is wt[c*rows..(c+1)*rows].
    let mut wt = transpose(weight, rows, cols);
    for c in 0..cols {
        if h[c * cols + c] == 0.0 {
            h[c * cols + c] = 1.0;
            wt[c * rows..(c + 1) * rows].fill(0.0);
        }
    }
    let static_params: Vec<(Vec<f64>, Vec<f64>)> = if settings.static_groups {
        (0..groups)
            .map(|g| {
                let end = ((g + 1) * group).min(cols);
                find_params(&wt[g * group * rows..end * rows], rows, settings)
            })
            .collect()
    } else {
        Vec::new()
    };
    let perm: Vec<usize> = if settings.act_order {
        let mut p: Vec<usize> = (0..cols).collect();
        // Stable: equal diagonals keep their order.
        p.sort_by(|&a, &b| h[b * cols + b].total_cmp(&h[a * cols + a]));
        p
    } else {
        (0..cols).collect()
    };
    if settings.act_order {
        let mut permuted_wt = vec![0.0; rows * cols];
        for (k, &c) in perm.iter().enumerate() {
            permuted_wt[k * rows..(k + 1) * rows].copy_from_slice(&wt[c * rows..(c + 1) * rows]);
        }
        wt = permuted_wt;
        let mut permuted_h = vec![0.0; cols * cols];
        for (i, &pi) in perm.iter().enumerate() {
            for (j, &pj) in perm.iter().enumerate() {
                permuted_h[i * cols + j] = h[pi * cols + pj];
            }
        }
        h = permuted_h;
    }
    let mean_diag = (0..cols).map(|c| h[c * cols + c]).sum::<f64>() / cols as f64;
    let mut damp = settings.damp_percent;
    let hinv = loop {
        let mut damped = h.clone();
        for c in 0..cols {
            damped[c * cols + c] += damp * mean_diag;
        }
        match inverse_upper_factor(&damped, cols) {
            Ok(u) => break u,
            Err(e) if damp >= 1.0 => {
                return Err(QuantError::NotPositiveDefinite {
                    layer: layer.to_string(),
                    damp,
                    pivot: e.pivot,
                    value: e.value,
                });
            }
            Err(_) => damp = (damp.max(1e-4) * 10.0).min(1.0),
        }
    };

    // Codes in visiting order (k-th visited column at k).
    let mut codes_perm = vec![0u8; rows * cols];
    let mut scales = vec![0.0; rows * groups];
    let mut zeros = vec![0.0; rows * groups];
    let mut loss = 0.0f64;
    let mut scale = vec![1.0; rows];
    let mut zero = vec![0.0; rows];
    let mut i1 = 0;
    while i1 < cols {
        let i2 = (i1 + settings.block_size).min(cols);
        let count = i2 - i1;
        let mut w1 = wt[i1 * rows..i2 * rows].to_vec();
        let mut err1 = vec![0.0f64; count * rows];
        for i in 0..count {
            let col = i1 + i;
            if settings.static_groups {
                let g = perm[col] / group;
                scale.clone_from(&static_params[g].0);
                zero.clone_from(&static_params[g].1);
            } else if col % group == 0 {
                let end = (col + group).min(cols);
                (scale, zero) = find_params(&wt[col * rows..end * rows], rows, settings);
                let g = col / group;
                for r in 0..rows {
                    scales[r * groups + g] = scale[r];
                    zeros[r * groups + g] = zero[r];
                }
            }
            let d = hinv[col * cols + col];
            let (done, rest) = w1.split_at_mut((i + 1) * rows);
            let w = &done[i * rows..];
            let e = &mut err1[i * rows..(i + 1) * rows];
            for r in 0..rows {
                let q = code(w[r], scale[r], zero[r], maxq);
                codes_perm[r * cols + col] = q as u8;
                let dq = scale[r] * (q - zero[r]);
                let diff = w[r] - dq;
                loss += diff * diff / (d * d) / 2.0;
                e[r] = diff / d;
            }
            // W1[:, i:] −= err ⊗ Hinv1[i, i:] (column i itself is done).
            let hrow = &hinv[col * cols + col + 1..col * cols + i2];
            for (later, &hv) in rest.chunks_exact_mut(rows).zip(hrow) {
                for (x, &ev) in later.iter_mut().zip(e.iter()) {
                    *x -= ev * hv;
                }
            }
        }
        // W[:, i2:] −= Err1 · Hinv[i1:i2, i2:], in the transposed layout:
        // wt[i2.., :] −= Hinv[i1:i2, i2:]ᵀ · err1.
        if i2 < cols {
            let tail = &mut wt[i2 * rows..];
            tail.par_chunks_mut(64 * rows)
                .enumerate()
                .for_each(|(chunk, out)| {
                    let first = i2 + chunk * 64;
                    let m = out.len() / rows;
                    // SAFETY: a: element (p, q) at hinv[(i1+q)*cols + first+p]
                    // for p < m, q < count, inside `hinv` (i1+count ≤ cols,
                    // first+m ≤ cols); b: err1 is count × rows; c: `out` is
                    // m × rows, exclusively borrowed. Strides are in elements.
                    unsafe {
                        matrixmultiply::dgemm(
                            m,
                            count,
                            rows,
                            -1.0,
                            hinv.as_ptr().add(i1 * cols + first),
                            1,
                            cols as isize,
                            err1.as_ptr(),
                            rows as isize,
                            1,
                            1.0,
                            out.as_mut_ptr(),
                            rows as isize,
                            1,
                        );
                    }
                });
        }
        i1 = i2;
    }

    // Back to the layer's column order.
    let mut codes = vec![0u8; rows * cols];
    let mut g_idx = vec![0u32; cols];
    for (k, &c) in perm.iter().enumerate() {
        for r in 0..rows {
            codes[r * cols + c] = codes_perm[r * cols + k];
        }
        g_idx[c] = if settings.static_groups {
            (c / group) as u32
        } else {
            (k / group) as u32
        };
    }
    if settings.static_groups {
        for (g, (scale, zero)) in static_params.iter().enumerate() {
            for r in 0..rows {
                scales[r * groups + g] = scale[r];
                zeros[r * groups + g] = zero[r];
            }
        }
    }
    Ok((
        IntWeights {
            bits: settings.bits,
            group_size: group,
            sym: settings.sym,
            rows,
            cols,
            codes,
            scales,
            zeros,
            g_idx,
        },
        GptqStats { loss, damp },
    ))
}
