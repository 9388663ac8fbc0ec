//! ggml's quantized blocks (the GGUF tensor types Q8_0, Q4_0, Q4_1, Q5_0,
//! Q5_1, Q4_K, Q5_K and Q6_K): layout constants, decoding to `f32` and encoding from it.
//!
//! Each decoder follows ggml's `dequantize_row_*` (ggml-quants.c) with the
//! operations in the order the `gguf` Python package's `gguf.quants` does
//! them, in `f32` and without fused multiply-adds, so the results are bit
//! for bit those of `gguf.quants.dequantize` (checked by the models crate's
//! `tests/gguf.rs` against `fixtures/gguf/dequant/`).
//!
//! Each encoder follows its reference operation by operation in `f32`
//! (Rust never contracts to fused multiply-adds), so its bytes are those of
//! `gguf.quants.quantize` (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) or of ggml's
//! `quantize_row_*_ref` (Q4_K, Q5_K, Q6_K) (checked by
//! `tests/quant_blocks.rs` against `fixtures/quant/blocks/`).

use half::f16;

use crate::{Result, TensorError};

/// A ggml block type: a fixed number of elements stored in a fixed number
/// of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum BlockType {
    /// 32 elements: `d` (f16), 32 × i8; `y = d·q`.
    Q8_0,
    /// 32 elements: `d` (f16), 16 bytes of nibbles; `y = d·(q − 8)`.
    Q4_0,
    /// 32 elements: `d`, `m` (f16), 16 bytes of nibbles; `y = d·q + m`.
    Q4_1,
    /// 32 elements: `d` (f16), 32 high bits (`qh`, little-endian u32; bit
    /// `e` belongs to element `e`), 16 bytes of nibbles; `y = d·(q − 16)`.
    /// llama.cpp's fallback for Q4_K rows that are not whole 256-element
    /// blocks.
    Q5_0,
    /// As Q5_0 with a minimum: `d`, `m` (f16), `qh`, nibbles; `y = d·q + m`.
    /// The fallback for Q5_K.
    Q5_1,
    /// 256 elements in 8 sub-blocks of 32 with 6-bit scales and minimums.
    Q4_K,
    /// As Q4_K with a fifth bit per element.
    Q5_K,
    /// 256 elements, 6 bits each, in 16 sub-blocks of 16 with i8 scales.
    Q6_K,
}

impl BlockType {
    /// Every block type, in ggml id order.
    pub const ALL: [BlockType; 8] = [
        BlockType::Q4_0,
        BlockType::Q4_1,
        BlockType::Q5_0,
        BlockType::Q5_1,
        BlockType::Q8_0,
        BlockType::Q4_K,
        BlockType::Q5_K,
        BlockType::Q6_K,
    ];

    /// Elements per block.
    ///
    /// ```
    /// assert_eq!(kaiyuan_tensor::quant::BlockType::Q4_K.block_size(), 256);
    /// ```
    pub const fn block_size(self) -> usize {
        match self {
            BlockType::Q8_0
            | BlockType::Q4_0
            | BlockType::Q4_1
            | BlockType::Q5_0
            | BlockType::Q5_1 => 32,
            BlockType::Q4_K | BlockType::Q5_K | BlockType::Q6_K => 256,
        }
    }

    /// Bytes per block.
    pub const fn type_size(self) -> usize {
        match self {
            BlockType::Q8_0 => 34,
            BlockType::Q4_0 => 18,
            BlockType::Q4_1 => 20,
            BlockType::Q5_0 => 22,
            BlockType::Q5_1 => 24,
            BlockType::Q4_K => 144,
            BlockType::Q5_K => 176,
            BlockType::Q6_K => 210,
        }
    }

    /// ggml's name, e.g. `Q4_K`.
    pub const fn name(self) -> &'static str {
        match self {
            BlockType::Q8_0 => "Q8_0",
            BlockType::Q4_0 => "Q4_0",
            BlockType::Q4_1 => "Q4_1",
            BlockType::Q5_0 => "Q5_0",
            BlockType::Q5_1 => "Q5_1",
            BlockType::Q4_K => "Q4_K",
            BlockType::Q5_K => "Q5_K",
            BlockType::Q6_K => "Q6_K",
        }
    }

    /// The type named `name` (ggml's spelling, any case: `q4_k`, `Q8_0`).
    pub fn from_name(name: &str) -> Option<BlockType> {
        Self::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// Bytes of `elements` values (a whole number of blocks), or `None`
    /// when `elements` is not a multiple of the block size.
    pub const fn bytes_for(self, elements: usize) -> Option<usize> {
        if elements.is_multiple_of(self.block_size()) {
            Some(elements / self.block_size() * self.type_size())
        } else {
            None
        }
    }
}

