//! Writing the HF GPTQ checkpoint layout that AutoGPTQ, optimum,
//! transformers and GPTQModel read (`quant_method: "gptq"`).
//!
//! [`pack_gptq`] turns one layer's [`IntWeights`] into the four stored
//! tensors ([`GptqTensors`]; the layout is documented in
//! [`kaiyuan_models::gptq_format`], which also reads it back);
//! [`write_gptq_dir`] writes a whole model directory: `model.safetensors`
//! (dense tensors plus `<module>.{qweight,qzeros,scales,g_idx}` for every
//! quantized layer) and `config.json` with the `quantization_config`
//! optimum writes. Both files are written atomically (a temporary sibling,
//! then a rename), and the bytes depend only on the inputs.
//!
//! Zero points: the default checkpoint format "gptq" (v1) stores `zero − 1`,
//! so a zero point of 0 (an asymmetric group whose weights are all ≥ 0)
//! cannot be stored for readers whose kernels add 1 back without wrapping
//! (AutoGPTQ, ExLlama, Marlin); [`pack_gptq`] refuses it, naming the row and
//! group. Write "gptq_v2" ([`CheckpointFormat::V2`], zero points as they
//! are, read by GPTQModel and by Kaiyuan) or quantize symmetrically instead.
//!
//! ```
//! use kaiyuan_quant::gptq::{rtn, GptqSettings};
//! use kaiyuan_quant::hf_gptq::{pack_gptq, CheckpointFormat};
//! let s = GptqSettings { bits: 4, group_size: Some(32), sym: true, ..GptqSettings::default() };
//! let w: Vec<f64> = (0..8 * 64).map(|i| ((i * 37 % 101) as f64 - 50.0) / 100.0).collect();
//! let q = rtn("demo", &w, 8, 64, &s).unwrap();
//! let t = pack_gptq(&q).unwrap();
//! assert_eq!(t.qweight_shape(), [8, 8]); // (64 / 8 codes per word, 8 rows)
//! assert_eq!(t.scales_shape(), [2, 8]);
//! // Reading it back gives the same matrix as the quantizer's own.
//! let back = t.to_qmatrix("demo", CheckpointFormat::V1).unwrap();
//! let own = kaiyuan_quant::model_quant::to_qmatrix(&q).unwrap();
//! assert_eq!(back.dequantize(), own.dequantize());
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use half::f16;
use kaiyuan_models::Weights;
use kaiyuan_models::safetensors_io::write_atomic;
use kaiyuan_tensor::DType;
use serde_json::{Value, json};

pub use kaiyuan_models::gptq_format::{CheckpointFormat, GptqTensors};

use crate::gptq::{GptqSettings, IntWeights};
use crate::{QuantError, Result};

/// [`pack_gptq_as`] in the default format, "gptq" (v1).
pub fn pack_gptq(q: &IntWeights) -> Result<GptqTensors> {
    pack_gptq_as(q, CheckpointFormat::V1)
}

