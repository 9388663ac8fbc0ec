//! Checkpoints: a model directory (`config.json`, `model.safetensors`,
//! `tokenizer.json`, loadable by our `generate`/`eval` and by HF
//! transformers) plus the optimiser's state (`optimizer.safetensors`), the
//! loop's position (`trainer_state.json`) and the run's `train.toml`.
//!
//! A checkpoint is written into `checkpoint-<step>.tmp/` and renamed into
//! place only when complete, so a crash mid-write leaves the previous
//! checkpoint intact. Setting `KAIYUAN_CRASH_IN_CHECKPOINT=<step>` aborts
//! the process half-way through writing that step's checkpoint (after the
//! weights, before the optimiser state), for testing exactly that.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kaiyuan_models::safetensors_io::{read_file, write_file};
use kaiyuan_models::{Model, ModelConfig, Weights};
use kaiyuan_provenance::Manifest;
use kaiyuan_tensor::{DType, Tensor};
use kaiyuan_tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::TrainConfig;
use crate::optim::Moments;
use crate::{Result, TrainError};

/// Environment variable naming a step whose checkpoint write aborts half-way.
pub const CRASH_VARIABLE: &str = "KAIYUAN_CRASH_IN_CHECKPOINT";

/// Where the loop stands; saved as `trainer_state.json`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct TrainerState {
    /// Optimiser steps done.
    pub step: u64,
    /// Training sequences consumed (the data position).
    pub sequences_seen: u64,
    /// Training tokens consumed.
    pub tokens_seen: u64,
    /// Seconds of training so far (across resumes).
    pub elapsed_seconds: f64,
    /// The optimiser (`adamw` or `sgd`).
    pub optimizer: String,
}

/// Everything besides the weights that makes a model directory.
#[derive(Clone, Debug)]
pub struct ModelPackage {
    /// HF `config.json`.
    pub config_json: Value,
    /// The resolved config.
    pub config: ModelConfig,
    /// The tokenizer, saved as `tokenizer.json`.
    pub tokenizer: Tokenizer,
    /// `tokenizer_config.json` (chat template, special tokens), if any.
    pub tokenizer_config: Option<Value>,
    /// `generation_config.json`, if any.
    pub generation_config: Option<Value>,
}

/// Optimiser state to save: AdamW moments or SGD momentum, by parameter.
#[derive(Clone, Debug, Default)]
pub struct OptimizerState {
    /// AdamW steps taken.
    pub steps: u64,
    /// AdamW moments.
    pub moments: BTreeMap<String, Moments>,
    /// SGD momentum buffers.
    pub momentum: BTreeMap<String, Vec<f32>>,
}

/// Writes `bytes` to `path` atomically (a temporary file renamed into place).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    kaiyuan_models::safetensors_io::write_atomic(path, |w| {
        use std::io::Write;
        w.write_all(bytes)
    })?;
    Ok(())
}

fn io(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::invalid(path.display().to_string(), e.to_string())
}

fn json_text(v: &impl Serialize) -> Result<String> {
    serde_json::to_string_pretty(v)
        .map(|s| s + "\n")
        .map_err(|e| TrainError::invalid("json", e.to_string()))
}

/// Writes a model directory (weights in their own dtype) into `dir`.
pub fn write_model_dir(dir: &Path, package: &ModelPackage, weights: &Weights) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    write_atomic(
        &dir.join("config.json"),
        json_text(&package.config_json)?.as_bytes(),
    )?;
    let mut metadata = BTreeMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    write_file(&dir.join("model.safetensors"), weights, &metadata)?;
    write_atomic(
        &dir.join("tokenizer.json"),
        package.tokenizer.to_json()?.as_bytes(),
    )?;
    if let Some(tc) = &package.tokenizer_config {
        write_atomic(
            &dir.join("tokenizer_config.json"),
            json_text(tc)?.as_bytes(),
        )?;
    }
    if let Some(gc) = &package.generation_config {
        write_atomic(
            &dir.join("generation_config.json"),
            json_text(gc)?.as_bytes(),
        )?;
    }
    Ok(())
}

