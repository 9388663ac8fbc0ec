//! `kaiyuan quantize`: RTN or GPTQ to 4/8 bits, written as an HF GPTQ
//! directory or a GGUF file, with a report (sizes, ΔPPL ± stderr, KL,
//! top-1 agreement, decode tokens/s before and after) in JSON and Markdown.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use kaiyuan_eval::{Comparison, compare_models, encode_text};
use kaiyuan_models::gguf::write_model_gguf_as;
use kaiyuan_models::gptq_format::CheckpointFormat;
use kaiyuan_models::loader::write_tokenizer_files;
use kaiyuan_models::{Logits, Model, ModelFiles};
use kaiyuan_quant::gptq::{GptqSettings, IntWeights};
use kaiyuan_quant::hf_gptq::write_gptq_dir;
use kaiyuan_quant::model_quant::{LayerResult, Method, quantize_model};
use kaiyuan_tensor::DType;
use kaiyuan_tensor::quant::BlockType;
use kaiyuan_tokenizer::EncodeOptions;
use serde_json::{Value, json};

/// Quantization method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    /// Round-to-nearest.
    Rtn,
    /// GPTQ (needs --calib).
    Gptq,
}

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// HF GPTQ directory (qweight/qzeros/scales/g_idx, quantization_config).
    Gptq,
    /// GGUF, 2-D weights F16.
    #[value(name = "gguf-f16")]
    GgufF16,
    /// GGUF, 2-D weights Q8_0.
    #[value(name = "gguf-q8_0")]
    GgufQ8_0,
    /// GGUF, 2-D weights Q4_0.
    #[value(name = "gguf-q4_0")]
    GgufQ4_0,
    /// GGUF, 2-D weights Q4_1.
    #[value(name = "gguf-q4_1")]
    GgufQ4_1,
    /// GGUF, 2-D weights Q4_K.
    #[value(name = "gguf-q4_k")]
    GgufQ4K,
    /// GGUF, 2-D weights Q6_K.
    #[value(name = "gguf-q6_k")]
    GgufQ6K,
}

impl FormatArg {
    fn block(self) -> Option<Option<BlockType>> {
        match self {
            FormatArg::Gptq => None,
            FormatArg::GgufF16 => Some(None),
            FormatArg::GgufQ8_0 => Some(Some(BlockType::Q8_0)),
            FormatArg::GgufQ4_0 => Some(Some(BlockType::Q4_0)),
            FormatArg::GgufQ4_1 => Some(Some(BlockType::Q4_1)),
            FormatArg::GgufQ4K => Some(Some(BlockType::Q4_K)),
            FormatArg::GgufQ6K => Some(Some(BlockType::Q6_K)),
        }
    }
}

