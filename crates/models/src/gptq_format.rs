//! The HF GPTQ checkpoint layout (AutoGPTQ / optimum / transformers /
//! GPTQModel), read into [`QMatrix`] weights.
//!
//! A directory whose `config.json` has `quantization_config.quant_method ==
//! "gptq"` stores each quantized linear layer `<module>` (out features
//! `rows`, in features `cols`, `groups` groups, `pf = 32 / bits` codes per
//! word) as four tensors instead of `<module>.weight`:
//!
//! | tensor | dtype | shape | content |
//! |---|---|---|---|
//! | `qweight` | int32 | (cols / pf, rows) | code of (r, c) in word (c / pf, r), bits `bits·(c mod pf)` upwards |
//! | `qzeros` | int32 | (groups, rows / pf) | zero point of (g, r) in word (g, r / pf), bits `bits·(r mod pf)` upwards |
//! | `scales` | float16 | (groups, rows) | scale of (g, r) |
//! | `g_idx` | int32 | (cols) | the group of input column c |
//!
//! and `w[r][c] = scales[g][r]·(q[r][c] − zero[g][r])` with `g = g_idx[c]`.
//! `checkpoint_format` "gptq" (v1, the default) stores `zero − 1`, read back
//! as `(stored + 1) mod 2^bits` as GPTQModel does (a v1 file cannot hold a
//! zero point of 0 for kernels that add 1 without wrapping, which is why
//! Kaiyuan's writer refuses to write one); "gptq_v2" stores the zero point
//! itself. Biases stay dense `<module>.bias` tensors.
//!
//! Loading sorts the columns by group (stably) so that every group is
//! contiguous, as [`QMatrix::from_int`] requires, and keeps the order as the
//! matrix's input permutation when `g_idx` is not the trivial `c / group`
//! (act-order). Only 4 and 8 bits, and groups that are multiples of 32.

use std::collections::BTreeMap;
use std::path::Path;

use half::{bf16, f16};
use kaiyuan_tensor::quant::QMatrix;
use safetensors::Dtype as StDtype;
use serde_json::Value;

use crate::safetensors_io::RawTensor;
use crate::{ModelError, Result, Weights};

/// How a GPTQ checkpoint stores its zero points (`checkpoint_format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointFormat {
    /// "gptq": `zero − 1` (AutoGPTQ's historical layout, what optimum and
    /// transformers write).
    V1,
    /// "gptq_v2": the zero point itself (GPTQModel's internal layout).
    V2,
}

impl CheckpointFormat {
    /// The `checkpoint_format` value: `gptq` or `gptq_v2`.
    pub fn name(self) -> &'static str {
        match self {
            CheckpointFormat::V1 => "gptq",
            CheckpointFormat::V2 => "gptq_v2",
        }
    }

    /// What is stored for zero point `zero` (`zero − 1` for v1).
    pub fn stored_zero(self, zero: u32) -> i64 {
        match self {
            CheckpointFormat::V1 => i64::from(zero) - 1,
            CheckpointFormat::V2 => i64::from(zero),
        }
    }

    /// The zero point a stored `bits`-bit field decodes to.
    pub fn zero_from_stored(self, stored: u32, bits: u8) -> u32 {
        let mask = (1u32 << bits) - 1;
        match self {
            CheckpointFormat::V1 => (stored + 1) & mask,
            CheckpointFormat::V2 => stored & mask,
        }
    }
}

/// The parts of `quantization_config` that loading needs.
#[derive(Clone, Debug, PartialEq)]
pub struct GptqConfig {
    /// 4 or 8.
    pub bits: u8,
    /// Columns per group; `None` for `group_size: -1` (one group per row).
    pub group_size: Option<usize>,
    /// `desc_act`: act-order (a non-trivial `g_idx`).
    pub desc_act: bool,
    /// `sym`.
    pub sym: bool,
    /// `checkpoint_format` (`gptq` when absent).
    pub format: CheckpointFormat,
}

