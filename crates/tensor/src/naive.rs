//! Naive reference implementations of every op, in f64.
//!
//! Slow on purpose: each op is written from its mathematical definition with
//! explicit multi-index loops, and shares no code with the fast paths (not
//! even shape helpers or elementary functions), so the property tests that
//! compare the two check something. Shapes are row-major; no strides.
//!
//! ```
//! use kaiyuan_tensor::naive::NaiveTensor;
//! let x = NaiveTensor::new(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]);
//! assert_eq!(x.matmul(&x).data, vec![7.0, 10.0, 15.0, 22.0]);
//! ```

/// A dense row-major array of f64 with its shape.
#[derive(Clone, Debug, PartialEq)]
pub struct NaiveTensor {
    /// The dimensions.
    pub shape: Vec<usize>,
    /// The elements in row-major order.
    pub data: Vec<f64>,
}

/// Every multi-index of `shape` in row-major order.
fn all_indices(shape: &[usize]) -> Vec<Vec<usize>> {
    let mut out = vec![vec![]];
    for &dim in shape {
        let mut next = Vec::new();
        for prefix in &out {
            for i in 0..dim {
                let mut idx = prefix.clone();
                idx.push(i);
                next.push(idx);
            }
        }
        out = next;
    }
    out
}

/// Row-major position of `index` in `shape`.
fn position(shape: &[usize], index: &[usize]) -> usize {
    let mut pos = 0;
    for (d, i) in shape.iter().zip(index) {
        pos = pos * d + i;
    }
    pos
}

/// erf by Simpson's rule on 2/√π ∫₀ˣ e^(−t²) dt (error < 1e-12 for |x| ≤ 6).
fn erf_by_quadrature(x: f64) -> f64 {
    if x.abs() > 6.0 {
        return x.signum();
    }
    let steps = 2000;
    let h = x / steps as f64;
    let f = |t: f64| (-t * t).exp();
    let mut sum = f(0.0) + f(x);
    for i in 1..steps {
        let weight = if i % 2 == 1 { 4.0 } else { 2.0 };
        sum += weight * f(i as f64 * h);
    }
    sum * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
}

/// Which features pair up in [`NaiveTensor::rotary`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NaivePairing {
    /// `i` with `i + rotary_dim/2`.
    HalfSplit,
    /// `2i` with `2i + 1`.
    Interleaved,
}

