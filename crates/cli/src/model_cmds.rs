//! `kaiyuan generate`, `kaiyuan inspect` and `kaiyuan convert`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use kaiyuan_models::constrain::{RegexConstraint, choices_regex, json_schema_regex};
use kaiyuan_models::generate::{GenerationConfig, generate};
use kaiyuan_models::loader::SourceKind;
use kaiyuan_models::sampling::SamplingParams;
use kaiyuan_models::{ModelFiles, Weights};
use kaiyuan_tensor::DType;

/// The compute dtype of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DTypeArg {
    /// 32-bit floats.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

impl DTypeArg {
    /// The tensor dtype.
    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::F16 => DType::F16,
            Self::Bf16 => DType::BF16,
        }
    }

    /// The KV cache dtype of `--kv-dtype`: `kv`, else f32 (the compute
    /// type of every dtype here).
    pub fn kv_dtype(kv: Option<DTypeArg>) -> DType {
        kv.map_or(DType::F32, DTypeArg::dtype)
    }
}

/// Arguments of `kaiyuan generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// A model directory (config.json + safetensors + tokenizer.json) or a .gguf file.
    #[arg(long)]
    model: PathBuf,
    /// The prompt text.
    #[arg(long)]
    prompt: String,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// A system message (with --chat).
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 means greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Keep the k most likely tokens (0: off).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Nucleus sampling mass (1: off).
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Keep tokens with at least this fraction of the top probability (0: off).
    #[arg(long, default_value_t = 0.0)]
    min_p: f64,
    /// Penalty on tokens seen before (1: off).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f64,
    /// Random seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Stop when this string appears (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Output must be one of these strings (comma-separated).
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["regex", "json_schema"])]
    choices: Vec<String>,
    /// Output must match this regular expression.
    #[arg(long, conflicts_with = "json_schema")]
    regex: Option<String>,
    /// Output must be JSON valid against this schema file.
    #[arg(long)]
    json_schema: Option<PathBuf>,
    /// Compute dtype.
    #[arg(long, value_enum, default_value_t = DTypeArg::F32)]
    dtype: DTypeArg,
    /// KV cache dtype [default: f32]: f16 halves the cache (llama.cpp's
    /// default), rounding each key and value once (exact for an f16
    /// model), but widening it at every read slows long-context decoding.
    #[arg(long, value_enum)]
    kv_dtype: Option<DTypeArg>,
    /// Dequantize GGUF block weights (Q4_0, Q8_0, Q4_K, …) to --dtype at
    /// load. By default they stay quantized and run on the fused kernels,
    /// as llama.cpp runs them (about the file's size in memory).
    #[arg(long)]
    dequantize: bool,
}

/// Opens `path` to run it: GGUF block weights stay quantized and run on the
/// fused kernels, as llama.cpp runs them, unless `dequantize` asks for
/// dense weights of the compute dtype. A CUDA device (`--device cuda`)
/// also gets them dense, because the quantized kernels run on the CPU
/// only. HF GPTQ directories load quantized either way.
pub(crate) fn open_for_running(
    path: &std::path::Path,
    dequantize: bool,
) -> anyhow::Result<ModelFiles> {
    let quantized = !dequantize && !crate::device_arg::current().is_cuda();
    Ok(if quantized {
        ModelFiles::open_quantized(path)?
    } else {
        ModelFiles::open(path)?
    })
}