impl GptqConfig {
    /// The GPTQ settings of a `config.json` (`origin` names it in errors):
    /// `None` when it has no `quantization_config`; an error when the
    /// quantization is not GPTQ or uses something this crate cannot read
    /// (2- or 3-bit codes, another checkpoint format).
    pub fn from_config(origin: &str, config: &Value) -> Result<Option<Self>> {
        let Some(q) = config.get("quantization_config") else {
            return Ok(None);
        };
        if q.is_null() {
            return Ok(None);
        }
        let field = |name: &str| format!("quantization_config.{name}");
        let method = q
            .get("quant_method")
            .and_then(Value::as_str)
            .unwrap_or("gptq");
        if method != "gptq" {
            return Err(ModelError::Unsupported {
                origin: origin.to_string(),
                what: format!(
                    "quantization method `{method}` (only `gptq` checkpoints are read; GGUF files load too)"
                ),
            });
        }
        let bits = q
            .get("bits")
            .and_then(Value::as_u64)
            .ok_or_else(|| ModelError::config(origin, field("bits"), "missing or not a number"))?;
        if bits != 4 && bits != 8 {
            return Err(ModelError::Unsupported {
                origin: origin.to_string(),
                what: format!("GPTQ with {bits}-bit codes (only 4 and 8 are supported)"),
            });
        }
        let group_size = match q.get("group_size").and_then(Value::as_i64) {
            Some(-1) => None,
            Some(g) if g > 0 => Some(g as usize),
            Some(g) => {
                return Err(ModelError::config(
                    origin,
                    field("group_size"),
                    format!("{g} (expected a positive size or -1)"),
                ));
            }
            None => {
                return Err(ModelError::config(
                    origin,
                    field("group_size"),
                    "missing or not an integer",
                ));
            }
        };
        let flag =
            |name: &str, default: bool| q.get(name).and_then(Value::as_bool).unwrap_or(default);
        let format = match q
            .get("checkpoint_format")
            .or_else(|| q.get("format"))
            .and_then(Value::as_str)
            .unwrap_or("gptq")
        {
            "gptq" => CheckpointFormat::V1,
            "gptq_v2" => CheckpointFormat::V2,
            other => {
                return Err(ModelError::Unsupported {
                    origin: origin.to_string(),
                    what: format!(
                        "GPTQ checkpoint_format `{other}` (supported: `gptq`, `gptq_v2`)"
                    ),
                });
            }
        };
        Ok(Some(Self {
            bits: bits as u8,
            group_size,
            desc_act: flag("desc_act", false),
            sym: flag("sym", true),
            format,
        }))
    }
}

/// The four tensors of one GPTQ linear layer, as stored (see the module
/// docs for the layout). Words are the stored int32 values.
#[derive(Clone, Debug, PartialEq)]
pub struct GptqTensors {
    /// 4 or 8.
    pub bits: u8,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// Columns per group (`cols` for per-channel).
    pub group_size: usize,
    /// Number of groups, `⌈cols / group_size⌉` (the last one is shorter
    /// when the group size does not divide the columns).
    pub groups: usize,
    /// (cols / pf, rows) packed codes.
    pub qweight: Vec<i32>,
    /// (groups, rows / pf) packed zero points (stored form).
    pub qzeros: Vec<i32>,
    /// (groups, rows) scales.
    pub scales: Vec<f16>,
    /// (cols) the group of each input column.
    pub g_idx: Vec<i32>,
}

impl GptqTensors {
    /// Codes per 32-bit word.
    pub fn pack_factor(&self) -> usize {
        32 / usize::from(self.bits)
    }

    /// Shape of `qweight`: (cols / pf, rows).
    pub fn qweight_shape(&self) -> [usize; 2] {
        [self.cols / self.pack_factor(), self.rows]
    }

