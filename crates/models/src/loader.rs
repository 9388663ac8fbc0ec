//! Model locations: a directory (`config.json` + safetensors, `tokenizer.json`,
//! optional `tokenizer_config.json`, `generation_config.json` and a model
//! card) or a single `.gguf` file.

use std::path::{Path, PathBuf};

use kaiyuan_tensor::DType;
use kaiyuan_tokenizer::Tokenizer;
use serde_json::Value;

use crate::config::RawConfig;

/// The GGUF vocabulary arrays, dropped once the tokenizer is built.
const VOCABULARY_KEYS: [&str; 4] = [
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.scores",
];

/// A function [`ModelFiles::open`] calls after reading a GGUF file's
/// metadata and building its tokenizer, just before placing the weights.
static BEFORE_WEIGHTS: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Registers `hook` to run each time a GGUF model's metadata and tokenizer
/// are read and its weights are about to be placed: the moment the most
/// short-lived memory of a load has just been freed (the tokenizer's build
/// leaves about 30 MB for a 49k vocabulary). A binary whose allocator keeps
/// freed memory for a while can return it there (mimalloc: `mi_collect`),
/// so it is not still resident when the weights arrive and set the peak.
/// Returns `false` (and changes nothing) when a hook is already set.
///
/// ```
/// fn return_freed_memory() {}
/// kaiyuan_models::loader::set_before_weights_hook(return_freed_memory);
/// ```
pub fn set_before_weights_hook(hook: fn()) -> bool {
    BEFORE_WEIGHTS.set(hook).is_ok()
}
use crate::gguf::GgufFile;
use crate::{Model, ModelConfig, ModelError, Result, Weights};

/// Where a model came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// An HF-style directory.
    Directory,
    /// A GGUF file.
    Gguf,
}

/// Everything read from a model location, before the model is built.
#[derive(Debug)]
pub struct ModelFiles {
    /// The path given.
    pub path: PathBuf,
    /// Directory or GGUF.
    pub kind: SourceKind,
    /// The resolved configuration.
    pub config: ModelConfig,
    /// The raw `config.json` (or its GGUF equivalent).
    pub config_json: Value,
    /// Weights with HF names.
    pub weights: Weights,
    /// The tokenizer, when the location has one.
    pub tokenizer: Option<Tokenizer>,
    /// `tokenizer_config.json` (or an equivalent built from GGUF metadata):
    /// `chat_template`, `bos_token`, `eos_token`, …
    pub tokenizer_config: Option<Value>,
    /// `generation_config.json`, when present.
    pub generation_config: Option<Value>,
    /// The licence: GGUF `general.license`, a model card's `license:` field,
    /// or `None` when neither exists.
    pub license: Option<String>,
    /// Bytes of the weight files on disk.
    pub file_bytes: u64,
}