/// Runs `kaiyuan generate`.
pub fn generate_cmd(args: GenerateArgs) -> anyhow::Result<()> {
    let mut files = open_for_running(&args.model, args.dequantize)?;
    let mut model = files.take_model(args.dtype.dtype())?;
    model.set_kv_dtype(DTypeArg::kv_dtype(args.kv_dtype))?;
    crate::device_arg::place(&mut model)?;
    let prompt_text = if args.chat {
        let template = files
            .chat_template()
            .with_context(|| format!("{}: the model has no chat template", args.model.display()))?;
        use kaiyuan_models::chat::ChatMessage;
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(ChatMessage::new("system", system.as_str()));
        }
        messages.push(ChatMessage::new("user", args.prompt.as_str()));
        render_chat(&files, template, messages)?
    } else {
        args.prompt.clone()
    };
    let tokenizer = files.require_tokenizer()?;
    let encoding = tokenizer.encode_with(
        &prompt_text,
        kaiyuan_tokenizer::EncodeOptions {
            add_special_tokens: !args.chat,
            ..Default::default()
        },
    )?;
    let prompt = encoding.ids;
    let stop_ids = files.stop_token_ids();
    let pattern = if !args.choices.is_empty() {
        Some(choices_regex(&args.choices)?)
    } else if let Some(re) = &args.regex {
        Some(re.clone())
    } else if let Some(path) = &args.json_schema {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let schema: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: invalid JSON", path.display()))?;
        Some(json_schema_regex(&schema).with_context(|| format!("{}", path.display()))?)
    } else {
        None
    };
    let mut constraint = match &pattern {
        Some(p) => Some(RegexConstraint::new(p, tokenizer, &stop_ids)?),
        None => None,
    };
    let config = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        sampling: SamplingParams {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            min_p: args.min_p,
            repetition_penalty: args.repetition_penalty,
            seed: args.seed,
            ..SamplingParams::default()
        },
        stop_token_ids: stop_ids,
        stop_strings: args.stop.clone(),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = generate(
        &model,
        tokenizer,
        &prompt,
        &config,
        constraint
            .as_mut()
            .map(|c| c as &mut dyn kaiyuan_models::constrain::Constraint),
        |chunk| {
            let _ = out.write_all(chunk.as_bytes());
            let _ = out.flush();
        },
    )?;
    writeln!(out)?;
    let rate = |n: usize, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
    eprintln!(
        "prefill: {} tokens, {:.1} tokens/s; decode: {} tokens, {:.1} tokens/s; finish: {:?}",
        result.prefill_tokens,
        rate(result.prefill_tokens, result.prefill_seconds),
        result.tokens.len(),
        rate(result.decode_steps, result.decode_seconds),
        result.finish_reason,
    );
    Ok(())
}

fn render_chat(
    files: &ModelFiles,
    template: &str,
    messages: Vec<kaiyuan_models::chat::ChatMessage>,
) -> anyhow::Result<String> {
    let token = |key: &str| {
        files
            .tokenizer_config
            .as_ref()
            .and_then(|c| c.get(key))
            .and_then(kaiyuan_models::loader::token_content)
            .map(str::to_string)
    };
    let bos = token("bos_token");
    let eos = token("eos_token");
    let chat = kaiyuan_models::chat::ChatTemplate::new(template, bos.as_deref(), eos.as_deref())?;
    let request = kaiyuan_models::chat::ChatRequest {
        add_generation_prompt: true,
        ..kaiyuan_models::chat::ChatRequest::new(messages)
    };
    Ok(chat.render(&request)?)
}

/// Arguments of `kaiyuan inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A model directory or a .gguf file.
    #[arg(long)]
    model: PathBuf,
    /// Compute dtype for the memory estimate.
    #[arg(long, value_enum, default_value_t = DTypeArg::F32)]
    dtype: DTypeArg,
    /// KV cache dtype [default: f32]: f16 halves the cache (llama.cpp's
    /// default), rounding each key and value once (exact for an f16
    /// model), but widening it at every read slows long-context decoding.
    #[arg(long, value_enum)]
    kv_dtype: Option<DTypeArg>,
    /// Context length for the KV-cache estimate (default: the model's).
    #[arg(long)]
    context: Option<usize>,
    /// Dequantize GGUF block weights (Q4_0, Q8_0, Q4_K, …) to --dtype for the
    /// estimate, as `generate --dequantize` loads them. By default they
    /// count as stored (quantized), as `generate` runs them.
    #[arg(long)]
    dequantize: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `kaiyuan inspect`.
