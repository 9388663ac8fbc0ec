//! Quantizing a whole model: every linear layer of every block, by
//! round-to-nearest or by GPTQ with calibration activations.
//!
//! GPTQ runs the model one block at a time ("true sequential"): the
//! calibration hidden states enter block i (computed by the already
//! quantized blocks before it); inside the block each linear layer sees the
//! outputs of the layers before it *after* they were quantized. All
//! calibration sequences go through a block as one batch, and a
//! [`LinearHook`] quantizes each layer the first time it is called: it
//! accumulates H = 2/n·XᵀX from the layer's input X (once per group of
//! layers sharing an input: q/k/v, gate/up), runs [`gptq`], and hands the
//! quantized weight back so the rest of the block runs on it. The block's
//! output is the next block's input.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kaiyuan_models::{LinearHook, Model, ModelError};
use kaiyuan_tensor::{DType, Tensor};

use crate::gptq::{GptqSettings, IntWeights, gptq, rtn};
use crate::{QuantError, Result};

/// Round-to-nearest or GPTQ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Round-to-nearest, no calibration.
    Rtn,
    /// GPTQ with calibration activations.
    Gptq,
}

impl Method {
    /// `rtn` or `gptq`.
    pub fn name(self) -> &'static str {
        match self {
            Method::Rtn => "rtn",
            Method::Gptq => "gptq",
        }
    }
}

/// One quantized layer and what it cost.
#[derive(Clone, Debug)]
pub struct LayerResult {
    /// The module name, e.g. `model.layers.0.self_attn.q_proj`.
    pub name: String,
    /// The integer weights.
    pub weights: IntWeights,
    /// GPTQ's loss Σ (w − ŵ)²/U_ii²/2 (0 for RTN).
    pub loss: f64,
    /// The damping that succeeded (GPTQ).
    pub damp: f64,
    /// ‖W·Xᵀ − Ŵ·Xᵀ‖² / ‖W·Xᵀ‖² on the calibration inputs X of this
    /// layer, for these weights and, for comparison, for round-to-nearest
    /// (GPTQ only; `None` for RTN).
    pub relative_output_error: Option<(f64, f64)>,
    /// Seconds spent on this layer (Hessian, solve).
    pub seconds: f64,
}

/// Progress of [`quantize_model`]: layer `done` of `total` finished.
#[derive(Clone, Debug)]
pub struct Progress<'a> {
    /// Layers finished.
    pub done: usize,
    /// Layers to quantize.
    pub total: usize,
    /// The layer just finished.
    pub layer: &'a LayerResult,
}

/// Whether `module` is skipped: it equals a pattern or ends with `.` + it.
pub fn is_skipped(module: &str, skip: &[String]) -> bool {
    skip.iter().any(|s| {
        module == s
            || module
                .strip_suffix(s.as_str())
                .is_some_and(|head| head.ends_with('.'))
    })
}

/// A linear layer's weight as f64, row-major (out, in).
fn dense_weight(model: &Model, name: &str) -> Result<(Vec<f64>, usize, usize)> {
    let linear = model
        .linear(name)
        .ok_or_else(|| QuantError::invalid(name, "no such linear layer"))?;
    if linear.quantized().is_some() {
        return Err(QuantError::invalid(
            name,
            "the layer is already quantized (load an unquantized model)",
        ));
    }
    let w = linear.weight();
    let (rows, cols) = (w.shape()[0], w.shape()[1]);
    Ok((w.cast(DType::F64)?.to_vec::<f64>()?, rows, cols))
}

/// Σ over the sequence batch of `XᵀX` for X (…, in), as f64 (in × in),
/// computed in f32 like the reference.
fn gram(x: &Tensor) -> Result<Vec<f64>> {
    let c = x.shape()[x.rank() - 1];
    let flat = x.reshape(&[x.elem_count() / c, c])?.cast(DType::F32)?;
    let g = flat.t()?.matmul(&flat)?;
    Ok(g.cast(DType::F64)?.to_vec::<f64>()?)
}

