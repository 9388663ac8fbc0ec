//! HF `config.json`: read as a raw serde struct, then resolved into a checked
//! [`ModelConfig`] that every architecture shares.
//!
//! Both transformers 4.x (`rope_theta` and `rope_scaling` at the top level)
//! and 5.x (`rope_parameters`) layouts are accepted. Defaults are those of
//! transformers' configuration classes for each architecture.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::{ModelError, Result};

/// The architectures this crate runs, picked by `architectures[0]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// `LlamaForCausalLM` (LLaMA 1/2/3, Mistral, SmolLM2, …).
    Llama,
    /// `MistralForCausalLM`: LLaMA with an optional sliding window.
    Mistral,
    /// `Qwen2ForCausalLM`: q/k/v biases, sliding window on upper layers.
    Qwen2,
    /// `FalconForCausalLM`: fused QKV, LayerNorm, parallel attention + MLP.
    Falcon,
    /// `GlmForCausalLM`: partial interleaved rotary, fused gate/up.
    Glm,
    /// `Glm4ForCausalLM`: GLM plus post-attention and post-MLP norms.
    Glm4,
}

impl Architecture {
    /// The architecture for an HF class name.
    pub fn from_hf_name(name: &str) -> Option<Self> {
        Some(match name {
            "LlamaForCausalLM" => Self::Llama,
            "MistralForCausalLM" => Self::Mistral,
            "Qwen2ForCausalLM" => Self::Qwen2,
            "FalconForCausalLM" => Self::Falcon,
            "GlmForCausalLM" => Self::Glm,
            "Glm4ForCausalLM" => Self::Glm4,
            _ => return None,
        })
    }

    /// The HF class name.
    pub fn hf_name(self) -> &'static str {
        match self {
            Self::Llama => "LlamaForCausalLM",
            Self::Mistral => "MistralForCausalLM",
            Self::Qwen2 => "Qwen2ForCausalLM",
            Self::Falcon => "FalconForCausalLM",
            Self::Glm => "GlmForCausalLM",
            Self::Glm4 => "Glm4ForCausalLM",
        }
    }
}

/// The activation of the MLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `silu` / `swish` (gated MLPs).
    Silu,
    /// `gelu` (exact, with erf).
    GeluErf,
    /// `gelu_new`, `gelu_pytorch_tanh` (tanh approximation).
    GeluTanh,
}

impl Activation {
    fn parse(origin: &str, field: &str, name: &str) -> Result<Self> {
        Ok(match name {
            "silu" | "swish" => Self::Silu,
            "gelu" => Self::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Self::GeluTanh,
            other => {
                return Err(ModelError::config(
                    origin,
                    field,
                    format!(
                        "unsupported activation `{other}` (silu, gelu, gelu_new, gelu_pytorch_tanh)"
                    ),
                ));
            }
        })
    }
}

/// Normalisation layers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Norm {
    /// RMSNorm with this epsilon.
    Rms(f64),
    /// LayerNorm (weight and bias) with this epsilon.
    Layer(f64),
}

/// How rotary frequencies are scaled (`rope_type`).
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    Default,
    /// Positions divided by `factor`.
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// Dynamic NTK: the base grows once the sequence passes
    /// `max_position_embeddings`.
    Dynamic {
        /// The scaling factor.
        factor: f64,
    },
    /// YaRN interpolation with an attention factor on cos/sin.
    Yarn {
        /// The scaling factor.
        factor: f64,
        /// Context length of pretraining.
        original_max_position_embeddings: usize,
        /// High-frequency rotation bound (default 32).
        beta_fast: f64,
        /// Low-frequency rotation bound (default 1).
        beta_slow: f64,
        /// Scale of cos and sin.
        attention_factor: f64,
        /// Whether the correction range is rounded outwards (default true).
        truncate: bool,
    },
    /// LLaMA 3.1's smooth frequency-dependent scaling.
    Llama3 {
        /// The scaling factor.
        factor: f64,
        /// Low-frequency factor.
        low_freq_factor: f64,
        /// High-frequency factor.
        high_freq_factor: f64,
        /// Context length of pretraining.
        original_max_position_embeddings: usize,
    },
}