/// One layer in the GPTQ layout with zero points stored as `format` says.
///
/// Fails when `bits` is not 4 or 8, rows or columns are not a multiple of
/// `32 / bits`, the group size is 0, a code, zero point or group index is
/// out of range, `g_idx` does not give every group `group_size` columns
/// (the last group what is left, when the group size does not divide the
/// columns), a scale is not finite in f16, or (v1) a zero point is 0.
pub fn pack_gptq_as(q: &IntWeights, format: CheckpointFormat) -> Result<GptqTensors> {
    let what = "GPTQ layout";
    let bad = |message: String| QuantError::invalid(what, message);
    if q.bits != 4 && q.bits != 8 {
        return Err(bad(format!("{} bits (supported: 4, 8)", q.bits)));
    }
    let pf = 32 / usize::from(q.bits);
    let (rows, cols) = (q.rows, q.cols);
    if rows == 0 || cols == 0 || rows % pf != 0 || cols % pf != 0 {
        return Err(bad(format!(
            "a {rows} × {cols} layer cannot be packed {pf} {}-bit codes per int32 word (both dimensions must be positive multiples of {pf})",
            q.bits
        )));
    }
    if q.group_size == 0 {
        return Err(bad("group size 0".to_string()));
    }
    let groups = q.groups();
    if q.codes.len() != rows * cols
        || q.scales.len() != rows * groups
        || q.zeros.len() != rows * groups
        || q.g_idx.len() != cols
    {
        return Err(bad(format!(
            "inconsistent lengths: {} codes, {} scales, {} zeros, {} g_idx for {rows} × {cols} in {groups} groups",
            q.codes.len(),
            q.scales.len(),
            q.zeros.len(),
            q.g_idx.len()
        )));
    }
    let maxq = (1u32 << q.bits) - 1;
    if let Some(i) = q.codes.iter().position(|&c| u32::from(c) > maxq) {
        return Err(bad(format!(
            "code {} at [{}, {}] does not fit in {} bits",
            q.codes[i],
            i / cols,
            i % cols,
            q.bits
        )));
    }
    let mut count = vec![0usize; groups];
    for (c, &g) in q.g_idx.iter().enumerate() {
        match count.get_mut(g as usize) {
            Some(n) => *n += 1,
            None => {
                return Err(bad(format!(
                    "g_idx[{c}] = {g} is not a group of 0..{groups}"
                )));
            }
        }
    }
    // Every group is full but the last, which holds what is left.
    let expected = |g: usize| q.group_size.min(cols - g * q.group_size);
    if let Some(g) = (0..groups).find(|&g| count[g] != expected(g)) {
        return Err(bad(format!(
            "g_idx gives group {g} {} columns; it needs {}",
            count[g],
            expected(g)
        )));
    }

    let mut qweight = vec![0u32; cols / pf * rows];
    for r in 0..rows {
        for c in 0..cols {
            let code = u32::from(q.codes[r * cols + c]);
            qweight[(c / pf) * rows + r] |= code << (u32::from(q.bits) * (c % pf) as u32);
        }
    }
    let mut qzeros = vec![0u32; groups * (rows / pf)];
    let mut scales = vec![f16::ZERO; groups * rows];
    for r in 0..rows {
        for g in 0..groups {
            let zero = q.zeros[r * groups + g];
            if !(zero.fract() == 0.0 && (0.0..=f64::from(maxq)).contains(&zero)) {
                return Err(bad(format!(
                    "zero point {zero} of row {r}, group {g} is not a whole number in [0, {maxq}]"
                )));
            }
            let stored = format.stored_zero(zero as u32);
            if stored < 0 {
                return Err(bad(format!(
                    "zero point 0 of row {r}, group {g} cannot be stored in checkpoint_format `gptq` (v1 stores zero − 1, and kernels that add 1 back without wrapping would read 16); write `gptq_v2` or quantize symmetrically"
                )));
            }
            qzeros[g * (rows / pf) + r / pf] |=
                (stored as u32) << (u32::from(q.bits) * (r % pf) as u32);
            let scale = q.scales[r * groups + g];
            let s = f16::from_f64(scale);
            if !s.is_finite() {
                return Err(bad(format!(
                    "scale {scale} of row {r}, group {g} is not a finite f16"
                )));
            }
            scales[g * rows + r] = s;
        }
    }
    Ok(GptqTensors {
        bits: q.bits,
        rows,
        cols,
        group_size: q.group_size,
        groups,
        qweight: qweight.into_iter().map(|w| w as i32).collect(),
        qzeros: qzeros.into_iter().map(|w| w as i32).collect(),
        scales,
        g_idx: q.g_idx.iter().map(|&g| g as i32).collect(),
    })
}

