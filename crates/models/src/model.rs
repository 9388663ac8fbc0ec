//! The decoder-only transformer every supported architecture maps onto:
//! shared blocks (linear, norms, attention with a KV cache, MLPs, rotary)
//! wired by [`ModelConfig`]. Each architecture only names its tensors
//! (`arch.rs`).
//!
//! Shapes: token ids (B, T); activations (B, T, C); heads (B, H, T, D);
//! logits (B, T, V).

use std::sync::Arc;

use kaiyuan_tensor::quant::QMatrix;
use kaiyuan_tensor::{
    AttentionOptions, DType, Device, KvBuffer, RotaryEmbedding, RotaryLayout, Tensor,
    scaled_dot_product_attention, scaled_dot_product_attention_cached,
};

use crate::arch::{LayerNames, TensorNames};
use crate::config::{
    Activation, BlockLayout, MlpKind, ModelConfig, Norm, RopeScaling, rope_frequencies,
};
use crate::{ModelError, Result, Weights};

/// `y = x·Wᵀ + b` with W of shape (out, in) as stored by PyTorch, plus,
/// when a LoRA adapter is attached, `scale · dropout(x)·Aᵀ·Bᵀ`. W is dense
/// or quantized ([`QMatrix`], multiplied by fused kernels).
#[derive(Clone, Debug)]
pub struct Linear {
    /// (out, in); a zero-memory placeholder of that shape when quantized.
    weight: Tensor,
    /// The quantized weight, when there is one.
    quantized: Option<QMatrix>,
    /// Calibration hook ([`Model::set_linear_hook`]).
    hook: Option<LinearHook>,
    /// (out).
    bias: Option<Tensor>,
    /// The checkpoint name prefix (without `.weight`/`.bias`); empty when
    /// built by hand.
    name: String,
    /// A LoRA adapter ([`Model::attach_lora`]).
    lora: Option<Box<LoraAdapter>>,
}

/// A function a [`Linear`] calls with its name and its input (N, in) before
/// multiplying: quantizers use it to collect calibration statistics. When it
/// returns a tensor (out, in), that weight is used for this call instead of
/// the layer's own (GPTQ runs the rest of a block on the weights it has just
/// quantized).
#[derive(Clone)]
pub struct LinearHook(
    /// The function.
    pub Arc<LinearHookFn>,
);

/// The function inside a [`LinearHook`]: (layer name, input (N, in)) → an
/// optional replacement weight (out, in) for this call.
pub type LinearHookFn = dyn Fn(&str, &Tensor) -> Result<Option<Tensor>> + Send + Sync;

impl std::fmt::Debug for LinearHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinearHook")
    }
}

/// A zero-memory stand-in (a broadcast zero) of shape `shape`.
fn placeholder(shape: &[usize], dtype: DType) -> Result<Tensor> {
    Ok(Tensor::zeros(&[1], dtype)?.broadcast_as(shape)?)
}

/// A low-rank update of one [`Linear`]: `scale · dropout(x)·Aᵀ·Bᵀ`.
#[derive(Clone, Debug)]
struct LoraAdapter {
    /// (r, in).
    a: Tensor,
    /// (out, r).
    b: Tensor,
    /// α / r, or α / √r with rsLoRA.
    scale: f64,
    /// Probability of zeroing an input feature of the adapter.
    dropout: f64,
    /// The seed of this call's dropout mask; `None` (inference) skips
    /// dropout ([`Model::set_lora_dropout_seed`]).
    dropout_seed: Option<u64>,
}

/// PEFT's prefix of adapter tensor names in `adapter_model.safetensors`.
pub const LORA_NAME_PREFIX: &str = "base_model.model.";

/// The names PEFT gives the A and B tensors of the adapter on `module` in
/// `adapter_model.safetensors` (the adapter name `default` is dropped).
///
/// ```
/// use kaiyuan_models::model::lora_tensor_names;
/// let (a, b) = lora_tensor_names("model.layers.0.self_attn.q_proj");
/// assert_eq!(a, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
/// assert_eq!(b, "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight");
/// ```
pub fn lora_tensor_names(module: &str) -> (String, String) {
    (
        format!("{LORA_NAME_PREFIX}{module}.lora_A.weight"),
        format!("{LORA_NAME_PREFIX}{module}.lora_B.weight"),
    )
}

/// What [`Model::attach_lora`] attaches.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraSettings {
    /// Rank r of every adapter (≥ 1).
    pub rank: usize,
    /// α: updates are scaled by α / r (α / √r with `use_rslora`).
    pub alpha: f64,
    /// Probability in [0, 1) of zeroing an adapter input feature while
    /// training (only when a dropout seed is set).
    pub dropout: f64,
    /// Modules to adapt, PEFT's rule: a linear module matches a target when
    /// its name equals it or ends with `.` followed by it (`q_proj` matches
    /// `model.layers.0.self_attn.q_proj`). Every target must match.
    pub target_modules: Vec<String>,
    /// rsLoRA: scale by α / √r instead of α / r.
    pub use_rslora: bool,
    /// Seed of the initialisation of A.
    pub seed: u64,
}

