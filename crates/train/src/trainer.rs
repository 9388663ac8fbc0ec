//! The training loop: model and tokenizer set-up (scratch or fine-tune),
//! data, steps with gradient accumulation, clipping, the optimiser and
//! schedule, periodic validation, checkpoints, `metrics.jsonl` and the loss
//! plot. [`run`] reports progress through a callback, so the CLI draws the
//! progress bar and tests stay quiet.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use kaiyuan_models::{Model, ModelConfig, ModelFiles};
use kaiyuan_tensor::{DType, Device, Tensor, no_grad};
use kaiyuan_tokenizer::BpeTrainer;
use kaiyuan_tokenizer::Tokenizer;
use serde::Serialize;

use crate::checkpoint::{self, ModelPackage, OptimizerState, TrainerState};
use crate::config::TrainConfig;
use crate::data::{self, Batcher};
use crate::init::{hf_config, init_model};
use crate::loss::causal_lm_loss;
use crate::optim::{AdamW, AdamWConfig, ParamRef, Schedule, Sgd, SgdConfig, clip_grad_norm};
use crate::{Result, TrainError};

/// The end-of-document token of tokenizers we train.
pub const EOS_TOKEN: &str = "<|endoftext|>";

/// One optimiser step's numbers (a line of `metrics.jsonl`).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StepMetrics {
    /// Steps done (1-based).
    pub step: u64,
    /// Mean training loss over the step's micro-batches.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Training tokens per second of this step.
    pub tokens_per_second: f64,
    /// Seconds since the run started (across resumes).
    pub elapsed_seconds: f64,
    /// DP-SGD: ε spent so far at the configured δ.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
    /// DP-SGD: examples in this step's Poisson batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dp_batch: Option<usize>,
}

/// A validation (a line of `metrics.jsonl`).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct EvalMetrics {
    /// Steps done.
    pub step: u64,
    /// Mean next-token loss on the validation sequences.
    pub val_loss: f64,
    /// `exp(val_loss)`.
    pub val_perplexity: f64,
}