/// Rotary embedding settings.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeConfig {
    /// The base wavelength.
    pub theta: f64,
    /// Number of rotated features per head (even, ≤ head_dim).
    pub rotary_dim: usize,
    /// Pairs as halves (LLaMA, Qwen2, Falcon) or neighbours (GLM).
    pub interleaved: bool,
    /// Frequency scaling.
    pub scaling: RopeScaling,
}

/// How the residual stream flows through a decoder layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockLayout {
    /// `h = x + attn(norm1(x)); y = h + mlp(norm2(h))` (LLaMA, Qwen2, GLM).
    Sequential,
    /// As `Sequential` with extra norms on the attention and MLP outputs
    /// before each residual add (GLM-4).
    SequentialPostNorms,
    /// `y = x + attn(norm(x)) + mlp(norm(x))`, one shared norm (Falcon-7B,
    /// new-decoder Falcon with `num_ln_in_parallel_attn = 1`).
    ParallelSharedNorm,
    /// `y = x + attn(ln_attn(x)) + mlp(ln_mlp(x))` (Falcon-40B/180B).
    ParallelTwoNorms,
}

/// The MLP shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MlpKind {
    /// `down(act(gate(x)) · up(x))`.
    Gated,
    /// `down(act(up(x)))` (Falcon).
    Plain,
}

/// A resolved, checked model configuration shared by all architectures.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// The architecture.
    pub architecture: Architecture,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Model width C.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (divides `num_heads`).
    pub num_kv_heads: usize,
    /// Features per head.
    pub head_dim: usize,
    /// Positions the model was configured for.
    pub max_position_embeddings: usize,
    /// Norm type and epsilon.
    pub norm: Norm,
    /// MLP activation.
    pub activation: Activation,
    /// MLP shape.
    pub mlp: MlpKind,
    /// Residual layout.
    pub block: BlockLayout,
    /// Rotary settings.
    pub rope: RopeConfig,
    /// Biases on q, k and v.
    pub qkv_bias: bool,
    /// Bias on the attention output projection.
    pub o_bias: bool,
    /// Biases in the MLP.
    pub mlp_bias: bool,
    /// The LM head reuses the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Per layer, the sliding window (None: full attention).
    pub sliding_window: Vec<Option<usize>>,
    /// Beginning-of-sequence id.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence ids (several for chat models).
    pub eos_token_ids: Vec<u32>,
    /// Padding id.
    pub pad_token_id: Option<u32>,
}

/// `config.json` as written by transformers, every field optional; the union
/// of the fields of the supported architectures.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
#[allow(missing_docs)]
pub struct RawConfig {
    pub architectures: Option<Vec<String>>,
    pub model_type: Option<String>,
    pub vocab_size: Option<usize>,
    pub hidden_size: Option<usize>,
    pub n_embed: Option<usize>,
    pub intermediate_size: Option<usize>,
    pub ffn_hidden_size: Option<usize>,
    pub num_hidden_layers: Option<usize>,
    pub num_attention_heads: Option<usize>,
    pub num_key_value_heads: Option<usize>,
    pub num_kv_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub max_position_embeddings: Option<usize>,
    pub rms_norm_eps: Option<f64>,
    pub layer_norm_epsilon: Option<f64>,
    pub hidden_act: Option<String>,
    pub activation: Option<String>,
    pub rope_theta: Option<f64>,
    pub rope_scaling: Option<Value>,
    pub rope_parameters: Option<Value>,
    pub partial_rotary_factor: Option<f64>,
    pub attention_bias: Option<bool>,
    pub mlp_bias: Option<bool>,
    pub bias: Option<bool>,
    pub tie_word_embeddings: Option<bool>,
    pub use_sliding_window: Option<bool>,
    pub sliding_window: Option<Value>,
    pub max_window_layers: Option<usize>,
    pub layer_types: Option<Vec<String>>,
    pub multi_query: Option<bool>,
    pub new_decoder_architecture: Option<bool>,
    pub parallel_attn: Option<bool>,
    pub num_ln_in_parallel_attn: Option<usize>,
    pub alibi: Option<bool>,
    pub original_max_position_embeddings: Option<usize>,
    pub bos_token_id: Option<Value>,
    pub eos_token_id: Option<Value>,
    pub pad_token_id: Option<Value>,
    pub torch_dtype: Option<String>,
    pub dtype: Option<String>,
}