/// What every checkpoint of a run records besides its state: the resolved
/// config (`train.toml`, which `--resume` continues with) and the run's
/// provenance manifest.
pub struct RunRecord<'a> {
    /// The resolved configuration as TOML.
    pub config_toml: &'a str,
    /// The manifest written into each checkpoint ([`run_provenance`]).
    pub provenance: &'a Manifest,
}

/// The provenance of a run's checkpoints (kind `checkpoint`): the whole
/// configuration as settings; the data sources, tokenizer, initial model,
/// teacher and — when resuming — the checkpoint resumed from as inputs.
///
/// # Errors
///
/// [`TrainError::Provenance`] when an input cannot be read.
pub fn run_provenance(config: &TrainConfig, resumed_from: Option<&Path>) -> Result<Manifest> {
    let settings =
        serde_json::to_value(config).map_err(|e| TrainError::invalid("config", e.to_string()))?;
    let mut manifest = Manifest::new("checkpoint", settings);
    // `["embedded"]` is the generated corpus, fully described by the settings.
    if config.data.source != ["embedded"] {
        for source in &config.data.source {
            manifest.add_input("data", Path::new(source))?;
        }
    }
    if !config.tokenizer.path.is_empty() {
        manifest.add_input("tokenizer", Path::new(&config.tokenizer.path))?;
    }
    if config.model.init != "scratch" {
        manifest.add_input("model", Path::new(&config.model.init))?;
    }
    if !config.distill.teacher.is_empty() {
        manifest.add_input("teacher", Path::new(&config.distill.teacher))?;
    }
    if let Some(dir) = resumed_from {
        manifest.add_input("resumed-from", dir)?;
    }
    Ok(manifest)
}

/// Saves a checkpoint as `out/checkpoint-<step>/` (atomically, see the
/// module docs) and deletes all but the newest `keep_last` checkpoints.
pub fn save(
    out: &Path,
    package: &ModelPackage,
    model: &Model,
    optimizer: &OptimizerState,
    state: &TrainerState,
    run: &RunRecord<'_>,
    keep_last: usize,
) -> Result<PathBuf> {
    let final_dir = out.join(format!("checkpoint-{}", state.step));
    let tmp = out.join(format!("checkpoint-{}.tmp", state.step));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    }
    write_model_dir(&tmp, package, &model.to_weights())?;
    if std::env::var(CRASH_VARIABLE).is_ok_and(|v| v.trim() == state.step.to_string()) {
        eprintln!(
            "{CRASH_VARIABLE}={}: aborting in the middle of writing {}",
            state.step,
            tmp.display()
        );
        std::process::abort();
    }
    let mut opt = Weights::new("optimizer state");
    for (name, m) in &optimizer.moments {
        opt.insert(
            format!("exp_avg.{name}"),
            Tensor::from_vec(m.m.clone(), &[m.m.len()])?,
        );
        opt.insert(
            format!("exp_avg_sq.{name}"),
            Tensor::from_vec(m.v.clone(), &[m.v.len()])?,
        );
    }
    for (name, b) in &optimizer.momentum {
        opt.insert(
            format!("momentum.{name}"),
            Tensor::from_vec(b.clone(), &[b.len()])?,
        );
    }
    let mut metadata = BTreeMap::new();
    metadata.insert("adamw_steps".to_string(), optimizer.steps.to_string());
    write_file(&tmp.join("optimizer.safetensors"), &opt, &metadata)?;
    write_atomic(
        &tmp.join("trainer_state.json"),
        json_text(state)?.as_bytes(),
    )?;
    write_atomic(&tmp.join("train.toml"), run.config_toml.as_bytes())?;
    run.provenance.clone().write(&tmp)?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(|e| io(&final_dir, e))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(|e| io(&final_dir, e))?;
    prune(out, keep_last.max(1))?;
    Ok(final_dir)
}