    /// Shape of `qzeros`: (groups, rows / pf).
    pub fn qzeros_shape(&self) -> [usize; 2] {
        [self.groups, self.rows / self.pack_factor()]
    }

    /// Shape of `scales`: (groups, rows).
    pub fn scales_shape(&self) -> [usize; 2] {
        [self.groups, self.rows]
    }

    /// The code of (row `r`, input column `c`).
    pub fn code(&self, r: usize, c: usize) -> u8 {
        let pf = self.pack_factor();
        let word = self.qweight[(c / pf) * self.rows + r] as u32;
        ((word >> (u32::from(self.bits) * (c % pf) as u32)) & ((1 << self.bits) - 1)) as u8
    }

    /// The stored zero field of (group `g`, row `r`).
    pub fn stored_zero(&self, g: usize, r: usize) -> u32 {
        let pf = self.pack_factor();
        let word = self.qzeros[g * (self.rows / pf) + r / pf] as u32;
        (word >> (u32::from(self.bits) * (r % pf) as u32)) & ((1 << self.bits) - 1)
    }

    /// The layer as a kernel-ready matrix: columns sorted by group, with
    /// `g_idx`'s order as the input permutation unless it is trivial.
    /// `module` names the layer in errors.
    ///
    /// ```
    /// use kaiyuan_models::gptq_format::{CheckpointFormat, GptqTensors};
    /// // 8 × 32, 4-bit, one group; every code 3, zero 1 (stored 0), scale 0.5.
    /// let t = GptqTensors {
    ///     bits: 4, rows: 8, cols: 32, group_size: 32, groups: 1,
    ///     qweight: vec![0x3333_3333; 4 * 8],
    ///     qzeros: vec![0],
    ///     scales: vec![half::f16::from_f32(0.5); 8],
    ///     g_idx: vec![0; 32],
    /// };
    /// let w = t.to_qmatrix("demo", CheckpointFormat::V1).unwrap();
    /// assert_eq!(w.dequantize(), vec![1.0; 8 * 32]);
    /// ```
    pub fn to_qmatrix(&self, module: &str, format: CheckpointFormat) -> Result<QMatrix> {
        let bad = |message: String| ModelError::invalid(module, message);
        if self.bits != 4 && self.bits != 8 {
            return Err(bad(format!("{} bits (supported: 4, 8)", self.bits)));
        }
        let pf = self.pack_factor();
        if self.rows == 0 || self.cols == 0 || self.groups == 0 {
            return Err(bad(format!(
                "empty layer ({} × {}, {} groups)",
                self.rows, self.cols, self.groups
            )));
        }
        if !self.cols.is_multiple_of(pf) || !self.rows.is_multiple_of(pf) {
            return Err(bad(format!(
                "{} × {} cannot be packed {pf} codes per int32 word",
                self.rows, self.cols
            )));
        }
        let group = self.group_size;
        if group == 0 || self.groups != self.cols.div_ceil(group) {
            return Err(bad(format!(
                "{} groups for {} input columns in groups of {group}",
                self.groups, self.cols
            )));
        }
        for (name, len, shape) in [
            ("qweight", self.qweight.len(), self.qweight_shape()),
            ("qzeros", self.qzeros.len(), self.qzeros_shape()),
            ("scales", self.scales.len(), self.scales_shape()),
            ("g_idx", self.g_idx.len(), [self.cols, 1]),
        ] {
            if len != shape[0] * shape[1] {
                return Err(bad(format!(
                    "`{name}` has {len} values, expected {shape:?}"
                )));
            }
        }
        // Columns sorted by group, stably; every group must be full.
        let mut count = vec![0usize; self.groups];
        for (c, &g) in self.g_idx.iter().enumerate() {
            match usize::try_from(g).ok().filter(|&g| g < self.groups) {
                Some(g) => count[g] += 1,
                None => {
                    return Err(bad(format!(
                        "g_idx[{c}] = {g} is not a group of 0..{}",
                        self.groups
                    )));
                }
            }
        }
        let expected = |g: usize| group.min(self.cols - g * group);
        if let Some(g) = (0..self.groups).find(|&g| count[g] != expected(g)) {
            return Err(bad(format!(
                "g_idx gives group {g} {} columns; it needs {}",
                count[g],
                expected(g)
            )));
        }
        let mut order: Vec<usize> = (0..self.cols).collect();
        order.sort_by_key(|&c| self.g_idx[c]);
        let identity = order.iter().enumerate().all(|(j, &c)| j == c);
        let mut codes = vec![0u8; self.rows * self.cols];
        for (j, &c) in order.iter().enumerate() {
            for r in 0..self.rows {
                codes[r * self.cols + j] = self.code(r, c);
            }
        }
        let mut scales = Vec::with_capacity(self.rows * self.groups);
        let mut mins = Vec::with_capacity(self.rows * self.groups);
        for r in 0..self.rows {
            for g in 0..self.groups {
                let s = self.scales[g * self.rows + r].to_f32();
                let z = format.zero_from_stored(self.stored_zero(g, r), self.bits) as f32;
                scales.push(s);
                // s is an f16 and z < 256: s·z is exact in f32.
                mins.push(-s * z);
            }
        }
        let permutation = (!identity).then(|| order.iter().map(|&c| c as u32).collect());
        QMatrix::from_int(
            self.bits,
            group,
            self.rows,
            self.cols,
            &codes,
            scales,
            mins,
            permutation,
        )
        .map_err(|e| bad(e.to_string()))
    }
}