impl LoraSettings {
    /// The factor the update `B·A` is multiplied by.
    ///
    /// ```
    /// use kaiyuan_models::model::LoraSettings;
    /// let mut s = LoraSettings { rank: 4, alpha: 8.0, dropout: 0.0,
    ///     target_modules: vec!["q_proj".into()], use_rslora: false, seed: 0 };
    /// assert_eq!(s.scale(), 2.0);
    /// s.use_rslora = true;
    /// assert_eq!(s.scale(), 4.0);
    /// ```
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }

    fn check(&self) -> Result<()> {
        if self.rank == 0 {
            return Err(ModelError::invalid("lora rank", "must be at least 1"));
        }
        if !self.alpha.is_finite() {
            return Err(ModelError::invalid(
                "lora alpha",
                format!("{} is not finite", self.alpha),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(ModelError::invalid(
                "lora dropout",
                format!("{} is not in [0, 1)", self.dropout),
            ));
        }
        if self.target_modules.is_empty() || self.target_modules.iter().any(|t| t.is_empty()) {
            return Err(ModelError::invalid(
                "lora target_modules",
                "give at least one non-empty module name (e.g. q_proj, v_proj)",
            ));
        }
        Ok(())
    }
}

/// SplitMix64's output function: spreads a counter over 64 bits.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generator seed of adapter `index` (in model order) under `seed`.
fn adapter_seed(seed: u64, index: usize) -> u64 {
    mix64(seed ^ mix64(index as u64 ^ 0x4C6F_5241))
}

/// Whether `module` is a PEFT match for `target`.
fn matches_target(module: &str, target: &str) -> bool {
    module == target
        || module
            .strip_suffix(target)
            .is_some_and(|head| head.ends_with('.'))
}

impl Linear {
    /// A layer from its weight (out, in) and optional bias (out).
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            weight,
            quantized: None,
            hook: None,
            bias,
            name: String::new(),
            lora: None,
        }
    }

    /// A layer whose weight is quantized.
    pub fn new_quantized(weight: QMatrix, bias: Option<Tensor>) -> Result<Self> {
        Ok(Self {
            weight: placeholder(&[weight.rows(), weight.cols()], DType::F32)?,
            quantized: Some(weight),
            hook: None,
            bias,
            name: String::new(),
            lora: None,
        })
    }

    /// The quantized weight, when the layer has one.
    pub fn quantized(&self) -> Option<&QMatrix> {
        self.quantized.as_ref()
    }

    /// The checkpoint name prefix, e.g. `model.layers.0.self_attn.q_proj`
    /// (empty when built by hand).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether a LoRA adapter is attached.
    pub fn has_lora(&self) -> bool {
        self.lora.is_some()
    }

    fn slots<'a>(&'a mut self, out: &mut Vec<(String, &'a mut Tensor)>) {
        if self.quantized.is_none() {
            out.push((format!("{}.weight", self.name), &mut self.weight));
        }
        if let Some(bias) = &mut self.bias {
            out.push((format!("{}.bias", self.name), bias));
        }
    }

    /// (…, in) → (…, out).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let flat = flatten_rows(x)?;
        let replaced = match &self.hook {
            Some(hook) => (hook.0)(&self.name, &flat)?,
            None => None,
        };
        let y = match (&replaced, &self.quantized) {
            (Some(w), _) => flat.matmul(&w.cast(flat.dtype())?.t()?)?,
            (None, Some(q)) => q.matmul_t(&flat)?,
            (None, None) => flat.matmul(&self.weight.t()?)?,
        };
        self.finish(y, &flat, x.shape())
    }

    /// [`Linear::forward`] of several layers on the same x (a layer's
    /// query, key and value projections, say), with the same results. When
    /// all are quantized, x is quantized once and, when decoding, their
    /// products run as one parallel job ([`QMatrix::matmul_t_many`]); when
    /// none is, the dense products do ([`Tensor::matmul_t_many`]).
    pub fn forward_many(layers: &[&Linear], x: &Tensor) -> Result<Vec<Tensor>> {
        if layers.len() < 2 || layers.iter().any(|l| l.hook.is_some()) {
            return layers.iter().map(|l| l.forward(x)).collect();
        }
        let flat = flatten_rows(x)?;
        let quantized: Option<Vec<&QMatrix>> =
            layers.iter().map(|l| l.quantized.as_ref()).collect();
        let products = match quantized {
            Some(matrices) => QMatrix::matmul_t_many(&matrices, &flat)?,
            None if layers.iter().all(|l| l.quantized.is_none()) => {
                let weights: Vec<&Tensor> = layers.iter().map(|l| &l.weight).collect();
                flat.matmul_t_many(&weights)?
            }
            None => return layers.iter().map(|l| l.forward(x)).collect(),
        };
        products
            .into_iter()
            .zip(layers)
            .map(|(y, layer)| layer.finish(y, &flat, x.shape()))
            .collect()
    }

    /// Adds the bias and the LoRA branch to `y` = `flat`·Wᵀ and gives it
    /// x's leading axes.
    fn finish(&self, mut y: Tensor, flat: &Tensor, shape: &[usize]) -> Result<Tensor> {
        if let Some(bias) = &self.bias {
            y = y.add(bias)?;
        }
        if let Some(lora) = &self.lora {
            y = y.add(&lora.forward(flat)?)?;
        }
        let mut out_shape = shape.to_vec();
        if let Some(last) = out_shape.last_mut() {
            *last = self.weight.shape()[0];
        }
        Ok(y.reshape(&out_shape)?)
    }

    /// The weight (out, in); a broadcast zero placeholder when the layer is
    /// quantized ([`Linear::quantized`]).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Replaces the weight by a quantized one of the same shape.
    pub fn set_quantized(&mut self, weight: QMatrix) -> Result<()> {
        let shape = self.weight.shape();
        if shape != [weight.rows(), weight.cols()] {
            return Err(ModelError::invalid(
                format!("quantized weight of {}", self.name),
                format!(
                    "{} × {} for a layer of shape {shape:?}",
                    weight.rows(),
                    weight.cols()
                ),
            ));
        }
        self.weight = placeholder(shape, self.weight.dtype())?;
        self.quantized = Some(weight);
        Ok(())
    }

    /// Replaces the weight by a dense one of the same shape (dropping a
    /// quantized one).
    pub fn set_weight(&mut self, weight: Tensor) -> Result<()> {
        if weight.shape() != self.weight.shape() {
            return Err(ModelError::invalid(
                format!("weight of {}", self.name),
                format!(
                    "shape {:?} for a layer of shape {:?}",
                    weight.shape(),
                    self.weight.shape()
                ),
            ));
        }
        self.weight = weight.cast(self.weight.dtype())?;
        self.quantized = None;
        Ok(())
    }
}

impl LoraAdapter {
    /// `scale · dropout(x)·Aᵀ·Bᵀ` of x (N, in) → (N, out), in PEFT's order
    /// (`lora_B(lora_A(dropout(x))) * scaling`).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dropped;
        let x = match self.dropout_seed {
            Some(seed) if self.dropout > 0.0 => {
                let keep = 1.0 / (1.0 - self.dropout);
                let p = self.dropout as f32;
                let mask: Vec<f32> = Tensor::rand_uniform(x.shape(), 0.0, 1.0, seed)?
                    .to_vec::<f32>()?
                    .into_iter()
                    .map(|u| if u < p { 0.0 } else { keep as f32 })
                    .collect();
                let mask = Tensor::from_vec(mask, x.shape())?
                    .cast(x.dtype())?
                    .to_device(x.device())?;
                dropped = x.mul(&mask)?;
                &dropped
            }
            _ => x,
        };
        let h = x.matmul(&self.a.t()?)?.matmul(&self.b.t()?)?;
        Ok(h.affine(self.scale, 0.0)?)
    }
}

/// RMSNorm or LayerNorm over the last axis.
#[derive(Clone, Debug)]
struct NormLayer {
    weight: Tensor,
    bias: Option<Tensor>,
    kind: Norm,
    /// The checkpoint name prefix.
    name: String,
}

impl NormLayer {
    fn load(weights: &Weights, prefix: &str, config: &ModelConfig) -> Result<Self> {
        let c = config.hidden_size;
        let weight = weights.get(&format!("{prefix}.weight"), &[c])?;
        let bias = match config.norm {
            Norm::Layer(_) => Some(weights.get(&format!("{prefix}.bias"), &[c])?),
            Norm::Rms(_) => None,
        };
        Ok(Self {
            weight,
            bias,
            kind: config.norm,
            name: prefix.to_string(),
        })
    }

    fn slots<'a>(&'a mut self, out: &mut Vec<(String, &'a mut Tensor)>) {
        out.push((format!("{}.weight", self.name), &mut self.weight));
        if let Some(bias) = &mut self.bias {
            out.push((format!("{}.bias", self.name), bias));
        }
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self.kind {
            Norm::Rms(eps) => x.rms_norm(&self.weight, eps)?,
            Norm::Layer(eps) => x.layer_norm(Some(&self.weight), self.bias.as_ref(), eps)?,
        })
    }
}

/// The q/k/v projections: separate, or Falcon's fused one whose output is
/// split into heads.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // one per layer; boxing buys nothing
enum Qkv {
    Separate { q: Linear, k: Linear, v: Linear },
    FalconFused(Linear),
}

/// Self-attention.
#[derive(Clone, Debug)]
struct Attention {
    qkv: Qkv,
    o: Linear,
    sliding_window: Option<usize>,
}

#[derive(Clone, Debug)]
enum Mlp {
    Gated {
        gate: Linear,
        up: Linear,
        down: Linear,
    },
    /// GLM's fused gate and up projection (gate rows first).
    FusedGated {
        gate_up: Linear,
        down: Linear,
    },
    Plain {
        up: Linear,
        down: Linear,
    },
}

impl Layer {
    fn slots<'a>(&'a mut self, out: &mut Vec<(String, &'a mut Tensor)>) {
        self.norm_attn.slots(out);
        match &mut self.attention.qkv {
            Qkv::Separate { q, k, v } => {
                q.slots(out);
                k.slots(out);
                v.slots(out);
            }
            Qkv::FalconFused(fused) => fused.slots(out),
        }
        self.attention.o.slots(out);
        if let Some(norm) = &mut self.norm_mlp {
            norm.slots(out);
        }
        match &mut self.mlp {
            Mlp::Gated { gate, up, down } => {
                gate.slots(out);
                up.slots(out);
                down.slots(out);
            }
            Mlp::FusedGated { gate_up, down } => {
                gate_up.slots(out);
                down.slots(out);
            }
            Mlp::Plain { up, down } => {
                up.slots(out);
                down.slots(out);
            }
        }
        if let Some((a, m)) = &mut self.post_norms {
            a.slots(out);
            m.slots(out);
        }
    }
}

impl Layer {
    /// The layer's linear modules in PEFT's (module) order.
    fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut out = Vec::with_capacity(7);
        match &mut self.attention.qkv {
            Qkv::Separate { q, k, v } => out.extend([q, k, v]),
            Qkv::FalconFused(fused) => out.push(fused),
        }
        out.push(&mut self.attention.o);
        match &mut self.mlp {
            Mlp::Gated { gate, up, down } => out.extend([gate, up, down]),
            Mlp::FusedGated { gate_up, down } => out.extend([gate_up, down]),
            Mlp::Plain { up, down } => out.extend([up, down]),
        }
        out
    }

    /// The layer's linear modules in PEFT's (module) order.
    fn linears(&self) -> Vec<&Linear> {
        let mut out = Vec::with_capacity(7);
        match &self.attention.qkv {
            Qkv::Separate { q, k, v } => out.extend([q, k, v]),
            Qkv::FalconFused(fused) => out.push(fused),
        }
        out.push(&self.attention.o);
        match &self.mlp {
            Mlp::Gated { gate, up, down } => out.extend([gate, up, down]),
            Mlp::FusedGated { gate_up, down } => out.extend([gate_up, down]),
            Mlp::Plain { up, down } => out.extend([up, down]),
        }
        out
    }
}

