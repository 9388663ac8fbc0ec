//! An HF model directory written as a GGUF file llama.cpp can load: the
//! inverse of [`GgufFile::to_weights`](super::GgufFile::to_weights),
//! [`GgufFile::to_hf_config`](super::GgufFile::to_hf_config) and
//! [`GgufFile::tokenizer_json`](super::GgufFile::tokenizer_json).
//!
//! Tensors get llama.cpp's names (`blk.{i}.attn_q.weight`, …) and, for
//! LLaMA, the rows of `q_proj`/`k_proj` (weights and biases) are permuted
//! into llama.cpp's interleaved rotary layout (`convert_hf_to_gguf.py`,
//! `LlamaModel.permute`): GGUF row `h·D + 2b + a` holds HF row
//! `h·D + a·D/2 + b`. Hyperparameters go to `{arch}.*` keys; a byte-level
//! BPE `tokenizer.json` becomes `tokenizer.ggml.*` (model `gpt2`).

use std::path::Path;

use kaiyuan_tensor::quant::{BlockType, quantize_blocks};
use kaiyuan_tensor::{DType, Element, Tensor};
use rayon::prelude::*;
use serde_json::Value;

use super::hf::{GLOBAL_TENSORS, LAYER_TENSORS};
use super::reader::{MetadataArray, MetadataValue};
use super::tokenizer::{PRE_SPLITS, TOKEN_CONTROL, TOKEN_USER_DEFINED};
use super::types::GgmlType;
use super::writer::GgufTensorData;
use super::{write_gguf, write_gguf_data};
use crate::config::{Activation, Architecture, Norm, RopeScaling};
use crate::loader::{ModelFiles, token_content};
use crate::{ModelError, Result, Weights};

/// `tokenizer.ggml.token_type` of an ordinary token.
const TOKEN_NORMAL: i32 = 1;
/// `tokenizer.ggml.token_type` of an unused (padding) slot.
const TOKEN_UNUSED: i32 = 5;

/// llama.cpp's `general.file_type` values (`LlamaFileType`).
const FILE_TYPE_F32: u32 = 0;
const FILE_TYPE_F16: u32 = 1;
const FILE_TYPE_BF16: u32 = 32;

/// Writes the model of `files` with `weights` (HF names; F32, F16 or BF16)
/// as a GGUF v3 file at `path` (atomically, see [`write_gguf`]).
///
/// Supported: `LlamaForCausalLM` (Q/K rows permuted for llama.cpp) and
/// `Qwen2ForCausalLM` without sliding windows, SiLU gated MLP without
/// biases, RMSNorm, and rope scaling `default` or `linear`; the tokenizer
/// must be byte-level BPE (written as `tokenizer.ggml.model = gpt2`, with
/// `tokenizer.ggml.pre` named after its pre-tokenizer). The metadata holds
/// `general.architecture`, `general.name` (the directory's name),
/// `general.license` (when known), `general.file_type`, the `{arch}.*`
/// hyperparameters, the tokenizer (tokens, types, merges, BOS/EOS/UNK/
/// padding ids, add-BOS/EOS flags) and `tokenizer.chat_template`.
///
/// Opening the file with [`ModelFiles::open`] gives back the same tensors
/// (bit for bit), the same token ids and the same resolved config, except
/// that GGUF stores the norm epsilon, rope base and rope factor as `f32`
/// (so `1e-6` comes back as `9.99999997e-7`) and that the EOS id comes from
/// the tokenizer's `eos_token` when the config has none. Tensors keep their
/// dtype, except that 1-D tensors (norm weights, biases) are written f32, as
/// llama.cpp computes with them only in f32.
///
/// Errors: [`ModelError::Unsupported`] naming the architecture, config
/// feature, tensor or tokenizer part that has no GGUF form here;
/// [`ModelError::Format`] when there is no tokenizer or a tensor's rows do
/// not split into heads; I/O errors naming the file.
///
/// ```no_run
/// use kaiyuan_models::ModelFiles;
/// use kaiyuan_models::gguf::write_model_gguf;
/// let files = ModelFiles::open("SmolLM2-135M-Instruct")?;
/// write_model_gguf(&files, &files.weights, "smollm2.gguf".as_ref())?;
/// # Ok::<(), kaiyuan_models::ModelError>(())
/// ```
pub fn write_model_gguf(files: &ModelFiles, weights: &Weights, path: &Path) -> Result<()> {
    write_model_gguf_as(files, weights, path, None)
}

