//! ggml's quantized blocks (the GGUF tensor types Q8_0, Q4_0, Q4_1, Q4_K,
//! Q5_K and Q6_K): layout constants and decoding to `f32`.
//!
//! Each decoder follows ggml's `dequantize_row_*` (ggml-quants.c) with the
//! operations in the order the `gguf` Python package's `gguf.quants` does
//! them, in `f32` and without fused multiply-adds, so the results are bit
//! for bit those of `gguf.quants.dequantize` (checked by the models crate's
//! `tests/gguf.rs` against `fixtures/gguf/dequant/`).

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
    /// 256 elements in 8 sub-blocks of 32 with 6-bit scales and minimums.
    Q4_K,
    /// As Q4_K with a fifth bit per element.
    Q5_K,
    /// 256 elements, 6 bits each, in 16 sub-blocks of 16 with i8 scales.
    Q6_K,
}

impl BlockType {
    /// Every block type, in ggml id order.
    pub const ALL: [BlockType; 6] = [
        BlockType::Q4_0,
        BlockType::Q4_1,
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
            BlockType::Q8_0 | BlockType::Q4_0 | BlockType::Q4_1 => 32,
            BlockType::Q4_K | BlockType::Q5_K | BlockType::Q6_K => 256,
        }
    }

    /// Bytes per block.
    pub const fn type_size(self) -> usize {
        match self {
            BlockType::Q8_0 => 34,
            BlockType::Q4_0 => 18,
            BlockType::Q4_1 => 20,
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
        if elements % self.block_size() == 0 {
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
    if data.len() % size != 0 || out.len() != data.len() / size * ty.block_size() {
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

/// The 6-bit scales and minimums of the 8 sub-blocks of a Q4_K/Q5_K block,
/// packed in 12 bytes (ggml's `get_scale_min_k4`).
fn scales_mins_k4(s: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
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
    let (sc, mn) = scales_mins_k4(&sub(b, 4));
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
    let (sc, mn) = scales_mins_k4(&sub(b, 4));
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