impl std::fmt::Display for BlockType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Decodes `data`, a whole number of `ty` blocks, into `out`, which must
/// hold exactly their elements. Runs on the calling thread.
///
/// ```
/// use kaiyuan_tensor::quant::{BlockType, dequantize_blocks};
/// // One Q8_0 block: f16 scale 0.5, then 32 signed bytes.
/// let mut block = vec![0x00, 0x38];
/// block.extend((0..32).map(|i| (i as i8 - 16) as u8));
/// let mut values = [0f32; 32];
/// dequantize_blocks(BlockType::Q8_0, &block, &mut values).unwrap();
/// assert_eq!(values[0], -8.0);
/// assert_eq!(values[31], 7.5);
/// ```
pub fn dequantize_blocks(ty: BlockType, data: &[u8], out: &mut [f32]) -> Result<()> {
    let size = ty.type_size();
    if !data.len().is_multiple_of(size) || out.len() != data.len() / size * ty.block_size() {
        return Err(TensorError::invalid(
            "dequantize_blocks",
            format!(
                "{} bytes of {ty} ({size}-byte blocks of {}) cannot fill {} values",
                data.len(),
                ty.block_size(),
                out.len()
            ),
        ));
    }
    match ty {
        BlockType::Q8_0 => blocks(data, out, q8_0),
        BlockType::Q4_0 => blocks(data, out, q4_0),
        BlockType::Q4_1 => blocks(data, out, q4_1),
        BlockType::Q5_0 => blocks(data, out, q5_0),
        BlockType::Q5_1 => blocks(data, out, q5_1),
        BlockType::Q4_K => blocks(data, out, q4_k),
        BlockType::Q5_K => blocks(data, out, q5_k),
        BlockType::Q6_K => blocks(data, out, q6_k),
    }
    Ok(())
}

/// Runs `kernel` over each `B`-byte block of `data` and its `E` outputs.
fn blocks<const B: usize, const E: usize>(
    data: &[u8],
    out: &mut [f32],
    kernel: fn(&[u8; B], &mut [f32; E]),
) {
    for (b, o) in data.chunks_exact(B).zip(out.chunks_exact_mut(E)) {
        if let (Ok(b), Ok(o)) = (<&[u8; B]>::try_from(b), <&mut [f32; E]>::try_from(o)) {
            kernel(b, o);
        }
    }
}

/// The little-endian f16 at byte `i` of a block, as f32 (exact).
fn half_at<const B: usize>(b: &[u8; B], i: usize) -> f32 {
    match b.get(i..i + 2) {
        Some(&[lo, hi]) => f16::from_le_bytes([lo, hi]).to_f32(),
        _ => f32::NAN,
    }
}

/// Q8_0: `d` (f16), 32 × i8; `y = q·d`.
fn q8_0(b: &[u8; 34], y: &mut [f32; 32]) {
    let d = half_at(b, 0);
    for (j, y) in y.iter_mut().enumerate() {
        *y = f32::from(b[2 + j] as i8) * d;
    }
}

/// Q4_0: `d` (f16), 16 bytes of nibbles (low nibbles are elements 0–15,
/// high nibbles 16–31); `y = (q − 8)·d`.
fn q4_0(b: &[u8; 18], y: &mut [f32; 32]) {
    let d = half_at(b, 0);
    for j in 0..16 {
        let q = b[2 + j];
        y[j] = d * f32::from((q & 0x0F) as i8 - 8);
        y[j + 16] = d * f32::from((q >> 4) as i8 - 8);
    }
}

/// Q4_1: `d`, `m` (f16), 16 bytes of nibbles; `y = d·q + m`.
fn q4_1(b: &[u8; 20], y: &mut [f32; 32]) {
    let d = half_at(b, 0);
    let m = half_at(b, 2);
    for j in 0..16 {
        let q = b[4 + j];
        y[j] = d * f32::from(q & 0x0F) + m;
        y[j + 16] = d * f32::from(q >> 4) + m;
    }
}

/// The 32 five-bit codes of a Q5_0/Q5_1 block from its `qh` (4 bytes) and
/// nibbles (16 bytes): element `j < 16` is the low nibble of byte `j`,
/// element `j + 16` its high nibble, and bit `e` of `qh` is element `e`'s
/// fifth bit.
#[inline(always)]
pub(crate) fn codes_q5(qh: [u8; 4], qs: &[u8]) -> [u8; 32] {
    let high = u32::from_le_bytes(qh);
    let mut q = [0u8; 32];
    for j in 0..16 {
        q[j] = (qs[j] & 0x0F) | ((((high >> j) & 1) as u8) << 4);
        q[j + 16] = (qs[j] >> 4) | ((((high >> (j + 16)) & 1) as u8) << 4);
    }
    q
}