/// What [`run`] reports as it goes.
#[derive(Debug)]
pub enum Event<'a> {
    /// Set-up news (model size, data size, resume point).
    Message(String),
    /// Training is about to start at `start` of `max_steps`.
    Start {
        /// First step to run (0, or the resumed step).
        start: u64,
        /// Last step.
        max_steps: u64,
    },
    /// A step finished.
    Step(&'a StepMetrics),
    /// A validation finished.
    Eval(&'a EvalMetrics),
    /// A checkpoint was written.
    Checkpoint(&'a Path),
}

/// The outcome of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Steps done.
    pub steps: u64,
    /// Loss of the first step this run made.
    pub first_loss: f64,
    /// Loss of the last step.
    pub last_loss: f64,
    /// Every step's loss in this run, in order.
    pub losses: Vec<f64>,
    /// The last validation.
    pub validation: Option<EvalMetrics>,
    /// Parameters trained.
    pub parameters: usize,
    /// Tokens per second over the run.
    pub tokens_per_second: f64,
    /// Input records rejected (written to `rejected.jsonl`).
    pub rejected: usize,
    /// The final model directory.
    pub final_dir: PathBuf,
}

/// Trains as `config` says, writing into `out`; with `resume` (a run
/// directory or checkpoint), continues that run from its checkpoint with
/// the config saved there (overridden by `sets`), bit-identically.
pub fn run(
    config: &TrainConfig,
    out: &Path,
    resume: Option<&Path>,
    sets: &[String],
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Report> {
    let started = Instant::now();
    let (config, model, package, opt_state, mut state) = match resume {
        Some(path) => {
            let dir = checkpoint::resolve(path)?;
            let loaded = checkpoint::load(&dir)?;
            let config = TrainConfig::parse(
                &dir.join("train.toml").display().to_string(),
                &loaded.config_toml,
                sets,
            )?;
            on_event(Event::Message(format!(
                "resuming from {} at step {}",
                dir.display(),
                loaded.state.step
            )));
            (
                config,
                loaded.model,
                loaded.package,
                loaded.optimizer,
                loaded.state,
            )
        }
        None => {
            config.validate()?;
            let (model, package) = build_model(config, on_event)?;
            let state = TrainerState {
                step: 0,
                sequences_seen: 0,
                tokens_seen: 0,
                elapsed_seconds: 0.0,
                optimizer: config.train.optimizer.clone(),
            };
            (
                config.clone(),
                model,
                package,
                OptimizerState::default(),
                state,
            )
        }
    };
    let t = &config.train;
    std::fs::create_dir_all(out)
        .map_err(|e| TrainError::invalid(out.display().to_string(), e.to_string()))?;
    let eos = eos_id(&package)?;

    // Data.
    let (mut batcher, validation, rejected) = if config.data.format == "chat" {
        let tc = package.tokenizer_config.as_ref().ok_or_else(|| {
            TrainError::invalid(
                "data.format",
                "chat data needs the model's chat template (a tokenizer_config.json with chat_template)",
            )
        })?;
        let template = kaiyuan_models::chat::ChatTemplate::from_tokenizer_config(&tc.to_string())?;
        let (train, validation, rejected) =
            data::chat_examples(&config, &template, &package.tokenizer)?;
        let validation: Vec<_> = validation
            .into_iter()
            .take(t.eval_batches * t.batch_size)
            .collect();
        (
            Batcher::from_examples(train, eos, t.batch_size, config.seed)?,
            validation,
            rejected,
        )
    } else {
        let docs = data::read_documents(&config)?;
        let streams = data::tokenize(
            &docs,
            &package.tokenizer,
            eos,
            config.data.validation_fraction,
        )?;
        let validation = data::validation_sequences(
            &streams.validation,
            t.seq_len,
            t.eval_batches * t.batch_size,
        );
        (
            Batcher::new(streams.train, t.seq_len, t.batch_size, config.seed)?,
            validation,
            docs.rejected,
        )
    };
    // What the checkpoints are made from (after the data is read, so a
    // missing or malformed input is reported by the reader first).
    let resumed_from = resume.map(checkpoint::resolve).transpose()?;
    let provenance = checkpoint::run_provenance(&config, resumed_from.as_deref())?;
    if !rejected.is_empty() {
        data::write_rejected(&out.join("rejected.jsonl"), &rejected)?;
        on_event(Event::Message(format!(
            "{} input records rejected, written with reasons to {}",
            rejected.len(),
            out.join("rejected.jsonl").display()
        )));
    }
    let vocab = package.config.vocab_size;
    for i in 0..batcher.sequences() {
        if let Some(&bad) = batcher.chunk(i).iter().find(|&&id| id as usize >= vocab) {
            return Err(TrainError::invalid(
                "tokenizer",
                format!(
                    "token id {bad} does not fit the model's vocabulary of {vocab} (the vocabulary is smaller than the tokenizer's)"
                ),
            ));
        }
    }
    let (mut model, package) = if resume.is_none() && config.prune.method == "structured" {
        let (json, weights) = crate::prune::structured(
            &package.config_json,
            &package.config,
            &model.to_weights(),
            config.prune.heads,
            config.prune.channels,
        )?;
        let model_config = ModelConfig::from_json_str("pruned config", &json.to_string())?;
        let pruned = Model::new(model_config.clone(), &weights, DType::F32)?;
        on_event(Event::Message(format!(
            "pruned {} heads and {} MLP channels from every layer",
            config.prune.heads, config.prune.channels
        )));
        (
            pruned,
            ModelPackage {
                config_json: json,
                config: model_config,
                ..package
            },
        )
    } else {
        (model, package)
    };
    let masks = if config.prune.method == "magnitude" {
        let masks = crate::prune::magnitude_masks(&model, config.prune.sparsity)?;
        crate::prune::apply_masks(&mut model, &masks)?;
        let (zeros, total) = crate::prune::layer_sparsity(&model)?;
        on_event(Event::Message(format!(
            "magnitude pruning: {zeros} of {total} layer weights are 0 ({:.4})",
            zeros as f64 / total.max(1) as f64
        )));
        Some(masks)
    } else {
        None
    };
    let teacher = if config.distill.teacher.is_empty() {
        None
    } else {
        let mut files = ModelFiles::open(&config.distill.teacher)?;
        if files.config.vocab_size != package.config.vocab_size {
            return Err(TrainError::invalid(
                "distill.teacher",
                format!(
                    "the teacher's vocabulary ({}) differs from the student's ({})",
                    files.config.vocab_size, package.config.vocab_size
                ),
            ));
        }
        Some(files.take_model(DType::F32)?)
    };
    // LoRA (after pruning, which rebuilds the model): fresh adapters, or
    // the checkpoint's when resuming.
    match resume {
        Some(path) => {
            crate::lora::resume_adapter(&mut model, &config, &checkpoint::resolve(path)?)?
        }
        None => {
            if let Some(message) = crate::lora::attach_for_training(&mut model, &config)? {
                on_event(Event::Message(message));
            }
        }
    }
    let device: Device = t
        .device
        .parse()
        .map_err(|e: String| TrainError::invalid("train.device", e))?;
    if device.is_cuda() {
        model.to_device(device)?;
        on_event(Event::Message(format!("training on {device}")));
    }
    let mixed = match t.precision.as_str() {
        "bf16" => {
            on_event(Event::Message(
                "mixed precision: bf16 forward and backward, f32 parameters and moments".into(),
            ));
            Some(DType::BF16)
        }
        _ => None,
    };
    let teacher = match teacher {
        Some(mut teacher) if device.is_cuda() => {
            teacher.to_device(device)?;
            Some(teacher)
        }
        other => other,
    };
    let parameters: usize = model
        .trainable_mut()
        .iter()
        .map(|(_, p)| p.elem_count())
        .sum();
    on_event(Event::Message(format!(
        "{} parameters; {} training sequences of {} tokens, {} validation sequences",
        parameters,
        batcher.sequences(),
        t.seq_len,
        validation.len()
    )));

    let schedule = match t.schedule.as_str() {
        "constant" => Schedule::Constant {
            warmup_steps: t.warmup_steps,
        },
        "linear" => Schedule::Linear {
            warmup_steps: t.warmup_steps,
            total_steps: t.max_steps,
        },
        _ => Schedule::Cosine {
            warmup_steps: t.warmup_steps,
            total_steps: t.max_steps,
        },
    };
    let mut optimizer = match t.optimizer.as_str() {
        "sgd" => {
            let mut sgd = Sgd::new(SgdConfig {
                lr: t.lr,
                momentum: t.momentum,
                weight_decay: t.weight_decay,
            });
            sgd.restore(opt_state.momentum);
            Optimizer::Sgd(sgd)
        }
        _ => {
            let mut adamw = AdamW::new(AdamWConfig {
                lr: t.lr,
                beta1: t.beta1,
                beta2: t.beta2,
                eps: t.eps,
                weight_decay: t.weight_decay,
            });
            adamw.restore(opt_state.steps, opt_state.moments);
            Optimizer::AdamW(adamw)
        }
    };
    let metrics_path = out.join("metrics.jsonl");
    let mut history = trim_metrics(&metrics_path, state.step)?;
    let config_toml = config.to_toml()?;
    let resumed_elapsed = state.elapsed_seconds;

    on_event(Event::Start {
        start: state.step,
        max_steps: t.max_steps,
    });
    let mut losses = Vec::new();
    let mut last_eval = None;
    let run_tokens_start = state.tokens_seen;
    while state.step < t.max_steps {
        let step_start = Instant::now();
        let factor = schedule.factor(state.step);
        let mut epsilon = None;
        let mut dp_batch = None;
        // Mixed precision: forward and backward on a low-precision copy;
        // the optimiser below updates the f32 parameters of `model`.
        let mut low_precision = match mixed {
            Some(dtype) => Some(model.to_dtype(dtype)?),
            None => None,
        };
        let compute = low_precision.as_mut().unwrap_or(&mut model);
        let leaves = compute.track_gradients();
        let mut sums: Vec<Option<Tensor>> = vec![None; leaves.len()];
        let mut loss_total = 0.0;
        let micro_batches = if config.dp.enabled { 0 } else { t.grad_accum };
        if config.dp.enabled {
            compute.stop_tracking_gradients();
            let n = batcher.sequences();
            let q = (t.batch_size as f64 / n as f64).min(1.0);
            let picked = crate::dp::poisson_batch(n, q, config.seed, state.step);
            let examples: Vec<Vec<u32>> = picked.iter().map(|&i| batcher.chunk(i)).collect();
            let (grads, info) = crate::dp::private_gradient(
                &mut *compute,
                &examples,
                &config.dp,
                q * n as f64,
                config.seed,
                state.step,
            )?;
            state.sequences_seen += info.batch as u64;
            state.tokens_seen += (info.batch * t.seq_len) as u64;
            loss_total = if info.batch == 0 {
                0.0
            } else {
                info.loss * t.grad_accum as f64
            };
            for (sum, g) in sums.iter_mut().zip(grads) {
                *sum = Some(g);
            }
            epsilon = Some(crate::dp::epsilon(&config.dp, q, state.step + 1)?);
            dp_batch = Some(info.batch);
        }
        for _ in 0..micro_batches {
            let (ids, labels) = batcher.batch(state.sequences_seen, t.batch_size);
            compute.set_lora_dropout_seed(Some(crate::lora::dropout_seed(
                config.seed,
                state.sequences_seen,
            )));
            state.sequences_seen += t.batch_size as u64;
            state.tokens_seen += ids.iter().map(Vec::len).sum::<usize>() as u64;
            let loss = match &teacher {
                None => causal_lm_loss(compute, &ids, &labels)?,
                Some(teacher) => {
                    let (logits, targets) = crate::loss::shifted_logits(compute, &ids, &labels)?;
                    let (teacher_logits, _) =
                        no_grad(|| crate::loss::shifted_logits(teacher, &ids, &labels))?;
                    let kd = crate::distill::distillation_loss(
                        &logits,
                        &teacher_logits.cast(logits.dtype())?,
                        config.distill.temperature,
                    )?;
                    let ce = logits.cross_entropy(&targets)?;
                    let a = config.distill.alpha;
                    kd.affine(a, 0.0)?.add(&ce.affine(1.0 - a, 0.0)?)?
                }
            };
            loss_total += f64::from(loss.cast(DType::F32)?.to_scalar::<f32>()?);
            let scaled = if t.grad_accum > 1 {
                loss.affine(1.0 / t.grad_accum as f64, 0.0)?
            } else {
                loss
            };
            let grads = scaled.backward()?;
            for ((_, leaf), sum) in leaves.iter().zip(sums.iter_mut()) {
                if let Some(g) = grads.get(leaf) {
                    // Mixed precision: micro-batches add up in f32.
                    let g = match mixed {
                        Some(_) => g.cast(DType::F32)?,
                        None => g.clone(),
                    };
                    *sum = Some(match sum.take() {
                        Some(s) => s.add(&g)?,
                        None => g,
                    });
                }
            }
        }
        compute.stop_tracking_gradients();
        compute.set_lora_dropout_seed(None);
        drop(low_precision);
        let loss = loss_total / t.grad_accum as f64;
        if !loss.is_finite() {
            return Err(TrainError::invalid(
                "train.lr",
                format!(
                    "the loss became {loss} at step {} (try a lower learning rate)",
                    state.step + 1
                ),
            ));
        }
        let mut grads: Vec<Tensor> = Vec::with_capacity(leaves.len());
        for ((_, leaf), sum) in leaves.iter().zip(sums) {
            grads.push(match sum {
                Some(g) => g,
                None => {
                    let dtype = if mixed.is_some() {
                        DType::F32
                    } else {
                        leaf.dtype()
                    };
                    Tensor::zeros(leaf.shape(), dtype)?.to_device(leaf.device())?
                }
            });
        }
        // The leaves share the parameters' buffers; without them a device
        // optimiser updates the parameters in place.
        drop(leaves);
        let grad_norm = if config.dp.enabled {
            // Clipping happened per example.
            crate::dp::global_norm(&grads)?
        } else if t.grad_clip > 0.0 {
            let mut refs: Vec<&mut Tensor> = grads.iter_mut().collect();
            clip_grad_norm(&mut refs, t.grad_clip)?
        } else {
            let mut refs: Vec<&mut Tensor> = grads.iter_mut().collect();
            clip_grad_norm(&mut refs, f64::INFINITY)?
        };
        {
            let mut slots = model.trainable_mut();
            let mut params: Vec<ParamRef<'_>> = slots
                .iter_mut()
                .zip(&grads)
                .map(|((name, p), g)| (name.as_str(), &mut **p, g))
                .collect();
            no_grad(|| optimizer.step(&mut params, factor))?;
        }
        if let Some(masks) = &masks {
            crate::prune::apply_masks(&mut model, masks)?;
        }
        state.step += 1;
        state.elapsed_seconds = resumed_elapsed + started.elapsed().as_secs_f64();
        let seconds = step_start.elapsed().as_secs_f64().max(1e-9);
        let metrics = StepMetrics {
            step: state.step,
            loss,
            lr: t.lr * factor,
            grad_norm,
            tokens_per_second: (t.batch_size * t.seq_len * t.grad_accum) as f64 / seconds,
            elapsed_seconds: state.elapsed_seconds,
            epsilon,
            dp_batch,
        };
        losses.push(loss);
        append_metrics(&metrics_path, &metrics)?;
        history.push((state.step, loss, None));
        on_event(Event::Step(&metrics));
        let last = state.step == t.max_steps;
        if !validation.is_empty() && ((t.eval_every > 0 && state.step % t.eval_every == 0) || last)
        {
            let eval = evaluate(&model, &validation, t.batch_size, eos, state.step)?;
            append_metrics(&metrics_path, &eval)?;
            if let Some(h) = history.last_mut() {
                h.2 = Some(eval.val_loss);
            }
            on_event(Event::Eval(&eval));
            last_eval = Some(eval);
        }
        if (t.save_every > 0 && state.step % t.save_every == 0) || last {
            let opt_state = optimizer.state(state.step)?;
            let host = on_host(&model)?;
            let path = checkpoint::save(
                out,
                &package,
                &host,
                &opt_state,
                &state,
                &checkpoint::RunRecord {
                    config_toml: &config_toml,
                    provenance: &provenance,
                },
                t.keep_last,
            )?;
            crate::lora::save_with_checkpoint(&path, &host, &config)?;
            on_event(Event::Checkpoint(&path));
        }
    }
    // `final/` is written into `final.tmp/` and renamed when complete, its
    // manifest last.
    // An earlier `final/` is replaced only once the new one is complete.
    let final_dir = out.join("final");
    let final_tmp = out.join("final.tmp");
    let remove = |dir: &Path| -> Result<()> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .map_err(|e| TrainError::invalid(dir.display().to_string(), e.to_string()))?;
        }
        Ok(())
    };
    remove(&final_tmp)?;
    let model = on_host(&model)?;
    checkpoint::write_model_dir(&final_tmp, &package, &model.to_weights())?;
    crate::lora::save_final(out, &final_tmp, &package, &model, &config)?;
    let mut final_provenance = provenance.clone();
    final_provenance.kind = "model".into();
    final_provenance.write(&final_tmp)?;
    remove(&final_dir)?;
    std::fs::rename(&final_tmp, &final_dir)
        .map_err(|e| TrainError::invalid(final_dir.display().to_string(), e.to_string()))?;
    let merged = out.join(crate::lora::MERGED_DIR);
    if model.has_lora() && merged.is_dir() {
        let mut merged_provenance = provenance;
        merged_provenance.kind = "merged-model".into();
        merged_provenance.write(&merged)?;
    }
    crate::plot::loss_svg(&out.join("loss.svg"), &history)?;
    let run_seconds = started.elapsed().as_secs_f64().max(1e-9);
    Ok(Report {
        steps: state.step,
        first_loss: losses.first().copied().unwrap_or(f64::NAN),
        last_loss: losses.last().copied().unwrap_or(f64::NAN),
        losses,
        validation: last_eval,
        parameters,
        tokens_per_second: (state.tokens_seen - run_tokens_start) as f64 / run_seconds,
        rejected: rejected.len(),
        final_dir,
    })
}