/// tr(ΔW·G·ΔWᵀ) for ΔW (rows × cols) and a Gram matrix G (cols × cols):
/// (ΔW·G) by a matrix product over fixed row chunks, then row dots.
fn quadratic(delta: &[f64], gram: &[f64], cols: usize) -> f64 {
    use rayon::prelude::*;
    const CHUNK: usize = 32;
    let parts: Vec<f64> = delta
        .par_chunks(CHUNK * cols)
        .map(|d| {
            let m = d.len() / cols;
            let mut prod = vec![0.0f64; m * cols];
            // SAFETY: a = d (m × cols, row stride cols), b = gram (cols ×
            // cols), c = prod (m × cols), all in bounds and c exclusive.
            unsafe {
                matrixmultiply::dgemm(
                    m,
                    cols,
                    cols,
                    1.0,
                    d.as_ptr(),
                    cols as isize,
                    1,
                    gram.as_ptr(),
                    cols as isize,
                    1,
                    0.0,
                    prod.as_mut_ptr(),
                    cols as isize,
                    1,
                );
            }
            prod.iter().zip(d).map(|(p, x)| p * x).sum::<f64>()
        })
        .collect();
    parts.iter().sum()
}

/// The relative output error ‖ΔW·Xᵀ‖²/‖W·Xᵀ‖² from the Gram matrix.
fn relative_error(w: &[f64], w_hat: &[f64], gram: &[f64], cols: usize) -> f64 {
    let delta: Vec<f64> = w.iter().zip(w_hat).map(|(a, b)| a - b).collect();
    let num = quadratic(&delta, gram, cols);
    let den = quadratic(w, gram, cols);
    if den > 0.0 { num / den } else { num }
}

