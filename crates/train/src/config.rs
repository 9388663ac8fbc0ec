//! The training configuration: a TOML file (every key optional, defaults
//! below), overridden by `--set key=value`.
//!
//! ```toml
//! seed = 0
//! [model]
//! init = "scratch"          # or a path: HF model directory or .gguf file
//! architecture = "llama"    # scratch only: llama, mistral, qwen2, falcon, glm, glm4
//! hidden_size = 192
//! [tokenizer]
//! vocab_size = 1024         # scratch: a byte-level BPE trained on the training text
//! [data]
//! source = "embedded"       # or a list of .txt / .jsonl / token-shard paths
//! [train]
//! max_steps = 750
//! lr = 3e-3
//! ```
//!
//! Unknown keys are errors that name the key and the section, and so are
//! impossible settings (heads that do not divide the hidden size, …),
//! before any training starts.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Result, TrainError};

/// Everything a training run needs to know.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Seed of initialisation, data order and any sampling.
    pub seed: u64,
    /// What to train.
    pub model: ModelSection,
    /// How text becomes ids.
    pub tokenizer: TokenizerSection,
    /// What to train on.
    pub data: DataSection,
    /// The loop: steps, batches, optimiser, schedule, checkpoints.
    pub train: TrainSection,
    /// DP-SGD.
    pub dp: crate::dp::DpConfig,
    /// Knowledge distillation from a teacher.
    pub distill: DistillSection,
    /// Pruning before training.
    pub prune: crate::prune::PruneConfig,
    /// LoRA adapters on a frozen model.
    pub lora: crate::lora::LoraSection,
}

/// `[distill]`: knowledge distillation (Hinton et al.): the loss is
/// `alpha · T² · KL(teacher_T ‖ student_T) + (1 − alpha) · cross-entropy`,
/// with both distributions softened by temperature T.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DistillSection {
    /// The teacher: an HF model directory or GGUF file sharing the
    /// student's tokenizer; empty disables distillation.
    pub teacher: String,
    /// T.
    pub temperature: f64,
    /// Weight of the distillation term.
    pub alpha: f64,
}

impl Default for DistillSection {
    fn default() -> Self {
        Self {
            teacher: String::new(),
            temperature: 2.0,
            alpha: 0.5,
        }
    }
}

/// `[model]`: a model from scratch or a checkpoint to fine-tune.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// `"scratch"`, or the path of an HF model directory or a GGUF file.
    pub init: String,
    /// Scratch only: `llama`, `mistral`, `qwen2`, `falcon`, `glm` or `glm4`.
    pub architecture: String,
    /// Width of the residual stream (C).
    pub hidden_size: usize,
    /// Decoder layers.
    pub num_layers: usize,
    /// Query heads (must divide `hidden_size`).
    pub num_heads: usize,
    /// Key/value heads (must divide `num_heads`).
    pub num_kv_heads: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Longest sequence the model is built for.
    pub max_position_embeddings: usize,
    /// Rotary base.
    pub rope_theta: f64,
    /// Share the embedding and the LM head.
    pub tie_word_embeddings: bool,
    /// Standard deviation of the normal initialisation of matrices.
    pub initializer_range: f64,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            init: "scratch".into(),
            architecture: "llama".into(),
            hidden_size: 192,
            num_layers: 4,
            num_heads: 6,
            num_kv_heads: 2,
            intermediate_size: 512,
            max_position_embeddings: 512,
            rope_theta: 10_000.0,
            tie_word_embeddings: true,
            initializer_range: 0.02,
        }
    }
}

/// `[tokenizer]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TokenizerSection {
    /// A `tokenizer.json` to use; empty: the fine-tuned model's own, or for
    /// a scratch model a byte-level BPE trained on the training text.
    pub path: String,
    /// Vocabulary of the trained tokenizer (scratch models).
    pub vocab_size: usize,
}

impl Default for TokenizerSection {
    fn default() -> Self {
        Self {
            path: String::new(),
            vocab_size: 1024,
        }
    }
}