/// Completed checkpoints in `out`, oldest first.
pub fn list(out: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(out) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(io(out, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io(out, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(step) = name
            .strip_prefix("checkpoint-")
            .and_then(|s| s.parse::<u64>().ok())
        {
            found.push((step, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

fn prune(out: &Path, keep: usize) -> Result<()> {
    let all = list(out)?;
    for (_, path) in all.iter().take(all.len().saturating_sub(keep)) {
        std::fs::remove_dir_all(path).map_err(|e| io(path, e))?;
    }
    Ok(())
}

/// The checkpoint to resume from: `path` itself when it holds
/// `trainer_state.json`, else its newest complete `checkpoint-<step>`.
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.join("trainer_state.json").is_file() {
        return Ok(path.to_path_buf());
    }
    list(path)?.pop().map(|(_, p)| p).ok_or_else(|| {
        TrainError::invalid(
            path.display().to_string(),
            "holds no checkpoint to resume from (no checkpoint-<step>/ with trainer_state.json)",
        )
    })
}

/// A loaded checkpoint.
#[derive(Debug)]
pub struct Loaded {
    /// The model (f32).
    pub model: Model,
    /// Config, tokenizer and companions.
    pub package: ModelPackage,
    /// Optimiser state.
    pub optimizer: OptimizerState,
    /// Loop position.
    pub state: TrainerState,
    /// The run's `train.toml`.
    pub config_toml: String,
}

/// Loads a checkpoint directory written by [`save`]; any missing or
/// corrupted file is an error naming it.
pub fn load(dir: &Path) -> Result<Loaded> {
    let read = |name: &str| -> Result<String> {
        std::fs::read_to_string(dir.join(name)).map_err(|e| io(&dir.join(name), e))
    };
    let parse_json = |name: &str| -> Result<Value> {
        serde_json::from_str(&read(name)?)
            .map_err(|e| io(&dir.join(name), format!("invalid JSON: {e}")))
    };
    let config_json = parse_json("config.json")?;
    let config = ModelConfig::from_json_str(
        &dir.join("config.json").display().to_string(),
        &read("config.json")?,
    )?;
    let tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))?;
    let optional = |name: &str| -> Result<Option<Value>> {
        if dir.join(name).is_file() {
            parse_json(name).map(Some)
        } else {
            Ok(None)
        }
    };
    let package = ModelPackage {
        config_json,
        tokenizer_config: optional("tokenizer_config.json")?,
        generation_config: optional("generation_config.json")?,
        config: config.clone(),
        tokenizer,
    };
    let mut weights = Weights::new(dir.join("model.safetensors").display().to_string());
    read_file(&dir.join("model.safetensors"), &mut weights)?;
    let model = Model::new(config, &weights, DType::F32)?;
    let state: TrainerState = serde_json::from_str(&read("trainer_state.json")?).map_err(|e| {
        io(
            &dir.join("trainer_state.json"),
            format!("invalid trainer state: {e}"),
        )
    })?;
    let mut opt = Weights::new(dir.join("optimizer.safetensors").display().to_string());
    read_file(&dir.join("optimizer.safetensors"), &mut opt)?;
    let mut optimizer = OptimizerState {
        steps: state.step,
        ..OptimizerState::default()
    };
    let vector = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.cast(DType::F32)?.to_vec::<f32>()?) };
    for (name, t) in opt.iter() {
        if let Some(param) = name.strip_prefix("exp_avg.") {
            let v = opt.raw(&format!("exp_avg_sq.{param}")).ok_or_else(|| {
                io(
                    &dir.join("optimizer.safetensors"),
                    format!("exp_avg_sq of `{param}` is missing"),
                )
            })?;
            optimizer.moments.insert(
                param.to_string(),
                Moments {
                    m: vector(t)?,
                    v: vector(v)?,
                },
            );
        } else if let Some(param) = name.strip_prefix("momentum.") {
            optimizer.momentum.insert(param.to_string(), vector(t)?);
        }
    }
    Ok(Loaded {
        model,
        package,
        optimizer,
        state,
        config_toml: read("train.toml")?,
    })
}