impl ModelFiles {
    /// Reads `path`: a `.gguf` file or a model directory. Quantized GGUF
    /// tensors are dequantized to f32 (see [`ModelFiles::open_quantized`]);
    /// weights usable as stored are copied into huge-page memory (see
    /// [`ModelFiles::open_in_place`] to map them instead).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, false)
    }

    /// Reads `path` keeping quantized weights quantized: GGUF block tensors
    /// stay in their blocks (copied as they are into huge-page memory) and
    /// run on the fused kernels (memory about the file's size, llama.cpp's
    /// behaviour). HF GPTQ directories
    /// are always loaded quantized.
    pub fn open_quantized(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, true)
    }

    /// Like [`ModelFiles::open`] (or, with `keep_quantized`,
    /// [`ModelFiles::open_quantized`]), but weights whose bytes can be used
    /// as stored are read in place from the file's memory map (zero-copy:
    /// instant to load, pages shared with other processes through the page
    /// cache) instead of being copied into huge-page memory, which is what
    /// `open` does because decoding from it is faster (see
    /// [`kaiyuan_tensor::huge_page_copy`]).
    pub fn open_in_place(path: impl AsRef<Path>, keep_quantized: bool) -> Result<Self> {
        Self::open_placed(path.as_ref(), keep_quantized, false)
    }

    fn open_with(path: impl AsRef<Path>, keep_quantized: bool) -> Result<Self> {
        Self::open_placed(path.as_ref(), keep_quantized, true)
    }

    fn open_placed(path: &Path, keep_quantized: bool, resident: bool) -> Result<Self> {
        if path.is_dir() {
            Self::open_dir(path, resident)
        } else if path.is_file() {
            Self::open_gguf(path, keep_quantized, resident)
        } else {
            Err(ModelError::io(
                path,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such model file or directory",
                ),
            ))
        }
    }

    fn open_dir(dir: &Path, resident: bool) -> Result<Self> {
        let config_path = dir.join("config.json");
        let text =
            std::fs::read_to_string(&config_path).map_err(|e| ModelError::io(&config_path, e))?;
        let origin = config_path.display().to_string();
        let config_json: Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::format(&origin, format!("invalid JSON: {e}")))?;
        let config = ModelConfig::from_json_str(&origin, &text)?;
        let weights = match crate::gptq_format::GptqConfig::from_config(&origin, &config_json)? {
            Some(gptq) => crate::gptq_format::read_dir(dir, &gptq)?,
            None if resident => crate::safetensors_io::read_dir_resident(dir)?,
            None => crate::safetensors_io::read_dir(dir)?,
        };
        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer = if tokenizer_path.is_file() {
            Some(Tokenizer::from_file(&tokenizer_path)?)
        } else {
            None
        };
        let read_json = |name: &str| -> Result<Option<Value>> {
            let p = dir.join(name);
            if !p.is_file() {
                return Ok(None);
            }
            let text = std::fs::read_to_string(&p).map_err(|e| ModelError::io(&p, e))?;
            serde_json::from_str(&text).map(Some).map_err(|e| {
                ModelError::format(p.display().to_string(), format!("invalid JSON: {e}"))
            })
        };
        let file_bytes = std::fs::read_dir(dir)
            .map_err(|e| ModelError::io(dir, e))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
            .filter_map(|e| e.metadata().ok().map(|m| m.len()))
            .sum();
        Ok(Self {
            path: dir.to_path_buf(),
            kind: SourceKind::Directory,
            config,
            config_json,
            weights,
            tokenizer,
            tokenizer_config: read_json("tokenizer_config.json")?,
            generation_config: read_json("generation_config.json")?,
            license: model_card_license(dir),
            file_bytes,
        })
    }

    fn open_gguf(path: &Path, keep_quantized: bool, resident: bool) -> Result<Self> {
        let mut gguf = GgufFile::open(path)?;
        let config_json = gguf.to_hf_config()?;
        let raw: RawConfig = serde_json::from_value(config_json.clone()).map_err(|e| {
            ModelError::format(
                gguf.origin(),
                format!("metadata gives an invalid config: {e}"),
            )
        })?;
        let config = ModelConfig::resolve(gguf.origin(), &raw)?;
        // The tokenizer first: its build leaves short-lived tables that the
        // binary's allocator can give back (`set_before_weights_hook`)
        // before the weights arrive, rather than on top of them.
        let tokenizer = gguf.tokenizer()?;
        gguf.forget_metadata(&VOCABULARY_KEYS);
        if let Some(hook) = BEFORE_WEIGHTS.get() {
            hook();
        }
        let weights = if resident {
            gguf.to_resident_weights(keep_quantized)?
        } else {
            gguf.to_weights_with(keep_quantized)?
        };
        let token_text = |id: Option<u32>| id.and_then(|i| tokenizer.id_to_token(i));
        let mut tokenizer_config = serde_json::Map::new();
        if let Some(t) = gguf.chat_template() {
            tokenizer_config.insert("chat_template".into(), Value::String(t));
        }
        if let Some(t) = token_text(config.bos_token_id) {
            tokenizer_config.insert("bos_token".into(), Value::String(t));
        }
        if let Some(t) = token_text(config.eos_token_ids.first().copied()) {
            tokenizer_config.insert("eos_token".into(), Value::String(t));
        }
        let file_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        Ok(Self {
            path: path.to_path_buf(),
            kind: SourceKind::Gguf,
            config,
            config_json,
            weights,
            tokenizer: Some(tokenizer),
            tokenizer_config: Some(Value::Object(tokenizer_config)),
            generation_config: None,
            license: gguf.license(),
            file_bytes,
        })
    }

    /// Builds the model in `dtype`.
    pub fn build(&self, dtype: DType) -> Result<Model> {
        Model::new(self.config.clone(), &self.weights, dtype)
    }

    /// The tokenizer, or an error naming the location when it has none.
    pub fn require_tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer.as_ref().ok_or_else(|| {
            ModelError::format(
                self.path.display().to_string(),
                "no tokenizer.json beside the weights",
            )
        })
    }

    /// The chat template source, when the model has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.tokenizer_config
            .as_ref()
            .and_then(|c| c.get("chat_template"))
            .and_then(|t| match t {
                Value::String(s) => Some(s.as_str()),
                Value::Array(list) => list
                    .iter()
                    .find(|e| e.get("name").and_then(Value::as_str) == Some("default"))
                    .and_then(|e| e.get("template"))
                    .and_then(Value::as_str),
                _ => None,
            })
    }

    /// Ids that end a generation: `generation_config.json`'s
    /// `eos_token_id`, else the config's, else the tokenizer's EOS token.
    pub fn stop_token_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = Vec::new();
        if let Some(v) = self
            .generation_config
            .as_ref()
            .and_then(|g| g.get("eos_token_id"))
        {
            match v {
                Value::Array(a) => {
                    ids.extend(a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32))
                }
                other => ids.extend(other.as_u64().map(|x| x as u32)),
            }
        }
        if ids.is_empty() {
            ids.extend(&self.config.eos_token_ids);
        }
        if let (Some(tok), Some(cfg)) = (&self.tokenizer, &self.tokenizer_config)
            && let Some(eos) = cfg.get("eos_token").and_then(token_content)
            && let Some(id) = tok.token_to_id(eos)
            && !ids.contains(&id)
        {
            ids.push(id);
        }
        ids
    }
}