/// [`write_model_gguf`] with every 2-D weight whose rows are a whole number
/// of blocks quantized to `quantize` (llama.cpp's `--pure` rule: the
/// embeddings and the output too) by the block encoders of
/// `kaiyuan_tensor::quant` (bit for bit ggml's); 1-D tensors stay F32 and
/// 2-D tensors whose rows are not whole blocks are written F16.
/// `general.file_type` names the type as llama.cpp does. `None` writes the
/// tensors in their dtype.
pub fn write_model_gguf_as(
    files: &ModelFiles,
    weights: &Weights,
    path: &Path,
    quantize: Option<BlockType>,
) -> Result<()> {
    let origin = files.path.display().to_string();
    let c = &files.config;
    let unsupported = |what: String| ModelError::Unsupported {
        origin: origin.clone(),
        what,
    };
    let arch = match c.architecture {
        Architecture::Llama => "llama",
        Architecture::Qwen2 => "qwen2",
        other => {
            return Err(unsupported(format!(
                "architecture `{}` for GGUF output (LlamaForCausalLM and Qwen2ForCausalLM are written)",
                other.hf_name()
            )));
        }
    };
    let eps = match c.norm {
        Norm::Rms(eps) => eps,
        Norm::Layer(_) => return Err(unsupported("LayerNorm for GGUF output".into())),
    };
    if c.activation != Activation::Silu {
        return Err(unsupported(format!(
            "activation {:?} for GGUF output (SiLU only)",
            c.activation
        )));
    }
    if c.mlp_bias {
        return Err(unsupported(
            "MLP biases (`mlp_bias`) for GGUF output".into(),
        ));
    }
    if let Some(w) = c.sliding_window.iter().flatten().next() {
        return Err(unsupported(format!(
            "sliding-window attention (window {w}) for GGUF output"
        )));
    }
    if c.rope.interleaved || c.rope.rotary_dim != c.head_dim {
        return Err(unsupported(format!(
            "partial or interleaved rotary embedding (rotary_dim {} of head_dim {}) for GGUF output",
            c.rope.rotary_dim, c.head_dim
        )));
    }

    let key = |k: &str| format!("{arch}.{k}");
    let u32_of = |field: &str, v: usize| {
        u32::try_from(v).map_err(|_| {
            ModelError::config(
                origin.clone(),
                field,
                format!("{v} does not fit GGUF's u32"),
            )
        })
    };
    let mut meta: Vec<(String, MetadataValue)> = Vec::new();
    let mut put = |k: String, v: MetadataValue| meta.push((k, v));
    put(
        "general.architecture".into(),
        MetadataValue::String(arch.into()),
    );
    put(
        "general.name".into(),
        MetadataValue::String(model_name(files)),
    );
    if let Some(license) = &files.license {
        put(
            "general.license".into(),
            MetadataValue::String(license.clone()),
        );
    }
    let file_type = match (
        quantize,
        weights.raw("model.embed_tokens.weight").map(Tensor::dtype),
    ) {
        // llama.cpp's `llama_ftype` values.
        (Some(BlockType::Q4_0), _) => 2,
        (Some(BlockType::Q4_1), _) => 3,
        (Some(BlockType::Q5_0), _) => 8,
        (Some(BlockType::Q5_1), _) => 9,
        (Some(BlockType::Q8_0), _) => 7,
        (Some(BlockType::Q4_K), _) => 14,
        (Some(BlockType::Q5_K), _) => 16,
        (Some(BlockType::Q6_K), _) => 18,
        (None, Some(DType::F16)) => FILE_TYPE_F16,
        (None, Some(DType::BF16)) => FILE_TYPE_BF16,
        (None, _) => FILE_TYPE_F32,
    };
    put("general.file_type".into(), MetadataValue::U32(file_type));
    put(
        key("context_length"),
        MetadataValue::U32(u32_of(
            "max_position_embeddings",
            c.max_position_embeddings,
        )?),
    );
    put(
        key("embedding_length"),
        MetadataValue::U32(u32_of("hidden_size", c.hidden_size)?),
    );
    put(
        key("block_count"),
        MetadataValue::U32(u32_of("num_hidden_layers", c.num_layers)?),
    );
    put(
        key("feed_forward_length"),
        MetadataValue::U32(u32_of("intermediate_size", c.intermediate_size)?),
    );
    put(
        key("attention.head_count"),
        MetadataValue::U32(u32_of("num_attention_heads", c.num_heads)?),
    );
    put(
        key("attention.head_count_kv"),
        MetadataValue::U32(u32_of("num_key_value_heads", c.num_kv_heads)?),
    );
    put(
        key("rope.freq_base"),
        MetadataValue::F32(c.rope.theta as f32),
    );
    put(
        key("attention.layer_norm_rms_epsilon"),
        MetadataValue::F32(eps as f32),
    );
    put(
        key("vocab_size"),
        MetadataValue::U32(u32_of("vocab_size", c.vocab_size)?),
    );
    put(
        key("rope.dimension_count"),
        MetadataValue::U32(u32_of("head_dim", c.rope.rotary_dim)?),
    );
    if c.num_heads * c.head_dim != c.hidden_size {
        let d = u32_of("head_dim", c.head_dim)?;
        put(key("attention.key_length"), MetadataValue::U32(d));
        put(key("attention.value_length"), MetadataValue::U32(d));
    }
    match &c.rope.scaling {
        RopeScaling::Default => {}
        RopeScaling::Linear { factor } => {
            put(
                key("rope.scaling.type"),
                MetadataValue::String("linear".into()),
            );
            put(
                key("rope.scaling.factor"),
                MetadataValue::F32(*factor as f32),
            );
        }
        other => {
            return Err(unsupported(format!(
                "rope scaling {other:?} for GGUF output (default and linear are written)"
            )));
        }
    }
    for (k, v) in tokenizer_metadata(files, c.vocab_size)? {
        put(k, v);
    }
    if let Some(template) = files.chat_template() {
        put(
            "tokenizer.chat_template".into(),
            MetadataValue::String(template.to_string()),
        );
    }

    let mut tensors = gguf_tensors(files, weights, arch == "llama")?;
    let Some(ty) = quantize else {
        // ggml multiplies by norm weights only in f32 (llama.cpp's own
        // converter keeps every 1-D tensor f32), so f16/bf16 exports keep
        // 1-D tensors f32.
        for (_, tensor) in &mut tensors {
            if tensor.shape().len() < 2 && tensor.dtype() != DType::F32 {
                *tensor = tensor.cast(DType::F32)?;
            }
        }
        return write_gguf(path, &meta, &tensors);
    };
    let data = tensors
        .into_par_iter()
        .map(|(name, tensor)| -> Result<(String, GgufTensorData)> {
            let shape = tensor.shape().to_vec();
            let data = match (shape.as_slice(), row_type(ty, &shape)) {
                ([_, _], Some(row_ty)) => {
                    let values = tensor.cast(DType::F32)?.to_vec::<f32>()?;
                    let mut bytes = Vec::new();
                    quantize_blocks(row_ty, &values, &mut bytes).map_err(|e| {
                        ModelError::invalid(format!("tensor `{name}`"), e.to_string())
                    })?;
                    GgufTensorData::Blocks {
                        ty: ggml_type(row_ty),
                        shape,
                        bytes,
                    }
                }
                ([_, _], None) => GgufTensorData::Dense(tensor.cast(DType::F16)?),
                _ => GgufTensorData::Dense(tensor.cast(DType::F32)?),
            };
            Ok((name, data))
        })
        .collect::<Result<Vec<_>>>()?;
    write_gguf_data(path, &meta, &data)
}