/// The `quantization_config` of a checkpoint quantized with `settings`,
/// as optimum / transformers write it (`group_size` −1 for per-channel;
/// `modules_in_block_to_quantize` lists the quantized modules of a block,
/// the part of each name after `.layers.<i>.`, when every name has one).
pub fn quantization_config(
    settings: &GptqSettings,
    format: CheckpointFormat,
    modules: &[&str],
) -> Value {
    let mut in_block: Vec<String> = Vec::new();
    let mut all_in_blocks = !modules.is_empty();
    for name in modules {
        match block_suffix(name) {
            Some(s) => {
                if !in_block.iter().any(|x| x == s) {
                    in_block.push(s.to_string());
                }
            }
            None => all_in_blocks = false,
        }
    }
    json!({
        "quant_method": "gptq",
        "bits": settings.bits,
        "group_size": settings.group_size.map_or(-1, |g| g as i64),
        "damp_percent": settings.damp_percent,
        "desc_act": settings.act_order,
        "static_groups": settings.static_groups,
        "sym": settings.sym,
        "true_sequential": true,
        "lm_head": false,
        "checkpoint_format": format.name(),
        "modules_in_block_to_quantize": if all_in_blocks { json!([in_block]) } else { Value::Null },
        "meta": { "quantizer": ["kaiyuan"] },
    })
}

/// `self_attn.q_proj` of `model.layers.3.self_attn.q_proj`.
fn block_suffix(name: &str) -> Option<&str> {
    let (_, rest) = name.split_once(".layers.")?;
    let (index, suffix) = rest.split_once('.')?;
    (!index.is_empty() && index.bytes().all(|b| b.is_ascii_digit())).then_some(suffix)
}

/// One tensor of the file: safetensors dtype name, shape, bytes.
struct Entry {
    dtype: &'static str,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn dense_entry(t: &kaiyuan_tensor::Tensor) -> Result<Entry> {
    fn le<T: Copy, const N: usize>(v: Vec<T>, f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
        v.into_iter().flat_map(f).collect()
    }
    let (dtype, bytes) = match t.dtype() {
        DType::F32 => ("F32", le(t.to_vec::<f32>()?, f32::to_le_bytes)),
        DType::F16 => ("F16", le(t.to_vec::<f16>()?, f16::to_le_bytes)),
        DType::BF16 => (
            "BF16",
            le(t.to_vec::<half::bf16>()?, half::bf16::to_le_bytes),
        ),
        DType::F64 => ("F64", le(t.to_vec::<f64>()?, f64::to_le_bytes)),
        DType::U32 => ("U32", le(t.to_vec::<u32>()?, u32::to_le_bytes)),
        DType::I64 => ("I64", le(t.to_vec::<i64>()?, i64::to_le_bytes)),
    };
    Ok(Entry {
        dtype,
        shape: t.shape().to_vec(),
        bytes,
    })
}