/// The text of a `tokenizer_config.json` token entry (a string or an
/// `AddedToken` object with `content`).
pub fn token_content(value: &Value) -> Option<&str> {
    match value {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("content").and_then(Value::as_str),
        _ => None,
    }
}

/// The `license:` field of the YAML front matter of `README.md` beside the
/// weights (HF model cards).
fn model_card_license(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("README.md")).ok()?;
    let front = text.strip_prefix("---")?;
    let end = front.find("\n---")?;
    front[..end].lines().find_map(|line| {
        line.strip_prefix("license:")
            .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_string())
            .filter(|v| !v.is_empty())
    })
}

impl ModelFiles {
    /// Builds the model in `dtype`, moving the weights out of `self` so the
    /// loaded and the cast copies are not both kept.
    pub fn take_model(&mut self, dtype: DType) -> Result<Model> {
        let weights = std::mem::take(&mut self.weights);
        Model::new(self.config.clone(), &weights, dtype)
    }
}

/// Bytes a model needs to run, by part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Weights in the compute dtype.
    pub weights: usize,
    /// Keys and values of every layer for the whole context, in the type
    /// the CPU cache holds them in ([`crate::Model::kv_dtype`]).
    pub kv_cache: usize,
    /// Largest transient buffers of one decode step (a layer's activations,
    /// the logits) plus the rotary tables.
    pub activations: usize,
    /// The working set of a prefill chunk of a prompt that fills the
    /// context (at most [`crate::PREFILL_CHUNK`] positions,
    /// [`crate::Model::prefill`]): per position, 14 hidden-size and 7
    /// MLP-size f32 vectors (a layer's activations live at once, with the
    /// allocator's slack; fitted to SmolLM2's measured peaks at 128 to
    /// 2,000-token prompts), plus every head's attention scores over the
    /// context and their softmax (with 128-position chunks they grow with
    /// the context faster than the activations: a 2,000-token prompt was
    /// underestimated by up to 7 % while only one head's were counted).
    pub prefill: usize,
    /// The process around the model: the tokenizer (its vocabulary and
    /// merge tables, about 220 bytes per token id as measured on SmolLM2's
    /// 49k vocabulary once the load returns its short-lived tables) and
    /// 8 MiB for the rest: the program's resident code, thread stacks,
    /// allocator slack and the GEMM's packing buffers. The code alone is
    /// about 10 MiB resident, so the other terms carry some slack too; the
    /// constant was fitted so that the total stayed within 5% above or 8%
    /// below SmolLM2's measured peaks (F16, Q8_0, Q4_0, Q4_K; 128 to
    /// 2,000-token prompts, 128-position prefill chunks) and a 1.07 B Q4_0
    /// model's. Since blocks free their activations early, the CLI maps
    /// large blocks on their own and drops the code only loading ran
    /// (`docs/performance.md`, sessions 34 and 35), short prompts peak
    /// lower and the estimate errs high there: with a 128-token prompt
    /// SmolLM2 (two threads) peaked 18% below it in Q4_0, 11–13% below in
    /// Q8_0 and Q4_K; at 1,000 tokens 7–10% below; at 2,000 tokens 1–2%
    /// below. It stays an upper bound at every length measured, which is
    /// why it was not refitted.
    pub runtime: usize,
}

