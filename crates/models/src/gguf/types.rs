//! The numbered types of a GGUF file: tensor element types (`ggml_type`) and
//! metadata value types (`gguf_type`), with ggml's numbering.

use std::fmt;

/// A tensor element type as numbered by `enum ggml_type` in ggml.h.
///
/// Every type ggml defines is listed, so that a file's layout can be checked
/// (byte sizes, bounds) even when this crate cannot dequantize the type;
/// [`super::dequantize`] names the ones it refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// 4-bit, blocks of 32 with an f16 scale.
    Q4_0,
    /// 4-bit, blocks of 32 with an f16 scale and minimum.
    Q4_1,
    /// 5-bit, blocks of 32 with an f16 scale.
    Q5_0,
    /// 5-bit, blocks of 32 with an f16 scale and minimum.
    Q5_1,
    /// 8-bit, blocks of 32 with an f16 scale.
    Q8_0,
    /// 8-bit, blocks of 32 with scale and sum (ggml's matmul operand).
    Q8_1,
    /// 2-bit k-quant, super-blocks of 256.
    Q2_K,
    /// 3-bit k-quant, super-blocks of 256.
    Q3_K,
    /// 4-bit k-quant, super-blocks of 256 with 6-bit sub-block scales and minimums.
    Q4_K,
    /// 5-bit k-quant, super-blocks of 256.
    Q5_K,
    /// 6-bit k-quant, super-blocks of 256 with 8-bit sub-block scales.
    Q6_K,
    /// 8-bit k-quant (ggml's matmul operand).
    Q8_K,
    /// 2.06-bit i-quant.
    IQ2_XXS,
    /// 2.31-bit i-quant.
    IQ2_XS,
    /// 3.06-bit i-quant.
    IQ3_XXS,
    /// 1.56-bit i-quant.
    IQ1_S,
    /// 4-bit non-linear, blocks of 32.
    IQ4_NL,
    /// 3.44-bit i-quant.
    IQ3_S,
    /// 2.5-bit i-quant.
    IQ2_S,
    /// 4.25-bit non-linear i-quant.
    IQ4_XS,
    /// 8-bit integer.
    I8,
    /// 16-bit integer.
    I16,
    /// 32-bit integer.
    I32,
    /// 64-bit integer.
    I64,
    /// 64-bit IEEE float.
    F64,
    /// 1.75-bit i-quant.
    IQ1_M,
    /// bfloat16.
    BF16,
    /// ternary, 1.69 bits.
    TQ1_0,
    /// ternary, 2.06 bits.
    TQ2_0,
    /// OCP microscaling FP4, blocks of 32 with an E8M0 scale.
    MXFP4,
}

/// `(type, id, name, elements per block, bytes per block)`, ggml's table.
const GGML_TYPES: [(GgmlType, u32, &str, usize, usize); 32] = [
    (GgmlType::F32, 0, "F32", 1, 4),
    (GgmlType::F16, 1, "F16", 1, 2),
    (GgmlType::Q4_0, 2, "Q4_0", 32, 18),
    (GgmlType::Q4_1, 3, "Q4_1", 32, 20),
    (GgmlType::Q5_0, 6, "Q5_0", 32, 22),
    (GgmlType::Q5_1, 7, "Q5_1", 32, 24),
    (GgmlType::Q8_0, 8, "Q8_0", 32, 34),
    (GgmlType::Q8_1, 9, "Q8_1", 32, 40),
    (GgmlType::Q2_K, 10, "Q2_K", 256, 84),
    (GgmlType::Q3_K, 11, "Q3_K", 256, 110),
    (GgmlType::Q4_K, 12, "Q4_K", 256, 144),
    (GgmlType::Q5_K, 13, "Q5_K", 256, 176),
    (GgmlType::Q6_K, 14, "Q6_K", 256, 210),
    (GgmlType::Q8_K, 15, "Q8_K", 256, 292),
    (GgmlType::IQ2_XXS, 16, "IQ2_XXS", 256, 66),
    (GgmlType::IQ2_XS, 17, "IQ2_XS", 256, 74),
    (GgmlType::IQ3_XXS, 18, "IQ3_XXS", 256, 98),
    (GgmlType::IQ1_S, 19, "IQ1_S", 256, 50),
    (GgmlType::IQ4_NL, 20, "IQ4_NL", 32, 18),
    (GgmlType::IQ3_S, 21, "IQ3_S", 256, 110),
    (GgmlType::IQ2_S, 22, "IQ2_S", 256, 82),
    (GgmlType::IQ4_XS, 23, "IQ4_XS", 256, 136),
    (GgmlType::I8, 24, "I8", 1, 1),
    (GgmlType::I16, 25, "I16", 1, 2),
    (GgmlType::I32, 26, "I32", 1, 4),
    (GgmlType::I64, 27, "I64", 1, 8),
    (GgmlType::F64, 28, "F64", 1, 8),
    (GgmlType::IQ1_M, 29, "IQ1_M", 256, 56),
    (GgmlType::BF16, 30, "BF16", 1, 2),
    (GgmlType::TQ1_0, 34, "TQ1_0", 256, 54),
    (GgmlType::TQ2_0, 35, "TQ2_0", 256, 66),
    (GgmlType::MXFP4, 39, "MXFP4", 32, 17),
];