/// `[data]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// `["embedded"]` (the generated bilingual corpus), or paths of `.txt`
    /// files (one document each), `.jsonl` files (one document per line,
    /// text in `field`) and token shards (`.bin`, already tokenized).
    pub source: Vec<String>,
    /// `text`: documents joined into a token stream (labels are the ids);
    /// `chat`: JSONL conversations (`messages`) rendered with the model's
    /// chat template, loss on assistant tokens only (SFT).
    pub format: String,
    /// The JSONL field holding the text.
    pub field: String,
    /// Embedded corpus: training documents.
    pub documents: usize,
    /// Embedded corpus: held-out documents; files: see `validation_fraction`.
    pub validation_documents: usize,
    /// Files: fraction of documents (or shard tokens) held out.
    pub validation_fraction: f64,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            source: vec!["embedded".into()],
            format: "text".into(),
            field: "text".into(),
            documents: 4800,
            validation_documents: 160,
            validation_fraction: 0.02,
        }
    }
}

/// `[train]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    /// Optimiser steps.
    pub max_steps: u64,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Micro-batches per optimiser step.
    pub grad_accum: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// `constant`, `linear` or `cosine` (after a linear warmup).
    pub schedule: String,
    /// Warmup steps.
    pub warmup_steps: u64,
    /// `adamw` or `sgd`.
    pub optimizer: String,
    /// AdamW: decoupled decay; SGD: L2 penalty (never on rank < 2).
    pub weight_decay: f64,
    /// AdamW β₁.
    pub beta1: f64,
    /// AdamW β₂.
    pub beta2: f64,
    /// AdamW ε.
    pub eps: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Clip the global gradient norm to this (0: no clipping).
    pub grad_clip: f64,
    /// Validation every this many steps (0: only at the end).
    pub eval_every: u64,
    /// Validation micro-batches.
    pub eval_batches: usize,
    /// Checkpoint every this many steps (0: only the final model).
    pub save_every: u64,
    /// Checkpoints kept (older ones are deleted after a successful save).
    pub keep_last: usize,
    /// Where the model trains: `cpu`, `cuda` or `cuda:N` (AdamW with f32
    /// parameters and moments on the device; `kaiyuan train --device`
    /// sets it).
    pub device: String,
    /// `f32`, or `bf16`: mixed precision — each step runs forward and
    /// backward on a bf16 copy of the parameters, and the optimiser updates
    /// the f32 parameters (and keeps f32 moments) with its gradients.
    pub precision: String,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            max_steps: 750,
            batch_size: 8,
            seq_len: 128,
            grad_accum: 1,
            lr: 3e-3,
            schedule: "cosine".into(),
            warmup_steps: 30,
            optimizer: "adamw".into(),
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            momentum: 0.9,
            grad_clip: 1.0,
            eval_every: 150,
            eval_batches: 8,
            save_every: 250,
            keep_last: 2,
            device: "cpu".into(),
            precision: "f32".into(),
        }
    }
}

const SECTIONS: [&str; 8] = [
    "model",
    "tokenizer",
    "data",
    "train",
    "dp",
    "distill",
    "prune",
    "lora",
];