#[derive(Clone, Debug)]
struct Layer {
    attention: Attention,
    mlp: Mlp,
    /// The attention input norm (or the shared norm of parallel blocks).
    norm_attn: NormLayer,
    /// The MLP input norm (absent for a shared-norm parallel block).
    norm_mlp: Option<NormLayer>,
    /// GLM-4's norms on the attention and MLP outputs.
    post_norms: Option<(NormLayer, NormLayer)>,
}

/// Keys and values of every layer for the tokens seen so far, per batch row.
///
/// Rows are left-padded to a common length at prefill; `pad[b]` counts the
/// padding slots of row `b`, which are masked out of every attention.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    /// Per layer, (B, Hkv, T, D) keys and values, appended in place with
    /// spare capacity.
    layers: Vec<Option<(KvBuffer, KvBuffer)>>,
    pad: Vec<usize>,
    len: usize,
    /// Positions per row each layer's buffers are made with room for
    /// (0: the first call's positions, doubling after).
    reserve: usize,
}

impl KvCache {
    /// Slots held per row (padding included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Padding slots of each row.
    pub fn padding(&self) -> &[usize] {
        &self.pad
    }

    /// Number of batch rows (0 before the first call).
    pub fn batch_size(&self) -> usize {
        self.pad.len()
    }

    /// Bytes held by the cached keys and values (their spare capacity
    /// included, in the model's [`Model::kv_dtype`]).
    pub fn byte_size(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|(k, v)| k.byte_size() + v.byte_size())
            .sum()
    }

    /// Keeps only the listed batch rows (finished sequences leave a batch).
    pub fn retain_rows(&mut self, rows: &[usize]) -> Result<()> {
        if let Some(&bad) = rows.iter().find(|&&r| r >= self.pad.len()) {
            return Err(ModelError::invalid(
                "rows",
                format!("row {bad} of a batch of {}", self.pad.len()),
            ));
        }
        for (k, v) in self.layers.iter_mut().flatten() {
            k.retain_rows(rows)?;
            v.retain_rows(rows)?;
        }
        self.pad = rows.iter().map(|&r| self.pad[r]).collect();
        Ok(())
    }
}

/// Which positions the LM head is applied to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Every input position: (B, T, V).
    All,
    /// Only the last input position of each row: (B, 1, V).
    Last,
}

/// Most prompt positions [`Model::prefill`] runs in one forward call on
/// the CPU. At 512 (llama.cpp's micro-batch) a 512-token SmolLM2 prompt
/// peaked 20-35 MiB higher (Q4_0, Q8_0, Q4_K, F16) at the same prefill
/// speed; at 64 dense f16 weights prefilled 15-20 % slower (each call
/// packs the whole weight matrix for the GEMM).
pub const PREFILL_CHUNK: usize = 128;

/// [`PREFILL_CHUNK`] on a CUDA device, where larger products keep the GPU
/// busy and device memory holds the activations.
const PREFILL_CHUNK_CUDA: usize = 512;

/// A loaded causal language model.
#[derive(Clone, Debug)]
pub struct Model {
    config: ModelConfig,
    /// (V, C); a placeholder when `embed_quantized` is set.
    embed: Tensor,
    /// The embedding table, quantized (rows are dequantized on lookup).
    embed_quantized: Option<QMatrix>,
    /// The untied LM head, quantized.
    lm_head_quantized: Option<QMatrix>,
    layers: Vec<Layer>,
    final_norm: NormLayer,
    /// `None` when tied to the embedding.
    lm_head: Option<Tensor>,
    rope: RotaryEmbedding,
    /// Per feature of a head, the YaRN cos/sin scale (None when 1).
    rope_feature_scale: Option<Tensor>,
    dtype: DType,
    /// The type the CPU KV cache holds ([`Model::set_kv_dtype`]).
    kv_dtype: DType,
}