fn words(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Writes a GPTQ model directory `out_dir` (created when missing):
/// `model.safetensors` with every tensor of `dense` (norms, embeddings,
/// biases, unquantized layers; a dense `<module>.weight` of a quantized
/// module is left out) and the four GPTQ tensors of each `(module, weights)`
/// in `layers`, and `config.json`: `config` (the model's HF config) with
/// `quantization_config` ([`quantization_config`]) and `torch_dtype` (the
/// dense tensors' float dtype, float16 when there is none). Tensors are
/// written in name order, so equal inputs give equal bytes.
///
/// Every layer must agree with `settings` (bits, group size, symmetry);
/// errors name the module. Refuses a directory holding a sharded
/// checkpoint's `model.safetensors.index.json`, which readers would follow
/// instead of the new file.
pub fn write_gptq_dir(
    out_dir: &Path,
    config: &Value,
    dense: &Weights,
    layers: &[(&str, &IntWeights)],
    settings: &GptqSettings,
    format: CheckpointFormat,
) -> Result<()> {
    if !config.is_object() {
        return Err(QuantError::invalid(
            "config",
            "config.json must be an object",
        ));
    }
    let index = out_dir.join("model.safetensors.index.json");
    if index.exists() {
        return Err(QuantError::invalid(
            "output",
            format!(
                "{} exists (a sharded checkpoint); write into an empty directory",
                index.display()
            ),
        ));
    }
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    for &(module, q) in layers {
        let fail = |message: String| QuantError::invalid(module, message);
        if q.bits != settings.bits
            || q.group_size != settings.group_for(q.cols)
            || q.sym != settings.sym
        {
            return Err(fail(format!(
                "quantized with bits {} / group {} / sym {}, but the checkpoint says bits {} / group {} / sym {}",
                q.bits,
                q.group_size,
                q.sym,
                settings.bits,
                settings.group_for(q.cols),
                settings.sym
            )));
        }
        let t = pack_gptq_as(q, format).map_err(|e| fail(e.to_string()))?;
        let parts = [
            (
                "qweight",
                "I32",
                t.qweight_shape().to_vec(),
                words(&t.qweight),
            ),
            ("qzeros", "I32", t.qzeros_shape().to_vec(), words(&t.qzeros)),
            (
                "scales",
                "F16",
                t.scales_shape().to_vec(),
                t.scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
            ),
            ("g_idx", "I32", vec![t.cols], words(&t.g_idx)),
        ];
        for (part, dtype, shape, bytes) in parts {
            let name = format!("{module}.{part}");
            if entries.contains_key(&name) {
                return Err(fail(format!("`{name}` is written twice")));
            }
            entries.insert(
                name,
                Entry {
                    dtype,
                    shape,
                    bytes,
                },
            );
        }
    }
    let quantized: Vec<String> = layers.iter().map(|(m, _)| format!("{m}.weight")).collect();
    let mut float_dtype = None;
    for (name, tensor) in dense.iter() {
        if quantized.iter().any(|q| q == name) {
            continue;
        }
        if entries.contains_key(name) {
            return Err(QuantError::invalid(
                name,
                "a dense tensor has the name of a GPTQ tensor",
            ));
        }
        if float_dtype.is_none() && tensor.dtype().is_float() {
            float_dtype = Some(tensor.dtype());
        }
        entries.insert(name.to_string(), dense_entry(tensor)?);
    }
    if let Some((name, _)) = dense.quantized_iter().next() {
        return Err(QuantError::invalid(
            name,
            "the dense weights hold a quantized matrix; pass its IntWeights as a layer instead",
        ));
    }

    // safetensors: u64 header length, JSON header, data (in header order).
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({ "format": "pt" }));
    let mut offset = 0usize;
    for (name, e) in &entries {
        header.insert(
            name.clone(),
            json!({
                "dtype": e.dtype,
                "shape": e.shape,
                "data_offsets": [offset, offset + e.bytes.len()],
            }),
        );
        offset += e.bytes.len();
    }
    let mut header_bytes = serde_json::to_vec(&Value::Object(header))
        .map_err(|e| QuantError::invalid("safetensors header", e.to_string()))?;
    while (8 + header_bytes.len()) % 8 != 0 {
        header_bytes.push(b' ');
    }

    let mut config = config.clone();
    if let Value::Object(map) = &mut config {
        let names: Vec<&str> = layers.iter().map(|(m, _)| *m).collect();
        map.insert(
            "quantization_config".into(),
            quantization_config(settings, format, &names),
        );
        let dtype = match float_dtype {
            Some(DType::BF16) => "bfloat16",
            Some(DType::F32) => "float32",
            _ => "float16",
        };
        map.insert("torch_dtype".into(), Value::String(dtype.into()));
    }
    let config_text = serde_json::to_string_pretty(&config)
        .map_err(|e| QuantError::invalid("config", e.to_string()))?
        + "\n";

    std::fs::create_dir_all(out_dir).map_err(|e| QuantError::io(out_dir, e))?;
    write_atomic(&out_dir.join("model.safetensors"), |w| {
        w.write_all(&(header_bytes.len() as u64).to_le_bytes())?;
        w.write_all(&header_bytes)?;
        for e in entries.values() {
            w.write_all(&e.bytes)?;
        }
        Ok(())
    })?;
    write_atomic(&out_dir.join("config.json"), |w| {
        w.write_all(config_text.as_bytes())
    })?;
    Ok(())
}