/// One tensor kept aside while the files are read.
struct Part {
    file: String,
    dtype: StDtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

const PARTS: [&str; 4] = ["qweight", "qzeros", "scales", "g_idx"];

/// Reads a GPTQ model directory: every dense tensor as
/// [`crate::safetensors_io::read_dir`] does, and every
/// `<module>.{qweight,qzeros,scales,g_idx}` set as the quantized
/// `<module>.weight`.
pub fn read_dir(dir: &Path, config: &GptqConfig) -> Result<Weights> {
    let mut parts: BTreeMap<String, BTreeMap<&'static str, Part>> = BTreeMap::new();
    let mut weights =
        crate::safetensors_io::read_dir_with(dir, &mut |file, raw: RawTensor<'_>| {
            let Some((module, part)) = PARTS.iter().find_map(|p| {
                raw.name
                    .strip_suffix(p)
                    .and_then(|m| m.strip_suffix('.'))
                    .map(|m| (m, *p))
            }) else {
                return Ok(false);
            };
            parts.entry(module.to_string()).or_default().insert(
                part,
                Part {
                    file: file.display().to_string(),
                    dtype: raw.dtype,
                    shape: raw.shape.to_vec(),
                    bytes: raw.bytes.to_vec(),
                },
            );
            Ok(true)
        })?;
    for (module, set) in parts {
        let matrix = layer(dir, &module, &set, config)?;
        weights.insert_quantized(format!("{module}.weight"), matrix);
    }
    Ok(weights)
}

fn words(module: &str, name: &str, part: &Part) -> Result<Vec<i32>> {
    match part.dtype {
        StDtype::I32 | StDtype::U32 => Ok(part
            .bytes
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()),
        StDtype::I64 if name == "g_idx" => part
            .bytes
            .chunks_exact(8)
            .map(|b| {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                i32::try_from(i64::from_le_bytes(a)).map_err(|_| {
                    ModelError::format(
                        &part.file,
                        format!("tensor `{module}.g_idx`: a group index does not fit in int32"),
                    )
                })
            })
            .collect(),
        other => Err(ModelError::format(
            &part.file,
            format!("tensor `{module}.{name}` has dtype {other:?}, expected I32"),
        )),
    }
}

