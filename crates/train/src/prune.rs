//! Pruning.
//!
//! - **Unstructured magnitude**: in every weight matrix of the decoder
//!   layers (not the embedding or LM head), the `round(sparsity · n)`
//!   entries of smallest magnitude become 0 (ties broken by position, so
//!   the count is exact). The trainer keeps them at 0 through fine-tuning.
//! - **Structured** (LLaMA, Mistral, Qwen2 layouts): the same number of
//!   query heads removed from every layer (an equal share from every
//!   key/value group, so grouped-query attention keeps its shape), chosen by
//!   the L2 norm of each head's q rows and o columns; and MLP channels
//!   removed by the norm of their gate and up rows and down column. The
//!   result is a smaller model with its own `config.json`
//!   (`num_attention_heads`, `head_dim`, `intermediate_size`) that
//!   transformers loads as it is.

use kaiyuan_models::{Architecture, Model, ModelConfig, Weights};
use kaiyuan_tensor::{DType, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Result, TrainError};

/// `[prune]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PruneConfig {
    /// `none`, `magnitude` or `structured`.
    pub method: String,
    /// Magnitude: fraction of each layer matrix set to 0.
    pub sparsity: f64,
    /// Structured: query heads removed from every layer.
    pub heads: usize,
    /// Structured: MLP channels removed from every layer.
    pub channels: usize,
}

impl Default for PruneConfig {
    fn default() -> Self {
        Self {
            method: "none".into(),
            sparsity: 0.5,
            heads: 0,
            channels: 0,
        }
    }
}

impl PruneConfig {
    /// Checks the settings, naming the key.
    pub fn validate(&self) -> Result<()> {
        match self.method.as_str() {
            "none" | "structured" => Ok(()),
            "magnitude" if (0.0..1.0).contains(&self.sparsity) => Ok(()),
            "magnitude" => Err(TrainError::invalid("prune.sparsity", "must be in [0, 1)")),
            other => Err(TrainError::invalid(
                "prune.method",
                format!("`{other}` is not one of none, magnitude, structured"),
            )),
        }
    }
}

/// Whether a parameter is a decoder-layer weight matrix (pruned by magnitude).
fn is_layer_matrix(name: &str, t: &Tensor) -> bool {
    t.rank() == 2
        && !name.ends_with("embed_tokens.weight")
        && !name.ends_with("word_embeddings.weight")
        && name != "lm_head.weight"
}

/// Positions to zero in each layer matrix (true = pruned), by parameter name.
pub fn magnitude_masks(model: &Model, sparsity: f64) -> Result<Vec<(String, Vec<bool>)>> {
    let mut masks = Vec::new();
    for (name, t) in model.parameters() {
        if !is_layer_matrix(&name, &t) {
            continue;
        }
        let values = t.cast(DType::F64)?.to_vec::<f64>()?;
        let k = (sparsity * values.len() as f64).round() as usize;
        let mut order: Vec<usize> = (0..values.len()).collect();
        order.sort_by(|&a, &b| values[a].abs().total_cmp(&values[b].abs()).then(a.cmp(&b)));
        let mut mask = vec![false; values.len()];
        for &i in &order[..k.min(values.len())] {
            mask[i] = true;
        }
        masks.push((name, mask));
    }
    Ok(masks)
}

/// Sets the masked entries of the named parameters to 0.
pub fn apply_masks(model: &mut Model, masks: &[(String, Vec<bool>)]) -> Result<()> {
    let mut by_name: std::collections::HashMap<&str, &Vec<bool>> =
        masks.iter().map(|(n, m)| (n.as_str(), m)).collect();
    for (name, t) in model.parameters_mut() {
        if let Some(mask) = by_name.remove(name.as_str()) {
            let mut values = t.cast(DType::F32)?.to_vec::<f32>()?;
            if values.len() != mask.len() {
                return Err(TrainError::invalid(
                    name.as_str(),
                    "mask size differs from the parameter",
                ));
            }
            for (v, &m) in values.iter_mut().zip(mask) {
                if m {
                    *v = 0.0;
                }
            }
            *t = Tensor::from_vec(values, t.shape())?.cast(t.dtype())?;
        }
    }
    Ok(())
}

/// Zero entries and total entries of the layer matrices.
pub fn layer_sparsity(model: &Model) -> Result<(usize, usize)> {
    let (mut zeros, mut total) = (0, 0);
    for (name, t) in model.parameters() {
        if is_layer_matrix(&name, &t) {
            let v = t.cast(DType::F32)?.to_vec::<f32>()?;
            zeros += v.iter().filter(|&&x| x == 0.0).count();
            total += v.len();
        }
    }
    Ok((zeros, total))
}

fn rows(t: &Tensor, keep: &[usize], block: usize) -> Result<Tensor> {
    let parts = keep
        .iter()
        .map(|&i| t.narrow(0, i * block, block))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let refs: Vec<&Tensor> = parts.iter().collect();
    Ok(Tensor::concat(&refs, 0)?.contiguous()?)
}

