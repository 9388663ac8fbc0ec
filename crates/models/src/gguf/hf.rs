//! A GGUF model in HF transformers form: tensor names, shapes and Q/K row
//! order of a `LlamaForCausalLM`/`Qwen2ForCausalLM` checkpoint, and the
//! `config.json` its metadata implies.
//!
//! llama.cpp's converter (`convert_hf_to_gguf.py`, `LlamaModel.permute`)
//! reorders the rows of LLaMA's `q_proj` and `k_proj` within each head from
//! HF's "rotate half" layout (first half of the head dimension, then the
//! second) to interleaved pairs, which its rotary kernel expects: GGUF row
//! `h·D + 2b + a` holds HF row `h·D + a·D/2 + b` (head `h`, head size `D`,
//! `a ∈ {0, 1}`, `b < D/2`). [`GgufFile::to_weights`] undoes it, as
//! transformers does when it loads a GGUF. Qwen2 files are not permuted.

use std::borrow::Cow;

use half::{bf16, f16};
use kaiyuan_tensor::{DType, Tensor};
use rayon::prelude::*;
use serde_json::{Value, json};

use super::GgufFile;
use kaiyuan_tensor::quant::{BlockOrder, QBytes, QMatrix, reorder_blocks};

use super::dequant::{block_type, can_dequantize, dequantize};

/// A tensor as [`GgufFile::to_weights_with`] loads it.
enum Loaded {
    Dense(Tensor),
    Quantized(QMatrix),
}

/// One tensor to load: its GGUF entry, HF name, the head count when its rows
/// are un-permuted, and its block type when it stays quantized.
struct Job<'a> {
    info: &'a GgufTensorInfo,
    name: String,
    heads: Option<usize>,
    block: Option<kaiyuan_tensor::quant::BlockType>,
}

/// A tensor's bytes (in HF row order) in a shared huge-page map.
#[derive(Clone)]
struct Placed {
    map: std::sync::Arc<memmap2::Mmap>,
    range: std::ops::Range<usize>,
}
use super::reader::GgufTensorInfo;
use super::types::GgmlType;
use crate::{ModelError, Result, Weights};

/// The architectures [`GgufFile::to_weights`] and [`GgufFile::to_hf_config`]
/// convert, with their HF class.
const ARCHITECTURES: [(&str, &str); 2] =
    [("llama", "LlamaForCausalLM"), ("qwen2", "Qwen2ForCausalLM")];

/// GGUF tensor names inside `blk.{i}.` and their HF names inside
/// `model.layers.{i}.`.
pub(super) const LAYER_TENSORS: [(&str, &str); 13] = [
    ("attn_norm.weight", "input_layernorm.weight"),
    ("ffn_norm.weight", "post_attention_layernorm.weight"),
    ("attn_q.weight", "self_attn.q_proj.weight"),
    ("attn_k.weight", "self_attn.k_proj.weight"),
    ("attn_v.weight", "self_attn.v_proj.weight"),
    ("attn_q.bias", "self_attn.q_proj.bias"),
    ("attn_k.bias", "self_attn.k_proj.bias"),
    ("attn_v.bias", "self_attn.v_proj.bias"),
    ("attn_output.weight", "self_attn.o_proj.weight"),
    ("attn_output.bias", "self_attn.o_proj.bias"),
    ("ffn_gate.weight", "mlp.gate_proj.weight"),
    ("ffn_up.weight", "mlp.up_proj.weight"),
    ("ffn_down.weight", "mlp.down_proj.weight"),
];