impl ModelConfig {
    /// Reads and resolves `path` (a `config.json`).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        Self::from_json_str(&path.display().to_string(), &text)
    }

    /// Resolves a `config.json` held in memory; `origin` names it in errors.
    pub fn from_json_str(origin: &str, json: &str) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(json).map_err(|e| {
            let field = e.to_string();
            ModelError::format(origin, format!("invalid config JSON: {field}"))
        })?;
        Self::resolve(origin, &raw)
    }

    /// Resolves a parsed raw config.
    pub fn resolve(origin: &str, raw: &RawConfig) -> Result<Self> {
        let name = raw
            .architectures
            .as_ref()
            .and_then(|a| a.first())
            .ok_or_else(|| ModelError::config(origin, "architectures", "missing or empty"))?;
        let architecture =
            Architecture::from_hf_name(name).ok_or_else(|| ModelError::Unsupported {
                origin: origin.to_string(),
                what: format!(
                    "architecture `{name}` (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, FalconForCausalLM, GlmForCausalLM, Glm4ForCausalLM)"
                ),
            })?;
        let need = |value: Option<usize>, field: &str| -> Result<usize> {
            match value {
                Some(0) => Err(ModelError::config(origin, field, "must be positive")),
                Some(v) => plausible(origin, field, v),
                None => Err(ModelError::config(origin, field, "missing")),
            }
        };
        let is_falcon = architecture == Architecture::Falcon;
        let hidden_size = need(raw.hidden_size.or(raw.n_embed), "hidden_size")?;
        let num_heads = need(raw.num_attention_heads, "num_attention_heads")?;
        let num_layers = need(raw.num_hidden_layers, "num_hidden_layers")?;
        let vocab_size = need(raw.vocab_size, "vocab_size")?;
        let head_dim = match raw.head_dim {
            Some(0) => return Err(ModelError::config(origin, "head_dim", "must be positive")),
            Some(d) if !is_falcon => plausible(origin, "head_dim", d)?,
            _ => {
                if hidden_size % num_heads != 0 {
                    return Err(ModelError::config(
                        origin,
                        "num_attention_heads",
                        format!("{num_heads} does not divide hidden_size {hidden_size}"),
                    ));
                }
                hidden_size / num_heads
            }
        };
        let (num_kv_heads, kv_field) = if is_falcon {
            let new_arch = raw.new_decoder_architecture.unwrap_or(false);
            let multi_query = raw.multi_query.unwrap_or(true);
            let kv = if new_arch {
                raw.num_kv_heads.unwrap_or(num_heads)
            } else if multi_query {
                1
            } else {
                num_heads
            };
            (kv, "num_kv_heads")
        } else {
            (
                raw.num_key_value_heads.unwrap_or(num_heads),
                "num_key_value_heads",
            )
        };
        if num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(ModelError::config(
                origin,
                kv_field,
                format!(
                    "{num_kv_heads} must be positive and divide num_attention_heads {num_heads}"
                ),
            ));
        }
        let intermediate_size = if is_falcon {
            let size = raw.ffn_hidden_size.unwrap_or(hidden_size.saturating_mul(4));
            plausible(origin, "ffn_hidden_size", size)?
        } else {
            need(raw.intermediate_size, "intermediate_size")?
        };
        let max_position_embeddings = raw.max_position_embeddings.unwrap_or(match architecture {
            Architecture::Qwen2 => 32_768,
            Architecture::Mistral => 4096 * 32,
            Architecture::Glm | Architecture::Glm4 => 131_072,
            _ => 2048,
        });
        plausible(origin, "max_position_embeddings", max_position_embeddings)?;
        let norm = if is_falcon {
            Norm::Layer(raw.layer_norm_epsilon.unwrap_or(1e-5))
        } else {
            Norm::Rms(raw.rms_norm_eps.unwrap_or(match architecture {
                Architecture::Glm | Architecture::Glm4 => 1.5625e-7,
                Architecture::Mistral => 1e-6,
                _ => 1e-6,
            }))
        };
        let (act_field, act_name) = if is_falcon {
            ("activation", raw.activation.as_deref().unwrap_or("gelu"))
        } else {
            ("hidden_act", raw.hidden_act.as_deref().unwrap_or("silu"))
        };
        let activation = Activation::parse(origin, act_field, act_name)?;
        if raw.alibi == Some(true) {
            return Err(ModelError::Unsupported {
                origin: origin.to_string(),
                what: "Falcon with `alibi: true` (ALiBi position biases); only rotary Falcon models run".into(),
            });
        }
        let block = match architecture {
            Architecture::Falcon => {
                let new_arch = raw.new_decoder_architecture.unwrap_or(false);
                let lns = raw
                    .num_ln_in_parallel_attn
                    .unwrap_or(if new_arch { 2 } else { 1 });
                if new_arch && lns == 2 {
                    BlockLayout::ParallelTwoNorms
                } else if new_arch || raw.parallel_attn.unwrap_or(true) {
                    BlockLayout::ParallelSharedNorm
                } else {
                    BlockLayout::Sequential
                }
            }
            Architecture::Glm4 => BlockLayout::SequentialPostNorms,
            _ => BlockLayout::Sequential,
        };
        let mlp = if is_falcon {
            MlpKind::Plain
        } else {
            MlpKind::Gated
        };
        let (qkv_bias, o_bias, mlp_bias) = match architecture {
            Architecture::Llama | Architecture::Mistral => {
                let a = raw.attention_bias.unwrap_or(false);
                (a, a, raw.mlp_bias.unwrap_or(false))
            }
            Architecture::Qwen2 => (true, false, false),
            Architecture::Falcon => {
                let b = raw.bias.unwrap_or(false);
                (b, b, b)
            }
            Architecture::Glm | Architecture::Glm4 => {
                (raw.attention_bias.unwrap_or(true), false, false)
            }
        };
        let partial_default = match architecture {
            Architecture::Glm | Architecture::Glm4 => 0.5,
            _ => 1.0,
        };
        let rope = resolve_rope(
            origin,
            raw,
            head_dim,
            max_position_embeddings,
            partial_default,
            matches!(architecture, Architecture::Glm | Architecture::Glm4),
        )?;
        let tie_word_embeddings = raw.tie_word_embeddings.unwrap_or(is_falcon);
        let sliding_window = resolve_sliding_window(origin, raw, architecture, num_layers)?;
        Ok(Self {
            architecture,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            max_position_embeddings,
            norm,
            activation,
            mlp,
            block,
            rope,
            qkv_bias,
            o_bias,
            mlp_bias,
            tie_word_embeddings,
            sliding_window,
            bos_token_id: first_id(origin, "bos_token_id", raw.bos_token_id.as_ref())?,
            eos_token_ids: ids(origin, "eos_token_id", raw.eos_token_id.as_ref())?,
            pad_token_id: first_id(origin, "pad_token_id", raw.pad_token_id.as_ref())?,
        })
    }

    /// Number of parameters the architecture implies (tied embeddings
    /// counted once); `usize::MAX` when that does not fit.
    pub fn parameter_count(&self) -> usize {
        // u128: a resolved config's sizes are at most 2^26 (layers 2^12), so
        // no product below overflows.
        let wide = |v: usize| v as u128;
        let (c, h, kv, d) = (
            wide(self.hidden_size),
            wide(self.num_heads),
            wide(self.num_kv_heads),
            wide(self.head_dim),
        );
        let inter = wide(self.intermediate_size);
        let norm_params = match self.norm {
            Norm::Rms(_) => c,
            Norm::Layer(_) => 2 * c,
        };
        let attn = c * h * d
            + 2 * c * kv * d
            + h * d * c
            + if self.qkv_bias { (h + 2 * kv) * d } else { 0 }
            + if self.o_bias { c } else { 0 };
        let mlp = match self.mlp {
            MlpKind::Gated => 3 * c * inter,
            MlpKind::Plain => 2 * c * inter,
        } + if self.mlp_bias {
            inter * if self.mlp == MlpKind::Gated { 2 } else { 1 } + c
        } else {
            0
        };
        let norms_per_layer = match self.block {
            BlockLayout::Sequential | BlockLayout::ParallelTwoNorms => 2,
            BlockLayout::SequentialPostNorms => 4,
            BlockLayout::ParallelSharedNorm => 1,
        };
        let embed = wide(self.vocab_size) * c;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        let total = embed
            + head
            + norm_params
            + wide(self.num_layers) * (attn + mlp + norms_per_layer * norm_params);
        usize::try_from(total).unwrap_or(usize::MAX)
    }

    /// Bytes of KV cache per token of context in `bytes_per_element`
    /// (2 for f16, 4 for f32): K and V for every layer and KV head
    /// (saturating at `usize::MAX`).
    pub fn kv_bytes_per_token(&self, bytes_per_element: usize) -> usize {
        2usize
            .saturating_mul(self.num_layers)
            .saturating_mul(self.num_kv_heads)
            .saturating_mul(self.head_dim)
            .saturating_mul(bytes_per_element)
    }
}