/// The block type a 2-D tensor of `shape` is written in when the file's
/// type is `ty`: `ty` when its rows are whole blocks, else llama.cpp's
/// fallback for K-quant rows (Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, as
/// `llama-quantize` does), else none (the tensor is written as F16).
fn row_type(ty: BlockType, shape: &[usize]) -> Option<BlockType> {
    let &[_, cols] = shape else {
        return None;
    };
    let fallback = match ty {
        BlockType::Q4_K => BlockType::Q5_0,
        BlockType::Q5_K => BlockType::Q5_1,
        BlockType::Q6_K => BlockType::Q8_0,
        other => other,
    };
    [ty, fallback]
        .into_iter()
        .find(|t| cols % t.block_size() == 0)
}

/// The GGUF type of a block type.
fn ggml_type(ty: BlockType) -> GgmlType {
    match ty {
        BlockType::Q8_0 => GgmlType::Q8_0,
        BlockType::Q4_0 => GgmlType::Q4_0,
        BlockType::Q4_1 => GgmlType::Q4_1,
        BlockType::Q5_0 => GgmlType::Q5_0,
        BlockType::Q5_1 => GgmlType::Q5_1,
        BlockType::Q4_K => GgmlType::Q4_K,
        BlockType::Q5_K => GgmlType::Q5_K,
        BlockType::Q6_K => GgmlType::Q6_K,
    }
}