enum Optimizer {
    AdamW(AdamW),
    Sgd(Sgd),
}

impl Optimizer {
    fn step(&mut self, params: &mut [ParamRef<'_>], factor: f64) -> Result<()> {
        match self {
            Optimizer::AdamW(o) => o.step(params, factor),
            Optimizer::Sgd(o) => o.step(params, factor),
        }
    }

    fn state(&mut self, step: u64) -> Result<OptimizerState> {
        Ok(match self {
            Optimizer::AdamW(o) => {
                o.sync_state()?;
                OptimizerState {
                    steps: o.steps(),
                    moments: o.state().clone(),
                    ..OptimizerState::default()
                }
            }
            Optimizer::Sgd(o) => OptimizerState {
                steps: step,
                momentum: o.state().clone(),
                ..OptimizerState::default()
            },
        })
    }
}

/// `model` with its parameters on the host (a copy when they are on a
/// device), for writing checkpoints.
fn on_host(model: &Model) -> Result<Model> {
    let mut host = model.clone();
    if host.device().is_cuda() {
        host.to_device(Device::Cpu)?;
    }
    Ok(host)
}

/// Mean validation loss over labelled `sequences` in batches (right-padded
/// with `pad`), without recording.
pub fn evaluate(
    model: &Model,
    sequences: &[(Vec<u32>, Vec<i64>)],
    batch_size: usize,
    pad: u32,
    step: u64,
) -> Result<EvalMetrics> {
    let mut total = 0.0;
    let mut batches = 0usize;
    for batch in sequences.chunks(batch_size.max(1)) {
        let (ids, labels) = data::pad_rows(batch.to_vec(), pad);
        let loss = no_grad(|| causal_lm_loss(model, &ids, &labels))?;
        total += f64::from(loss.to_scalar::<f32>()?) * batch.len() as f64;
        batches += batch.len();
    }
    let val_loss = total / batches.max(1) as f64;
    Ok(EvalMetrics {
        step,
        val_loss,
        val_perplexity: val_loss.exp(),
    })
}

/// The model to train and its package: from scratch (with a tokenizer
/// trained on the training text unless one is given) or from a checkpoint.
fn build_model(
    config: &TrainConfig,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<(Model, ModelPackage)> {
    let given_tokenizer = if config.tokenizer.path.is_empty() {
        None
    } else {
        Some(Tokenizer::from_file(&config.tokenizer.path)?)
    };
    if config.model.init == "scratch" {
        let tokenizer = match given_tokenizer {
            Some(t) => t,
            None => {
                let docs = data::read_documents(config)?;
                let trainer = BpeTrainer {
                    vocab_size: config.tokenizer.vocab_size,
                    min_frequency: 2,
                    special_tokens: vec![EOS_TOKEN.to_string()],
                    pattern: None,
                };
                let tok = trainer.train(&docs.train)?;
                on_event(Event::Message(format!(
                    "trained a byte-level BPE tokenizer of {} tokens on the training text",
                    tok.vocab_size()
                )));
                tok
            }
        };
        let eos = tokenizer.token_to_id(EOS_TOKEN);
        let config_json = hf_config(&config.model, tokenizer.vocab_size(), eos, eos)?;
        let model_config = ModelConfig::from_json_str("scratch config", &config_json.to_string())?;
        let model = init_model(&model_config, config.model.initializer_range, config.seed)?;
        let package = ModelPackage {
            config_json,
            config: model_config,
            tokenizer,
            tokenizer_config: None,
            generation_config: None,
        };
        return Ok((model, package));
    }
    let mut files = ModelFiles::open(&config.model.init)?;
    let tokenizer = match given_tokenizer {
        Some(t) => t,
        None => files.require_tokenizer()?.clone(),
    };
    if files.config.vocab_size < tokenizer.vocab_size() {
        return Err(TrainError::invalid(
            "tokenizer",
            format!(
                "the model's vocabulary ({}) is smaller than the tokenizer's ({})",
                files.config.vocab_size,
                tokenizer.vocab_size()
            ),
        ));
    }
    let model = files.take_model(DType::F32)?;
    let package = ModelPackage {
        config_json: files.config_json.clone(),
        config: files.config.clone(),
        tokenizer,
        tokenizer_config: files.tokenizer_config.clone(),
        generation_config: files.generation_config.clone(),
    };
    Ok((model, package))
}

fn eos_id(package: &ModelPackage) -> Result<u32> {
    if let Some(&id) = package.config.eos_token_ids.first() {
        return Ok(id);
    }
    package.tokenizer.token_to_id(EOS_TOKEN).ok_or_else(|| {
        TrainError::invalid(
            "config.json",
            "no eos_token_id and no <|endoftext|> token to separate documents",
        )
    })
}

fn append_metrics(path: &Path, record: &impl Serialize) -> Result<()> {
    let line =
        serde_json::to_string(record).map_err(|e| TrainError::invalid("metrics", e.to_string()))?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| TrainError::invalid(path.display().to_string(), e.to_string()))?;
    writeln!(file, "{line}")
        .map_err(|e| TrainError::invalid(path.display().to_string(), e.to_string()))
}

/// Keeps the `metrics.jsonl` lines of steps ≤ `step` (a resumed run
/// rewrites what came after its checkpoint) and returns the loss history.
fn trim_metrics(path: &Path, step: u64) -> Result<Vec<(u64, f64, Option<f64>)>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(TrainError::invalid(
                path.display().to_string(),
                e.to_string(),
            ));
        }
    };
    let mut kept = String::new();
    let mut history: Vec<(u64, f64, Option<f64>)> = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let s = v.get("step").and_then(|s| s.as_u64()).unwrap_or(u64::MAX);
        if s > step {
            continue;
        }
        kept.push_str(line);
        kept.push('\n');
        if let Some(loss) = v.get("loss").and_then(|l| l.as_f64()) {
            history.push((s, loss, None));
        } else if let (Some(val), Some(h)) = (
            v.get("val_loss").and_then(|l| l.as_f64()),
            history.last_mut(),
        ) {
            h.2 = Some(val);
        }
    }
    checkpoint::write_atomic(path, kept.as_bytes())?;
    Ok(history)
}
