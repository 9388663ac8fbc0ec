//! LoRA fine-tuning in PEFT's layout.
//!
//! The adapters themselves live in the models crate
//! ([`Model::attach_lora`], [`Model::merge_lora`], …); this module owns
//! their files and the training configuration:
//!
//! - [`LoraSection`]: the `[lora]` section of a training config;
//! - [`LoraConfig`]: PEFT's `adapter_config.json`, read and written with
//!   PEFT 0.21.2's exact bytes ([`LoraConfig::to_json`]);
//! - [`save_adapter`] / [`load_adapter`] / [`attach_adapter`]: an adapter
//!   directory (`adapter_config.json` + `adapter_model.safetensors`) that
//!   PEFT's `PeftModel.from_pretrained` loads, and that we load from PEFT;
//! - [`export_merged`]: a plain model directory with `W + scale·B·A` folded
//!   in (PEFT's `merge_and_unload`).
//!
//! In a training run (`[lora] enabled = true`) the base weights stay frozen:
//! the optimiser sees only the adapters ([`Model::trainable_mut`]), every
//! checkpoint and `final/` get an `adapter/` subdirectory beside the
//! (unchanged) base weights, and the run ends with `merged/`.
//!
//! Dropout masks are drawn from a seed the loop sets before every
//! micro-batch ([`dropout_seed`] of the run's seed and the data position,
//! via [`Model::set_lora_dropout_seed`]), so a resumed run draws the same
//! masks and stays bit-identical.

use std::collections::BTreeMap;
use std::path::Path;

use kaiyuan_models::safetensors_io::{read_file, write_file};
use kaiyuan_models::{LoraSettings, Model, Weights};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::checkpoint::{ModelPackage, write_atomic, write_model_dir};
use crate::config::TrainConfig;
use crate::init::SplitMix64;
use crate::{Result, TrainError};

/// The PEFT release whose `adapter_config.json` fields and bytes
/// [`LoraConfig::to_json`] reproduces (written as `peft_version`).
pub const PEFT_VERSION: &str = "0.21.2";
/// The adapter's configuration file.
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";
/// The adapter's weights file.
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// The subdirectory of checkpoints and `final/` holding the adapter.
pub const ADAPTER_DIR: &str = "adapter";
/// The directory of a run's merged model (beside `final/`).
pub const MERGED_DIR: &str = "merged";

/// `[lora]`: train low-rank adapters on a frozen model. Defaults are
/// PEFT's `LoraConfig` defaults (r = 8, α = 8, no dropout, `q_proj` and
/// `v_proj`, PEFT's choice for LLaMA-style models).
///
/// ```toml
/// [lora]
/// enabled = true
/// rank = 8
/// alpha = 16
/// dropout = 0.05
/// target_modules = ["q_proj", "k_proj", "v_proj", "o_proj"]  # Falcon: ["query_key_value"]
/// ```
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoraSection {
    /// Train adapters instead of the whole model.
    pub enabled: bool,
    /// Rank r.
    pub rank: usize,
    /// α: the update is scaled by α / r.
    pub alpha: f64,
    /// Dropout probability on the adapters' inputs while training.
    pub dropout: f64,
    /// Linear modules to adapt; a module matches when its name is the
    /// target or ends with `.` + target (PEFT's rule).
    pub target_modules: Vec<String>,
    /// rsLoRA: scale by α / √r.
    pub use_rslora: bool,
}

impl Default for LoraSection {
    fn default() -> Self {
        Self {
            enabled: false,
            rank: 8,
            alpha: 8.0,
            dropout: 0.0,
            target_modules: vec!["q_proj".into(), "v_proj".into()],
            use_rslora: false,
        }
    }
}