pub fn inspect_cmd(args: InspectArgs) -> anyhow::Result<()> {
    // As `generate` would load it (so the estimate is of what runs).
    let files = open_for_running(&args.model, args.dequantize)?;
    let c = &files.config;
    let dtype = args.dtype.dtype();
    let context = args.context.unwrap_or(c.max_position_embeddings);
    let params = files.weights.parameter_count();
    let kv_dtype = DTypeArg::kv_dtype(args.kv_dtype);
    let estimate = kaiyuan_models::loader::memory_estimate(&files, dtype, kv_dtype, context);
    let licence = files.license.clone().unwrap_or_else(|| "unknown".into());
    let quantized = files.weights.quantized_iter().next().is_some();
    let source = match (files.kind, quantized) {
        (SourceKind::Directory, false) => "directory (config.json + safetensors)",
        (SourceKind::Directory, true) => "directory (config.json + safetensors, quantized)",
        (SourceKind::Gguf, false) => "GGUF",
        (SourceKind::Gguf, true) => "GGUF (block weights kept quantized)",
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "model": args.model.display().to_string(),
                "source": source,
                "architecture": c.architecture.hf_name(),
                "parameters": params,
                "layers": c.num_layers,
                "hidden_size": c.hidden_size,
                "heads": c.num_heads,
                "kv_heads": c.num_kv_heads,
                "head_dim": c.head_dim,
                "vocab_size": c.vocab_size,
                "context": context,
                "license": licence,
                "dtype": dtype.name(),
                "kv_dtype": kv_dtype.name(),
                "weight_bytes": estimate.weights,
                "kv_cache_bytes": estimate.kv_cache,
                "activation_bytes": estimate.activations,
                "prefill_bytes": estimate.prefill,
                "runtime_bytes": estimate.runtime,
                "total_bytes": estimate.total(),
            })
        );
        return Ok(());
    }
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    println!("model:         {}", args.model.display());
    println!("source:        {source}");
    println!("architecture:  {}", c.architecture.hf_name());
    println!(
        "parameters:    {params} ({:.1} M); config implies {}",
        params as f64 / 1e6,
        c.parameter_count()
    );
    println!(
        "shape:         {} layers, hidden {}, {} heads / {} KV heads × {}, MLP {}, vocab {}",
        c.num_layers,
        c.hidden_size,
        c.num_heads,
        c.num_kv_heads,
        c.head_dim,
        c.intermediate_size,
        c.vocab_size
    );
    println!("licence:       {licence}");
    println!(
        "memory ({}, context {context}): weights {:.1} MiB + KV cache {:.1} MiB ({}) + decode activations {:.1} MiB + prefill {:.1} MiB + tokenizer and runtime {:.1} MiB = {:.1} MiB",
        dtype.name(),
        mib(estimate.weights),
        mib(estimate.kv_cache),
        kv_dtype.name(),
        mib(estimate.activations),
        mib(estimate.prefill),
        mib(estimate.runtime),
        mib(estimate.total())
    );
    Ok(())
}

/// Arguments of `kaiyuan convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// A .gguf file (→ safetensors directory) or a model directory (→ .gguf).
    #[arg(long)]
    model: PathBuf,
    /// Output directory (from GGUF) or .gguf file (from a directory).
    #[arg(long)]
    output: PathBuf,
    /// dtype of the written weights.
    #[arg(long, value_enum, default_value_t = DTypeArg::F32)]
    dtype: DTypeArg,
}

/// Runs `kaiyuan convert`.
pub fn convert_cmd(args: ConvertArgs) -> anyhow::Result<()> {
    let files = ModelFiles::open(&args.model)?;
    let weights: Weights = files.weights.cast(args.dtype.dtype())?;
    match files.kind {
        SourceKind::Gguf => {
            kaiyuan_models::loader::write_hf_dir(&files, &weights, &args.output)?;
            eprintln!(
                "wrote {} ({} tensors, config.json, tokenizer.json, tokenizer_config.json)",
                args.output.display(),
                weights.len()
            );
        }
        SourceKind::Directory => {
            if args.output.extension().is_none_or(|e| e != "gguf") {
                bail!(
                    "{}: converting a directory writes a .gguf file; name the output *.gguf",
                    args.output.display()
                );
            }
            kaiyuan_models::gguf::write_model_gguf(&files, &weights, &args.output)?;
            eprintln!(
                "wrote {} ({} tensors, {} weights, tokenizer, chat template)",
                args.output.display(),
                weights.len(),
                args.dtype.dtype().name()
            );
        }
    }
    crate::provenance_cmd::record(
        &args.output,
        "model",
        serde_json::json!({"converted_to": if matches!(files.kind, SourceKind::Gguf) { "safetensors" } else { "gguf" }, "dtype": args.dtype.dtype().name()}),
        &[("model", args.model.as_path())],
    )?;
    Ok(())
}