fn columns(t: &Tensor, keep: &[usize], block: usize) -> Result<Tensor> {
    Ok(rows(&t.t()?, keep, block)?.t()?.contiguous()?)
}

fn norms(t: &Tensor, block: usize, by_columns: bool) -> Result<Vec<f64>> {
    let t = if by_columns {
        t.t()?.contiguous()?
    } else {
        t.clone()
    };
    let v = t.cast(DType::F64)?.to_vec::<f64>()?;
    let width = t.shape()[1];
    Ok(v.chunks(block * width)
        .map(|c| c.iter().map(|x| x * x).sum::<f64>())
        .collect())
}

/// Indices (ascending) of the `count` largest scores among `candidates`,
/// ties to the lower index.
fn keep_largest(scores: &[f64], candidates: &[usize], count: usize) -> Vec<usize> {
    let mut order = candidates.to_vec();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut kept: Vec<usize> = order.into_iter().take(count).collect();
    kept.sort_unstable();
    kept
}

/// Structured pruning of an HF checkpoint: removes `heads` query heads and
/// `channels` MLP channels from every layer; returns the new `config.json`
/// and weights.
pub fn structured(
    config_json: &Value,
    config: &ModelConfig,
    weights: &Weights,
    heads: usize,
    channels: usize,
) -> Result<(Value, Weights)> {
    if !matches!(
        config.architecture,
        Architecture::Llama | Architecture::Mistral | Architecture::Qwen2
    ) {
        return Err(TrainError::invalid(
            "prune.method",
            format!(
                "structured pruning supports LLaMA, Mistral and Qwen2 layouts, not {:?}",
                config.architecture
            ),
        ));
    }
    let (hq, hkv, d) = (config.num_heads, config.num_kv_heads, config.head_dim);
    if !heads.is_multiple_of(hkv) || heads >= hq {
        return Err(TrainError::invalid(
            "prune.heads",
            format!(
                "{heads} must be a multiple of the {hkv} key/value heads and below the {hq} heads"
            ),
        ));
    }
    if channels >= config.intermediate_size {
        return Err(TrainError::invalid(
            "prune.channels",
            format!(
                "{channels} must be below intermediate_size {}",
                config.intermediate_size
            ),
        ));
    }
    let group = hq / hkv;
    let keep_per_group = group - heads / hkv;
    let keep_channels = config.intermediate_size - channels;
    let mut out = weights.clone();
    for i in 0..config.num_layers {
        let p = format!("model.layers.{i}");
        let get = |n: &str| -> Result<Tensor> {
            weights
                .raw(n)
                .cloned()
                .ok_or_else(|| TrainError::invalid(n, "missing from the checkpoint"))
        };
        // Heads.
        let q = get(&format!("{p}.self_attn.q_proj.weight"))?;
        let o = get(&format!("{p}.self_attn.o_proj.weight"))?;
        let (qn, on) = (norms(&q, d, false)?, norms(&o, d, true)?);
        let scores: Vec<f64> = qn.iter().zip(&on).map(|(a, b)| a + b).collect();
        let mut keep = Vec::new();
        for g in 0..hkv {
            let members: Vec<usize> = (g * group..(g + 1) * group).collect();
            keep.extend(keep_largest(&scores, &members, keep_per_group));
        }
        out.insert(format!("{p}.self_attn.q_proj.weight"), rows(&q, &keep, d)?);
        if let Some(bias) = weights.raw(&format!("{p}.self_attn.q_proj.bias")) {
            out.insert(
                format!("{p}.self_attn.q_proj.bias"),
                rows(&bias.reshape(&[hq * d, 1])?, &keep, d)?.reshape(&[keep.len() * d])?,
            );
        }
        out.insert(
            format!("{p}.self_attn.o_proj.weight"),
            columns(&o, &keep, d)?,
        );
        // Channels.
        let gate = get(&format!("{p}.mlp.gate_proj.weight"))?;
        let up = get(&format!("{p}.mlp.up_proj.weight"))?;
        let down = get(&format!("{p}.mlp.down_proj.weight"))?;
        let (gn, un, dn) = (
            norms(&gate, 1, false)?,
            norms(&up, 1, false)?,
            norms(&down, 1, true)?,
        );
        let scores: Vec<f64> = (0..gn.len()).map(|c| gn[c] + un[c] + dn[c]).collect();
        let all: Vec<usize> = (0..gn.len()).collect();
        let keep = keep_largest(&scores, &all, keep_channels);
        out.insert(format!("{p}.mlp.gate_proj.weight"), rows(&gate, &keep, 1)?);
        out.insert(format!("{p}.mlp.up_proj.weight"), rows(&up, &keep, 1)?);
        out.insert(
            format!("{p}.mlp.down_proj.weight"),
            columns(&down, &keep, 1)?,
        );
    }
    let mut json = config_json.clone();
    if let Value::Object(map) = &mut json {
        map.insert("num_attention_heads".into(), Value::from(hq - heads));
        map.insert("head_dim".into(), Value::from(d));
        map.insert("intermediate_size".into(), Value::from(keep_channels));
    }
    Ok((json, out))
}
