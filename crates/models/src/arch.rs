//! Per architecture, the HF transformers names of its tensors. The blocks
//! themselves live once in `model.rs`.

use crate::config::{Architecture, BlockLayout, ModelConfig};

/// Names of the q/k/v projections of one layer.
#[derive(Clone, Debug)]
pub(crate) enum QkvNames {
    /// `…q_proj`, `…k_proj`, `…v_proj`.
    Separate { q: String, k: String, v: String },
    /// Falcon's fused `…query_key_value`.
    FalconFused(String),
}

/// Names of the MLP projections of one layer.
#[derive(Clone, Debug)]
pub(crate) enum MlpNames {
    /// LLaMA-style gate, up and down.
    Gated {
        gate: String,
        up: String,
        down: String,
    },
    /// GLM's fused `gate_up_proj` (gate rows first) and down.
    FusedGateUp { gate_up: String, down: String },
    /// Falcon's `dense_h_to_4h` and `dense_4h_to_h`.
    Plain { up: String, down: String },
}

/// Tensor-name prefixes of one decoder layer (without `.weight`/`.bias`).
#[derive(Clone, Debug)]
pub(crate) struct LayerNames {
    pub qkv: QkvNames,
    pub o: String,
    pub mlp: MlpNames,
    pub norm_attn: String,
    pub norm_mlp: Option<String>,
    pub post_norms: Option<(String, String)>,
}

/// The names of a whole model.
#[derive(Clone, Debug)]
pub(crate) struct TensorNames {
    architecture: Architecture,
    block: BlockLayout,
    pub embed: &'static str,
    pub final_norm: &'static str,
    pub lm_head: &'static str,
}

impl TensorNames {
    pub(crate) fn for_config(config: &ModelConfig) -> Self {
        match config.architecture {
            Architecture::Falcon => Self {
                architecture: config.architecture,
                block: config.block,
                embed: "transformer.word_embeddings.weight",
                final_norm: "transformer.ln_f",
                lm_head: "lm_head.weight",
            },
            _ => Self {
                architecture: config.architecture,
                block: config.block,
                embed: "model.embed_tokens.weight",
                final_norm: "model.norm",
                lm_head: "lm_head.weight",
            },
        }
    }

    pub(crate) fn layer(&self, i: usize) -> LayerNames {
        if self.architecture == Architecture::Falcon {
            let p = format!("transformer.h.{i}");
            let (norm_attn, norm_mlp) = match self.block {
                BlockLayout::ParallelTwoNorms => {
                    (format!("{p}.ln_attn"), Some(format!("{p}.ln_mlp")))
                }
                BlockLayout::ParallelSharedNorm => (format!("{p}.input_layernorm"), None),
                _ => (
                    format!("{p}.input_layernorm"),
                    Some(format!("{p}.post_attention_layernorm")),
                ),
            };
            return LayerNames {
                qkv: QkvNames::FalconFused(format!("{p}.self_attention.query_key_value")),
                o: format!("{p}.self_attention.dense"),
                mlp: MlpNames::Plain {
                    up: format!("{p}.mlp.dense_h_to_4h"),
                    down: format!("{p}.mlp.dense_4h_to_h"),
                },
                norm_attn,
                norm_mlp,
                post_norms: None,
            };
        }
        let p = format!("model.layers.{i}");
        let mlp = match self.architecture {
            Architecture::Glm | Architecture::Glm4 => MlpNames::FusedGateUp {
                gate_up: format!("{p}.mlp.gate_up_proj"),
                down: format!("{p}.mlp.down_proj"),
            },
            _ => MlpNames::Gated {
                gate: format!("{p}.mlp.gate_proj"),
                up: format!("{p}.mlp.up_proj"),
                down: format!("{p}.mlp.down_proj"),
            },
        };
        let post_norms = (self.architecture == Architecture::Glm4).then(|| {
            (
                format!("{p}.post_self_attn_layernorm"),
                format!("{p}.post_mlp_layernorm"),
            )
        });
        LayerNames {
            qkv: QkvNames::Separate {
                q: format!("{p}.self_attn.q_proj"),
                k: format!("{p}.self_attn.k_proj"),
                v: format!("{p}.self_attn.v_proj"),
            },
            o: format!("{p}.self_attn.o_proj"),
            mlp,
            norm_attn: format!("{p}.input_layernorm"),
            norm_mlp: Some(format!("{p}.post_attention_layernorm")),
            post_norms,
        }
    }
}