/// `general.name`: the directory's (or file's) name.
fn model_name(files: &ModelFiles) -> String {
    files
        .config_json
        .get("_name_or_path")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .or_else(|| {
            files
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "model".into())
}

/// The GGUF name of HF tensor `name`; `None` for tensors GGUF does not hold.
fn gguf_name(name: &str, tied: bool) -> Option<Option<String>> {
    if name.ends_with("rotary_emb.inv_freq") || (tied && name == "lm_head.weight") {
        return Some(None);
    }
    if let Some(&(g, _)) = GLOBAL_TENSORS.iter().find(|(_, hf)| *hf == name) {
        return Some(Some(g.to_string()));
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (index, suffix) = rest.split_once('.')?;
    let index: usize = index.parse().ok()?;
    let &(g, _) = LAYER_TENSORS.iter().find(|(_, hf)| *hf == suffix)?;
    Some(Some(format!("blk.{index}.{g}")))
}

/// The tensors in llama.cpp's order (embeddings, blocks by index, output),
/// renamed, with Q/K rows permuted when `permute`.
fn gguf_tensors(
    files: &ModelFiles,
    weights: &Weights,
    permute: bool,
) -> Result<Vec<(String, Tensor)>> {
    let c = &files.config;
    let mut out: Vec<(String, Tensor)> = Vec::with_capacity(weights.len());
    for (name, tensor) in weights.iter() {
        let Some(gguf) = gguf_name(name, c.tie_word_embeddings) else {
            return Err(ModelError::Unsupported {
                origin: weights.origin().to_string(),
                what: format!("tensor `{name}` (no llama.cpp name known)"),
            });
        };
        let Some(gguf) = gguf else { continue };
        let heads = match name {
            n if permute && n.contains(".self_attn.q_proj.") => Some(c.num_heads),
            n if permute && n.contains(".self_attn.k_proj.") => Some(c.num_kv_heads),
            _ => None,
        };
        let tensor = match heads {
            Some(heads) => permute_heads(weights.origin(), name, tensor, heads)?,
            None => tensor.clone(),
        };
        out.push((gguf, tensor));
    }
    // token_embd, blk.0.…, blk.1.…, …, output_norm, output.
    let rank = |n: &str| -> (usize, usize, String) {
        match n.strip_prefix("blk.").and_then(|r| r.split_once('.')) {
            Some((i, rest)) => (1, i.parse().unwrap_or(usize::MAX), rest.to_string()),
            None if n.starts_with("token_embd") => (0, 0, n.to_string()),
            None => (2, 0, n.to_string()),
        }
    };
    out.sort_by_cached_key(|(n, _)| rank(n));
    Ok(out)
}

/// `tensor` (rows first) with its rows in llama.cpp's rotary order.
fn permute_heads(origin: &str, name: &str, tensor: &Tensor, heads: usize) -> Result<Tensor> {
    let shape = tensor.shape().to_vec();
    let rows = shape.first().copied().unwrap_or(0);
    if heads == 0 || rows == 0 || rows % heads != 0 || !(rows / heads).is_multiple_of(2) {
        return Err(ModelError::format(
            origin,
            format!(
                "tensor `{name}` (shape {shape:?}): {rows} rows do not split into {heads} heads of an even size"
            ),
        ));
    }
    let head_dim = rows / heads;
    fn go<T: Element + Copy>(t: &Tensor, shape: &[usize], head_dim: usize) -> Result<Tensor> {
        let data = t.to_vec::<T>()?;
        let rows = shape.first().copied().unwrap_or(1);
        let width = data.len() / rows.max(1);
        let half = head_dim / 2;
        let mut out = Vec::with_capacity(data.len());
        for g in 0..rows {
            let (h, within) = (g / head_dim, g % head_dim);
            let (b, a) = (within / 2, within % 2);
            let src = h * head_dim + a * half + b;
            out.extend_from_slice(&data[src * width..(src + 1) * width]);
        }
        Ok(Tensor::from_vec(out, shape)?)
    }
    match tensor.dtype() {
        DType::F16 => go::<half::f16>(tensor, &shape, head_dim),
        DType::BF16 => go::<half::bf16>(tensor, &shape, head_dim),
        DType::F32 => go::<f32>(tensor, &shape, head_dim),
        other => Err(ModelError::Unsupported {
            origin: origin.to_string(),
            what: format!("writing tensor `{name}` of dtype {other} to GGUF"),
        }),
    }
}

/// The `tokenizer.ggml.*` metadata of a byte-level BPE `tokenizer.json`,
/// with the token list padded to `vocab_size` (`[PAD{id}]`, as llama.cpp's
/// converter pads it).
fn tokenizer_metadata(
    files: &ModelFiles,
    vocab_size: usize,
) -> Result<Vec<(String, MetadataValue)>> {
    let tokenizer = files.tokenizer.as_ref().ok_or_else(|| {
        ModelError::format(
            files.path.display().to_string(),
            "no tokenizer.json beside the weights; a GGUF file needs the tokenizer",
        )
    })?;
    let origin = format!("{}/tokenizer.json", files.path.display());
    let json: Value = serde_json::from_str(&tokenizer.to_json()?)
        .map_err(|e| ModelError::format(&origin, format!("invalid JSON: {e}")))?;
    let unsupported = |what: String| ModelError::Unsupported {
        origin: origin.clone(),
        what,
    };
    let model = json
        .get("model")
        .ok_or_else(|| ModelError::format(&origin, "no `model`"))?;
    if model.get("type").and_then(Value::as_str) != Some("BPE") {
        return Err(unsupported(format!(
            "tokenizer model {} for GGUF output (byte-level BPE only)",
            model.get("type").unwrap_or(&Value::Null)
        )));
    }
    if !json.get("normalizer").is_none_or(Value::is_null) {
        return Err(unsupported(format!(
            "normalizer {} for GGUF output",
            json["normalizer"]
        )));
    }
    let pre = pre_name(json.get("pre_tokenizer").unwrap_or(&Value::Null)).ok_or_else(|| {
        let mut shown = json
            .get("pre_tokenizer")
            .map(Value::to_string)
            .unwrap_or_default();
        shown.truncate(300);
        unsupported(format!(
            "pre-tokenizer {shown} for GGUF output (byte-level with GPT-2's, SmolLM's or a known llama.cpp split pattern)"
        ))
    })?;

    // Tokens by id: the vocabulary, then added tokens, padded.
    let vocab = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| ModelError::format(&origin, "`model.vocab` is not an object"))?;
    let added: Vec<(u32, String, bool)> = json
        .get("added_tokens")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|t| {
                    Some((
                        u32::try_from(t.get("id")?.as_u64()?).ok()?,
                        t.get("content")?.as_str()?.to_string(),
                        t.get("special").and_then(Value::as_bool).unwrap_or(false),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let max_id = vocab
        .values()
        .filter_map(Value::as_u64)
        .chain(added.iter().map(|a| u64::from(a.0)))
        .max()
        .unwrap_or(0);
    let count = (max_id as usize + 1).max(vocab_size);
    if count > (1 << 24) {
        return Err(ModelError::format(
            &origin,
            format!("token id {max_id} is implausibly large"),
        ));
    }
    let mut tokens: Vec<Option<String>> = vec![None; count];
    let mut types = vec![TOKEN_NORMAL; count];
    for (token, id) in vocab {
        let id = id.as_u64().ok_or_else(|| {
            ModelError::format(&origin, format!("token {token:?}: id is not a number"))
        })?;
        tokens[id as usize] = Some(token.clone());
    }
    for (id, content, special) in &added {
        let slot = &mut tokens[*id as usize];
        if slot.is_none() {
            *slot = Some(content.clone());
        }
        types[*id as usize] = if *special {
            TOKEN_CONTROL
        } else {
            TOKEN_USER_DEFINED
        };
    }
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(id, t)| {
            t.unwrap_or_else(|| {
                types[id] = TOKEN_UNUSED;
                format!("[PAD{id}]")
            })
        })
        .collect();

    let merges = model
        .get("merges")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|m| match m {
            Value::String(s) => Ok(s.clone()),
            Value::Array(pair) => match pair.as_slice() {
                [Value::String(a), Value::String(b)] if !a.contains(' ') && !b.contains(' ') => {
                    Ok(format!("{a} {b}"))
                }
                _ => Err(unsupported(format!("merge {m} for GGUF output"))),
            },
            _ => Err(ModelError::format(
                &origin,
                format!("merge {m} is not a pair"),
            )),
        })
        .collect::<Result<Vec<String>>>()?;

    // Special ids: config first, then tokenizer_config's tokens.
    let by_name = |name: &str| {
        files
            .tokenizer_config
            .as_ref()
            .and_then(|tc| tc.get(name))
            .and_then(token_content)
            .and_then(|t| tokenizer.token_to_id(t))
    };
    let c = &files.config;
    let unk = model
        .get("unk_token")
        .and_then(Value::as_str)
        .and_then(|t| tokenizer.token_to_id(t))
        .or_else(|| by_name("unk_token"));
    let specials = [
        (
            "tokenizer.ggml.bos_token_id",
            c.bos_token_id.or_else(|| by_name("bos_token")),
        ),
        (
            "tokenizer.ggml.eos_token_id",
            c.eos_token_ids
                .first()
                .copied()
                .or_else(|| by_name("eos_token")),
        ),
        ("tokenizer.ggml.unknown_token_id", unk),
        (
            "tokenizer.ggml.padding_token_id",
            c.pad_token_id.or_else(|| by_name("pad_token")),
        ),
    ];
    let (add_bos, add_eos) = added_specials(json.get("post_processor").unwrap_or(&Value::Null));

    let mut meta = vec![
        (
            "tokenizer.ggml.model".to_string(),
            MetadataValue::String("gpt2".into()),
        ),
        (
            "tokenizer.ggml.pre".to_string(),
            MetadataValue::String(pre.into()),
        ),
        (
            "tokenizer.ggml.tokens".to_string(),
            MetadataValue::Array(MetadataArray::String(tokens)),
        ),
        (
            "tokenizer.ggml.token_type".to_string(),
            MetadataValue::Array(MetadataArray::I32(types)),
        ),
        (
            "tokenizer.ggml.merges".to_string(),
            MetadataValue::Array(MetadataArray::String(merges)),
        ),
    ];
    for (k, id) in specials {
        if let Some(id) = id {
            if id as usize >= count {
                return Err(ModelError::format(
                    &origin,
                    format!("`{k}`: id {id} is not one of the {count} tokens"),
                ));
            }
            meta.push((k.to_string(), MetadataValue::U32(id)));
        }
    }
    meta.push((
        "tokenizer.ggml.add_bos_token".to_string(),
        MetadataValue::Bool(add_bos),
    ));
    meta.push((
        "tokenizer.ggml.add_eos_token".to_string(),
        MetadataValue::Bool(add_eos),
    ));
    Ok(meta)
}

/// llama.cpp's `tokenizer.ggml.pre` name of a byte-level pre-tokenizer.
fn pre_name(pre: &Value) -> Option<&'static str> {
    let ty = |v: &Value| v.get("type").and_then(Value::as_str).map(str::to_string);
    let use_regex = |v: &Value| v.get("use_regex").and_then(Value::as_bool).unwrap_or(true);
    match ty(pre)?.as_str() {
        "ByteLevel" if use_regex(pre) => Some("gpt-2"),
        "Sequence" => {
            let parts = pre.get("pretokenizers")?.as_array()?;
            match parts.as_slice() {
                [split, byte_level]
                    if ty(split).as_deref() == Some("Split")
                        && ty(byte_level).as_deref() == Some("ByteLevel")
                        && !use_regex(byte_level) =>
                {
                    let regex = split.get("pattern")?.get("Regex")?.as_str()?;
                    PRE_SPLITS
                        .iter()
                        .find(|(_, r)| *r == regex)
                        .map(|&(name, _)| name)
                }
                [digits, byte_level]
                    if ty(digits).as_deref() == Some("Digits")
                        && digits.get("individual_digits").and_then(Value::as_bool)
                            == Some(true)
                        && ty(byte_level).as_deref() == Some("ByteLevel")
                        && use_regex(byte_level) =>
                {
                    Some("smollm")
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether the post-processor adds a special token before / after a single
/// sequence (`TemplateProcessing`, possibly inside a `Sequence`).
fn added_specials(post: &Value) -> (bool, bool) {
    match post.get("type").and_then(Value::as_str) {
        Some("TemplateProcessing") => {
            let single = post
                .get("single")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let is_special = |v: Option<&Value>| v.is_some_and(|v| v.get("SpecialToken").is_some());
            (is_special(single.first()), is_special(single.last()))
        }
        Some("Sequence") => post
            .get("processors")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(added_specials)
            .fold((false, false), |a, b| (a.0 || b.0, a.1 || b.1)),
        _ => (false, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_quant_rows_that_are_not_whole_blocks_take_llama_cpp_fallbacks() {
        let row = |ty, cols| row_type(ty, &[8, cols]);
        assert_eq!(row(BlockType::Q4_K, 1536), Some(BlockType::Q4_K));
        assert_eq!(row(BlockType::Q4_K, 576), Some(BlockType::Q5_0));
        assert_eq!(row(BlockType::Q5_K, 576), Some(BlockType::Q5_1));
        assert_eq!(row(BlockType::Q6_K, 576), Some(BlockType::Q8_0));
        assert_eq!(row(BlockType::Q4_0, 576), Some(BlockType::Q4_0));
        // No fallback fits 40 columns: written as F16.
        assert_eq!(row(BlockType::Q4_K, 40), None);
        assert_eq!(row(BlockType::Q8_0, 40), None);
        assert_eq!(row_type(BlockType::Q4_K, &[576]), None);
        assert_eq!(ggml_type(BlockType::Q5_0), GgmlType::Q5_0);
        assert_eq!(ggml_type(BlockType::Q5_1), GgmlType::Q5_1);
    }
}