impl LoraSection {
    /// Checks the settings (when enabled), naming the key.
    ///
    /// ```
    /// use kaiyuan_train::lora::LoraSection;
    /// let bad = LoraSection { enabled: true, rank: 0, ..LoraSection::default() };
    /// assert!(bad.validate().unwrap_err().to_string().contains("lora.rank"));
    /// ```
    pub fn validate(&self) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        if self.rank == 0 {
            return Err(TrainError::invalid("lora.rank", "must be at least 1"));
        }
        if !(self.alpha > 0.0 && self.alpha.is_finite()) {
            return Err(TrainError::invalid(
                "lora.alpha",
                "must be a finite number > 0",
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(TrainError::invalid("lora.dropout", "must be in [0, 1)"));
        }
        if self.target_modules.is_empty() || self.target_modules.iter().any(|t| t.is_empty()) {
            return Err(TrainError::invalid(
                "lora.target_modules",
                "name at least one linear module, e.g. [\"q_proj\", \"v_proj\"]",
            ));
        }
        Ok(())
    }

    /// The models crate's settings, A initialised from `seed`.
    pub fn settings(&self, seed: u64) -> LoraSettings {
        LoraSettings {
            rank: self.rank,
            alpha: self.alpha,
            dropout: self.dropout,
            target_modules: self.target_modules.clone(),
            use_rslora: self.use_rslora,
            seed,
        }
    }
}

/// PEFT's `adapter_config.json` for a LoRA adapter. The fields we act on
/// are typed; every other field PEFT writes is kept in `extra` and written
/// back (fields absent there get PEFT 0.21.2's defaults).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct LoraConfig {
    /// `r`: the rank.
    #[serde(rename = "r")]
    pub rank: usize,
    /// `lora_alpha`: α (written as an integer when it is one, as PEFT's
    /// `int` field is).
    #[serde(rename = "lora_alpha", serialize_with = "python_number")]
    pub alpha: f64,
    /// `lora_dropout`.
    #[serde(rename = "lora_dropout", default)]
    pub dropout: f64,
    /// `target_modules`: module names (PEFT's regular-expression form, a
    /// single string, is refused).
    #[serde(deserialize_with = "module_list")]
    pub target_modules: Vec<String>,
    /// `base_model_name_or_path`: the model the adapter was trained on.
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// `peft_type`: `"LORA"`.
    pub peft_type: String,
    /// `task_type`: `"CAUSAL_LM"`.
    #[serde(default)]
    pub task_type: Option<String>,
    /// `bias`: only `"none"` is supported.
    #[serde(default = "bias_none")]
    pub bias: String,
    /// `fan_in_fan_out`: only `false` (weights stored (out, in)).
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// `inference_mode`: PEFT's `save_pretrained` always writes `true`.
    #[serde(default = "yes")]
    pub inference_mode: bool,
    /// `use_rslora`: scale by α / √r.
    #[serde(default)]
    pub use_rslora: bool,
    /// `use_dora`: only `false`.
    #[serde(default)]
    pub use_dora: bool,
    /// Every other field, verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

fn bias_none() -> String {
    "none".into()
}

fn yes() -> bool {
    true
}

/// An f64 that is an integer is written as one (Python's `8`, not `8.0`).
fn python_number<S: Serializer>(x: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        s.serialize_i64(*x as i64)
    } else {
        s.serialize_f64(*x)
    }
}

fn module_list<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                other => Err(serde::de::Error::custom(format!(
                    "target_modules: `{other}` is not a module name"
                ))),
            })
            .collect(),
        Value::String(regex) => Err(serde::de::Error::custom(format!(
            "target_modules is the regular expression `{regex}`, which is not supported; list the module names instead"
        ))),
        other => Err(serde::de::Error::custom(format!(
            "target_modules: expected a list of module names, got `{other}`"
        ))),
    }
}

/// The fields PEFT 0.21.2 writes besides the typed ones, with the values
/// of an adapter that uses none of those features.
fn peft_defaults() -> Vec<(&'static str, Value)> {
    use serde_json::json;
    vec![
        ("alora_invocation_tokens", Value::Null),
        ("alpha_pattern", json!({})),
        ("arrow_config", Value::Null),
        ("auto_mapping", Value::Null),
        ("corda_config", Value::Null),
        ("ensure_weight_tying", json!(false)),
        ("eva_config", Value::Null),
        ("exclude_modules", Value::Null),
        ("init_lora_weights", json!(true)),
        ("kasa_config", Value::Null),
        ("layer_replication", Value::Null),
        ("layers_pattern", Value::Null),
        ("layers_to_transform", Value::Null),
        ("loftq_config", json!({})),
        ("lora_bias", json!(false)),
        ("lora_ga_config", Value::Null),
        ("megatron_config", Value::Null),
        ("megatron_core", json!("megatron.core")),
        ("modules_to_save", Value::Null),
        ("monteclora_config", Value::Null),
        ("peft_version", json!(PEFT_VERSION)),
        ("qalora_group_size", json!(16)),
        ("rank_pattern", json!({})),
        ("revision", Value::Null),
        ("target_parameters", Value::Null),
        ("trainable_token_indices", Value::Null),
        ("use_bdlora", Value::Null),
        ("use_qalora", json!(false)),
        ("velora_config", Value::Null),
    ]
}