impl Model {
    /// Builds the model from resolved `config` and `weights` (HF names),
    /// checking every tensor's shape; weights are cast to `dtype`.
    pub fn new(config: ModelConfig, weights: &Weights, dtype: DType) -> Result<Self> {
        if !dtype.is_float() {
            return Err(ModelError::invalid(
                "dtype",
                format!("{dtype} is not a float type"),
            ));
        }
        let weights = weights.cast(dtype)?;
        let names = TensorNames::for_config(&config);
        let c = config.hidden_size;
        let v = config.vocab_size;
        let embed_quantized = weights.quantized(names.embed, &[v, c])?;
        let embed = match &embed_quantized {
            Some(_) => placeholder(&[v, c], dtype)?,
            None => weights.get(names.embed, &[v, c])?,
        };
        let mut layers = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            layers.push(load_layer(&weights, &names.layer(i), &config, i)?);
        }
        let final_norm = NormLayer::load(&weights, names.final_norm, &config)?;
        let lm_head_quantized = weights.quantized(names.lm_head, &[v, c])?;
        let lm_head = if lm_head_quantized.is_some() {
            Some(placeholder(&[v, c], dtype)?)
        } else if config.tie_word_embeddings {
            weights.get_optional(names.lm_head, &[v, c])?
        } else {
            Some(weights.get(names.lm_head, &[v, c])?)
        };
        let layout = if config.rope.interleaved {
            RotaryLayout::Interleaved
        } else {
            RotaryLayout::HalfSplit
        };
        let (inv_freq, scale) = rope_frequencies(&config.rope, config.max_position_embeddings, 0);
        let rope = RotaryEmbedding::from_inv_freq(inv_freq, config.rope.rotary_dim, layout)?;
        let rope_feature_scale = if scale == 1.0 {
            None
        } else {
            let d = config.head_dim;
            let values: Vec<f64> = (0..d)
                .map(|i| {
                    if i < config.rope.rotary_dim {
                        scale
                    } else {
                        1.0
                    }
                })
                .collect();
            Some(Tensor::from_vec(values, &[d])?.cast(dtype)?)
        };
        Ok(Self {
            config,
            embed,
            embed_quantized,
            lm_head_quantized,
            layers,
            final_norm,
            lm_head,
            rope,
            rope_feature_scale,
            dtype,
            kv_dtype: if dtype == DType::F64 {
                DType::F64
            } else {
                DType::F32
            },
        })
    }

    /// The resolved configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The compute dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The type the KV cache holds its keys and values in on the CPU: f32
    /// (f64 for an f64 model) unless [`Model::set_kv_dtype`] chose another.
    pub fn kv_dtype(&self) -> DType {
        self.kv_dtype
    }

    /// Makes caches made from now on hold their keys and values as
    /// `kv_dtype` on the CPU: f32, f16 or bf16 for a model computing in
    /// any of those (f64 models hold f64). A cache in f16 takes half the
    /// memory of f32, as llama.cpp's default `--cache-type-k f16` does;
    /// each key and value is rounded once, when it is cached (exact for an
    /// f16 model; an f32 model's logits move by about f16's precision), and
    /// widened at every read, which makes long-context decoding slower
    /// (12–17% after a 1,024-token prompt in `docs/performance.md`). A
    /// device cache holds the compute dtype.
    ///
    /// ```
    /// # use kaiyuan_models::{Model, ModelFiles};
    /// # use kaiyuan_tensor::DType;
    /// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/eval/mc/model");
    /// let mut model = ModelFiles::open(dir)?.take_model(DType::F32)?;
    /// model.set_kv_dtype(DType::F16)?;
    /// assert_eq!(model.kv_dtype(), DType::F16);
    /// assert!(model.set_kv_dtype(DType::U32).is_err());
    /// # Ok::<(), kaiyuan_models::ModelError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidArgument`] for a type that cannot hold the compute
    /// dtype's keys and values.
    pub fn set_kv_dtype(&mut self, kv_dtype: DType) -> Result<()> {
        let allowed = match self.dtype {
            DType::F64 => kv_dtype == DType::F64,
            _ => matches!(kv_dtype, DType::F32 | DType::F16 | DType::BF16),
        };
        if !allowed {
            return Err(ModelError::invalid(
                "KV cache dtype",
                format!(
                    "{kv_dtype} cannot hold the keys and values of a {} model (f32, f16 or bf16; f64 for an f64 model)",
                    self.dtype
                ),
            ));
        }
        self.kv_dtype = kv_dtype;
        Ok(())
    }

    /// Every trainable tensor under its checkpoint (HF) name, in a fixed
    /// order: the embedding, each layer, the final norm, then the LM head
    /// unless it is tied to the embedding. Mutable, so an optimiser can
    /// replace them (shapes and dtypes must stay).
    pub fn parameters_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let names = TensorNames::for_config(&self.config);
        let mut out = Vec::new();
        if self.embed_quantized.is_none() {
            out.push((names.embed.to_string(), &mut self.embed));
        }
        for layer in &mut self.layers {
            layer.slots(&mut out);
        }
        self.final_norm.slots(&mut out);
        if let (Some(head), None) = (&mut self.lm_head, &self.lm_head_quantized) {
            out.push((names.lm_head.to_string(), head));
        }
        out
    }

    /// The device the parameters live on.
    pub fn device(&self) -> Device {
        self.embed.device()
    }

    /// Moves every parameter (LoRA adapters included) to `device`; the
    /// forward pass then runs there. Quantized weights stay on the CPU, so
    /// a model holding any is refused for a CUDA device.
    ///
    /// ```
    /// # use kaiyuan_models::Model;
    /// # fn demo(model: &mut Model) -> kaiyuan_models::Result<()> {
    /// model.to_device(kaiyuan_tensor::Device::Cpu)?; // a no-op on the CPU
    /// # Ok(()) }
    /// ```
    pub fn to_device(&mut self, device: Device) -> Result<()> {
        let quantized = self.embed_quantized.is_some()
            || self.lm_head_quantized.is_some()
            || self
                .layers
                .iter()
                .flat_map(Layer::linears)
                .any(|l| l.quantized.is_some());
        if quantized && device.is_cuda() {
            return Err(ModelError::invalid(
                "device",
                format!(
                    "{device}: quantized weights run on the CPU only (load the model unquantized)"
                ),
            ));
        }
        for (_, t) in self.parameters_mut() {
            *t = t.to_device(device)?;
        }
        for linear in self.layers.iter_mut().flat_map(Layer::linears_mut) {
            if let Some(lora) = &mut linear.lora {
                lora.a = lora.a.to_device(device)?;
                lora.b = lora.b.to_device(device)?;
            }
        }
        if let Some(scale) = &mut self.rope_feature_scale {
            *scale = scale.to_device(device)?;
        }
        Ok(())
    }

    /// A copy of the model computing in float `dtype` (every parameter,
    /// LoRA adapter and rotary scale cast, on the same device): the
    /// low-precision copy a mixed-precision step runs forward and backward,
    /// while the optimiser keeps the f32 originals.
    pub fn to_dtype(&self, dtype: DType) -> Result<Model> {
        if !dtype.is_float() {
            return Err(ModelError::invalid(
                "dtype",
                format!("{dtype} is not a float type"),
            ));
        }
        let mut out = self.clone();
        for (_, t) in out.parameters_mut() {
            *t = t.cast(dtype)?;
        }
        for linear in out.layers.iter_mut().flat_map(Layer::linears_mut) {
            if let Some(lora) = &mut linear.lora {
                lora.a = lora.a.cast(dtype)?;
                lora.b = lora.b.cast(dtype)?;
            }
        }
        if let Some(scale) = &mut out.rope_feature_scale {
            *scale = scale.cast(dtype)?;
        }
        out.dtype = dtype;
        Ok(out)
    }

    /// The trainable tensors under their checkpoint names (cheap clones;
    /// see [`Model::parameters_mut`] for the order).
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut copy = self.clone();
        copy.parameters_mut()
            .into_iter()
            .map(|(name, t)| (name, t.clone()))
            .collect()
    }

    /// Names and shapes of the parameters a model of `config` has (in the
    /// order of [`Model::parameters_mut`]), without any weights: what a
    /// trainer initialises for a model built from scratch.
    pub fn parameter_shapes(config: &ModelConfig) -> Result<Vec<(String, Vec<usize>)>> {
        let model = Model::new(config.clone(), &Weights::probe(), DType::F32)?;
        Ok(model
            .parameters()
            .into_iter()
            .map(|(name, t)| (name, t.shape().to_vec()))
            .collect())
    }

    /// The tensors an optimiser updates, by name: every parameter (see
    /// [`Model::parameters_mut`]), or, with LoRA adapters attached, only
    /// their A and B under PEFT's names ([`lora_tensor_names`]), module by
    /// module in model order, A before B.
    pub fn trainable_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        if !self.has_lora() {
            return self.parameters_mut();
        }
        let mut out = Vec::new();
        for linear in self.layers.iter_mut().flat_map(Layer::linears_mut) {
            if let Some(lora) = &mut linear.lora {
                let (a, b) = lora_tensor_names(&linear.name);
                out.push((a, &mut lora.a));
                out.push((b, &mut lora.b));
            }
        }
        out
    }

    /// The names of the linear modules LoRA can adapt (PEFT's module names,
    /// e.g. `model.layers.0.self_attn.q_proj`), in model order.
    pub fn linear_modules(&self) -> Vec<String> {
        self.layers
            .iter()
            .flat_map(Layer::linears)
            .map(|l| l.name.clone())
            .collect()
    }

    /// Whether any LoRA adapter is attached.
    pub fn has_lora(&self) -> bool {
        self.layers
            .iter()
            .flat_map(Layer::linears)
            .any(Linear::has_lora)
    }

    /// The modules that carry a LoRA adapter, in model order.
    pub fn lora_modules(&self) -> Vec<String> {
        self.layers
            .iter()
            .flat_map(Layer::linears)
            .filter(|l| l.has_lora())
            .map(|l| l.name.clone())
            .collect()
    }

    /// Attaches a LoRA adapter to every linear module `settings` targets
    /// (PEFT's matching rule, see [`LoraSettings::target_modules`]) and
    /// returns their names. Initialised as PEFT does: A (r, in) uniform in
    /// ±1/√in (torch's `kaiming_uniform_(a=√5)`) from a generator seeded by
    /// `settings.seed` and the module's position, B (out, r) zero, so the
    /// model's outputs do not change. From then on
    /// [`Model::trainable_mut`] yields only the adapters.
    ///
    /// Fails, changing nothing, when adapters are already attached, on
    /// impossible settings, and when a target matches no module (the error
    /// names the targets and the model's module names).
    pub fn attach_lora(&mut self, settings: &LoraSettings) -> Result<Vec<String>> {
        settings.check()?;
        if self.has_lora() {
            return Err(ModelError::invalid(
                "lora",
                "adapters are already attached (merge or remove them first)",
            ));
        }
        let modules = self.linear_modules();
        let unmatched: Vec<&str> = settings
            .target_modules
            .iter()
            .filter(|t| !modules.iter().any(|m| matches_target(m, t)))
            .map(String::as_str)
            .collect();
        if !unmatched.is_empty() {
            let mut short: Vec<&str> = Vec::new();
            for m in &modules {
                let last = m.rsplit('.').next().unwrap_or(m);
                if !short.contains(&last) {
                    short.push(last);
                }
            }
            return Err(ModelError::invalid(
                "lora target_modules",
                format!(
                    "{} match{} no linear module of this model; its linear modules are {} (full names such as `{}`)",
                    unmatched
                        .iter()
                        .map(|t| format!("`{t}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if unmatched.len() == 1 { "es" } else { "" },
                    short.join(", "),
                    modules.first().map_or("", String::as_str),
                ),
            ));
        }
        let (dtype, scale, rank) = (self.dtype, settings.scale(), settings.rank);
        let mut attached = Vec::new();
        let mut adapters = Vec::new();
        for (index, linear) in self
            .layers
            .iter()
            .flat_map(Layer::linears)
            .filter(|l| {
                settings
                    .target_modules
                    .iter()
                    .any(|t| matches_target(&l.name, t))
            })
            .enumerate()
        {
            let (out, input) = (linear.weight.shape()[0], linear.weight.shape()[1]);
            let bound = 1.0 / (input as f32).sqrt();
            let a = Tensor::rand_uniform(
                &[rank, input],
                -bound,
                bound,
                adapter_seed(settings.seed, index),
            )?
            .cast(dtype)?;
            let b = Tensor::zeros(&[out, rank], dtype)?;
            adapters.push(Box::new(LoraAdapter {
                a,
                b,
                scale,
                dropout: settings.dropout,
                dropout_seed: None,
            }));
            attached.push(linear.name.clone());
        }
        let mut adapters = adapters.into_iter();
        for linear in self.layers.iter_mut().flat_map(Layer::linears_mut) {
            if attached.contains(&linear.name) {
                linear.lora = adapters.next();
            }
        }
        Ok(attached)
    }

    /// Attaches saved adapters: [`Model::attach_lora`] with `settings`,
    /// then A and B of each adapted module from `weights` under PEFT's
    /// names ([`lora_tensor_names`]), cast to the model's dtype. Fails,
    /// leaving no adapter attached, when a tensor is missing, has the wrong
    /// shape, or belongs to no adapted module.
    pub fn load_lora(&mut self, settings: &LoraSettings, weights: &Weights) -> Result<Vec<String>> {
        let attached = self.attach_lora(settings)?;
        let result = (|| -> Result<()> {
            let mut expected = Vec::new();
            let dtype = self.dtype;
            for linear in self.layers.iter_mut().flat_map(Layer::linears_mut) {
                if let Some(lora) = &mut linear.lora {
                    let (a_name, b_name) = lora_tensor_names(&linear.name);
                    lora.a = weights.get(&a_name, lora.a.shape())?.cast(dtype)?;
                    lora.b = weights.get(&b_name, lora.b.shape())?.cast(dtype)?;
                    expected.push(a_name);
                    expected.push(b_name);
                }
            }
            if let Some(extra) = weights.names().find(|n| !expected.iter().any(|e| e == n)) {
                return Err(ModelError::invalid(
                    "lora weights",
                    format!(
                        "`{extra}` in {} belongs to no adapted module (the adapter's target_modules do not cover it)",
                        weights.origin()
                    ),
                ));
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(attached),
            Err(e) => {
                self.remove_lora();
                Err(e)
            }
        }
    }

    /// The adapters' A and B under PEFT's names (`lora_tensor_names`),
    /// detached: what `adapter_model.safetensors` holds.
    pub fn lora_weights(&self) -> Weights {
        let mut weights = Weights::new("LoRA adapters");
        for linear in self.layers.iter().flat_map(Layer::linears) {
            if let Some(lora) = &linear.lora {
                let (a, b) = lora_tensor_names(&linear.name);
                weights.insert(a, lora.a.detach());
                weights.insert(b, lora.b.detach());
            }
        }
        weights
    }

    /// Folds every adapter into its base weight, `W += scale·(B·A)` (as
    /// PEFT's `merge_and_unload`), and removes the adapters; returns how many
    /// were merged. Records no gradient.
    pub fn merge_lora(&mut self) -> Result<usize> {
        let mut merged = 0;
        for linear in self.layers.iter_mut().flat_map(Layer::linears_mut) {
            if let Some(lora) = linear.lora.take() {
                let weight = kaiyuan_tensor::no_grad(|| -> Result<Tensor> {
                    let delta = lora.b.matmul(&lora.a)?.affine(lora.scale, 0.0)?;
                    Ok(linear.weight.add(&delta.cast(linear.weight.dtype())?)?)
                })?;
                linear.weight = weight.detach();
                merged += 1;
            }
        }
        Ok(merged)
    }

    /// Removes every adapter without merging it (the base model again).
    pub fn remove_lora(&mut self) {
        for linear in self.layers.iter_mut().flat_map(Layer::linears_mut) {
            linear.lora = None;
        }
    }

    /// Sets the seed of the adapters' dropout masks for the next forward
    /// calls: `Some(seed)` while training (each adapter draws its mask from
    /// `seed` and its position, so a (seed, step) pair always gives the same
    /// masks and a resumed run is bit-identical), `None` for inference (no
    /// dropout, the default). No effect without adapters or with dropout 0.
    pub fn set_lora_dropout_seed(&mut self, seed: Option<u64>) {
        for (index, lora) in self
            .layers
            .iter_mut()
            .flat_map(Layer::linears_mut)
            .filter_map(|l| l.lora.as_mut())
            .enumerate()
        {
            lora.dropout_seed = seed.map(|s| adapter_seed(s, index));
        }
    }

    /// Marks every trainable tensor as a gradient leaf
    /// ([`Tensor::with_grad`]) so the next forward records a graph; returns
    /// the leaves by name, in [`Model::trainable_mut`] order.
    pub fn track_gradients(&mut self) -> Vec<(String, Tensor)> {
        self.trainable_mut()
            .into_iter()
            .map(|(name, t)| {
                *t = t.with_grad();
                (name, t.clone())
            })
            .collect()
    }

    /// Drops every parameter's graph node (inference again records nothing).
    pub fn stop_tracking_gradients(&mut self) {
        for (_, t) in self.trainable_mut() {
            *t = t.detach();
        }
    }

    /// The parameters as checkpoint weights (HF names), e.g. to save;
    /// quantized matrices are included as such.
    pub fn to_weights(&self) -> Weights {
        let mut weights = Weights::new("model parameters");
        for (name, t) in self.parameters() {
            weights.insert(name, t.detach());
        }
        for (name, q) in self.quantized_weights() {
            weights.insert_quantized(name, q);
        }
        weights
    }

    /// A fresh cache for this model.
    pub fn new_cache(&self) -> KvCache {
        self.new_cache_for(0)
    }

    /// A fresh cache that makes room for `positions` positions per row
    /// (padding included) when the first call fills it, so that a
    /// generation of known length never grows it: the prompt plus
    /// `max_new_tokens`. Calls may still go past `positions`; the cache
    /// then grows as [`Model::new_cache`]'s does.
    pub fn new_cache_for(&self, positions: usize) -> KvCache {
        KvCache {
            layers: vec![None; self.config.num_layers],
            pad: Vec::new(),
            len: 0,
            reserve: positions,
        }
    }

    /// Runs a prompt for generation: [`Model::forward`] with
    /// [`Logits::Last`], in chunks of at most [`PREFILL_CHUNK`] positions
    /// (512 on a CUDA device) when every row has the same length
    /// (llama.cpp's micro-batches), so the prefill's activations and
    /// attention scores stay bounded however long the prompt. Chunks are
    /// near-equal in length, so none is short enough to take the decoding
    /// kernels. Rows of different lengths run in one call (their padding is
    /// laid out at the first call).
    ///
    /// Records no gradient through the cache between chunks: for
    /// inference.
    pub fn prefill(&self, rows: &[Vec<u32>], cache: &mut KvCache) -> Result<Tensor> {
        let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
        let most = match self.device() {
            Device::Cpu => PREFILL_CHUNK,
            Device::Cuda(_) => PREFILL_CHUNK_CUDA,
        };
        if longest <= most || rows.iter().any(|r| r.len() != longest) {
            return self.forward(rows, cache, Logits::Last);
        }
        let chunks = longest.div_ceil(most);
        let size = longest.div_ceil(chunks);
        let mut logits = None;
        for start in (0..longest).step_by(size) {
            let end = (start + size).min(longest);
            let part: Vec<Vec<u32>> = rows.iter().map(|r| r[start..end].to_vec()).collect();
            logits = Some(self.forward(&part, cache, Logits::Last)?);
        }
        logits.ok_or_else(|| ModelError::invalid("rows", "no tokens to run"))
    }

    /// Runs `rows` (one token-id list per batch row) after what `cache`
    /// holds, appends their keys and values to it, and returns logits
    /// (B, T, V) or, with [`Logits::Last`], (B, 1, V).
    ///
    /// On an empty cache rows may differ in length: they are left-padded
    /// (and the padding masked). Later calls must give every row the same
    /// number of tokens.
    pub fn forward(
        &self,
        rows: &[Vec<u32>],
        cache: &mut KvCache,
        logits: Logits,
    ) -> Result<Tensor> {
        let b = rows.len();
        if b == 0 {
            return Err(ModelError::invalid("rows", "empty batch"));
        }
        let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
        if longest == 0 {
            return Err(ModelError::invalid("rows", "no tokens to run"));
        }
        let new_pad: Vec<usize> = if cache.is_empty() {
            rows.iter().map(|r| longest - r.len()).collect()
        } else {
            if cache.batch_size() != b {
                return Err(ModelError::invalid(
                    "rows",
                    format!("{b} rows for a cache of {} rows", cache.batch_size()),
                ));
            }
            if rows.iter().any(|r| r.len() != longest) {
                return Err(ModelError::invalid(
                    "rows",
                    "after the first call every row must add the same number of tokens",
                ));
            }
            vec![0; b]
        };
        if cache.layers.len() != self.config.num_layers {
            *cache = self.new_cache_for(cache.reserve);
        }
        let t = longest;
        let past = cache.len;
        let total = past + t;
        let pad_token = self
            .config
            .pad_token_id
            .unwrap_or(0)
            .min(self.config.vocab_size as u32 - 1);
        let mut ids = Vec::with_capacity(b * t);
        for (row, pad) in rows.iter().zip(&new_pad) {
            ids.extend(std::iter::repeat_n(pad_token, *pad));
            ids.extend_from_slice(row);
        }
        self.check_ids(&ids)?;
        if cache.is_empty() {
            cache.pad = new_pad;
        }
        let pad = cache.pad.clone();
        // Position of slot j of row r: j − pad[r] (padding slots get 0).
        let positions: Vec<Vec<usize>> = pad
            .iter()
            .map(|&p| (past..total).map(|j| j.saturating_sub(p)).collect())
            .collect();
        let max_position = positions.iter().flatten().copied().max().unwrap_or(0);
        let dynamic_rope;
        let rope = match self.config.rope.scaling {
            RopeScaling::Dynamic { .. }
                if max_position + 1 > self.config.max_position_embeddings =>
            {
                let (inv_freq, _) = rope_frequencies(
                    &self.config.rope,
                    self.config.max_position_embeddings,
                    max_position + 1,
                );
                dynamic_rope = RotaryEmbedding::from_inv_freq(
                    inv_freq,
                    self.config.rope.rotary_dim,
                    if self.config.rope.interleaved {
                        RotaryLayout::Interleaved
                    } else {
                        RotaryLayout::HalfSplit
                    },
                )?;
                &dynamic_rope
            }
            _ => &self.rope,
        };
        let mask = if pad.iter().any(|&p| p > 0) {
            // A large finite value rather than −∞ (as transformers does), so
            // the query rows of padding slots, which see only padding, stay
            // finite instead of NaN and cannot poison later layers.
            let hidden = if self.dtype == DType::F16 {
                -65504.0
            } else {
                -1e30
            };
            let mut values = vec![0.0f32; b * total];
            for (r, &p) in pad.iter().enumerate() {
                for slot in &mut values[r * total..r * total + p.min(total)] {
                    *slot = hidden;
                }
            }
            Some(
                Tensor::from_vec(values, &[b, 1, 1, total])?
                    .cast(self.dtype)?
                    .to_device(self.device())?,
            )
        } else {
            None
        };
        let step = Step {
            positions: &positions,
            rope,
            mask: mask.as_ref(),
            reserve: cache.reserve,
            kv_dtype: self.kv_dtype,
        };
        let mut x = self.embed_ids(ids, b, t)?;
        for (i, layer) in self.layers.iter().enumerate() {
            x = self.layer_forward(layer, x, &mut cache.layers[i], &step)?;
        }
        cache.len = total;
        let x = match logits {
            Logits::All => x,
            Logits::Last => x.narrow(1, t - 1, 1)?,
        };
        let x = self.final_norm.forward(&x)?;
        let rows_out = x.shape()[1];
        let flat = x.reshape(&[b * rows_out, self.config.hidden_size])?;
        let out = self.head_forward(&flat)?;
        Ok(out.reshape(&[b, rows_out, self.config.vocab_size])?)
    }

    /// The LM head of (N, C) hidden states: (N, V).
    fn head_forward(&self, flat: &Tensor) -> Result<Tensor> {
        let quantized = match (&self.lm_head, &self.lm_head_quantized) {
            (_, Some(q)) => Some(q),
            (None, None) => self.embed_quantized.as_ref(),
            (Some(_), None) => None,
        };
        if let Some(q) = quantized {
            return Ok(q.matmul_t(flat)?);
        }
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        Ok(flat.matmul(&head.t()?)?)
    }

    /// Refuses ids outside the vocabulary, naming the first.
    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        match ids
            .iter()
            .find(|&&id| id as usize >= self.config.vocab_size)
        {
            Some(&bad) => Err(ModelError::invalid(
                "token ids",
                format!(
                    "id {bad} is outside the vocabulary of {}",
                    self.config.vocab_size
                ),
            )),
            None => Ok(()),
        }
    }

    /// Embeddings (B, T, C) of `ids` (B·T, checked to be in the vocabulary).
    fn embed_ids(&self, ids: Vec<u32>, b: usize, t: usize) -> Result<Tensor> {
        let Some(q) = &self.embed_quantized else {
            let id_tensor = Tensor::from_vec(ids, &[b, t])?;
            return Ok(self.embed.embedding(&id_tensor)?);
        };
        let c = self.config.hidden_size;
        let mut values = vec![0f32; ids.len() * c];
        for (row, &id) in values.chunks_exact_mut(c).zip(&ids) {
            q.dequantize_rows(id as usize..id as usize + 1, row)?;
        }
        Ok(Tensor::from_vec(values, &[b, t, c])?.cast(self.dtype)?)
    }

    /// Embeddings (B, T, C) of equal-length token rows: the input of layer 0
    /// (see [`Model::forward_layer`]).
    pub fn embed_tokens(&self, rows: &[Vec<u32>]) -> Result<Tensor> {
        let t = rows.first().map_or(0, Vec::len);
        if t == 0 || rows.iter().any(|r| r.len() != t) {
            return Err(ModelError::invalid(
                "rows",
                "embed_tokens needs one or more non-empty rows of equal length",
            ));
        }
        let ids: Vec<u32> = rows.iter().flatten().copied().collect();
        self.check_ids(&ids)?;
        self.embed_ids(ids, rows.len(), t)
    }

    /// Runs layer `index` on hidden states (B, T, C) of unpadded sequences
    /// at positions 0…T−1, without a cache: calibration for layer-wise
    /// quantization runs the model one layer at a time with this.
    pub fn forward_layer(&self, index: usize, x: &Tensor) -> Result<Tensor> {
        let layer = self.layers.get(index).ok_or_else(|| {
            ModelError::invalid(
                "layer index",
                format!("{index} (the model has {} layers)", self.layers.len()),
            )
        })?;
        if x.rank() != 3 || x.shape()[2] != self.config.hidden_size {
            return Err(ModelError::invalid(
                "forward_layer input",
                format!(
                    "shape {:?}, expected (B, T, {})",
                    x.shape(),
                    self.config.hidden_size
                ),
            ));
        }
        let (b, t) = (x.shape()[0], x.shape()[1]);
        let positions = vec![(0..t).collect::<Vec<usize>>(); b];
        let step = Step {
            positions: &positions,
            rope: &self.rope,
            mask: None,
            reserve: 0,
            kv_dtype: self.kv_dtype,
        };
        let mut cache = None;
        self.layer_forward(layer, x.cast(self.dtype)?, &mut cache, &step)
    }

    /// Sets (or, with `None`, removes) the hook every linear layer calls
    /// before multiplying ([`LinearHook`]).
    pub fn set_linear_hook(&mut self, hook: Option<LinearHook>) {
        for linear in self.layers.iter_mut().flat_map(Layer::linears_mut) {
            linear.hook = hook.clone();
        }
    }

    /// The linear layer `name` (a name from [`Model::linear_modules`]).
    pub fn linear(&self, name: &str) -> Option<&Linear> {
        self.layers
            .iter()
            .flat_map(Layer::linears)
            .find(|l| l.name == name)
    }

    /// The linear layer `name`, mutable (to quantize or replace its weight).
    pub fn linear_mut(&mut self, name: &str) -> Option<&mut Linear> {
        self.layers
            .iter_mut()
            .flat_map(Layer::linears_mut)
            .find(|l| l.name == name)
    }

    /// The linear modules of layer `index` in the order their inputs become
    /// available within the block, grouped by shared input: GPTQ's "true
    /// sequential" order (q/k/v, then o, then gate/up, then down).
    pub fn layer_linear_groups(&self, index: usize) -> Vec<Vec<String>> {
        let Some(layer) = self.layers.get(index) else {
            return Vec::new();
        };
        let names = |ls: &[&Linear]| ls.iter().map(|l| l.name.clone()).collect::<Vec<_>>();
        let mut groups = Vec::new();
        groups.push(match &layer.attention.qkv {
            Qkv::Separate { q, k, v } => names(&[q, k, v]),
            Qkv::FalconFused(fused) => names(&[fused]),
        });
        groups.push(names(&[&layer.attention.o]));
        match &layer.mlp {
            Mlp::Gated { gate, up, down } => {
                groups.push(names(&[gate, up]));
                groups.push(names(&[down]));
            }
            Mlp::FusedGated { gate_up, down } => {
                groups.push(names(&[gate_up]));
                groups.push(names(&[down]));
            }
            Mlp::Plain { up, down } => {
                groups.push(names(&[up]));
                groups.push(names(&[down]));
            }
        }
        groups
    }

    /// The embedding table, dense (`None` when it is held quantized).
    pub fn embedding(&self) -> Option<&Tensor> {
        self.embed_quantized.is_none().then_some(&self.embed)
    }

    /// The untied LM head, dense (`None` when tied or quantized).
    pub fn lm_head(&self) -> Option<&Tensor> {
        match self.lm_head_quantized {
            Some(_) => None,
            None => self.lm_head.as_ref(),
        }
    }

    /// Quantizes the embedding table (and with it a tied LM head).
    pub fn set_quantized_embedding(&mut self, table: QMatrix) -> Result<()> {
        let (v, c) = (self.config.vocab_size, self.config.hidden_size);
        if (table.rows(), table.cols()) != (v, c) {
            return Err(ModelError::invalid(
                "quantized embedding",
                format!("{} × {}, expected {v} × {c}", table.rows(), table.cols()),
            ));
        }
        self.embed = placeholder(&[v, c], self.dtype)?;
        self.embed_quantized = Some(table);
        Ok(())
    }

    /// Quantizes the untied LM head.
    pub fn set_quantized_lm_head(&mut self, head: QMatrix) -> Result<()> {
        let (v, c) = (self.config.vocab_size, self.config.hidden_size);
        if self.lm_head.is_none() {
            return Err(ModelError::invalid(
                "quantized lm_head",
                "the LM head is tied to the embedding; quantize the embedding instead",
            ));
        }
        if (head.rows(), head.cols()) != (v, c) {
            return Err(ModelError::invalid(
                "quantized lm_head",
                format!("{} × {}, expected {v} × {c}", head.rows(), head.cols()),
            ));
        }
        self.lm_head = Some(placeholder(&[v, c], self.dtype)?);
        self.lm_head_quantized = Some(head);
        Ok(())
    }

    /// Every quantized matrix under its checkpoint name (`….weight`).
    pub fn quantized_weights(&self) -> Vec<(String, QMatrix)> {
        let names = TensorNames::for_config(&self.config);
        let mut out = Vec::new();
        if let Some(q) = &self.embed_quantized {
            out.push((names.embed.to_string(), q.clone()));
        }
        for linear in self.layers.iter().flat_map(Layer::linears) {
            if let Some(q) = &linear.quantized {
                out.push((format!("{}.weight", linear.name), q.clone()));
            }
        }
        if let Some(q) = &self.lm_head_quantized {
            out.push((names.lm_head.to_string(), q.clone()));
        }
        out
    }

    /// One block over the residual stream `x` (B, T, C), which it takes and
    /// returns. Each activation is dropped as soon as the block is done
    /// with it, and the residual additions and the gated activation are
    /// written in place ([`Tensor::add_assign`]), so that a prefill chunk
    /// holds as few (T, C) and (T, intermediate) buffers at once as the
    /// block's data flow allows.
    fn layer_forward(
        &self,
        layer: &Layer,
        x: Tensor,
        cache: &mut Option<(KvBuffer, KvBuffer)>,
        step: &Step<'_>,
    ) -> Result<Tensor> {
        let norm_mlp = layer.norm_mlp.as_ref().unwrap_or(&layer.norm_attn);
        let activation = self.config.activation;
        Ok(match self.config.block {
            BlockLayout::Sequential => {
                let attn = {
                    let attn_in = layer.norm_attn.forward(&x)?;
                    self.attention(&layer.attention, &attn_in, cache, step)?
                };
                let mut h = x;
                h.add_assign(&attn)?;
                drop(attn);
                let m = mlp_forward(&layer.mlp, norm_mlp.forward(&h)?, activation)?;
                h.add_assign(&m)?;
                h
            }
            BlockLayout::SequentialPostNorms => {
                let (post_attn, post_mlp) = layer.post_norms.as_ref().ok_or_else(|| {
                    ModelError::invalid("layer", "GLM-4 layer without post norms")
                })?;
                let attn = {
                    let attn_in = layer.norm_attn.forward(&x)?;
                    self.attention(&layer.attention, &attn_in, cache, step)?
                };
                let mut h = x;
                h.add_assign(&post_attn.forward(&attn)?)?;
                drop(attn);
                let m = mlp_forward(&layer.mlp, norm_mlp.forward(&h)?, activation)?;
                h.add_assign(&post_mlp.forward(&m)?)?;
                h
            }
            BlockLayout::ParallelSharedNorm => {
                let attn_in = layer.norm_attn.forward(&x)?;
                let mut out = self.attention(&layer.attention, &attn_in, cache, step)?;
                out.add_assign(&mlp_forward(&layer.mlp, attn_in, activation)?)?;
                out.add_assign(&x)?;
                out
            }
            BlockLayout::ParallelTwoNorms => {
                let mut out = {
                    let attn_in = layer.norm_attn.forward(&x)?;
                    self.attention(&layer.attention, &attn_in, cache, step)?
                };
                out.add_assign(&mlp_forward(&layer.mlp, norm_mlp.forward(&x)?, activation)?)?;
                out.add_assign(&x)?;
                out
            }
        })
    }

    fn attention(
        &self,
        attn: &Attention,
        x: &Tensor,
        cache: &mut Option<(KvBuffer, KvBuffer)>,
        step: &Step<'_>,
    ) -> Result<Tensor> {
        let (b, t) = (x.shape()[0], x.shape()[1]);
        let (hq, hkv, d) = (
            self.config.num_heads,
            self.config.num_kv_heads,
            self.config.head_dim,
        );
        let heads = |y: Tensor, h: usize| -> Result<Tensor> {
            Ok(y.reshape(&[b, t, h, d])?.transpose(1, 2)?.contiguous()?)
        };
        let (q, k, v) = match &attn.qkv {
            Qkv::Separate { q, k, v } => {
                let [q, k, v]: [Tensor; 3] = Linear::forward_many(&[q, k, v], x)?
                    .try_into()
                    .map_err(|_| ModelError::invalid("attention", "expected three projections"))?;
                (heads(q, hq)?, heads(k, hkv)?, heads(v, hkv)?)
            }
            Qkv::FalconFused(fused) => {
                let y = fused.forward(x)?;
                let (q, k, v) = if hkv == hq && hq > 1 {
                    // (H, 3, D) per token: per head q, k, v.
                    let y = y.reshape(&[b, t, hq, 3, d])?;
                    let part = |i: usize| -> Result<Tensor> {
                        Ok(y.narrow(3, i, 1)?.reshape(&[b, t, hq * d])?)
                    };
                    (part(0)?, part(1)?, part(2)?)
                } else {
                    // (Hkv, G + 2, D) per token: per KV group its G query
                    // heads, then k, then v (multi-query is Hkv = 1).
                    let g = hq / hkv;
                    let y = y.reshape(&[b, t, hkv, g + 2, d])?;
                    (
                        y.narrow(3, 0, g)?.reshape(&[b, t, hq * d])?,
                        y.narrow(3, g, 1)?.reshape(&[b, t, hkv * d])?,
                        y.narrow(3, g + 1, 1)?.reshape(&[b, t, hkv * d])?,
                    )
                };
                (heads(q, hq)?, heads(k, hkv)?, heads(v, hkv)?)
            }
        };
        // Rotated copies replace the unrotated heads, which are freed here.
        let q = self.rotate(q, step)?;
        let k = self.rotate(k, step)?;
        let options = AttentionOptions {
            causal: true,
            sliding_window: attn.sliding_window,
            scale: Some(1.0 / (d as f64).sqrt()),
            mask: step.mask,
        };
        let tracked = q.requires_grad() || k.requires_grad() || v.requires_grad();
        let out = match cache {
            // Decoding: append in place and read the cache where it is.
            Some((pk, pv)) if !tracked => {
                pk.append(&k)?;
                pv.append(&v)?;
                scaled_dot_product_attention_cached(&q, pk, pv, &options)?
            }
            // Gradients flow to this call's keys and values through the
            // tensors (the cached ones are constants).
            Some((pk, pv)) => {
                let k_all = Tensor::concat(&[&pk.to_tensor(), &k], 2)?;
                let v_all = Tensor::concat(&[&pv.to_tensor(), &v], 2)?;
                pk.append(&k)?;
                pv.append(&v)?;
                scaled_dot_product_attention(&q, &k_all, &v_all, &options)?
            }
            // Prefill: cache first, then attend to what the cache holds,
            // so that a cache narrower than the compute type gives the
            // prompt the same rounded keys and values its decoding reads
            // (and decoding still equals recomputing the whole sequence).
            None if !tracked => {
                let keys = KvBuffer::with_storage(&k, step.reserve, step.kv_dtype)?;
                let values = KvBuffer::with_storage(&v, step.reserve, step.kv_dtype)?;
                let out = scaled_dot_product_attention_cached(&q, &keys, &values, &options)?;
                *cache = Some((keys, values));
                out
            }
            None => {
                let out = scaled_dot_product_attention(&q, &k, &v, &options)?;
                *cache = Some((
                    KvBuffer::with_storage(&k, step.reserve, step.kv_dtype)?,
                    KvBuffer::with_storage(&v, step.reserve, step.kv_dtype)?,
                ));
                out
            }
        };
        // Each buffer is freed as soon as the next one is made from it.
        drop((q, k, v));
        let merged = out
            .transpose(1, 2)?
            .contiguous()?
            .reshape(&[b, t, hq * d])?;
        drop(out);
        attn.o.forward(&merged)
    }

    /// Rotary embedding of (B, H, T, D) at each row's positions.
    fn rotate(&self, x: Tensor, step: &Step<'_>) -> Result<Tensor> {
        let first = &step.positions[0];
        let rotated = if step.positions.iter().all(|p| p == first) {
            step.rope.apply_at(&x, first)?
        } else {
            let parts = step
                .positions
                .iter()
                .enumerate()
                .map(|(r, pos)| step.rope.apply_at(&x.narrow(0, r, 1)?, pos))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let refs: Vec<&Tensor> = parts.iter().collect();
            Tensor::concat(&refs, 0)?
        };
        Ok(match &self.rope_feature_scale {
            Some(scale) => rotated.mul(scale)?,
            None => rotated,
        })
    }
}

/// What every layer of one forward call shares.
struct Step<'a> {
    positions: &'a [Vec<usize>],
    rope: &'a RotaryEmbedding,
    mask: Option<&'a Tensor>,
    /// Positions a new layer cache makes room for ([`KvCache`]'s).
    reserve: usize,
    /// The type a new layer cache holds ([`Model::kv_dtype`]).
    kv_dtype: DType,
}

/// x (…, in) as (rows, in).
fn flatten_rows(x: &Tensor) -> Result<Tensor> {
    match x.shape().split_last() {
        Some((&c, lead)) => Ok(x.reshape(&[lead.iter().product::<usize>(), c])?),
        None => Err(ModelError::invalid("linear input", "rank 0 tensor")),
    }
}

/// The MLP of `x` (…, C), which it takes so that `x` is freed once the
/// input projections have read it; the gated product is formed in place in
/// the gate projection's buffer.
fn mlp_forward(mlp: &Mlp, x: Tensor, activation: Activation) -> Result<Tensor> {
    let act_in_place = |t: &mut Tensor| -> Result<()> {
        Ok(match activation {
            Activation::Silu => t.silu_assign(),
            Activation::GeluErf => t.gelu_erf_assign(),
            Activation::GeluTanh => t.gelu_tanh_assign(),
        }?)
    };
    match mlp {
        Mlp::Gated { gate, up, down } => {
            let [mut g, u]: [Tensor; 2] = Linear::forward_many(&[gate, up], &x)?
                .try_into()
                .map_err(|_| ModelError::invalid("gated MLP", "expected two projections"))?;
            drop(x);
            act_in_place(&mut g)?;
            g.mul_assign(&u)?;
            drop(u);
            down.forward(&g)
        }
        Mlp::FusedGated { gate_up, down } => {
            let y = gate_up.forward(&x)?;
            drop(x);
            let inter = y.shape()[y.rank() - 1] / 2;
            // A copy of the gate half (the halves are views of one buffer).
            let mut g = y.narrow(-1, 0, inter)?.contiguous()?;
            act_in_place(&mut g)?;
            g.mul_assign(&y.narrow(-1, inter, inter)?)?;
            drop(y);
            down.forward(&g)
        }
        Mlp::Plain { up, down } => {
            let mut h = up.forward(&x)?;
            drop(x);
            act_in_place(&mut h)?;
            down.forward(&h)
        }
    }
}

fn linear(weights: &Weights, name: &str, out: usize, input: usize, bias: bool) -> Result<Linear> {
    let weight_name = format!("{name}.weight");
    let weight = if weights.has_quantized(&weight_name) {
        placeholder(&[out, input], DType::F32)?
    } else {
        weights.get(&weight_name, &[out, input])?
    };
    let bias = if bias {
        Some(weights.get(&format!("{name}.bias"), &[out])?)
    } else {
        None
    };
    let quantized = weights.quantized(&format!("{name}.weight"), &[out, input])?;
    Ok(Linear {
        weight,
        quantized,
        hook: None,
        bias,
        name: name.to_string(),
        lora: None,
    })
}

fn load_layer(
    weights: &Weights,
    names: &LayerNames,
    config: &ModelConfig,
    index: usize,
) -> Result<Layer> {
    let (c, hq, hkv, d) = (
        config.hidden_size,
        config.num_heads,
        config.num_kv_heads,
        config.head_dim,
    );
    let inter = config.intermediate_size;
    let qkv = match &names.qkv {
        crate::arch::QkvNames::Separate { q, k, v } => Qkv::Separate {
            q: linear(weights, q, hq * d, c, config.qkv_bias)?,
            k: linear(weights, k, hkv * d, c, config.qkv_bias)?,
            v: linear(weights, v, hkv * d, c, config.qkv_bias)?,
        },
        crate::arch::QkvNames::FalconFused(name) => {
            if hkv == 0 || hq % hkv != 0 {
                return Err(ModelError::invalid(
                    "config",
                    format!("{hq} heads are not a multiple of {hkv} key/value heads"),
                ));
            }
            Qkv::FalconFused(linear(
                weights,
                name,
                (hq + 2 * hkv) * d,
                c,
                config.qkv_bias,
            )?)
        }
    };
    let o = linear(weights, &names.o, c, hq * d, config.o_bias)?;
    let mlp = match (config.mlp, &names.mlp) {
        (MlpKind::Gated, crate::arch::MlpNames::Gated { gate, up, down }) => Mlp::Gated {
            gate: linear(weights, gate, inter, c, config.mlp_bias)?,
            up: linear(weights, up, inter, c, config.mlp_bias)?,
            down: linear(weights, down, c, inter, config.mlp_bias)?,
        },
        (MlpKind::Gated, crate::arch::MlpNames::FusedGateUp { gate_up, down }) => Mlp::FusedGated {
            gate_up: linear(weights, gate_up, 2 * inter, c, config.mlp_bias)?,
            down: linear(weights, down, c, inter, config.mlp_bias)?,
        },
        (MlpKind::Plain, crate::arch::MlpNames::Plain { up, down }) => Mlp::Plain {
            up: linear(weights, up, inter, c, config.mlp_bias)?,
            down: linear(weights, down, c, inter, config.mlp_bias)?,
        },
        _ => {
            return Err(ModelError::invalid(
                "config",
                "MLP kind and tensor names disagree",
            ));
        }
    };
    let norm_attn = NormLayer::load(weights, &names.norm_attn, config)?;
    let norm_mlp = names
        .norm_mlp
        .as_deref()
        .map(|n| NormLayer::load(weights, n, config))
        .transpose()?;
    let post_norms = match &names.post_norms {
        Some((a, m)) => Some((
            NormLayer::load(weights, a, config)?,
            NormLayer::load(weights, m, config)?,
        )),
        None => None,
    };
    Ok(Layer {
        attention: Attention {
            qkv,
            o,
            sliding_window: config.sliding_window.get(index).copied().flatten(),
        },
        mlp,
        norm_attn,
        norm_mlp,
        post_norms,
    })
}