/// The largest size (`hidden_size`, `vocab_size`, …, positions) and layer
/// count a config may give: far above any real model, low enough that
/// per-layer tables and size products cannot overflow or exhaust memory
/// before the weights are checked.
const MAX_SIZE: usize = 1 << 26;
const MAX_LAYERS: usize = 1 << 12;

/// `value` of `field`, refused when no real model has such a size.
fn plausible(origin: &str, field: &str, value: usize) -> Result<usize> {
    let limit = if field == "num_hidden_layers" {
        MAX_LAYERS
    } else {
        MAX_SIZE
    };
    if value > limit {
        return Err(ModelError::config(
            origin,
            field,
            format!("{value} is larger than any model supported here (at most {limit})"),
        ));
    }
    Ok(value)
}

fn first_id(origin: &str, field: &str, value: Option<&Value>) -> Result<Option<u32>> {
    Ok(ids(origin, field, value)?.first().copied())
}

fn ids(origin: &str, field: &str, value: Option<&Value>) -> Result<Vec<u32>> {
    let one = |v: &Value| -> Result<u32> {
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                ModelError::config(origin, field, format!("expected a token id, got {v}"))
            })
    };
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(one).collect(),
        Some(v) => Ok(vec![one(v)?]),
    }
}

fn resolve_sliding_window(
    origin: &str,
    raw: &RawConfig,
    architecture: Architecture,
    num_layers: usize,
) -> Result<Vec<Option<usize>>> {
    let window = match &raw.sliding_window {
        None | Some(Value::Null) => None,
        Some(Value::Bool(false)) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|w| usize::try_from(w).ok())
                .filter(|&w| w > 0)
                .ok_or_else(|| {
                    ModelError::config(
                        origin,
                        "sliding_window",
                        format!("expected a positive integer, got {v}"),
                    )
                })?,
        ),
    };
    let window = match architecture {
        Architecture::Qwen2 => window.filter(|_| raw.use_sliding_window.unwrap_or(false)),
        Architecture::Mistral => window,
        _ => None,
    };
    let Some(window) = window else {
        return Ok(vec![None; num_layers]);
    };
    if let Some(types) = &raw.layer_types {
        if types.len() != num_layers {
            return Err(ModelError::config(
                origin,
                "layer_types",
                format!("{} entries for {num_layers} layers", types.len()),
            ));
        }
        return types
            .iter()
            .map(|t| match t.as_str() {
                "sliding_attention" => Ok(Some(window)),
                "full_attention" => Ok(None),
                other => Err(ModelError::config(
                    origin,
                    "layer_types",
                    format!("unknown layer type `{other}`"),
                )),
            })
            .collect();
    }
    Ok(match architecture {
        Architecture::Qwen2 => {
            let first_sliding = raw.max_window_layers.unwrap_or(28);
            (0..num_layers)
                .map(|i| (i >= first_sliding).then_some(window))
                .collect()
        }
        _ => vec![Some(window); num_layers],
    })
}