impl TrainConfig {
    /// Parses a TOML file's text (`origin` names it in errors), applies the
    /// `key=value` overrides (a bare key such as `lr` is looked up in every
    /// section and must be unique; `section.key` is explicit; values are
    /// TOML, and anything that does not parse is taken as a string), and
    /// checks the result.
    ///
    /// ```
    /// use kaiyuan_train::config::TrainConfig;
    /// let c = TrainConfig::parse("inline", "[train]\nmax_steps = 10", &["lr=0.01".into()]).unwrap();
    /// assert_eq!((c.train.max_steps, c.train.lr), (10, 0.01));
    /// let err = TrainConfig::parse("inline", "", &["learning_rate=1".into()]).unwrap_err();
    /// assert!(err.to_string().contains("learning_rate"));
    /// ```
    pub fn parse(origin: &str, toml_text: &str, sets: &[String]) -> Result<Self> {
        let mut value: toml::Table = toml::from_str(toml_text)
            .map_err(|e| TrainError::invalid(origin, format!("not valid TOML: {e}")))?;
        let defaults = toml::Table::try_from(TrainConfig::default())
            .map_err(|e| TrainError::invalid("defaults", e.to_string()))?;
        for set in sets {
            let (key, raw) = set.split_once('=').ok_or_else(|| {
                TrainError::invalid(set.as_str(), "expected key=value (e.g. --set lr=1e-3)")
            })?;
            let (key, raw) = (key.trim(), raw.trim());
            let parsed: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(raw.to_string()));
            let (section, field) = match key.split_once('.') {
                Some((s, f)) => (Some(s.to_string()), f.to_string()),
                None if defaults.contains_key(key) && !SECTIONS.contains(&key) => {
                    (None, key.to_string())
                }
                None => {
                    let owners: Vec<&str> = SECTIONS
                        .iter()
                        .copied()
                        .filter(|s| {
                            defaults
                                .get(*s)
                                .and_then(|t| t.as_table())
                                .is_some_and(|t| t.contains_key(key))
                        })
                        .collect();
                    match owners.as_slice() {
                        [one] => (Some(one.to_string()), key.to_string()),
                        [] => {
                            return Err(TrainError::invalid(
                                key,
                                "unknown setting (see `kaiyuan train --help` for the keys)",
                            ));
                        }
                        many => {
                            return Err(TrainError::invalid(
                                key,
                                format!(
                                    "ambiguous; write one of {}",
                                    many.iter()
                                        .map(|s| format!("{s}.{key}"))
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                            ));
                        }
                    }
                }
            };
            let parsed = match defaults_kind(&defaults, section.as_deref(), &field) {
                // "1" for a float field, a bare word for a list of paths.
                Some(toml::Value::Float(_)) => match parsed {
                    toml::Value::Integer(i) => toml::Value::Float(i as f64),
                    other => other,
                },
                Some(toml::Value::Array(_)) => match parsed {
                    toml::Value::Array(a) => toml::Value::Array(a),
                    other => toml::Value::Array(vec![other]),
                },
                _ => parsed,
            };
            let table = match &section {
                Some(s) => value
                    .entry(s.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                    .as_table_mut()
                    .ok_or_else(|| TrainError::invalid(s.as_str(), "is not a section"))?,
                None => &mut value,
            };
            table.insert(field, parsed);
        }
        let config: TrainConfig = toml::Value::Table(value)
            .try_into()
            .map_err(|e: toml::de::Error| TrainError::invalid(origin, e.message().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a config file (see [`TrainConfig::parse`]); `None`
    /// means the defaults.
    pub fn load(path: Option<&PathBuf>, sets: &[String]) -> Result<Self> {
        match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| TrainError::invalid(p.display().to_string(), e.to_string()))?;
                Self::parse(&p.display().to_string(), &text, sets)
            }
            None => Self::parse("defaults", "", sets),
        }
    }

    /// Checks settings that cannot work, naming the key.
    pub fn validate(&self) -> Result<()> {
        let m = &self.model;
        let t = &self.train;
        let fail = |key: &str, message: String| Err(TrainError::invalid(key, message));
        let device: kaiyuan_tensor::Device = t
            .device
            .parse()
            .map_err(|e: String| TrainError::invalid("train.device", e))?;
        if !["f32", "bf16"].contains(&t.precision.as_str()) {
            return fail(
                "train.precision",
                format!("`{}`: use f32 or bf16", t.precision),
            );
        }
        if device.is_cuda() {
            let refuse = |what: &str| {
                fail(
                    "train.device",
                    format!("{what} runs on the CPU only for now (train.device = \"cpu\")"),
                )
            };
            if self.dp.enabled {
                return refuse("DP-SGD (per-example gradients)");
            }
            if self.prune.method == "magnitude" {
                return refuse("magnitude pruning");
            }
            if t.optimizer != "adamw" {
                return refuse("the SGD optimiser");
            }
        }
        if m.init == "scratch" {
            if m.hidden_size == 0 || m.num_layers == 0 || m.intermediate_size == 0 {
                return fail(
                    "model.hidden_size",
                    "hidden_size, num_layers and intermediate_size must be positive".into(),
                );
            }
            if m.num_heads == 0 || !m.hidden_size.is_multiple_of(m.num_heads) {
                return fail(
                    "model.num_heads",
                    format!(
                        "{} heads do not divide hidden_size {}",
                        m.num_heads, m.hidden_size
                    ),
                );
            }
            if !(m.hidden_size / m.num_heads).is_multiple_of(2) {
                return fail(
                    "model.num_heads",
                    format!(
                        "head size {} must be even for rotary embeddings",
                        m.hidden_size / m.num_heads
                    ),
                );
            }
            if m.num_kv_heads == 0 || !m.num_heads.is_multiple_of(m.num_kv_heads) {
                return fail(
                    "model.num_kv_heads",
                    format!(
                        "{} key/value heads do not divide {} heads",
                        m.num_kv_heads, m.num_heads
                    ),
                );
            }
            if !["llama", "mistral", "qwen2", "falcon", "glm", "glm4"]
                .contains(&m.architecture.as_str())
            {
                return fail(
                    "model.architecture",
                    format!(
                        "`{}` is not one of llama, mistral, qwen2, falcon, glm, glm4",
                        m.architecture
                    ),
                );
            }
            if t.seq_len > m.max_position_embeddings {
                return fail(
                    "train.seq_len",
                    format!(
                        "{} is longer than model.max_position_embeddings {}",
                        t.seq_len, m.max_position_embeddings
                    ),
                );
            }
            if self.tokenizer.path.is_empty() && self.tokenizer.vocab_size < 258 {
                return fail(
                    "tokenizer.vocab_size",
                    format!(
                        "{} is below the 256 bytes plus the special tokens",
                        self.tokenizer.vocab_size
                    ),
                );
            }
        }
        if t.max_steps == 0 {
            return fail("train.max_steps", "must be at least 1".into());
        }
        if t.batch_size == 0 || t.grad_accum == 0 {
            return fail(
                "train.batch_size",
                "batch_size and grad_accum must be at least 1".into(),
            );
        }
        if t.seq_len < 2 {
            return fail(
                "train.seq_len",
                "needs at least 2 tokens (an input and its next token)".into(),
            );
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return fail(
                "train.lr",
                format!("{} is not a positive learning rate", t.lr),
            );
        }
        if !["constant", "linear", "cosine"].contains(&t.schedule.as_str()) {
            return fail(
                "train.schedule",
                format!("`{}` is not one of constant, linear, cosine", t.schedule),
            );
        }
        if !["adamw", "sgd"].contains(&t.optimizer.as_str()) {
            return fail(
                "train.optimizer",
                format!("`{}` is not one of adamw, sgd", t.optimizer),
            );
        }
        if t.grad_clip < 0.0 {
            return fail(
                "train.grad_clip",
                "must be ≥ 0 (0 disables clipping)".into(),
            );
        }
        self.dp.validate()?;
        self.prune.validate()?;
        self.lora.validate()?;
        if !self.distill.teacher.is_empty() {
            if !(self.distill.temperature > 0.0 && self.distill.temperature.is_finite()) {
                return fail("distill.temperature", "must be a finite number > 0".into());
            }
            if !(0.0..=1.0).contains(&self.distill.alpha) {
                return fail("distill.alpha", "must be in [0, 1]".into());
            }
        }
        if !["text", "chat"].contains(&self.data.format.as_str()) {
            return fail(
                "data.format",
                format!("`{}` is not one of text, chat", self.data.format),
            );
        }
        if self.data.format == "chat" && self.dp.enabled {
            return fail(
                "dp.enabled",
                "DP-SGD on chat data is not supported yet (use format = \"text\")".into(),
            );
        }
        if self.data.source.is_empty() {
            return fail("data.source", "no training data given".into());
        }
        if !(0.0..1.0).contains(&self.data.validation_fraction) {
            return fail("data.validation_fraction", "must be in [0, 1)".into());
        }
        Ok(())
    }

    /// The config as TOML (written next to checkpoints).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| TrainError::invalid("config", e.to_string()))
    }
}

fn defaults_kind<'a>(
    defaults: &'a toml::Table,
    section: Option<&str>,
    field: &str,
) -> Option<&'a toml::Value> {
    match section {
        Some(s) => defaults.get(s)?.as_table()?.get(field),
        None => defaults.get(field),
    }
}