/// Arguments of `kaiyuan quantize`.
#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// The model to quantize (a directory or a .gguf file; quantized GGUF
    /// weights are dequantized first).
    #[arg(long)]
    pub model: PathBuf,
    /// Round-to-nearest or GPTQ.
    #[arg(long, value_enum, default_value_t = MethodArg::Rtn)]
    pub method: MethodArg,
    /// Bits per weight (4 or 8) for --format gptq.
    #[arg(long, default_value_t = 4)]
    pub bits: u8,
    /// Columns per group; 0 for one group per output channel.
    #[arg(long, default_value_t = 128)]
    pub group_size: usize,
    /// Symmetric zero points (the default).
    #[arg(long, conflicts_with = "asym")]
    pub sym: bool,
    /// Asymmetric zero points.
    #[arg(long)]
    pub asym: bool,
    /// GPTQ: quantize columns by decreasing Hessian diagonal (desc_act).
    #[arg(long)]
    pub act_order: bool,
    /// GPTQ: group parameters from the original weights.
    #[arg(long)]
    pub static_groups: bool,
    /// GPTQ: damping as a fraction of the Hessian's mean diagonal.
    #[arg(long, default_value_t = 0.01)]
    pub damp: f64,
    /// GPTQ: columns per lazy batch update.
    #[arg(long, default_value_t = 128)]
    pub block_size: usize,
    /// Calibration text: a UTF-8 file, or JSONL (`.jsonl`) read from --calib-field.
    #[arg(long)]
    pub calib: Option<PathBuf>,
    /// The JSONL field holding calibration text.
    #[arg(long, default_value = "text")]
    pub calib_field: String,
    /// Calibration sequences.
    #[arg(long, default_value_t = 128)]
    pub samples: usize,
    /// Tokens per calibration sequence.
    #[arg(long, default_value_t = 512)]
    pub seq_len: usize,
    /// Seed of the choice of calibration windows.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Modules left unquantized (names or suffixes, comma-separated), e.g. `down_proj`.
    /// The embeddings and the LM head are never quantized in --format gptq.
    #[arg(long, value_delimiter = ',')]
    pub skip: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = FormatArg::Gptq)]
    pub format: FormatArg,
    /// Where to write (a directory for gptq, a file for gguf-*).
    #[arg(long)]
    pub output: PathBuf,
    /// Held-out text for the report's perplexity, KL and top-1 agreement (a
    /// text file, or JSONL whose --calib-field documents are joined by newlines).
    #[arg(long)]
    pub eval_text: Option<PathBuf>,
    /// Tokens of --eval-text to score.
    #[arg(long, default_value_t = 8192)]
    pub eval_tokens: usize,
    /// Window of the report's perplexity [default: min(512, the model's context)].
    #[arg(long)]
    pub eval_context: Option<usize>,
    /// Multiple-choice questions for the report's accuracy delta (a file or a
    /// directory, as `eval mc --task`).
    #[arg(long)]
    pub eval_task: Option<PathBuf>,
    /// Solved examples per question of --eval-task (from its `{subject}_dev` files).
    #[arg(long, default_value_t = 0)]
    pub eval_shots: usize,
    /// Tokens to decode for the report's tokens/s (0 skips it).
    #[arg(long, default_value_t = 64)]
    pub decode_tokens: usize,
    /// Report path (JSON; Markdown beside it as .md) [default: beside --output].
    #[arg(long)]
    pub report: Option<PathBuf>,
}