impl MemoryEstimate {
    /// The sum of the parts.
    pub fn total(&self) -> usize {
        self.weights
            .saturating_add(self.kv_cache)
            .saturating_add(self.activations)
            .saturating_add(self.prefill)
            .saturating_add(self.runtime)
    }
}

/// What running `files` in `dtype` with `context` tokens of KV cache held
/// as `kv_dtype` takes.
pub fn memory_estimate(
    files: &ModelFiles,
    dtype: DType,
    kv_dtype: DType,
    context: usize,
) -> MemoryEstimate {
    let c = &files.config;
    // A tied head shares the embedding's buffer: counted once. Quantized
    // matrices count their own bytes.
    let weights = files.weights.byte_size_in(dtype);
    let kv_cache = c
        .kv_bytes_per_token(kv_dtype.size_in_bytes())
        .saturating_mul(context);
    // One decode step: a few (C) and (MLP) vectors, the logits (V) and the
    // attention scores of every head over the context, in f32. Sizes are
    // bounded by the config's checks; `context` is the caller's.
    let per_position = c.num_heads.saturating_add(c.rope.rotary_dim);
    let activations = (8 * c.hidden_size + 3 * c.intermediate_size + 2 * c.vocab_size)
        .saturating_add(per_position.saturating_mul(context))
        .saturating_mul(4);
    let chunk = context.min(crate::PREFILL_CHUNK);
    let scores = c.num_heads.saturating_mul(2).saturating_mul(context);
    let prefill = (14 * c.hidden_size + 7 * c.intermediate_size)
        .saturating_add(scores)
        .saturating_mul(chunk)
        .saturating_mul(4);
    let tokenizer = files
        .tokenizer
        .as_ref()
        .map_or(0, |t| t.vocab_size().saturating_mul(220));
    MemoryEstimate {
        weights,
        kv_cache,
        activations,
        prefill,
        runtime: tokenizer.saturating_add(8 << 20),
    }
}

/// Writes `weights` (HF names), `config.json`, `tokenizer.json` and
/// `tokenizer_config.json` of `files` into directory `out` (created when
/// missing); every file is written atomically.
pub fn write_hf_dir(files: &ModelFiles, weights: &Weights, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| ModelError::io(out, e))?;
    let mut config = files.config_json.clone();
    if let Value::Object(map) = &mut config
        && let Some(dtype) = weights.iter().map(|(_, t)| t.dtype()).next()
    {
        let name = match dtype {
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            _ => "float32",
        };
        map.insert("torch_dtype".into(), Value::String(name.into()));
    }
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
    let write_text = |name: &str, text: &str| -> Result<()> {
        crate::safetensors_io::write_atomic(&out.join(name), |w| {
            use std::io::Write;
            w.write_all(text.as_bytes())
        })
    };
    write_text("config.json", &pretty(&config))?;
    let mut metadata = std::collections::BTreeMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    crate::safetensors_io::write_file(&out.join("model.safetensors"), weights, &metadata)?;
    write_tokenizer_files(files, out)
}

/// Writes the tokenizer files of `files` (`tokenizer.json`,
/// `tokenizer_config.json`, `generation_config.json`) and, when the licence
/// is known, a model card naming it, into directory `out`, atomically.
pub fn write_tokenizer_files(files: &ModelFiles, out: &Path) -> Result<()> {
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
    let write_text = |name: &str, text: &str| -> Result<()> {
        crate::safetensors_io::write_atomic(&out.join(name), |w| {
            use std::io::Write;
            w.write_all(text.as_bytes())
        })
    };
    if let Some(generation) = &files.generation_config {
        write_text("generation_config.json", &pretty(generation))?;
    }
    if let Some(tokenizer) = &files.tokenizer {
        write_text("tokenizer.json", &tokenizer.to_json()?)?;
    }
    if let Some(tc) = &files.tokenizer_config {
        write_text("tokenizer_config.json", &pretty(tc))?;
    }
    if let Some(license) = &files.license {
        write_text(
            "README.md",
            &format!(
                "---\nlicense: {license}\n---\n\nConverted by kaiyuan from {}.\n",
                files.path.display()
            ),
        )?;
    }
    Ok(())
}