/// Q5_0: `d` (f16), `qh`, 16 bytes of nibbles; `y = (q − 16)·d`.
fn q5_0(b: &[u8; 22], y: &mut [f32; 32]) {
    let d = half_at(b, 0);
    let q = codes_q5(sub(b, 2), &b[6..]);
    for (y, &q) in y.iter_mut().zip(&q) {
        *y = d * f32::from(q as i8 - 16);
    }
}

/// Q5_1: `d`, `m` (f16), `qh`, 16 bytes of nibbles; `y = d·q + m`.
fn q5_1(b: &[u8; 24], y: &mut [f32; 32]) {
    let d = half_at(b, 0);
    let m = half_at(b, 2);
    let q = codes_q5(sub(b, 4), &b[8..]);
    for (y, &q) in y.iter_mut().zip(&q) {
        *y = d * f32::from(q) + m;
    }
}

/// The 6-bit scales and minimums of the 8 sub-blocks of a Q4_K/Q5_K block,
/// packed in 12 bytes (ggml's `get_scale_min_k4`); `s` holds at least 12.
#[inline(always)]
pub(crate) fn scales_mins_k4(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..4 {
        sc[j] = s[j] & 0x3F;
        mn[j] = s[j + 4] & 0x3F;
        sc[j + 4] = (s[j + 8] & 0x0F) | ((s[j] >> 2) & 0x30);
        mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 2) & 0x30);
    }
    (sc, mn)
}

fn sub<const N: usize>(b: &[u8], start: usize) -> [u8; N] {
    b.get(start..start + N)
        .and_then(|s| s.try_into().ok())
        .unwrap_or([0; N])
}

/// Q4_K: `d`, `dmin` (f16), 12 bytes of 6-bit scales/minimums, 128 bytes of
/// nibbles. Sub-block `j` (32 elements) reads the low (`j` even) or high
/// nibbles of bytes `32·(j/2)…`; `y = (d·sc_j)·q − dmin·m_j`.
fn q4_k(b: &[u8; 144], y: &mut [f32; 256]) {
    let d = half_at(b, 0);
    let dmin = half_at(b, 2);
    let (sc, mn) = scales_mins_k4(&sub::<12>(b, 4));
    let qs: [u8; 128] = sub(b, 16);
    for j in 0..8 {
        let dl = d * f32::from(sc[j]);
        let ml = dmin * f32::from(mn[j]);
        let shift = 4 * (j % 2);
        for l in 0..32 {
            let q = (qs[32 * (j / 2) + l] >> shift) & 0x0F;
            y[32 * j + l] = dl * f32::from(q) - ml;
        }
    }
}

/// Q5_K: as Q4_K with a fifth bit per element: bit `j` of byte `l` of the
/// 32-byte `qh` plane is the high bit of element `l` of sub-block `j`.
fn q5_k(b: &[u8; 176], y: &mut [f32; 256]) {
    let d = half_at(b, 0);
    let dmin = half_at(b, 2);
    let (sc, mn) = scales_mins_k4(&sub::<12>(b, 4));
    let qh: [u8; 32] = sub(b, 16);
    let qs: [u8; 128] = sub(b, 48);
    for j in 0..8 {
        let dl = d * f32::from(sc[j]);
        let ml = dmin * f32::from(mn[j]);
        let shift = 4 * (j % 2);
        for l in 0..32 {
            let low = (qs[32 * (j / 2) + l] >> shift) & 0x0F;
            let high = (qh[l] >> j) & 1;
            y[32 * j + l] = dl * f32::from(low | (high << 4)) - ml;
        }
    }
}

/// Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit high parts, 16 i8
/// scales (one per 16 elements), `d` (f16); `y = (d·sc)·(q − 32)`.
/// Element `e` = 128·h + r takes its low four bits from nibble `r / 64` of
/// `ql[64·h + r % 64]` and its high two from pair `r / 32` of
/// `qh[32·h + r % 32]`.
fn q6_k(b: &[u8; 210], y: &mut [f32; 256]) {
    let ql: [u8; 128] = sub(b, 0);
    let qh: [u8; 64] = sub(b, 128);
    let scales: [u8; 16] = sub(b, 192);
    let d = half_at(b, 208);
    for (e, y) in y.iter_mut().enumerate() {
        let (h, r) = (e / 128, e % 128);
        let low = (ql[64 * h + r % 64] >> (4 * (r / 64))) & 0x0F;
        let high = (qh[32 * h + r % 32] >> (2 * (r / 32))) & 0x03;
        let q = (low | (high << 4)) as i8 - 32;
        let dl = d * f32::from(scales[e / 16] as i8);
        *y = dl * f32::from(q);
    }
}

// ---------------------------------------------------------------------------
// Encoders
// ---------------------------------------------------------------------------