/// Runs `kaiyuan quantize`.
pub fn run(args: QuantizeArgs) -> anyhow::Result<()> {
    if args.bits != 4 && args.bits != 8 {
        bail!("--bits {}: 4 or 8", args.bits);
    }
    let start = Instant::now();
    let mut files = ModelFiles::open(&args.model)
        .with_context(|| format!("opening --model {}", args.model.display()))?;
    let reference = files.build(DType::F32)?;
    let tokenizer = files.require_tokenizer()?.clone();
    let source_bytes = files.file_bytes;
    let settings = GptqSettings {
        bits: args.bits,
        group_size: (args.group_size > 0).then_some(args.group_size),
        sym: !args.asym,
        act_order: args.act_order,
        static_groups: args.static_groups,
        damp_percent: args.damp,
        block_size: args.block_size,
    };
    let mut layers: Vec<LayerResult> = Vec::new();
    let (candidate, output_bytes) = match args.format.block() {
        Some(block) => {
            if args.method != MethodArg::Rtn {
                bail!(
                    "--format {:?} writes ggml blocks with llama.cpp's own rounding; use --method rtn (GPTQ writes --format gptq)",
                    args.format
                );
            }
            write_model_gguf_as(&files, &files.weights, &args.output, block)?;
            let mut out = ModelFiles::open_quantized(&args.output)?;
            let bytes = out.file_bytes;
            (out.take_model(DType::F32)?, bytes)
        }
        None => {
            let method = match args.method {
                MethodArg::Rtn => Method::Rtn,
                MethodArg::Gptq => Method::Gptq,
            };
            let max_positions = reference.config().max_position_embeddings;
            if args.calib.is_some() && args.seq_len > max_positions {
                bail!(
                    "--seq-len {} exceeds the model's max_position_embeddings {max_positions}",
                    args.seq_len
                );
            }
            let samples = match (&args.calib, method) {
                (Some(path), _) => Some(calibration_samples(
                    path,
                    &args.calib_field,
                    &tokenizer,
                    args.samples,
                    args.seq_len,
                    args.seed,
                )?),
                (None, Method::Gptq) => bail!(
                    "--method gptq needs calibration text (--calib FILE); --method rtn needs none"
                ),
                (None, Method::Rtn) => None,
            };
            let mut model = reference.clone();
            let total = model.linear_modules().len();
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} layers {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_message(method.name());
            layers = quantize_model(
                &mut model,
                method,
                &settings,
                &args.skip,
                samples.as_deref(),
                &mut |p| bar.set_position(p.done as u64),
            )?;
            bar.finish_and_clear();
            let bytes = write_gptq(&files, &layers, &settings, &args.output)?;
            drop(model);
            // Evaluate what was written, as `generate` and `eval` will load it.
            let mut out = ModelFiles::open_quantized(&args.output)?;
            (out.take_model(DType::F32)?, bytes)
        }
    };
    let quantize_seconds = start.elapsed().as_secs_f64();
    let _ = &mut files;
    let mut inputs: Vec<(&str, &Path)> = vec![("model", args.model.as_path())];
    if let Some(calib) = &args.calib {
        inputs.push(("calibration", calib.as_path()));
    }
    crate::provenance_cmd::record(
        &args.output,
        "quantized",
        serde_json::json!({
            "method": value_name(&args.method),
            "bits": args.bits,
            "group_size": args.group_size,
            "sym": !args.asym,
            "act_order": args.act_order,
            "static_groups": args.static_groups,
            "damp": args.damp,
            "block_size": args.block_size,
            "format": value_name(&args.format),
            "samples": args.samples,
            "seq_len": args.seq_len,
            "seed": args.seed,
            "skip": args.skip,
            "calib_field": args.calib_field,
        }),
        &inputs,
    )?;

    let comparison = match &args.eval_text {
        Some(path) => {
            let text = read_documents(path, &args.calib_field)?.join("\n");
            let mut ids = encode_text(&tokenizer, &text)?;
            ids.truncate(args.eval_tokens);
            let context = args
                .eval_context
                .unwrap_or(512)
                .min(reference.config().max_position_embeddings);
            Some(compare_models(&reference, &candidate, &ids, context)?)
        }
        None => None,
    };
    let speed = if args.decode_tokens > 0 {
        Some((
            decode_speed(&reference, args.decode_tokens)?,
            decode_speed(&candidate, args.decode_tokens)?,
        ))
    } else {
        None
    };
    let report = build_report(
        &args,
        &reference,
        &candidate,
        source_bytes,
        output_bytes,
        &layers,
        comparison.as_ref(),
        speed,
        quantize_seconds,
    );
    let mut report = report;
    if let Some(task_path) = &args.eval_task {
        report["multiple_choice"] = mc_delta(
            &reference,
            &candidate,
            &tokenizer,
            task_path,
            args.eval_shots,
        )?;
    }
    let report_path = args.report.clone().unwrap_or_else(|| {
        let mut p = args.output.clone().into_os_string();
        p.push(".report.json");
        PathBuf::from(p)
    });
    crate::write_atomic(&report_path, &serde_json::to_string_pretty(&report)?)?;
    let md_path = report_path.with_extension("md");
    crate::write_atomic(&md_path, markdown(&report))?;
    println!("{}", markdown(&report));
    println!(
        "wrote {} ({}), report {} and {}",
        args.output.display(),
        human_bytes(output_bytes),
        report_path.display(),
        md_path.display()
    );
    Ok(())
}