/// Quantizes every linear layer of `model`'s blocks not named in `skip`
/// (module names or suffixes, e.g. `down_proj`), and installs the results
/// in the model (its forward then runs the quantized kernels). `samples`
/// (equal-length token rows) are required for GPTQ. Returns the layers in
/// model order.
pub fn quantize_model(
    model: &mut Model,
    method: Method,
    settings: &GptqSettings,
    skip: &[String],
    samples: Option<&[Vec<u32>]>,
    on_progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Vec<LayerResult>> {
    let layers = model.config().num_layers;
    let total = model
        .linear_modules()
        .iter()
        .filter(|m| !is_skipped(m, skip))
        .count();
    let mut results = Vec::new();
    match method {
        Method::Rtn => {
            for name in model.linear_modules() {
                if is_skipped(&name, skip) {
                    continue;
                }
                let start = Instant::now();
                let (w, rows, cols) = dense_weight(model, &name)?;
                let q = rtn(&name, &w, rows, cols, settings)?;
                install(model, &name, &q)?;
                results.push(LayerResult {
                    name,
                    weights: q,
                    loss: 0.0,
                    damp: 0.0,
                    relative_output_error: None,
                    seconds: start.elapsed().as_secs_f64(),
                });
                if let Some(layer) = results.last() {
                    on_progress(Progress {
                        done: results.len(),
                        total,
                        layer,
                    });
                }
            }
        }
        Method::Gptq => {
            let samples = samples.filter(|s| !s.is_empty()).ok_or_else(|| {
                QuantError::invalid(
                    "calibration",
                    "GPTQ needs calibration text (--calib FILE); use --method rtn to quantize without it",
                )
            })?;
            let mut hidden = model.embed_tokens(samples)?;
            let sequences = samples.len();
            for index in 0..layers {
                let groups = model.layer_linear_groups(index);
                let state = Arc::new(Mutex::new(HookState::default()));
                let hook = make_hook(model, &groups, skip, settings, sequences, &state)?;
                model.set_linear_hook(Some(hook));
                let out = model.forward_layer(index, &hidden);
                model.set_linear_hook(None);
                let mut finished = std::mem::take(
                    &mut *state
                        .lock()
                        .map_err(|_| QuantError::invalid("GPTQ", "a worker panicked"))?,
                );
                if let Some(err) = finished.error.take() {
                    return Err(err);
                }
                hidden = out?;
                for result in finished.done {
                    install(model, &result.name, &result.weights)?;
                    results.push(result);
                    if let Some(layer) = results.last() {
                        on_progress(Progress {
                            done: results.len(),
                            total,
                            layer,
                        });
                    }
                }
            }
        }
    }
    Ok(results)
}

/// The model's weight for `q`: a kernel-ready matrix.
pub fn to_qmatrix(q: &IntWeights) -> Result<kaiyuan_tensor::quant::QMatrix> {
    let groups = q.groups();
    // Columns sorted by group (stable), so groups are contiguous.
    let mut order: Vec<usize> = (0..q.cols).collect();
    order.sort_by_key(|&c| q.g_idx[c]);
    let identity = order.iter().enumerate().all(|(i, &c)| i == c);
    let mut codes = vec![0u8; q.rows * q.cols];
    for r in 0..q.rows {
        for (j, &c) in order.iter().enumerate() {
            codes[r * q.cols + j] = q.codes[r * q.cols + c];
        }
    }
    // HF GPTQ files store scales as f16; round here so that the model we
    // evaluate is the one we write.
    let mut scales = Vec::with_capacity(q.rows * groups);
    let mut mins = Vec::with_capacity(q.rows * groups);
    for r in 0..q.rows {
        for g in 0..groups {
            let s = half::f16::from_f64(q.scales[r * groups + g]).to_f32();
            let z = q.zeros[r * groups + g] as f32;
            scales.push(s);
            mins.push(-s * z);
        }
    }
    let permutation = (!identity).then(|| order.iter().map(|&c| c as u32).collect());
    Ok(kaiyuan_tensor::quant::QMatrix::from_int(
        q.bits,
        q.group_size,
        q.rows,
        q.cols,
        &codes,
        scales,
        mins,
        permutation,
    )?)
}

fn install(model: &mut Model, name: &str, q: &IntWeights) -> Result<()> {
    let matrix = to_qmatrix(q)?;
    model
        .linear_mut(name)
        .ok_or_else(|| QuantError::invalid(name, "no such linear layer"))?
        .set_quantized(matrix)?;
    Ok(())
}

#[derive(Default)]
struct HookState {
    /// Gram matrices by group index (layers sharing an input share one).
    grams: HashMap<usize, Arc<Vec<f64>>>,
    done: Vec<LayerResult>,
    error: Option<QuantError>,
}

fn make_hook(
    model: &Model,
    groups: &[Vec<String>],
    skip: &[String],
    settings: &GptqSettings,
    sequences: usize,
    state: &Arc<Mutex<HookState>>,
) -> Result<LinearHook> {
    let mut group_of: HashMap<String, usize> = HashMap::new();
    let mut weights: HashMap<String, (Vec<f64>, usize, usize)> = HashMap::new();
    for (g, names) in groups.iter().enumerate() {
        for name in names {
            if is_skipped(name, skip) {
                continue;
            }
            group_of.insert(name.clone(), g);
            weights.insert(name.clone(), dense_weight(model, name)?);
        }
    }
    let settings = settings.clone();
    let state = Arc::clone(state);
    let weights = Arc::new(weights);
    Ok(LinearHook(Arc::new(move |name: &str, x: &Tensor| {
        let Some(&group) = group_of.get(name) else {
            return Ok(None);
        };
        let (w, rows, cols) = &weights[name];
        let start = Instant::now();
        let fail = |e: QuantError| -> ModelError {
            let message = e.to_string();
            if let Ok(mut s) = state.lock() {
                s.error = Some(e);
            }
            ModelError::invalid("GPTQ", message)
        };
        let cached = state.lock().ok().and_then(|s| s.grams.get(&group).cloned());
        let g = match cached {
            Some(g) => g,
            None => {
                let g = Arc::new(gram(x).map_err(fail)?);
                if let Ok(mut s) = state.lock() {
                    s.grams.insert(group, Arc::clone(&g));
                }
                g
            }
        };
        // H = 2/n · XᵀX with n the number of sequences, as the reference.
        let scale = 2.0 / sequences as f64;
        let h: Vec<f64> = g.iter().map(|v| v * scale).collect();
        let (q, stats) = gptq(name, w, *rows, *cols, &h, &settings).map_err(fail)?;
        let w_hat = q.dequantize();
        let r = rtn(name, w, *rows, *cols, &settings).map_err(fail)?;
        let errors = (
            relative_error(w, &w_hat, &g, *cols),
            relative_error(w, &r.dequantize(), &g, *cols),
        );
        // The rest of the block runs on exactly what the model will hold.
        let matrix = to_qmatrix(&q).map_err(fail)?;
        let used = Tensor::from_vec(matrix.dequantize(), &[*rows, *cols])?;
        if let Ok(mut s) = state.lock() {
            s.done.push(LayerResult {
                name: name.to_string(),
                weights: q,
                loss: stats.loss,
                damp: stats.damp,
                relative_output_error: Some(errors),
                seconds: start.elapsed().as_secs_f64(),
            });
        }
        Ok(Some(used))
    })))
}