fn layer(
    dir: &Path,
    module: &str,
    set: &BTreeMap<&'static str, Part>,
    config: &GptqConfig,
) -> Result<QMatrix> {
    let get = |name: &str| {
        set.get(name).ok_or_else(|| ModelError::MissingTensor {
            origin: dir.display().to_string(),
            name: format!("{module}.{name}"),
        })
    };
    let qweight = get("qweight")?;
    let qzeros = get("qzeros")?;
    let scales = get("scales")?;
    let shape_error = |part: &Part, name: &str, expected: Vec<usize>| ModelError::TensorShape {
        origin: part.file.clone(),
        name: format!("{module}.{name}"),
        expected,
        actual: part.shape.clone(),
    };
    let bits = config.bits;
    let pf = 32 / usize::from(bits);
    let &[packed_cols, rows] = qweight.shape.as_slice() else {
        return Err(ModelError::format(
            &qweight.file,
            format!(
                "tensor `{module}.qweight` has shape {:?}, expected 2 dimensions (in / {pf}, out)",
                qweight.shape
            ),
        ));
    };
    let cols = packed_cols * pf;
    let &[groups, scale_rows] = scales.shape.as_slice() else {
        return Err(shape_error(scales, "scales", vec![0, rows]));
    };
    if scale_rows != rows || groups == 0 {
        return Err(shape_error(scales, "scales", vec![groups.max(1), rows]));
    }
    let group = config.group_size.unwrap_or(cols);
    if groups != cols.div_ceil(group) {
        return Err(ModelError::format(
            &scales.file,
            format!(
                "tensor `{module}.scales` holds {groups} groups, but {cols} input columns in groups of {group} (quantization_config.group_size) make {}",
                cols.div_ceil(group)
            ),
        ));
    }
    if qzeros.shape != [groups, rows / pf] || rows % pf != 0 {
        return Err(shape_error(qzeros, "qzeros", vec![groups, rows / pf]));
    }
    let g_idx = match set.get("g_idx") {
        Some(part) => {
            if part.shape != [cols] {
                return Err(shape_error(part, "g_idx", vec![cols]));
            }
            words(module, "g_idx", part)?
        }
        // Older files omit g_idx when it is trivial.
        None if !config.desc_act => (0..cols).map(|c| (c / group) as i32).collect(),
        None => {
            return Err(ModelError::MissingTensor {
                origin: dir.display().to_string(),
                name: format!("{module}.g_idx (desc_act is set)"),
            });
        }
    };
    let scale_values: Vec<f16> = match scales.dtype {
        StDtype::F16 => scales
            .bytes
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]))
            .collect(),
        StDtype::BF16 => scales
            .bytes
            .chunks_exact(2)
            .map(|b| f16::from_f32(bf16::from_le_bytes([b[0], b[1]]).to_f32()))
            .collect(),
        other => {
            return Err(ModelError::format(
                &scales.file,
                format!("tensor `{module}.scales` has dtype {other:?}, expected F16"),
            ));
        }
    };
    if scales.dtype == StDtype::BF16 {
        // bf16 → f16 is exact only inside f16's range; refuse otherwise.
        let bytes = &scales.bytes;
        for (i, s) in scale_values.iter().enumerate() {
            let b = bf16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]);
            if s.to_f32() != b.to_f32() {
                return Err(ModelError::Unsupported {
                    origin: scales.file.clone(),
                    what: format!(
                        "bf16 scale {} of `{module}.scales` (not representable in f16)",
                        b
                    ),
                });
            }
        }
    }
    let tensors = GptqTensors {
        bits,
        rows,
        cols,
        group_size: group,
        groups,
        qweight: words(module, "qweight", qweight)?,
        qzeros: words(module, "qzeros", qzeros)?,
        scales: scale_values,
        g_idx,
    };
    tensors
        .to_qmatrix(module, config.format)
        .map_err(|e| ModelError::format(&qweight.file, e.to_string()))
}