/// Every object's keys sorted, recursively (Python's `sort_keys=True`).
fn sort_keys(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let sorted: BTreeMap<String, Value> =
                map.into_iter().map(|(k, v)| (k, sort_keys(v))).collect();
            Value::Object(sorted.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sort_keys).collect()),
        other => other,
    }
}

/// Python's `ensure_ascii=True`: every character outside ' '..='~' that
/// serde_json left as is becomes `\uxxxx` (UTF-16 units, lowercase hex).
fn ascii_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if (c as u32) < 0x7F {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

impl LoraConfig {
    /// The config of adapters trained with `section` on the model at
    /// `base_model_name_or_path` (`None` for a model from scratch).
    pub fn from_section(section: &LoraSection, base_model_name_or_path: Option<String>) -> Self {
        Self {
            rank: section.rank,
            alpha: section.alpha,
            dropout: section.dropout,
            target_modules: section.target_modules.clone(),
            base_model_name_or_path,
            peft_type: "LORA".into(),
            task_type: Some("CAUSAL_LM".into()),
            bias: "none".into(),
            fan_in_fan_out: false,
            inference_mode: true,
            use_rslora: section.use_rslora,
            use_dora: false,
            extra: BTreeMap::new(),
        }
    }

    /// The models crate's settings (A initialised from `seed`, which only
    /// matters for a fresh attach).
    pub fn settings(&self, seed: u64) -> LoraSettings {
        LoraSettings {
            rank: self.rank,
            alpha: self.alpha,
            dropout: self.dropout,
            target_modules: self.target_modules.clone(),
            use_rslora: self.use_rslora,
            seed,
        }
    }

    /// Refuses PEFT features this implementation does not have, naming the
    /// field: another `peft_type`, DoRA, biases, `fan_in_fan_out`, per-module
    /// ranks or alphas, layer selection, `modules_to_save`, and the like.
    pub fn check(&self) -> Result<()> {
        let refuse = |field: &str, why: String| Err(TrainError::invalid(field, why));
        if self.peft_type != "LORA" {
            return refuse(
                "peft_type",
                format!("`{}` is not a LoRA adapter (LORA)", self.peft_type),
            );
        }
        if self.rank == 0 {
            return refuse("r", "must be at least 1".into());
        }
        if !self.alpha.is_finite() {
            return refuse("lora_alpha", format!("{} is not finite", self.alpha));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return refuse("lora_dropout", format!("{} is not in [0, 1)", self.dropout));
        }
        if self.bias != "none" {
            return refuse(
                "bias",
                format!("`{}` is not supported (only \"none\")", self.bias),
            );
        }
        if self.fan_in_fan_out {
            return refuse("fan_in_fan_out", "true is not supported".into());
        }
        if self.use_dora {
            return refuse("use_dora", "DoRA adapters are not supported".into());
        }
        for (field, value) in &self.extra {
            let unused = match value {
                Value::Null => true,
                Value::Bool(b) => !b,
                Value::Object(m) => m.is_empty(),
                Value::Array(a) => a.is_empty(),
                _ => false,
            };
            let matters = matches!(
                field.as_str(),
                "alpha_pattern"
                    | "rank_pattern"
                    | "layers_to_transform"
                    | "layer_replication"
                    | "modules_to_save"
                    | "exclude_modules"
                    | "target_parameters"
                    | "trainable_token_indices"
                    | "alora_invocation_tokens"
                    | "lora_bias"
                    | "use_qalora"
                    | "use_bdlora"
            );
            if matters && !unused {
                return refuse(
                    field,
                    format!("`{value}` is not supported (this PEFT feature is not implemented)"),
                );
            }
        }
        Ok(())
    }

    /// `adapter_config.json` as PEFT 0.21.2's `save_pretrained` writes it:
    /// every field it knows, keys sorted, two-space indentation, non-ASCII
    /// escaped, no final newline (`json.dumps(…, indent=2,
    /// sort_keys=True)`). Floats print as Rust's shortest form, which is
    /// Python's for every value between 1e-4 and 1e15 (e.g. 0.05).
    ///
    /// ```
    /// use kaiyuan_train::lora::{LoraConfig, LoraSection};
    /// let c = LoraConfig::from_section(&LoraSection::default(), None);
    /// let json = c.to_json().unwrap();
    /// assert!(json.starts_with("{\n  \"alora_invocation_tokens\": null,"));
    /// assert!(json.contains("\n  \"lora_alpha\": 8,\n"));
    /// assert_eq!(LoraConfig::from_json("doc", &json).unwrap(), c);
    /// ```
    pub fn to_json(&self) -> Result<String> {
        let mut map: BTreeMap<String, Value> = peft_defaults()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let own =
            serde_json::to_value(self).map_err(|e| TrainError::invalid("lora", e.to_string()))?;
        if let Value::Object(fields) = own {
            map.extend(fields);
        }
        let value = sort_keys(Value::Object(map.into_iter().collect()));
        let text = serde_json::to_string_pretty(&value)
            .map_err(|e| TrainError::invalid("lora", e.to_string()))?;
        Ok(ascii_escape(&text))
    }

    /// Parses an `adapter_config.json` (`origin` names it in errors) and
    /// [checks](LoraConfig::check) it. Fields PEFT writes that matter only
    /// to it (`peft_version`, `revision`, …) are kept in `extra`.
    pub fn from_json(origin: &str, text: &str) -> Result<Self> {
        let mut config: LoraConfig = serde_json::from_str(text)
            .map_err(|e| TrainError::invalid(origin, format!("invalid adapter config: {e}")))?;
        // Defaults PEFT would write anyway need not be kept as extras; the
        // version is rewritten by whoever saves next.
        config.extra.remove("peft_version");
        let defaults = peft_defaults();
        config
            .extra
            .retain(|k, v| !defaults.iter().any(|(dk, dv)| dk == k && dv == v));
        config.check()?;
        Ok(config)
    }
}

fn io(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::invalid(path.display().to_string(), e.to_string())
}

/// Writes `model`'s adapters as a PEFT adapter directory:
/// `adapter_model.safetensors` (A and B under PEFT's names, header
/// metadata `{"format": "pt"}`, PEFT's byte layout) and
/// `adapter_config.json` ([`LoraConfig::to_json`]), each atomically.
///
/// Fails when the model has no adapters or their rank is not `config`'s.
pub fn save_adapter(dir: &Path, model: &Model, config: &LoraConfig) -> Result<()> {
    config.check()?;
    let weights = model.lora_weights();
    if weights.is_empty() {
        return Err(TrainError::invalid(
            "lora",
            "the model has no adapters to save (attach_lora first)",
        ));
    }
    for (name, t) in weights.iter() {
        let rank = if name.ends_with(".lora_A.weight") {
            t.shape()[0]
        } else {
            t.shape()[1]
        };
        if rank != config.rank {
            return Err(TrainError::invalid(
                "lora",
                format!(
                    "`{name}` has rank {rank} but the adapter config says r = {}",
                    config.rank
                ),
            ));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let mut metadata = BTreeMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    write_file(&dir.join(ADAPTER_WEIGHTS_FILE), &weights, &metadata)?;
    write_atomic(&dir.join(ADAPTER_CONFIG_FILE), config.to_json()?.as_bytes())?;
    Ok(())
}

/// Reads a PEFT adapter directory: its checked config and its tensors
/// (under PEFT's names).
pub fn load_adapter(dir: &Path) -> Result<(LoraConfig, Weights)> {
    let config_path = dir.join(ADAPTER_CONFIG_FILE);
    let text = std::fs::read_to_string(&config_path).map_err(|e| io(&config_path, e))?;
    let config = LoraConfig::from_json(&config_path.display().to_string(), &text)?;
    let weights_path = dir.join(ADAPTER_WEIGHTS_FILE);
    if !weights_path.is_file() {
        return Err(io(
            &weights_path,
            "missing (only safetensors adapters are supported)",
        ));
    }
    let mut weights = Weights::new(weights_path.display().to_string());
    read_file(&weights_path, &mut weights)?;
    Ok((config, weights))
}

/// Loads the adapter in `dir` onto `model` ([`Model::load_lora`]) and
/// returns its config.
pub fn attach_adapter(model: &mut Model, dir: &Path) -> Result<LoraConfig> {
    let (config, weights) = load_adapter(dir)?;
    model.load_lora(&config.settings(0), &weights)?;
    Ok(config)
}

/// Writes a plain model directory into `dir`: `model` with its adapters
/// merged (`W + scale·B·A`, [`Model::merge_lora`]), with `package`'s
/// config and tokenizer. `model` itself is left as it is.
pub fn export_merged(dir: &Path, package: &ModelPackage, model: &Model) -> Result<()> {
    let mut merged = model.clone();
    merged.stop_tracking_gradients();
    merged.merge_lora()?;
    write_model_dir(dir, package, &merged.to_weights())
}

/// The adapter config of a training run (`base_model_name_or_path` is
/// `model.init` unless the model is trained from scratch).
pub fn run_adapter_config(config: &TrainConfig) -> LoraConfig {
    let base = (config.model.init != "scratch").then(|| config.model.init.clone());
    LoraConfig::from_section(&config.lora, base)
}

/// Trainer hook, after the model is built: attaches fresh adapters (A
/// seeded by the run's seed) when `[lora]` is enabled; reports what it
/// attached.
pub fn attach_for_training(model: &mut Model, config: &TrainConfig) -> Result<Option<String>> {
    if !config.lora.enabled {
        return Ok(None);
    }
    let modules = model.attach_lora(&config.lora.settings(config.seed))?;
    Ok(Some(format!(
        "LoRA r={} alpha={} on {} modules ({}); base weights frozen",
        config.lora.rank,
        config.lora.alpha,
        modules.len(),
        config.lora.target_modules.join(", ")
    )))
}

/// Trainer hook, on resume: loads the adapters saved in the checkpoint's
/// `adapter/` when `[lora]` is enabled (with the run's settings; their
/// shapes must match).
pub fn resume_adapter(model: &mut Model, config: &TrainConfig, checkpoint: &Path) -> Result<()> {
    if !config.lora.enabled {
        return Ok(());
    }
    let dir = checkpoint.join(ADAPTER_DIR);
    if !dir.join(ADAPTER_WEIGHTS_FILE).is_file() {
        return Err(io(
            &dir,
            "holds no adapter to resume a LoRA run from (was the checkpoint written with [lora] enabled?)",
        ));
    }
    let (_, weights) = load_adapter(&dir)?;
    model.load_lora(&config.lora.settings(config.seed), &weights)?;
    Ok(())
}

/// The dropout seed of the micro-batch that starts at training sequence
/// `sequences_seen` of a run seeded with `seed`.
pub fn dropout_seed(seed: u64, sequences_seen: u64) -> u64 {
    let mut mix = SplitMix64::new(seed ^ 0x4C6F_5241_D50F_0000);
    let a = mix.next_u64();
    SplitMix64::new(a ^ sequences_seen.wrapping_mul(0xA24B_AED4_963E_E407)).next_u64()
}

/// Trainer hook, after a checkpoint is written: its `adapter/` (when the
/// model has adapters).
pub fn save_with_checkpoint(checkpoint: &Path, model: &Model, config: &TrainConfig) -> Result<()> {
    if !model.has_lora() {
        return Ok(());
    }
    save_adapter(
        &checkpoint.join(ADAPTER_DIR),
        model,
        &run_adapter_config(config),
    )
}

/// Trainer hook, after `final/` is written: `final/adapter/` and the merged
/// model in `out/merged/` (when the model has adapters).
pub fn save_final(
    out: &Path,
    final_dir: &Path,
    package: &ModelPackage,
    model: &Model,
    config: &TrainConfig,
) -> Result<()> {
    if !model.has_lora() {
        return Ok(());
    }
    save_adapter(
        &final_dir.join(ADAPTER_DIR),
        model,
        &run_adapter_config(config),
    )?;
    export_merged(&out.join(MERGED_DIR), package, model)
}