/// Encodes `values` (a whole number of `ty` blocks) as `ty` blocks and
/// appends them to `out`. Runs on the calling thread.
///
/// The bytes are those of the references, bit for bit:
/// - Q8_0, Q4_0, Q4_1: `gguf.quants.quantize` of the `gguf` Python package
///   0.19.0 (which, for finite input, equals ggml's `quantize_row_*_ref`);
/// - Q4_K, Q5_K, Q6_K: ggml's `quantize_row_*_ref` (no importance matrix;
///   gguf-py has no K-quant encoder), as built without FMA contraction.
///
/// Checked against `fixtures/quant/blocks/` by `tests/quant_blocks.rs`.
///
/// Errors (naming `quantize_blocks`, with `out` left as it was) when
/// `values.len()` is not a multiple of the block size, when a value is NaN
/// or infinite, or when a block's f16 scale or minimum would overflow
/// (magnitudes beyond about 5·10⁵ for Q4_0, 10⁶ for Q4_1, 8·10⁶ for Q8_0,
/// ~6·10⁷ for the K-quants), where the references would write an infinite
/// scale (or, for Q6_K blocks beyond ~10¹⁹, whose fit goes NaN, zeros).
///
/// ```
/// use kaiyuan_tensor::quant::{BlockType, dequantize_blocks, quantize_blocks};
/// let values: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect();
/// let mut bytes = Vec::new();
/// quantize_blocks(BlockType::Q8_0, &values, &mut bytes).unwrap();
/// assert_eq!(bytes.len(), 34);
/// let mut back = [0f32; 32];
/// dequantize_blocks(BlockType::Q8_0, &bytes, &mut back).unwrap();
/// for (x, y) in values.iter().zip(&back) {
///     assert!((x - y).abs() <= 0.07); // half a step of 16/127
/// }
/// assert!(quantize_blocks(BlockType::Q8_0, &[f32::NAN; 32], &mut bytes).is_err());
/// assert!(quantize_blocks(BlockType::Q4_K, &values, &mut bytes).is_err()); // 32 < 256
/// ```
pub fn quantize_blocks(ty: BlockType, values: &[f32], out: &mut Vec<u8>) -> Result<()> {
    const OP: &str = "quantize_blocks";
    let n = ty.block_size();
    if !values.len().is_multiple_of(n) {
        return Err(TensorError::invalid(
            OP,
            format!(
                "{} values are not a whole number of {ty} blocks of {n}",
                values.len()
            ),
        ));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(TensorError::invalid(
            OP,
            format!("value {i} is {} (only finite values encode)", values[i]),
        ));
    }
    let start = out.len();
    out.reserve(values.len() / n * ty.type_size());
    let result = match ty {
        BlockType::Q8_0 => encode(values, out, encode_q8_0),
        BlockType::Q4_0 => encode(values, out, encode_q4_0),
        BlockType::Q4_1 => encode(values, out, encode_q4_1),
        BlockType::Q5_0 => encode(values, out, encode_q5_0),
        BlockType::Q5_1 => encode(values, out, encode_q5_1),
        BlockType::Q4_K => encode(values, out, encode_q4_k),
        BlockType::Q5_K => encode(values, out, encode_q5_k),
        BlockType::Q6_K => encode(values, out, encode_q6_k),
    };
    result.map_err(|block| {
        out.truncate(start);
        TensorError::invalid(
            OP,
            format!(
                "{ty} block {block} (values {}..{}) has a scale or minimum beyond f16's range",
                block * n,
                (block + 1) * n
            ),
        )
    })
}

/// A scale or minimum that does not fit in f16 (the block cannot be
/// encoded faithfully).
struct Overflow;

/// Runs `kernel` over each `E`-value block of `values`, appending its `B`
/// bytes to `out`; on failure, the index of the block that failed.
fn encode<const E: usize, const B: usize>(
    values: &[f32],
    out: &mut Vec<u8>,
    kernel: fn(&[f32; E], &mut [u8; B]) -> std::result::Result<(), Overflow>,
) -> std::result::Result<(), usize> {
    for (i, x) in values.chunks_exact(E).enumerate() {
        let mut block = [0u8; B];
        let x = <&[f32; E]>::try_from(x).map_err(|_| i)?;
        kernel(x, &mut block).map_err(|Overflow| i)?;
        out.extend_from_slice(&block);
    }
    Ok(())
}

/// `v` rounded to f16 (nearest, ties to even, as numpy's `astype(float16)`
/// and ggml's `GGML_FP32_TO_FP16`), or `Overflow` when it rounds to ±∞ or
/// is not finite.
fn to_half(v: f32) -> std::result::Result<f16, Overflow> {
    let h = f16::from_f32(v);
    if h.is_finite() { Ok(h) } else { Err(Overflow) }
}

