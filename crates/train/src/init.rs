//! Models from scratch: an HF `config.json` for the configured
//! architecture and size, and weights initialised as transformers'
//! `_init_weights` does (matrices and embeddings N(0, initializer_range),
//! norm weights 1, biases 0) from a seeded generator.

use kaiyuan_models::{Model, ModelConfig, Weights};
use kaiyuan_tensor::{DType, Tensor};
use serde_json::{Value, json};

use crate::config::ModelSection;
use crate::{Result, TrainError};

/// A small deterministic generator (SplitMix64), independent of any crate's
/// version, so a seed means the same numbers everywhere.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Uniform integer in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        // Multiply-shift; the bias for n ≪ 2⁶⁴ is negligible.
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// The HF `config.json` of a scratch model (`architectures`, `model_type`
/// and the sizes), loadable by transformers and by our models crate.
pub fn hf_config(
    section: &ModelSection,
    vocab_size: usize,
    bos: Option<u32>,
    eos: Option<u32>,
) -> Result<Value> {
    let s = section;
    let head_dim = s.hidden_size / s.num_heads.max(1);
    let rope = json!({"rope_type": "default", "rope_theta": s.rope_theta});
    let mut config = match s.architecture.as_str() {
        "llama" | "mistral" | "qwen2" => {
            let (class, model_type) = match s.architecture.as_str() {
                "llama" => ("LlamaForCausalLM", "llama"),
                "mistral" => ("MistralForCausalLM", "mistral"),
                _ => ("Qwen2ForCausalLM", "qwen2"),
            };
            json!({
                "architectures": [class],
                "model_type": model_type,
                "hidden_size": s.hidden_size,
                "intermediate_size": s.intermediate_size,
                "num_hidden_layers": s.num_layers,
                "num_attention_heads": s.num_heads,
                "num_key_value_heads": s.num_kv_heads,
                "hidden_act": "silu",
                "rms_norm_eps": 1e-5,
                "sliding_window": null,
            })
        }
        "falcon" => json!({
            "architectures": ["FalconForCausalLM"],
            "model_type": "falcon",
            "hidden_size": s.hidden_size,
            "ffn_hidden_size": s.intermediate_size,
            "num_hidden_layers": s.num_layers,
            "num_attention_heads": s.num_heads,
            "num_kv_heads": s.num_kv_heads,
            "new_decoder_architecture": true,
            "parallel_attn": true,
            "bias": false,
            "alibi": false,
            "layer_norm_epsilon": 1e-5,
        }),
        "glm" | "glm4" => json!({
            "architectures": [if s.architecture == "glm" { "GlmForCausalLM" } else { "Glm4ForCausalLM" }],
            "model_type": s.architecture,
            "hidden_size": s.hidden_size,
            "intermediate_size": s.intermediate_size,
            "num_hidden_layers": s.num_layers,
            "num_attention_heads": s.num_heads,
            "num_key_value_heads": s.num_kv_heads,
            "head_dim": head_dim,
            "partial_rotary_factor": 0.5,
            "attention_bias": true,
            "hidden_act": "silu",
            "rms_norm_eps": 1e-5,
        }),
        other => {
            return Err(TrainError::invalid(
                "model.architecture",
                format!("`{other}` is not one of llama, mistral, qwen2, falcon, glm, glm4"),
            ));
        }
    };
    if let Value::Object(map) = &mut config {
        map.insert("vocab_size".into(), json!(vocab_size));
        map.insert(
            "max_position_embeddings".into(),
            json!(s.max_position_embeddings),
        );
        map.insert("rope_theta".into(), json!(s.rope_theta));
        map.insert("rope_parameters".into(), rope);
        map.insert("tie_word_embeddings".into(), json!(s.tie_word_embeddings));
        map.insert("initializer_range".into(), json!(s.initializer_range));
        map.insert("bos_token_id".into(), json!(bos));
        map.insert("eos_token_id".into(), json!(eos));
        map.insert("torch_dtype".into(), json!("float32"));
    }
    Ok(config)
}

/// A freshly initialised f32 model of `config`: every matrix N(0, std),
/// rank-1 weights (norms) 1, biases 0, drawn in parameter order from `seed`.
pub fn init_model(config: &ModelConfig, std: f64, seed: u64) -> Result<Model> {
    let mut rng = SplitMix64::new(seed ^ 0x005E_ED0F_1417);
    let mut weights = Weights::new("initialisation");
    for (name, shape) in Model::parameter_shapes(config)? {
        let count: usize = shape.iter().product();
        let values: Vec<f32> = if name.ends_with(".bias") {
            vec![0.0; count]
        } else if shape.len() == 1 {
            vec![1.0; count]
        } else {
            (0..count).map(|_| (rng.normal() * std) as f32).collect()
        };
        weights.insert(name, Tensor::from_vec(values, &shape)?);
    }
    Ok(Model::new(config.clone(), &weights, DType::F32)?)
}