/// Multiple-choice accuracy of the reference and the quantized model on the
/// same questions, with the paired-bootstrap interval of the difference.
fn mc_delta(
    reference: &Model,
    candidate: &Model,
    tokenizer: &kaiyuan_tokenizer::Tokenizer,
    task_path: &Path,
    shots: usize,
) -> anyhow::Result<Value> {
    use kaiyuan_eval::ab::{CompareOptions, Metric, compare_reports};
    use kaiyuan_eval::mc::{McOptions, evaluate_mc, load_mc_task};
    let task = load_mc_task(task_path, None, None, shots)?;
    let options = McOptions {
        shots,
        ..McOptions::default()
    };
    let before = evaluate_mc(reference, tokenizer, &task, &options)?;
    let after = evaluate_mc(candidate, tokenizer, &task, &options)?;
    let acc = |r: &kaiyuan_eval::mc::McReport| -> Vec<f64> {
        r.questions.iter().map(|q| q.acc()).collect()
    };
    let a = [("acc".to_string(), Metric::mean(&acc(&before), true))].into();
    let b = [("acc".to_string(), Metric::mean(&acc(&after), true))].into();
    let rows = compare_reports(&a, &b, &CompareOptions::default())?;
    let interval = rows.first().and_then(|r| r.interval);
    Ok(json!({
        "task": task_path.display().to_string(),
        "questions": before.overall.questions,
        "shots": shots,
        "acc_reference": before.overall.acc.mean,
        "acc_quantized": after.overall.acc.mean,
        "delta_points": 100.0 * (after.overall.acc.mean - before.overall.acc.mean),
        "delta_points_ci95": interval.map(|(lo, hi)| [100.0 * lo, 100.0 * hi]),
        "predictions_changed": before.questions.iter().zip(&after.questions).filter(|(x, y)| x.prediction != y.prediction).count(),
    }))
}

/// `samples` windows of `seq_len` tokens from the calibration text,
/// starting at seeded random offsets (as GPTQ's reference samples C4).
fn calibration_samples(
    path: &Path,
    field: &str,
    tokenizer: &kaiyuan_tokenizer::Tokenizer,
    samples: usize,
    seq_len: usize,
    seed: u64,
) -> anyhow::Result<Vec<Vec<u32>>> {
    if samples == 0 || seq_len < 2 {
        bail!("--samples must be at least 1 and --seq-len at least 2");
    }
    let documents = read_documents(path, field)?;
    let options = EncodeOptions {
        add_special_tokens: false,
        split_special_tokens: true,
    };
    let mut ids = Vec::new();
    for doc in &documents {
        ids.extend(tokenizer.encode_with(doc, options)?.ids);
    }
    if ids.len() < seq_len {
        bail!(
            "--calib {} has {} tokens, fewer than --seq-len {seq_len}",
            path.display(),
            ids.len()
        );
    }
    let mut state = seed ^ 0x6A09_E667_F3BC_C908;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let starts = ids.len() - seq_len + 1;
    Ok((0..samples)
        .map(|_| {
            let s = (next() % starts as u64) as usize;
            ids[s..s + seq_len].to_vec()
        })
        .collect())
}

/// The documents of a text file (one) or a JSONL file (`field` of each line).
fn read_documents(path: &Path, field: &str) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if path.extension().is_none_or(|e| e != "jsonl") {
        return Ok(vec![text]);
    }
    let mut docs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: invalid JSON", path.display(), i + 1))?;
        let Some(s) = value.get(field).and_then(Value::as_str) else {
            bail!(
                "{}:{}: no string field `{field}` (set --calib-field)",
                path.display(),
                i + 1
            );
        };
        docs.push(s.to_string());
    }
    Ok(docs)
}

/// Greedy decoding of `tokens` tokens after a one-token prompt: tokens/s of
/// the decode steps (the prompt's step excluded).
fn decode_speed(model: &Model, tokens: usize) -> anyhow::Result<f64> {
    let mut cache = model.new_cache_for(1 + tokens);
    let logits = model.forward(&[vec![1]], &mut cache, Logits::Last)?;
    let mut next = argmax(&logits.to_vec::<f32>()?);
    let start = Instant::now();
    for _ in 0..tokens {
        let logits = model.forward(&[vec![next]], &mut cache, Logits::Last)?;
        next = argmax(&logits.to_vec::<f32>()?);
    }
    Ok(tokens as f64 / start.elapsed().as_secs_f64())
}

fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best as u32
}