fn resolve_rope(
    origin: &str,
    raw: &RawConfig,
    head_dim: usize,
    max_position_embeddings: usize,
    partial_default: f64,
    interleaved: bool,
) -> Result<RopeConfig> {
    // transformers 5.x keeps everything in `rope_parameters`; 4.x has
    // `rope_theta` at the top level and the scaling in `rope_scaling`.
    let (params, field) = match (&raw.rope_parameters, &raw.rope_scaling) {
        (Some(Value::Object(p)), _) => (Some(p), "rope_parameters"),
        (_, Some(Value::Object(p))) => (Some(p), "rope_scaling"),
        (Some(Value::Null) | None, Some(Value::Null) | None) => (None, "rope_parameters"),
        (Some(v), _) | (None, Some(v)) => {
            return Err(ModelError::config(
                origin,
                "rope_parameters",
                format!("expected an object, got {v}"),
            ));
        }
    };
    let get_f64 = |key: &str| -> Result<Option<f64>> {
        match params.and_then(|p| p.get(key)) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| {
                ModelError::config(
                    origin,
                    format!("{field}.{key}"),
                    format!("expected a number, got {v}"),
                )
            }),
        }
    };
    let theta = get_f64("rope_theta")?
        .or(raw.rope_theta)
        .unwrap_or(10_000.0);
    if !(theta.is_finite() && theta > 0.0) {
        return Err(ModelError::config(
            origin,
            "rope_theta",
            format!("must be positive, got {theta}"),
        ));
    }
    let partial = get_f64("partial_rotary_factor")?
        .or(raw.partial_rotary_factor)
        .unwrap_or(partial_default);
    let rotary_dim = (head_dim as f64 * partial) as usize;
    if rotary_dim == 0 || !rotary_dim.is_multiple_of(2) || rotary_dim > head_dim {
        return Err(ModelError::config(
            origin,
            "partial_rotary_factor",
            format!("{partial} × head_dim {head_dim} must give an even number of rotated features"),
        ));
    }
    let rope_type = params
        .and_then(|p| p.get("rope_type").or_else(|| p.get("type")))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let factor = |required: bool| -> Result<f64> {
        match get_f64("factor")? {
            Some(f) if f > 0.0 && f.is_finite() => Ok(f),
            Some(f) => Err(ModelError::config(
                origin,
                format!("{field}.factor"),
                format!("must be positive, got {f}"),
            )),
            None if !required => Ok(1.0),
            None => Err(ModelError::config(
                origin,
                format!("{field}.factor"),
                "missing",
            )),
        }
    };
    let original = || -> Result<usize> {
        match params.and_then(|p| p.get("original_max_position_embeddings")) {
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    ModelError::config(
                        origin,
                        format!("{field}.original_max_position_embeddings"),
                        format!("expected an integer, got {v}"),
                    )
                }),
            None => Ok(raw
                .original_max_position_embeddings
                .unwrap_or(max_position_embeddings)),
        }
    };
    let scaling = match rope_type {
        "default" => RopeScaling::Default,
        "linear" => RopeScaling::Linear {
            factor: factor(true)?,
        },
        "dynamic" => RopeScaling::Dynamic {
            factor: factor(true)?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: factor(true)?,
            low_freq_factor: get_f64("low_freq_factor")?.ok_or_else(|| {
                ModelError::config(origin, format!("{field}.low_freq_factor"), "missing")
            })?,
            high_freq_factor: get_f64("high_freq_factor")?.ok_or_else(|| {
                ModelError::config(origin, format!("{field}.high_freq_factor"), "missing")
            })?,
            original_max_position_embeddings: original()?,
        },
        "yarn" => {
            let original_max = original()?;
            let factor = match get_f64("factor")? {
                Some(f) => f,
                None => max_position_embeddings as f64 / original_max as f64,
            };
            let mscale = get_f64("mscale")?;
            let mscale_all_dim = get_f64("mscale_all_dim")?;
            let get_mscale = |scale: f64, m: f64| {
                if scale <= 1.0 {
                    1.0
                } else {
                    0.1 * m * scale.ln() + 1.0
                }
            };
            let attention_factor = match get_f64("attention_factor")? {
                Some(a) => a,
                None => match (mscale, mscale_all_dim) {
                    (Some(m), Some(a)) if m != 0.0 && a != 0.0 => {
                        get_mscale(factor, m) / get_mscale(factor, a)
                    }
                    _ => get_mscale(factor, 1.0),
                },
            };
            let nonzero = |v: Option<f64>, default: f64| match v {
                Some(x) if x != 0.0 => x,
                _ => default,
            };
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings: original_max,
                beta_fast: nonzero(get_f64("beta_fast")?, 32.0),
                beta_slow: nonzero(get_f64("beta_slow")?, 1.0),
                attention_factor,
                truncate: params
                    .and_then(|p| p.get("truncate"))
                    .and_then(Value::as_bool)
                    .unwrap_or(true),
            }
        }
        other => {
            return Err(ModelError::Unsupported {
                origin: origin.to_string(),
                what: format!(
                    "rope type `{other}` in `{field}` (supported: default, linear, dynamic, yarn, llama3)"
                ),
            });
        }
    };
    Ok(RopeConfig {
        theta,
        rotary_dim,
        interleaved,
        scaling,
    })
}