/// Writes the little-endian f16 `h` at byte `i` of `b`.
fn put_half<const B: usize>(b: &mut [u8; B], i: usize, h: f16) {
    if let Some(s) = b.get_mut(i..i + 2) {
        s.copy_from_slice(&h.to_le_bytes());
    }
}

/// The inverse scale `1/d`, or 0 when `d` is 0 (gguf-py's
/// `np.where(d == 0, 0, 1 / d)`, ggml's `d ? 1.0f/d : 0.0f`). For a
/// subnormal `d` it is +∞, as in both references.
fn inverse(d: f32) -> f32 {
    if d == 0.0 { 0.0 } else { 1.0 / d }
}

/// `v` converted to an 8-bit integer as numpy's float→int8/uint8 cast and
/// C's `(int8_t)` do on x86-64: truncation to i32 (`cvttss2si`, which gives
/// `i32::MIN` for NaN and out-of-range values), then the low byte. Only
/// the NaN/∞ of subnormal blocks (where `1/d` overflows) reach the odd
/// cases; their block decodes to zeros either way.
fn truncate_to_byte(v: f32) -> u8 {
    let i = if v.is_nan() || !(-2_147_483_648.0..2_147_483_648.0).contains(&v) {
        i32::MIN
    } else {
        v as i32
    };
    i as u8
}

/// gguf-py's `np_roundf`: rounds half away from zero through
/// `floor(a) + floor(2·(a − floor(a)))`, which also maps ±∞ to NaN.
fn np_roundf(n: f32) -> f32 {
    let a = n.abs();
    let floored = a.floor();
    let b = floored + (2.0 * (a - floored)).floor();
    let sign = if n > 0.0 {
        1.0
    } else if n < 0.0 {
        -1.0
    } else if n.is_nan() {
        f32::NAN
    } else {
        0.0
    };
    sign * b
}

/// Q8_0 (gguf-py `Q8_0.quantize_blocks`): `d = amax/127`,
/// `q = roundf(x/d)` (half away from zero).
fn encode_q8_0(x: &[f32; 32], b: &mut [u8; 34]) -> std::result::Result<(), Overflow> {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = inverse(d);
    put_half(b, 0, to_half(d)?);
    for (q, &v) in b[2..].iter_mut().zip(x) {
        *q = truncate_to_byte(np_roundf(v * id));
    }
    Ok(())
}