impl GgmlType {
    fn entry(self) -> (GgmlType, u32, &'static str, usize, usize) {
        // The table lists every variant; the fallback is never taken.
        GGML_TYPES
            .iter()
            .copied()
            .find(|e| e.0 == self)
            .unwrap_or((self, u32::MAX, "?", 1, 1))
    }

    /// The type with ggml id `id`, or `None` for an id ggml does not define.
    pub fn from_id(id: u32) -> Option<Self> {
        GGML_TYPES.iter().find(|e| e.1 == id).map(|e| e.0)
    }

    /// ggml's id of the type (`GGML_TYPE_Q4_K` = 12, …).
    pub fn id(self) -> u32 {
        self.entry().1
    }

    /// ggml's name of the type, e.g. `Q4_K`.
    pub fn name(self) -> &'static str {
        self.entry().2
    }

    /// Elements per block (1 for plain types, 32 or 256 for quantized ones).
    pub fn block_size(self) -> usize {
        self.entry().3
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.entry().4
    }

    /// Whether elements are stored in blocks with scales (not one by one).
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes taken by `elements` elements, `None` when `elements` is not a
    /// whole number of blocks or the size overflows.
    pub fn bytes_for(self, elements: u64) -> Option<u64> {
        let block = self.block_size() as u64;
        if !elements.is_multiple_of(block) {
            return None;
        }
        (elements / block).checked_mul(self.type_size() as u64)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A metadata value type as numbered by `enum gguf_type` in gguf.h.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgufValueType {
    /// `u8` (id 0).
    U8,
    /// `i8` (id 1).
    I8,
    /// `u16` (id 2).
    U16,
    /// `i16` (id 3).
    I16,
    /// `u32` (id 4).
    U32,
    /// `i32` (id 5).
    I32,
    /// `f32` (id 6).
    F32,
    /// `bool`, one byte 0 or 1 (id 7).
    Bool,
    /// UTF-8 string: `u64` length then bytes (id 8).
    String,
    /// Array: element type, `u64` count, elements (id 9).
    Array,
    /// `u64` (id 10).
    U64,
    /// `i64` (id 11).
    I64,
    /// `f64` (id 12).
    F64,
}

const VALUE_TYPES: [(GgufValueType, u32, &str); 13] = [
    (GgufValueType::U8, 0, "u8"),
    (GgufValueType::I8, 1, "i8"),
    (GgufValueType::U16, 2, "u16"),
    (GgufValueType::I16, 3, "i16"),
    (GgufValueType::U32, 4, "u32"),
    (GgufValueType::I32, 5, "i32"),
    (GgufValueType::F32, 6, "f32"),
    (GgufValueType::Bool, 7, "bool"),
    (GgufValueType::String, 8, "string"),
    (GgufValueType::Array, 9, "array"),
    (GgufValueType::U64, 10, "u64"),
    (GgufValueType::I64, 11, "i64"),
    (GgufValueType::F64, 12, "f64"),
];

impl GgufValueType {
    /// The type with gguf id `id`, or `None` for an unknown id.
    pub fn from_id(id: u32) -> Option<Self> {
        VALUE_TYPES.iter().find(|e| e.1 == id).map(|e| e.0)
    }

    /// gguf's id of the type.
    pub fn id(self) -> u32 {
        VALUE_TYPES
            .iter()
            .find(|e| e.0 == self)
            .map_or(u32::MAX, |e| e.1)
    }

    /// A short name (`u32`, `string`, …) for messages.
    pub fn name(self) -> &'static str {
        VALUE_TYPES
            .iter()
            .find(|e| e.0 == self)
            .map_or("?", |e| e.2)
    }

    /// The fewest bytes one value of this type takes in a file (a string
    /// takes at least its 8-byte length; an array its type and count).
    pub(crate) fn min_size(self) -> usize {
        match self {
            Self::U8 | Self::I8 | Self::Bool => 1,
            Self::U16 | Self::I16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            Self::U64 | Self::I64 | Self::F64 | Self::String => 8,
            Self::Array => 12,
        }
    }
}

impl fmt::Display for GgufValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