/// Tensors outside the layers.
pub(super) const GLOBAL_TENSORS: [(&str, &str); 3] = [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// Tensors llama.cpp writes that an HF checkpoint does not hold: LLaMA 3.1's
/// precomputed rope frequencies (HF recomputes them from `rope_scaling`).
const SKIPPED_TENSORS: [&str; 1] = ["rope_freqs.weight"];

/// The two bytes of a `chunks_exact(2)` chunk.
fn pair(c: &[u8]) -> [u8; 2] {
    c.try_into().unwrap_or([0; 2])
}

/// The HF name of GGUF tensor `name`, `None` for tensors HF does not hold.
fn hf_name(origin: &str, name: &str) -> Result<Option<String>> {
    if SKIPPED_TENSORS.contains(&name) {
        return Ok(None);
    }
    if let Some(&(_, hf)) = GLOBAL_TENSORS.iter().find(|(g, _)| *g == name) {
        return Ok(Some(hf.to_string()));
    }
    let layer = name.strip_prefix("blk.").and_then(|rest| {
        let (index, suffix) = rest.split_once('.')?;
        let index: usize = index.parse().ok()?;
        let (_, hf) = LAYER_TENSORS.iter().find(|(g, _)| *g == suffix)?;
        Some(format!("model.layers.{index}.{hf}"))
    });
    match layer {
        Some(hf) => Ok(Some(hf)),
        None => Err(ModelError::Unsupported {
            origin: origin.to_string(),
            what: format!("tensor `{name}` (no HF LLaMA/Qwen2 equivalent known)"),
        }),
    }
}

impl GgufFile {
    fn hf_architecture(&self) -> Result<(&str, &'static str)> {
        let arch = self.architecture()?;
        ARCHITECTURES
            .iter()
            .find(|(a, _)| *a == arch)
            .map(|&(_, class)| (arch, class))
            .ok_or_else(|| ModelError::Unsupported {
                origin: self.origin().to_string(),
                what: format!(
                    "GGUF architecture `{arch}` (supported: {})",
                    ARCHITECTURES.map(|a| a.0).join(", ")
                ),
            })
    }

    /// The tensors with HF transformers names and PyTorch shapes (GGUF dims
    /// reversed), e.g. `token_embd.weight` `[576, 49152]` becomes
    /// `model.embed_tokens.weight` `(49152, 576)`.
    ///
    /// F32, F16 and BF16 tensors keep their dtype and are read in place from
    /// the map when aligned; quantized tensors (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K,
    /// Q6_K) are dequantized to f32. For `llama`, the rows of `q_proj` and
    /// `k_proj` are put back in HF order (see the module docs). `lm_head.weight`
    /// is present only when the file has `output.weight` (otherwise the
    /// embeddings are tied).
    ///
    /// Errors: [`ModelError::Unsupported`] for other architectures, tensor
    /// types and unknown tensor names; [`ModelError::Format`] when the head
    /// counts do not divide the Q/K rows.
    pub fn to_weights(&self) -> Result<Weights> {
        self.to_weights_with(false)
    }

    /// Like [`GgufFile::to_weights`], but with `keep_quantized` every 2-D
    /// tensor of a block type (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) stays in
    /// its blocks as a [`QMatrix`] read in place from the map (llama's
    /// `q_proj`/`k_proj` rows are re-ordered into an owned copy), so the
    /// model runs the quantized kernels and holds about the file's size.
    pub fn to_weights_with(&self, keep_quantized: bool) -> Result<Weights> {
        self.load_weights(keep_quantized, false)
    }

    /// Like [`GgufFile::to_weights_with`], but the tensors read in place
    /// (F32, F16, BF16 and, with `keep_quantized`, the blocks; LLaMA's Q/K
    /// rows already re-ordered) are copied into one map of their own backed
    /// by huge pages ([`kaiyuan_tensor::huge_page_map`]), and this process's
    /// pages of the file are dropped as each is copied. Decoding streams every weight for
    /// each token, and it does so faster from huge pages than from the
    /// file's 4 KiB pages; the cost is one copy at load, and memory is still
    /// about one copy of the weights.
    pub fn to_resident_weights(&self, keep_quantized: bool) -> Result<Weights> {
        self.load_weights(keep_quantized, true)
    }

    fn load_weights(&self, keep_quantized: bool, resident: bool) -> Result<Weights> {
        let (arch, _) = self.hf_architecture()?;
        let heads = self.get_usize(&format!("{arch}.attention.head_count"))?;
        let kv_heads = self
            .get_usize_opt(&format!("{arch}.attention.head_count_kv"))?
            .unwrap_or(heads);
        let permute = arch == "llama";
        let jobs = self
            .tensors()
            .iter()
            .filter_map(|info| match hf_name(self.origin(), info.name()) {
                Ok(Some(name)) => {
                    let heads = match info.name() {
                        n if permute && n.contains(".attn_q.") => Some(heads),
                        n if permute && n.contains(".attn_k.") => Some(kv_heads),
                        _ => None,
                    };
                    let block = block_type(info.ggml_type())
                        .filter(|_| keep_quantized && info.shape().len() == 2);
                    Some(Ok(Job {
                        info,
                        name,
                        heads,
                        block,
                    }))
                }
                Ok(None) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<Vec<_>>>()?;
        let placed = if resident {
            self.place_in_huge_pages(&jobs)?
        } else {
            vec![None; jobs.len()]
        };
        let tensors = jobs
            .into_par_iter()
            .zip(placed)
            .map(|(job, placed)| match job.block {
                Some(ty) => self
                    .quantized_tensor(job.info, ty, job.heads, placed)
                    .map(|q| (job.name, Loaded::Quantized(q))),
                None => self
                    .hf_tensor(job.info, job.heads, placed)
                    .map(|t| (job.name, Loaded::Dense(t))),
            })
            .collect::<Result<Vec<_>>>()?;
        let mut weights = Weights::new(self.origin());
        for (name, tensor) in tensors {
            match tensor {
                Loaded::Dense(t) => weights.insert(name, t),
                Loaded::Quantized(q) => weights.insert_quantized(name, q),
            }
        }
        Ok(weights)
    }

    /// Copies every job whose bytes are used as stored (F32, F16, BF16, and
    /// kept blocks), with Q/K rows already in HF order, into one huge-page
    /// map, dropping this process's pages of the file as each is copied.
    /// Returns, per job, its bytes in that map (`None` for the others).
    fn place_in_huge_pages(&self, jobs: &[Job<'_>]) -> Result<Vec<Option<Placed>>> {
        const ALIGN: usize = 64;
        let stored_as_is = |job: &Job<'_>| {
            job.block.is_some()
                || matches!(
                    job.info.ggml_type(),
                    GgmlType::F32 | GgmlType::F16 | GgmlType::BF16
                )
        };
        let mut ranges = Vec::with_capacity(jobs.len());
        let mut total = 0usize;
        for job in jobs {
            if stored_as_is(job) {
                let len = self.tensor_range(job.info)?.len();
                let start = total.next_multiple_of(ALIGN);
                total = start + len;
                ranges.push(Some(start..total));
            } else {
                ranges.push(None);
            }
        }
        let io_error = |e| ModelError::io(std::path::PathBuf::from(self.origin()), e);
        let mut map = kaiyuan_tensor::huge_page_map(total).map_err(io_error)?;
        // Carve the map into the jobs' disjoint, increasing ranges.
        let mut slots: Vec<(&Job<'_>, &mut [u8])> = Vec::new();
        let mut rest: &mut [u8] = &mut map;
        let mut consumed = 0;
        for (job, range) in jobs.iter().zip(&ranges) {
            if let Some(range) = range {
                let (_, tail) = std::mem::take(&mut rest).split_at_mut(range.start - consumed);
                let (slot, tail) = tail.split_at_mut(range.len());
                slots.push((job, slot));
                rest = tail;
                consumed = range.end;
            }
        }
        slots.into_par_iter().try_for_each(|(job, slot)| {
            let raw = self.tensor_bytes(job.info)?;
            let unpermuted;
            let hf_rows = match job.heads {
                Some(heads) => {
                    unpermuted = self.unpermute_rows(job.info, raw, heads)?;
                    &unpermuted[..]
                }
                None => raw,
            };
            let file_range = self.tensor_range(job.info)?;
            // A large tensor (an embedding) goes over in slices of about
            // 1 MiB, the file's pages of each dropped once copied: whole, its
            // pages and its copy were both resident, up to its size on top
            // of the weights placed so far.
            let release_behind = |bytes: std::ops::Range<usize>| {
                if job.heads.is_none() {
                    self.release_pages(
                        file_range.start + bytes.start..file_range.start + bytes.end,
                    );
                }
            };
            match job.block {
                // Blocks go in the order the kernels read fastest.
                Some(ty) => {
                    let (rows, cols) = (job.info.shape()[0], job.info.shape()[1]);
                    let order = BlockOrder::preferred(ty, rows);
                    let row_bytes = hf_rows.len() / rows.max(1);
                    // Whole interleaved groups (8 rows) in every slice.
                    let slice_rows = ((1usize << 20) / row_bytes.max(1))
                        .max(1)
                        .next_multiple_of(8);
                    for start in (0..rows).step_by(slice_rows) {
                        let n = slice_rows.min(rows - start);
                        let bytes = start * row_bytes..(start + n) * row_bytes;
                        reorder_blocks(
                            ty,
                            n,
                            cols,
                            &hf_rows[bytes.clone()],
                            order,
                            &mut slot[bytes.clone()],
                        )
                        .map_err(|e| self.tensor_error(job.info, e))?;
                        release_behind(bytes);
                    }
                }
                None => {
                    for (index, (to, from)) in slot
                        .chunks_mut(1 << 20)
                        .zip(hf_rows.chunks(1 << 20))
                        .enumerate()
                    {
                        to.copy_from_slice(from);
                        release_behind(index << 20..(index << 20) + from.len());
                    }
                }
            }
            // The pages straddling slice edges, and an unpermuted tensor's.
            self.release_pages(file_range);
            Ok::<_, ModelError>(())
        })?;
        let map = std::sync::Arc::new(map.make_read_only().map_err(io_error)?);
        Ok(ranges
            .into_iter()
            .map(|range| {
                range.map(|range| Placed {
                    map: map.clone(),
                    range,
                })
            })
            .collect())
    }

    /// A 2-D block-type tensor as a [`QMatrix`] (rows, cols) in HF row
    /// order, from its `placed` copy when there is one.
    fn quantized_tensor(
        &self,
        info: &GgufTensorInfo,
        ty: kaiyuan_tensor::quant::BlockType,
        unpermute_heads: Option<usize>,
        placed: Option<Placed>,
    ) -> Result<QMatrix> {
        let shape = info.shape();
        let (rows, cols) = (shape[0], shape[1]);
        let bytes = match (placed, unpermute_heads) {
            (Some(Placed { map, range }), _) => {
                // `place_in_huge_pages` wrote them in this order.
                let order = BlockOrder::preferred(ty, rows);
                return QMatrix::from_ordered_blocks(
                    ty,
                    rows,
                    cols,
                    QBytes::Mapped { map, range },
                    order,
                )
                .map_err(|e| self.tensor_error(info, e));
            }
            (None, Some(heads)) => {
                QBytes::Owned(self.unpermute_rows(info, self.tensor_bytes(info)?, heads)?)
            }
            (None, None) => QBytes::Mapped {
                map: self.mmap().clone(),
                range: self.tensor_range(info)?,
            },
        };
        QMatrix::from_blocks(ty, rows, cols, bytes).map_err(|e| self.tensor_error(info, e))
    }

    /// A tensor-crate error about tensor `info`, naming it and the file.
    fn tensor_error(&self, info: &GgufTensorInfo, e: kaiyuan_tensor::TensorError) -> ModelError {
        ModelError::format(
            self.origin().to_string(),
            format!("tensor `{}`: {e}", info.name()),
        )
    }

    /// Tensor `name` (GGUF name) with its PyTorch shape (dims reversed) and
    /// rows as stored: F32/F16/BF16 in their dtype (in place when aligned),
    /// quantized types dequantized to f32.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| ModelError::MissingTensor {
                origin: self.origin().to_string(),
                name: name.to_string(),
            })?;
        self.hf_tensor(info, None, None)
    }

    /// One tensor in PyTorch shape; with `unpermute_heads`, its rows are
    /// reordered from llama.cpp's rotary layout back to HF's.
    /// With `placed`, its F32/F16/BF16 bytes are read there (already in HF
    /// row order).
    fn hf_tensor(
        &self,
        info: &GgufTensorInfo,
        unpermute_heads: Option<usize>,
        placed: Option<Placed>,
    ) -> Result<Tensor> {
        let shape = info.shape();
        let ty = info.ggml_type();
        let dtype = match ty {
            GgmlType::F32 => Some(DType::F32),
            GgmlType::F16 => Some(DType::F16),
            GgmlType::BF16 => Some(DType::BF16),
            _ => None,
        };
        if let (Some(dtype), Some(Placed { map, range })) = (dtype, placed) {
            return Tensor::from_mmap(map, range, dtype, &shape).map_err(|e| {
                ModelError::format(
                    self.origin().to_string(),
                    format!("tensor `{}`: {e}", info.name()),
                )
            });
        }
        let raw = self.tensor_bytes(info)?;
        let bytes: Cow<'_, [u8]> = match unpermute_heads {
            Some(heads) => Cow::Owned(self.unpermute_rows(info, raw, heads)?),
            None => Cow::Borrowed(raw),
        };
        if let (Some(dtype), Cow::Borrowed(_)) = (dtype, &bytes) {
            let range = self.tensor_range(info)?;
            if let Ok(t) = Tensor::from_mmap(self.mmap().clone(), range, dtype, &shape) {
                return Ok(t);
            }
        }
        let tensor = match ty {
            GgmlType::F16 => Tensor::from_vec(
                bytes
                    .chunks_exact(2)
                    .map(|c| f16::from_le_bytes(pair(c)))
                    .collect(),
                &shape,
            )?,
            GgmlType::BF16 => Tensor::from_vec(
                bytes
                    .chunks_exact(2)
                    .map(|c| bf16::from_le_bytes(pair(c)))
                    .collect(),
                &shape,
            )?,
            ty if can_dequantize(ty) => Tensor::from_vec(dequantize(ty, &bytes)?, &shape)?,
            ty => {
                return Err(ModelError::Unsupported {
                    origin: self.origin().to_string(),
                    what: format!("tensor `{}` of ggml type {ty}", info.name()),
                });
            }
        };
        // The tensor owns a converted copy: the file's pages are not needed.
        self.release_pages(self.tensor_range(info)?);
        Ok(tensor)
    }

    /// The bytes of `info` with rows in HF order: HF row `h·D + a·D/2 + b`
    /// is GGUF row `h·D + 2b + a`. Rows are whole blocks, so this works on
    /// the stored bytes of any type.
    fn unpermute_rows(&self, info: &GgufTensorInfo, raw: &[u8], heads: usize) -> Result<Vec<u8>> {
        let rows = info.shape().first().copied().unwrap_or(1);
        let bad = |why: String| {
            ModelError::format(
                self.origin().to_string(),
                format!("tensor `{}` (shape {:?}): {why}", info.name(), info.shape()),
            )
        };
        if heads == 0 || rows % heads != 0 || !(rows / heads).is_multiple_of(2) {
            return Err(bad(format!(
                "{rows} rows do not split into {heads} heads of an even size"
            )));
        }
        if rows == 0 || !raw.len().is_multiple_of(rows) {
            return Err(bad(format!(
                "{} bytes do not split into {rows} rows",
                raw.len()
            )));
        }
        let row_bytes = raw.len() / rows;
        let head_dim = rows / heads;
        let half = head_dim / 2;
        let mut out = vec![0u8; raw.len()];
        out.par_chunks_mut(row_bytes)
            .enumerate()
            .for_each(|(r, dst)| {
                let (h, within) = (r / head_dim, r % head_dim);
                let (a, b) = (within / half, within % half);
                let src_row = h * head_dim + 2 * b + a;
                if let Some(src) = raw.get(src_row * row_bytes..(src_row + 1) * row_bytes) {
                    dst.copy_from_slice(src);
                }
            });
        Ok(out)
    }

    /// The dtype [`GgufFile::to_weights`] gives the embeddings, as HF's
    /// `torch_dtype` names it: F16 and BF16 files keep theirs, anything
    /// quantized is dequantized to float32.
    fn dtype_name(&self) -> &'static str {
        match self.tensor_info("token_embd.weight").map(|t| t.ggml_type()) {
            Some(GgmlType::F16) => "float16",
            Some(GgmlType::BF16) => "bfloat16",
            _ => "float32",
        }
    }

    /// An HF `config.json` equivalent of the metadata: `architectures`,
    /// `model_type`, `hidden_size`, `intermediate_size`,
    /// `num_hidden_layers`, `num_attention_heads`, `num_key_value_heads`,
    /// `rms_norm_eps`, `rope_theta` (top level and in `rope_parameters`),
    /// `max_position_embeddings`, `vocab_size`, `tie_word_embeddings`
    /// (true when the file has no `output.weight`), `torch_dtype`, `bos_token_id`,
    /// `eos_token_id`, and `head_dim` when `attention.key_length` is given.
    ///
    /// Errors name the missing or mistyped metadata key;
    /// [`ModelError::Unsupported`] for other architectures and rope scaling
    /// types other than `none` and `linear`.
    pub fn to_hf_config(&self) -> Result<Value> {
        let (arch, class) = self.hf_architecture()?;
        let key = |k: &str| format!("{arch}.{k}");
        let heads = self.get_usize(&key("attention.head_count"))?;
        let kv_heads = self
            .get_usize_opt(&key("attention.head_count_kv"))?
            .unwrap_or(heads);
        let hidden_size = self.get_usize(&key("embedding_length"))?;
        let intermediate_size = self.get_usize(&key("feed_forward_length"))?;
        let num_hidden_layers = self.get_usize(&key("block_count"))?;
        let rms_norm_eps = self.get_f64(&key("attention.layer_norm_rms_epsilon"))?;
        let max_position_embeddings = self.get_usize(&key("context_length"))?;
        let vocab_size = match self.get_usize_opt(&key("vocab_size"))? {
            Some(v) => v,
            None => match self.get_array_opt("tokenizer.ggml.tokens")? {
                Some(tokens) => tokens.len(),
                None => self
                    .tensor_info("token_embd.weight")
                    .and_then(|t| t.shape().first().copied())
                    .ok_or_else(|| {
                        ModelError::format(
                            self.origin().to_string(),
                            format!(
                                "no `{}`, `tokenizer.ggml.tokens` or `token_embd.weight` gives the vocabulary size",
                                key("vocab_size")
                            ),
                        )
                    })?,
            },
        };
        let rope_theta = self.get_f64_opt(&key("rope.freq_base"))?.unwrap_or(10000.0);
        let mut config = json!({
            "architectures": [class],
            "model_type": arch,
            "hidden_size": hidden_size,
            "intermediate_size": intermediate_size,
            "num_hidden_layers": num_hidden_layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "rms_norm_eps": rms_norm_eps,
            "rope_theta": rope_theta,
            "max_position_embeddings": max_position_embeddings,
            "vocab_size": vocab_size,
            "tie_word_embeddings": self.tensor_info("output.weight").is_none(),
            "hidden_act": "silu",
            "torch_dtype": self.dtype_name(),
        });
        let mut rope_parameters = json!({"rope_type": "default", "rope_theta": rope_theta});
        match self.get_str_opt(&key("rope.scaling.type"))? {
            None | Some("none") => {}
            Some("linear") => {
                let factor = self.get_f64(&key("rope.scaling.factor"))?;
                let scaling = json!({"rope_type": "linear", "type": "linear", "factor": factor});
                config["rope_scaling"] = scaling;
                rope_parameters =
                    json!({"rope_type": "linear", "rope_theta": rope_theta, "factor": factor});
            }
            Some(other) => {
                return Err(ModelError::Unsupported {
                    origin: self.origin().to_string(),
                    what: format!("rope scaling type `{other}` ({})", key("rope.scaling.type")),
                });
            }
        }
        config["rope_parameters"] = rope_parameters;
        if arch == "llama" {
            config["attention_bias"] = json!(self.tensor_info("blk.0.attn_q.bias").is_some());
            config["mlp_bias"] = json!(false);
        }
        if let Some(head_dim) = self.get_usize_opt(&key("attention.key_length"))? {
            config["head_dim"] = json!(head_dim);
        }
        for (field, k) in [
            ("bos_token_id", "tokenizer.ggml.bos_token_id"),
            ("eos_token_id", "tokenizer.ggml.eos_token_id"),
            ("pad_token_id", "tokenizer.ggml.padding_token_id"),
        ] {
            if let Some(id) = self.get_u64_opt(k)? {
                config[field] = json!(id);
            }
        }
        Ok(config)
    }
}