fn write_gptq(
    files: &ModelFiles,
    layers: &[LayerResult],
    settings: &GptqSettings,
    output: &Path,
) -> anyhow::Result<u64> {
    std::fs::create_dir_all(output)
        .with_context(|| format!("creating --output {}", output.display()))?;
    // Unquantized tensors in f16, as GPTQ checkpoints keep them.
    let dense = files.weights.cast(DType::F16)?;
    let quantized: Vec<(&str, &IntWeights)> = layers
        .iter()
        .map(|l| (l.name.as_str(), &l.weights))
        .collect();
    let write = |format| {
        write_gptq_dir(
            output,
            &files.config_json,
            &dense,
            &quantized,
            settings,
            format,
        )
    };
    if let Err(e) = write(CheckpointFormat::V1) {
        // v1 stores zero − 1 and cannot hold a zero point of 0 (asymmetric
        // groups whose weights are all ≥ 0); v2 stores zeros as they are.
        if settings.sym || !e.to_string().contains("gptq_v2") {
            return Err(e.into());
        }
        eprintln!(
            "note: {e}; writing checkpoint_format \"gptq_v2\" (zero points stored as they are) instead"
        );
        write(CheckpointFormat::V2)?;
    }
    write_tokenizer_files(files, output)?;
    let bytes = std::fs::read_dir(output)?
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
        .filter_map(|e| e.metadata().ok().map(|m| m.len()))
        .sum();
    Ok(bytes)
}

/// Bytes of the linear layers (inside the blocks) of `model` as held.
fn linear_bytes(model: &Model) -> (usize, usize) {
    let mut held = 0;
    let mut elements = 0;
    for name in model.linear_modules() {
        if let Some(linear) = model.linear(&name) {
            match linear.quantized() {
                Some(q) => {
                    held += q.byte_size();
                    elements += q.rows() * q.cols();
                }
                None => {
                    let w = linear.weight();
                    held += w.elem_count() * w.dtype().size_in_bytes();
                    elements += w.elem_count();
                }
            }
        }
    }
    (held, elements)
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    args: &QuantizeArgs,
    reference: &Model,
    candidate: &Model,
    source_bytes: u64,
    output_bytes: u64,
    layers: &[LayerResult],
    comparison: Option<&Comparison>,
    speed: Option<(f64, f64)>,
    seconds: f64,
) -> Value {
    let (q_bytes, elements) = linear_bytes(candidate);
    let parameters: usize = reference
        .parameters()
        .iter()
        .map(|(_, t)| t.elem_count())
        .sum();
    let mut report = json!({
        "model": args.model.display().to_string(),
        "output": args.output.display().to_string(),
        "method": value_name(&args.method),
        "format": args.format.to_possible_value().map(|v| v.get_name().to_string()),
        "bits": args.bits,
        "group_size": args.group_size,
        "sym": !args.asym,
        "act_order": args.act_order,
        "seconds": seconds,
        "sizes": {
            "linear_elements": elements,
            "linear_bytes": q_bytes,
            "linear_bytes_fp16": elements * 2,
            "linear_ratio_to_fp16": q_bytes as f64 / (elements * 2) as f64,
            "linear_ratio_to_fp32": q_bytes as f64 / (elements * 4) as f64,
            "file_bytes": output_bytes,
            "source_file_bytes": source_bytes,
            "parameters": parameters,
            "file_ratio_to_fp16": output_bytes as f64 / (parameters * 2) as f64,
            "file_ratio_to_fp32": output_bytes as f64 / (parameters * 4) as f64,
        },
    });
    if let Some(c) = comparison {
        report["quality"] = json!({
            "tokens": c.tokens,
            "ppl_reference": c.ppl_reference,
            "ppl_quantized": c.ppl_candidate,
            "delta_ppl": c.delta_ppl,
            "delta_ppl_stderr": c.delta_ppl_stderr,
            "delta_ppl_percent": c.delta_ppl_percent,
            "delta_ppl_percent_stderr": c.delta_ppl_percent_stderr,
            "kl_mean": c.kl_mean,
            "kl_stderr": c.kl_stderr,
            "kl_max": c.kl_max,
            "top1_agreement": c.top1_agreement,
            "top1_stderr": c.top1_stderr,
        });
    }
    if let Some((before, after)) = speed {
        report["decode_tokens_per_second"] = json!({
            "reference_f32": before,
            "quantized": after,
            "ratio": after / before,
        });
    }
    if !layers.is_empty() {
        report["layers"] = layers
            .iter()
            .map(|l| {
                json!({
                    "name": l.name,
                    "rows": l.weights.rows,
                    "cols": l.weights.cols,
                    "loss": l.loss,
                    "damp": l.damp,
                    "relative_output_error": l.relative_output_error.map(|(q, _)| q),
                    "relative_output_error_rtn": l.relative_output_error.map(|(_, r)| r),
                    "seconds": l.seconds,
                })
            })
            .collect();
    }
    report
}