impl NaiveTensor {
    /// Wraps data; `data.len()` must equal the product of `shape`.
    pub fn new(shape: Vec<usize>, data: Vec<f64>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "naive tensor: data does not fit shape"
        );
        Self { shape, data }
    }

    /// The element at a multi-index.
    pub fn at(&self, index: &[usize]) -> f64 {
        self.data[position(&self.shape, index)]
    }

    /// Same data, new shape.
    pub fn reshape(&self, shape: Vec<usize>) -> Self {
        Self::new(shape, self.data.clone())
    }

    /// Axis `k` of the result is axis `order[k]` of `self`.
    pub fn permute(&self, order: &[usize]) -> Self {
        let shape: Vec<usize> = order.iter().map(|&a| self.shape[a]).collect();
        let data = all_indices(&shape)
            .iter()
            .map(|out_idx| {
                let mut src = vec![0; self.shape.len()];
                for (k, &a) in order.iter().enumerate() {
                    src[a] = out_idx[k];
                }
                self.at(&src)
            })
            .collect();
        Self::new(shape, data)
    }

    /// Swaps two axes.
    pub fn transpose(&self, a: usize, b: usize) -> Self {
        let mut order: Vec<usize> = (0..self.shape.len()).collect();
        order.swap(a, b);
        self.permute(&order)
    }

    /// Elements `start..start+len` of `axis`.
    pub fn narrow(&self, axis: usize, start: usize, len: usize) -> Self {
        let mut shape = self.shape.clone();
        shape[axis] = len;
        let data = all_indices(&shape)
            .iter()
            .map(|idx| {
                let mut src = idx.clone();
                src[axis] += start;
                self.at(&src)
            })
            .collect();
        Self::new(shape, data)
    }

    /// Joins tensors along `axis`.
    pub fn concat(parts: &[NaiveTensor], axis: usize) -> Self {
        let mut shape = parts[0].shape.clone();
        shape[axis] = parts.iter().map(|p| p.shape[axis]).sum();
        let data = all_indices(&shape)
            .iter()
            .map(|idx| {
                let mut i = idx[axis];
                for p in parts {
                    if i < p.shape[axis] {
                        let mut src = idx.clone();
                        src[axis] = i;
                        return p.at(&src);
                    }
                    i -= p.shape[axis];
                }
                f64::NAN
            })
            .collect();
        Self::new(shape, data)
    }

    /// `f(a, b)` with NumPy broadcasting.
    pub fn zip(&self, other: &NaiveTensor, f: impl Fn(f64, f64) -> f64) -> Self {
        let rank = self.shape.len().max(other.shape.len());
        let pad = |s: &[usize]| {
            let mut v = vec![1; rank - s.len()];
            v.extend_from_slice(s);
            v
        };
        let (a, b) = (pad(&self.shape), pad(&other.shape));
        let shape: Vec<usize> = a
            .iter()
            .zip(&b)
            .map(|(&x, &y)| if x == 1 { y } else { x })
            .collect();
        let data = all_indices(&shape)
            .iter()
            .map(|idx| {
                let ia: Vec<usize> = idx
                    .iter()
                    .zip(&a)
                    .map(|(&i, &d)| if d == 1 { 0 } else { i })
                    .collect();
                let ib: Vec<usize> = idx
                    .iter()
                    .zip(&b)
                    .map(|(&i, &d)| if d == 1 { 0 } else { i })
                    .collect();
                f(self.data[position(&a, &ia)], other.data[position(&b, &ib)])
            })
            .collect();
        Self::new(shape, data)
    }

    /// `f(x)` for every element.
    pub fn map(&self, f: impl Fn(f64) -> f64) -> Self {
        Self::new(
            self.shape.clone(),
            self.data.iter().map(|&x| f(x)).collect(),
        )
    }

    /// `x·sigmoid(x)`.
    pub fn silu(&self) -> Self {
        self.map(|x| x / (1.0 + (-x).exp()))
    }

    /// GELU, tanh approximation.
    pub fn gelu_tanh(&self) -> Self {
        self.map(|x| {
            0.5 * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
        })
    }

    /// GELU with erf (computed by quadrature here).
    pub fn gelu_erf(&self) -> Self {
        self.map(|x| 0.5 * x * (1.0 + erf_by_quadrature(x / 2f64.sqrt())))
    }

    /// `fold` over `axis`; the axis is kept with length 1 when `keep_dim`.
    fn fold_axis(&self, axis: usize, keep_dim: bool, f: impl Fn(&[f64]) -> f64) -> Self {
        let mut kept = self.shape.clone();
        kept[axis] = 1;
        let data = all_indices(&kept)
            .iter()
            .map(|idx| {
                let line: Vec<f64> = (0..self.shape[axis])
                    .map(|i| {
                        let mut src = idx.clone();
                        src[axis] = i;
                        self.at(&src)
                    })
                    .collect();
                f(&line)
            })
            .collect();
        let mut shape = kept;
        if !keep_dim {
            shape.remove(axis);
        }
        Self::new(shape, data)
    }

    /// Sum over `axis`.
    pub fn sum(&self, axis: usize, keep_dim: bool) -> Self {
        self.fold_axis(axis, keep_dim, |l| l.iter().sum())
    }

    /// Mean over `axis`.
    pub fn mean(&self, axis: usize, keep_dim: bool) -> Self {
        self.fold_axis(axis, keep_dim, |l| l.iter().sum::<f64>() / l.len() as f64)
    }

    /// Maximum over `axis` (NaN if any NaN).
    pub fn max(&self, axis: usize, keep_dim: bool) -> Self {
        self.fold_axis(axis, keep_dim, |l| {
            if l.iter().any(|x| x.is_nan()) {
                f64::NAN
            } else {
                l.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
            }
        })
    }

    /// Index of the first maximum over `axis` (first NaN wins).
    pub fn argmax(&self, axis: usize, keep_dim: bool) -> Self {
        self.fold_axis(axis, keep_dim, |l| {
            if let Some(i) = l.iter().position(|x| x.is_nan()) {
                return i as f64;
            }
            let best = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            l.iter().position(|&x| x == best).unwrap_or(0) as f64
        })
    }

    /// Applies `f` to every line along `axis`, writing the line it returns.
    fn map_lines(&self, axis: usize, f: impl Fn(&[f64]) -> Vec<f64>) -> Self {
        let mut out = self.data.clone();
        let mut kept = self.shape.clone();
        kept[axis] = 1;
        for idx in all_indices(&kept) {
            let positions: Vec<usize> = (0..self.shape[axis])
                .map(|i| {
                    let mut src = idx.clone();
                    src[axis] = i;
                    position(&self.shape, &src)
                })
                .collect();
            let line: Vec<f64> = positions.iter().map(|&p| self.data[p]).collect();
            for (p, v) in positions.iter().zip(f(&line)) {
                out[*p] = v;
            }
        }
        Self::new(self.shape.clone(), out)
    }

    /// Softmax along `axis`.
    pub fn softmax(&self, axis: usize) -> Self {
        self.map_lines(axis, |l| {
            let m = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = l.iter().map(|x| (x - m).exp()).collect();
            let s: f64 = e.iter().sum();
            e.iter().map(|x| x / s).collect()
        })
    }

    /// Log-softmax along `axis`.
    pub fn log_softmax(&self, axis: usize) -> Self {
        self.map_lines(axis, |l| {
            let m = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = l.iter().map(|x| (x - m).exp()).sum();
            l.iter().map(|x| x - m - s.ln()).collect()
        })
    }

    /// RMSNorm over the last axis.
    pub fn rms_norm(&self, weight: &[f64], eps: f64) -> Self {
        let last = self.shape.len() - 1;
        self.map_lines(last, |l| {
            let ms = l.iter().map(|x| x * x).sum::<f64>() / l.len() as f64;
            l.iter()
                .zip(weight)
                .map(|(x, w)| x / (ms + eps).sqrt() * w)
                .collect()
        })
    }

    /// LayerNorm over the last axis (biased variance).
    pub fn layer_norm(&self, weight: Option<&[f64]>, bias: Option<&[f64]>, eps: f64) -> Self {
        let last = self.shape.len() - 1;
        self.map_lines(last, |l| {
            let n = l.len() as f64;
            let mean = l.iter().sum::<f64>() / n;
            let var = l.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
            l.iter()
                .enumerate()
                .map(|(i, x)| {
                    let y = (x - mean) / (var + eps).sqrt();
                    y * weight.map_or(1.0, |w| w[i]) + bias.map_or(0.0, |b| b[i])
                })
                .collect()
        })
    }

    /// Rotary embedding of `self` (…, T, D): pair `k` at step `t` turns by
    /// `positions[t]·inv_freq[k]`; features past `2·inv_freq.len()` pass through.
    pub fn rotary(&self, inv_freq: &[f64], pairing: NaivePairing, positions: &[usize]) -> Self {
        let rank = self.shape.len();
        let half = inv_freq.len();
        let mut out = self.clone();
        for idx in all_indices(&self.shape) {
            let (t, i) = (idx[rank - 2], idx[rank - 1]);
            if i >= 2 * half {
                continue;
            }
            let (k, partner, sign) = match pairing {
                NaivePairing::HalfSplit if i < half => (i, i + half, -1.0),
                NaivePairing::HalfSplit => (i - half, i - half, 1.0),
                NaivePairing::Interleaved if i % 2 == 0 => (i / 2, i + 1, -1.0),
                NaivePairing::Interleaved => (i / 2, i - 1, 1.0),
            };
            let angle = positions[t] as f64 * inv_freq[k];
            let mut other = idx.clone();
            other[rank - 1] = partner;
            let value = self.at(&idx) * angle.cos() + sign * self.at(&other) * angle.sin();
            out.data[position(&self.shape, &idx)] = value;
        }
        out
    }

    /// Matrix product of the last two axes with broadcast batch axes.
    pub fn matmul(&self, other: &NaiveTensor) -> Self {
        let (ra, rb) = (self.shape.len(), other.shape.len());
        let (m, k, n) = (self.shape[ra - 2], self.shape[ra - 1], other.shape[rb - 1]);
        let (ba, bb) = (&self.shape[..ra - 2], &other.shape[..rb - 2]);
        let rank = ba.len().max(bb.len());
        let pad = |s: &[usize]| {
            let mut v = vec![1; rank - s.len()];
            v.extend_from_slice(s);
            v
        };
        let (pa, pb) = (pad(ba), pad(bb));
        let batch: Vec<usize> = pa.iter().zip(&pb).map(|(&x, &y)| x.max(y)).collect();
        let mut shape = batch.clone();
        shape.extend([m, n]);
        let data = all_indices(&shape)
            .iter()
            .map(|idx| {
                let (bi, i, j) = (&idx[..rank], idx[rank], idx[rank + 1]);
                let mut ia: Vec<usize> = bi
                    .iter()
                    .zip(&pa)
                    .map(|(&x, &d)| if d == 1 { 0 } else { x })
                    .collect();
                let mut ib: Vec<usize> = bi
                    .iter()
                    .zip(&pb)
                    .map(|(&x, &d)| if d == 1 { 0 } else { x })
                    .collect();
                ia.drain(..rank - ba.len());
                ib.drain(..rank - bb.len());
                (0..k)
                    .map(|p| {
                        let mut a_idx = ia.clone();
                        a_idx.extend([i, p]);
                        let mut b_idx = ib.clone();
                        b_idx.extend([p, j]);
                        self.at(&a_idx) * other.at(&b_idx)
                    })
                    .sum()
            })
            .collect();
        Self::new(shape, data)
    }

    /// Attention: q (B,Hq,Tq,D), k (B,Hkv,Tk,D), v (B,Hkv,Tk,Dv); query `i`
    /// sits at position `Tk − Tq + i`; `mask` is already broadcast to
    /// (B,Hq,Tq,Tk) when given.
    pub fn attention(
        q: &NaiveTensor,
        k: &NaiveTensor,
        v: &NaiveTensor,
        causal: bool,
        window: Option<usize>,
        scale: f64,
        mask: Option<&NaiveTensor>,
    ) -> Self {
        let (b, hq, tq, d) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3]);
        let (hkv, tk, dv) = (k.shape[1], k.shape[2], v.shape[3]);
        let mut out = Vec::new();
        for bi in 0..b {
            for h in 0..hq {
                let g = h / (hq / hkv);
                for i in 0..tq {
                    let pos = tk as f64 - tq as f64 + i as f64;
                    let scores: Vec<f64> = (0..tk)
                        .map(|j| {
                            let dot: f64 = (0..d)
                                .map(|c| q.at(&[bi, h, i, c]) * k.at(&[bi, g, j, c]))
                                .sum();
                            let mut s = dot * scale + mask.map_or(0.0, |m| m.at(&[bi, h, i, j]));
                            let jf = j as f64;
                            if (causal && jf > pos) || window.is_some_and(|w| jf + w as f64 <= pos)
                            {
                                s = f64::NEG_INFINITY;
                            }
                            s
                        })
                        .collect();
                    let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                    let total: f64 = e.iter().sum();
                    for c in 0..dv {
                        out.push((0..tk).map(|j| e[j] / total * v.at(&[bi, g, j, c])).sum());
                    }
                }
            }
        }
        Self::new(vec![b, hq, tq, dv], out)
    }

    /// Rows of `self` (V, C) picked by `ids` of shape `ids_shape`.
    pub fn embedding(&self, ids: &[usize], ids_shape: &[usize]) -> Self {
        let c = self.shape[1];
        let mut data = Vec::new();
        for &id in ids {
            for j in 0..c {
                data.push(self.at(&[id, j]));
            }
        }
        let mut shape = ids_shape.to_vec();
        shape.push(c);
        Self::new(shape, data)
    }
}