/// Inverse frequencies for `rope` at a sequence of `seq_len` positions
/// (only dynamic NTK depends on it), and the cos/sin scale (YaRN's attention
/// factor; 1 otherwise). Computed in f32 as transformers does.
pub fn rope_frequencies(
    rope: &RopeConfig,
    max_position_embeddings: usize,
    seq_len: usize,
) -> (Vec<f64>, f64) {
    let dim = rope.rotary_dim;
    let base_freqs = |base: f32| -> Vec<f32> {
        (0..dim / 2)
            .map(|k| 1.0f32 / base.powf((2 * k) as f32 / dim as f32))
            .collect()
    };
    let theta = rope.theta as f32;
    let (freqs, scale): (Vec<f32>, f64) = match &rope.scaling {
        RopeScaling::Default => (base_freqs(theta), 1.0),
        RopeScaling::Linear { factor } => (
            base_freqs(theta)
                .into_iter()
                .map(|f| f / *factor as f32)
                .collect(),
            1.0,
        ),
        RopeScaling::Dynamic { factor } => {
            let seq = seq_len.max(max_position_embeddings) as f64;
            let max = max_position_embeddings as f64;
            let base = rope.theta
                * ((factor * seq / max) - (factor - 1.0)).powf(dim as f64 / (dim as f64 - 2.0));
            (base_freqs(base as f32), 1.0)
        }
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => {
            let old = *original_max_position_embeddings as f64;
            let low_wavelen = old / low_freq_factor;
            let high_wavelen = old / high_freq_factor;
            let freqs = base_freqs(theta)
                .into_iter()
                .map(|f| {
                    let wavelen = (2.0 * std::f64::consts::PI) as f32 / f;
                    let wl = wavelen as f64;
                    let scaled = if wl > low_wavelen {
                        f / *factor as f32
                    } else {
                        f
                    };
                    if wl < high_wavelen || wl > low_wavelen {
                        scaled
                    } else {
                        let smooth = ((old as f32 / wavelen) - *low_freq_factor as f32)
                            / (*high_freq_factor as f32 - *low_freq_factor as f32);
                        (1.0 - smooth) * scaled / *factor as f32 + smooth * scaled
                    }
                })
                .collect();
            (freqs, 1.0)
        }
        RopeScaling::Yarn {
            factor,
            original_max_position_embeddings,
            beta_fast,
            beta_slow,
            attention_factor,
            truncate,
        } => {
            let d = dim as f64;
            let base = rope.theta;
            let max = *original_max_position_embeddings as f64;
            let correction = |rot: f64| {
                (d * (max / (rot * 2.0 * std::f64::consts::PI)).ln()) / (2.0 * base.ln())
            };
            let (mut low, mut high) = (correction(*beta_fast), correction(*beta_slow));
            if *truncate {
                low = low.floor();
                high = high.ceil();
            }
            let low = low.max(0.0);
            let mut high = high.min(d - 1.0);
            if low == high {
                high += 0.001;
            }
            let freqs = (0..dim / 2)
                .map(|k| {
                    let pos_freq = theta.powf((2 * k) as f32 / dim as f32);
                    let extrapolation = 1.0 / pos_freq;
                    let interpolation = 1.0 / (*factor as f32 * pos_freq);
                    let ramp =
                        ((k as f32 - low as f32) / (high as f32 - low as f32)).clamp(0.0, 1.0);
                    let extrapolation_factor = 1.0 - ramp;
                    interpolation * (1.0 - extrapolation_factor)
                        + extrapolation * extrapolation_factor
                })
                .collect();
            (freqs, *attention_factor)
        }
    };
    (freqs.into_iter().map(f64::from).collect(), scale)
}

/// The default dtype named in the config (`dtype` or `torch_dtype`).
pub fn declared_dtype(raw: &RawConfig) -> Option<&str> {
    raw.dtype.as_deref().or(raw.torch_dtype.as_deref())
}