fn markdown(report: &Value) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let s = &report["sizes"];
    let mut out = format!(
        "# Quantization report\n\n- model: `{}`\n- output: `{}` ({})\n- method: {} {}-bit, group {}, {}{}\n\n",
        report["model"].as_str().unwrap_or(""),
        report["output"].as_str().unwrap_or(""),
        report["format"].as_str().unwrap_or(""),
        report["method"].as_str().unwrap_or(""),
        report["bits"],
        report["group_size"],
        if report["sym"].as_bool() == Some(true) {
            "symmetric"
        } else {
            "asymmetric"
        },
        if report["act_order"].as_bool() == Some(true) {
            ", act-order"
        } else {
            ""
        },
    );
    out += "| size | bytes | ratio to fp16 | ratio to fp32 |\n|---|---|---|---|\n";
    out += &format!(
        "| linear layers | {} | {:.3} | {:.3} |\n| whole file | {} | {:.3} | {:.3} |\n\n",
        s["linear_bytes"],
        f(&s["linear_ratio_to_fp16"]),
        f(&s["linear_ratio_to_fp32"]),
        s["file_bytes"],
        f(&s["file_ratio_to_fp16"]),
        f(&s["file_ratio_to_fp32"]),
    );
    if let Some(q) = report.get("quality") {
        out += &format!(
            "| held-out text ({} tokens) | value |\n|---|---|\n| PPL reference | {:.4} |\n| PPL quantized | {:.4} |\n| ΔPPL | {:+.4} ± {:.4} ({:+.3}% ± {:.3}%) |\n| mean KL | {:.6} ± {:.6} (max {:.4}) |\n| top-1 agreement | {:.2}% ± {:.2}% |\n\n",
            q["tokens"],
            f(&q["ppl_reference"]),
            f(&q["ppl_quantized"]),
            f(&q["delta_ppl"]),
            f(&q["delta_ppl_stderr"]),
            f(&q["delta_ppl_percent"]),
            f(&q["delta_ppl_percent_stderr"]),
            f(&q["kl_mean"]),
            f(&q["kl_stderr"]),
            f(&q["kl_max"]),
            100.0 * f(&q["top1_agreement"]),
            100.0 * f(&q["top1_stderr"]),
        );
    }
    if let Some(m) = report.get("multiple_choice") {
        let ci = m["delta_points_ci95"]
            .as_array()
            .map_or("n/a".to_string(), |c| {
                format!("[{:+.2}, {:+.2}]", f(&c[0]), f(&c[1]))
            });
        out += &format!(
            "Multiple choice ({} questions, {}-shot): accuracy {:.2}% → {:.2}% ({:+.2} points, 95% CI {ci}; {} predictions changed).\n\n",
            m["questions"],
            m["shots"],
            100.0 * f(&m["acc_reference"]),
            100.0 * f(&m["acc_quantized"]),
            f(&m["delta_points"]),
            m["predictions_changed"],
        );
    }
    if let Some(d) = report.get("decode_tokens_per_second") {
        out += &format!(
            "Decode: {:.1} tokens/s (f32) → {:.1} tokens/s quantized ({:.2}×).\n",
            f(&d["reference_f32"]),
            f(&d["quantized"]),
            f(&d["ratio"])
        );
    }
    out
}

/// The name a clap value enum is written with on the command line.
fn value_name(value: &impl clap::ValueEnum) -> String {
    value
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_string())
}

fn human_bytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}