/// The first element of largest magnitude (numpy's `abs(x).argmax()`,
/// ggml's `if (amax < fabsf(v))` scan), with its sign.
fn signed_absmax(x: &[f32]) -> f32 {
    let mut amax = 0f32;
    let mut max = 0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// The codes of the symmetric legacy formats (Q4_0 with 16 levels, Q5_0
/// with 32), as gguf-py's `quantize_blocks`: `d = max/−(levels/2)` with
/// `max` the signed value of largest magnitude, `q = min(levels − 1,
/// trunc(x/d + levels/2 + 0.5))`. Returns `(d, q)`.
fn symmetric_codes(x: &[f32; 32], levels: u8) -> (f32, [u8; 32]) {
    let half = f32::from(levels / 2);
    let d = signed_absmax(x) / -half;
    let id = inverse(d);
    let offset = half + 0.5;
    (
        d,
        x.map(|v| truncate_to_byte((v * id + offset).trunc()).min(levels - 1)),
    )
}

/// The codes of the legacy formats with a minimum (Q4_1 with 16 levels,
/// Q5_1 with 32), as gguf-py's `quantize_blocks`: `d = (max − min)/(levels
/// − 1)`, `m = min`, `q = min(levels − 1, trunc((x − min)/d + 0.5))`.
/// Returns `(d, min, q)`.
fn affine_codes(x: &[f32; 32], levels: u8) -> (f32, f32, [u8; 32]) {
    let min = x.iter().fold(f32::MAX, |m, &v| if v < m { v } else { m });
    let max = x.iter().fold(-f32::MAX, |m, &v| if v > m { v } else { m });
    let d = (max - min) / f32::from(levels - 1);
    let id = inverse(d);
    (
        d,
        min,
        x.map(|v| truncate_to_byte(((v - min) * id + 0.5).trunc()).min(levels - 1)),
    )
}

/// Packs 32 four-bit codes: elements `j` and `j + 16` share byte `j` (low,
/// high nibble), from byte `at`.
fn put_nibbles<const B: usize>(b: &mut [u8; B], at: usize, q: &[u8; 32]) {
    for j in 0..16 {
        b[at + j] = (q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4);
    }
}

/// Packs 32 five-bit codes as Q5_0/Q5_1 store them: `qh` (little-endian
/// u32, bit `e` the fifth bit of element `e`) at `at`, then their nibbles.
fn put_codes_q5<const B: usize>(b: &mut [u8; B], at: usize, q: &[u8; 32]) {
    let mut high = 0u32;
    for (e, &q) in q.iter().enumerate() {
        high |= u32::from(q >> 4 & 1) << e;
    }
    b[at..at + 4].copy_from_slice(&high.to_le_bytes());
    put_nibbles(b, at + 4, q);
}

/// Q4_0 (gguf-py `Q4_0.quantize_blocks`): [`symmetric_codes`] with 16
/// levels, `d` then the nibbles.
fn encode_q4_0(x: &[f32; 32], b: &mut [u8; 18]) -> std::result::Result<(), Overflow> {
    let (d, q) = symmetric_codes(x, 16);
    put_half(b, 0, to_half(d)?);
    put_nibbles(b, 2, &q);
    Ok(())
}

/// Q4_1 (gguf-py `Q4_1.quantize_blocks`): [`affine_codes`] with 16 levels,
/// `d`, `m`, then the nibbles.
fn encode_q4_1(x: &[f32; 32], b: &mut [u8; 20]) -> std::result::Result<(), Overflow> {
    let (d, min, q) = affine_codes(x, 16);
    put_half(b, 0, to_half(d)?);
    put_half(b, 2, to_half(min)?);
    put_nibbles(b, 4, &q);
    Ok(())
}

/// Q5_0 (gguf-py `Q5_0.quantize_blocks`): [`symmetric_codes`] with 32
/// levels, `d`, then `qh` and the nibbles.
fn encode_q5_0(x: &[f32; 32], b: &mut [u8; 22]) -> std::result::Result<(), Overflow> {
    let (d, q) = symmetric_codes(x, 32);
    put_half(b, 0, to_half(d)?);
    put_codes_q5(b, 2, &q);
    Ok(())
}

/// Q5_1 (gguf-py `Q5_1.quantize_blocks`): [`affine_codes`] with 32 levels,
/// `d`, `m`, then `qh` and the nibbles.
fn encode_q5_1(x: &[f32; 32], b: &mut [u8; 24]) -> std::result::Result<(), Overflow> {
    let (d, min, q) = affine_codes(x, 32);
    put_half(b, 0, to_half(d)?);
    put_half(b, 2, to_half(min)?);
    put_codes_q5(b, 4, &q);
    Ok(())
}

/// ggml's `nearest_int`: rounds to nearest, ties to even, by adding
/// 1.5·2²³ and reading the low mantissa bits. Exact for |v| ≤ 2²²; beyond
/// that (and for NaN/∞) it returns what ggml's returns, not `v.round()`.
fn nearest_int(v: f32) -> i32 {
    let bits = (v + 12_582_912.0).to_bits() as i32;
    (bits & 0x007F_FFFF) - 0x0040_0000
}

/// The settings of ggml's `make_qkx2_quants` for one K-quant type.
struct Qkx2 {
    /// Largest quant (15 or 31).
    nmax: i32,
    /// First offset of the scale search.
    rmin: f32,
    /// Step of the scale search.
    rdelta: f32,
    /// Number of steps after the first.
    nstep: i32,
}

/// ggml's `make_qkx2_quants` with `use_mad = false`: fits `x ≈ scale·L −
/// min` over the 32 elements of a sub-block with `L` in `0..=nmax`,
/// minimising the `weights`-weighted squared error over a grid of
/// candidate scales (least squares at each). Writes `l` and returns
/// `(scale, min)` (`min` ≥ 0 is subtracted).
fn make_qkx2_quants(p: &Qkx2, x: &[f32; 32], weights: &[f32; 32], l: &mut [u8; 32]) -> (f32, f32) {
    let nmax = p.nmax as f32;
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for (&v, &w) in x.iter().zip(weights).skip(1) {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
        sum_w += w;
        sum_x += w * v;
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }
    // `min` moves with the best fit so far, and so do the later candidates
    // (as in ggml).
    let quant =
        |iscale: f32, v: f32, min: f32| nearest_int(iscale * (v - min)).clamp(0, p.nmax) as u8;
    let iscale = nmax / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_mad = 0f32;
    for ((q, &v), &w) in l.iter_mut().zip(x).zip(weights) {
        *q = quant(iscale, v, min);
        let diff = scale * f32::from(*q) + min - v;
        best_mad += w * (diff * diff);
    }
    let mut laux = [0u8; 32];
    for is in 0..=p.nstep {
        let iscale = (p.rmin + p.rdelta * is as f32 + nmax) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for ((q, &v), &w) in laux.iter_mut().zip(x).zip(weights) {
            *q = quant(iscale, v, min);
            let lf = f32::from(*q);
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * v;
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut mad = 0f32;
            for ((&q, &v), &w) in laux.iter().zip(x).zip(weights) {
                let diff = this_scale * f32::from(q) + this_min - v;
                mad += w * (diff * diff);
            }
            if mad < best_mad {
                *l = laux;
                best_mad = mad;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// The shared part of ggml's `quantize_row_q4_K_ref` and
/// `quantize_row_q5_K_ref`: per 32-element sub-block, a `make_qkx2_quants`
/// fit weighted by `sqrt(mean x²) + |x|`; the 8 scales and minimums
/// quantized to 6 bits against their maxima (`d = max_scale/63`,
/// `dmin = max_min/63`, both f16) and packed into 12 bytes; then every
/// element re-quantized against its stored scale and minimum. Writes
/// `d`, `dmin` and the scales into `head` (16 bytes) and returns the
/// quants, `0..=p.nmax`.
fn encode_k4(
    p: &Qkx2,
    x: &[f32; 256],
    head: &mut [u8; 16],
) -> std::result::Result<[u8; 256], Overflow> {
    let mut l = [[0u8; 32]; 8];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let mut max_scale = 0f32;
    let mut max_min = 0f32;
    for (j, xs) in x.chunks_exact(32).enumerate() {
        let xs = <&[f32; 32]>::try_from(xs).map_err(|_| Overflow)?;
        let sum_x2 = xs.iter().fold(0f32, |s, &v| s + v * v);
        let av_x = (sum_x2 / 32.0).sqrt();
        let weights = xs.map(|v| av_x + v.abs());
        let (scale, min) = make_qkx2_quants(p, xs, &weights, &mut l[j]);
        if !scale.is_finite() || !min.is_finite() {
            return Err(Overflow);
        }
        (scales[j], mins[j]) = (scale, min);
        if scale > max_scale {
            max_scale = scale;
        }
        if min > max_min {
            max_min = min;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    // As ggml: the i32 → u8 conversion wraps (a negative scale gives 63).
    let six_bits = |v: f32| (nearest_int(v) as u8).min(63);
    let mut packed = [0u8; 12];
    for j in 0..8 {
        let ls = six_bits(inv_scale * scales[j]);
        let lm = six_bits(inv_min * mins[j]);
        if j < 4 {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (ls & 0x0F) | ((lm & 0x0F) << 4);
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
    let d = to_half(max_scale / 63.0)?;
    let dmin = to_half(max_min / 63.0)?;
    put_half(head, 0, d);
    put_half(head, 2, dmin);
    head[4..].copy_from_slice(&packed);

    let (sc, mn) = scales_mins_k4(&packed);
    let mut quants = [0u8; 256];
    for (j, (q, xs)) in quants
        .chunks_exact_mut(32)
        .zip(x.chunks_exact(32))
        .enumerate()
    {
        let dl = d.to_f32() * f32::from(sc[j]);
        if dl == 0.0 {
            // ggml keeps the quants of the fit.
            q.copy_from_slice(&l[j]);
            continue;
        }
        let dm = dmin.to_f32() * f32::from(mn[j]);
        for (q, &v) in q.iter_mut().zip(xs) {
            *q = nearest_int((v + dm) / dl).clamp(0, p.nmax) as u8;
        }
    }
    Ok(quants)
}

/// Q4_K (ggml `quantize_row_q4_K_ref`): [`encode_k4`] with 4-bit quants,
/// then sub-blocks `2i` and `2i + 1` share bytes `32·i…` (low, high
/// nibbles).
fn encode_q4_k(x: &[f32; 256], b: &mut [u8; 144]) -> std::result::Result<(), Overflow> {
    const P: Qkx2 = Qkx2 {
        nmax: 15,
        rmin: -1.0,
        rdelta: 0.1,
        nstep: 20,
    };
    let mut head = [0u8; 16];
    let l = encode_k4(&P, x, &mut head)?;
    b[..16].copy_from_slice(&head);
    for (qs, l) in b[16..].chunks_exact_mut(32).zip(l.chunks_exact(64)) {
        for (k, q) in qs.iter_mut().enumerate() {
            *q = l[k] | (l[k + 32] << 4);
        }
    }
    Ok(())
}

/// Q5_K (ggml `quantize_row_q5_K_ref`): [`encode_k4`] with 5-bit quants;
/// the low nibbles packed as Q4_K's, the fifth bit of element `l` of
/// sub-block `j` in bit `j` of `qh[l]`.
fn encode_q5_k(x: &[f32; 256], b: &mut [u8; 176]) -> std::result::Result<(), Overflow> {
    const P: Qkx2 = Qkx2 {
        nmax: 31,
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
    };
    let mut head = [0u8; 16];
    let l = encode_k4(&P, x, &mut head)?;
    b[..16].copy_from_slice(&head);
    let mut qh = [0u8; 32];
    for (i, (qs, l)) in b[48..]
        .chunks_exact_mut(32)
        .zip(l.chunks_exact(64))
        .enumerate()
    {
        for (k, q) in qs.iter_mut().enumerate() {
            let (lo, hi) = (l[k], l[k + 32]);
            qh[k] |= ((lo >> 4) << (2 * i)) | ((hi >> 4) << (2 * i + 1));
            *q = (lo & 0x0F) | ((hi & 0x0F) << 4);
        }
    }
    b[16..48].copy_from_slice(&qh);
    Ok(())
}

/// ggml's smallest group maximum (`GROUP_MAX_EPS`): below it a group is
/// all zero.
const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `make_qx_quants` with `rmse_type = 1` and no importance weights,
/// for Q6_K's 16-element sub-blocks: `x ≈ scale·(L − 32)` with `L` in
/// `0..64`, minimising the `x²`-weighted squared error over 19 candidate
/// scales. Writes `l` and returns `scale` (signed).
fn make_qx_quants(x: &[f32; 16], l: &mut [u8; 16]) -> f32 {
    const NMAX: i32 = 32;
    let max = signed_absmax(x);
    if max.abs() < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let quant = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-NMAX, NMAX - 1);
    // The x²-weighted sums Σw·x·l and Σw·l² at `iscale`.
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for &v in x {
            let lf = quant(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * lf;
            suml2 += w * lf * lf;
        }
        (sumlx, suml2)
    };
    let fill = |iscale: f32, l: &mut [u8; 16]| {
        for (q, &v) in l.iter_mut().zip(x) {
            *q = (quant(iscale, v) + NMAX) as u8;
        }
    };
    let iscale = -(NMAX as f32) / max;
    fill(iscale, l);
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        let iscale = -(NMAX as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            fill(iscale, l);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Q6_K (ggml `quantize_row_q6_K_ref`): a [`make_qx_quants`] fit per
/// 16-element sub-block; the 16 scales quantized to i8 against the one of
/// largest magnitude (`d = max_scale/−128`, f16); every element
/// re-quantized against its stored scale; packed as [`q6_k`] reads them.
/// A block whose scales are all below `GROUP_MAX_EPS` is all zero bytes.
fn encode_q6_k(x: &[f32; 256], b: &mut [u8; 210]) -> std::result::Result<(), Overflow> {
    let mut l = [[0u8; 16]; 16];
    let mut scales = [0f32; 16];
    let mut max_scale = 0f32;
    let mut max_abs_scale = 0f32;
    for (ib, xs) in x.chunks_exact(16).enumerate() {
        let xs = <&[f32; 16]>::try_from(xs).map_err(|_| Overflow)?;
        let scale = make_qx_quants(xs, &mut l[ib]);
        if !scale.is_finite() {
            return Err(Overflow);
        }
        scales[ib] = scale;
        if scale.abs() > max_abs_scale {
            max_abs_scale = scale.abs();
            max_scale = scale;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        b.fill(0);
        return Ok(());
    }
    let iscale = -128.0 / max_scale;
    let d = to_half(1.0 / iscale)?;
    let mut sc = [0i8; 16];
    for (s, &scale) in sc.iter_mut().zip(&scales) {
        // As ggml: MIN(127, ·) then a wrapping conversion to int8_t.
        *s = nearest_int(iscale * scale).min(127) as i8;
    }
    for (j, xs) in x.chunks_exact(16).enumerate() {
        let dl = d.to_f32() * f32::from(sc[j]);
        if dl == 0.0 {
            continue; // ggml keeps the quants of the fit
        }
        for (q, &v) in l[j].iter_mut().zip(xs) {
            *q = (nearest_int(v / dl).clamp(-32, 31) + 32) as u8;
        }
    }
    let l: Vec<u8> = l.into_iter().flatten().collect();
    // Element e = 128·h + r: low nibble in ql[64·h + r % 64] (nibble r / 64),
    // high two bits in qh[32·h + r % 32] (pair r / 32).
    let (ql, rest) = b.split_at_mut(128);
    let (qh, rest) = rest.split_at_mut(64);
    for (h, l) in l.chunks_exact(128).enumerate() {
        for k in 0..32 {
            let (q1, q2, q3, q4) = (l[k], l[k + 32], l[k + 64], l[k + 96]);
            ql[64 * h + k] = (q1 & 0x0F) | ((q3 & 0x0F) << 4);
            ql[64 * h + k + 32] = (q2 & 0x0F) | ((q4 & 0x0F) << 4);
            qh[32 * h + k] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
    }
    for (s, &v) in rest[..16].iter_mut().zip(&sc) {
        *s = v as u8;
    }
    put_half(b, 208, d);
    Ok(())
}
