//! Element types.

use half::{bf16, f16};

/// The element type of a tensor.
///
/// Floating-point ops compute `F16` and `BF16` in `f32` and round once on the
/// way out; `F64` exists on the CPU for reference checks; `U32` and `I64` hold
/// token ids and indices (copy ops and embedding lookups accept them,
/// arithmetic does not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE 754 single precision.
    F32,
    /// IEEE 754 half precision.
    F16,
    /// bfloat16: the exponent range of f32 with 8 bits of mantissa.
    BF16,
    /// IEEE 754 double precision.
    F64,
    /// Unsigned 32-bit integer (token ids).
    U32,
    /// Signed 64-bit integer (indices, PyTorch's default id type).
    I64,
}

impl DType {
    /// Bytes per element.
    ///
    /// ```
    /// assert_eq!(kaiyuan_tensor::DType::BF16.size_in_bytes(), 2);
    /// ```
    pub const fn size_in_bytes(self) -> usize {
        match self {
            DType::F16 | DType::BF16 => 2,
            DType::F32 | DType::U32 => 4,
            DType::F64 | DType::I64 => 8,
        }
    }

    /// Whether the type is a floating-point type.
    pub const fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
    }

    /// The lower-case name used in messages and file formats (`"f32"`, `"bf16"`…).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F64 => "f64",
            DType::U32 => "u32",
            DType::I64 => "i64",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A Rust type that can be the element of a tensor. Sealed: the set of
/// dtypes is [`DType`].
pub trait Element:
    sealed::Sealed + bytemuck::Pod + Send + Sync + std::fmt::Debug + PartialEq + 'static
{
    /// The dtype of this element type.
    const DTYPE: DType;
    /// Converts to `f64` (exactly for every type but `i64`/`u64` beyond 2⁵³).
    fn to_f64(self) -> f64;
    /// Converts from `f64`, rounding to nearest (saturating for integers).
    fn from_f64(value: f64) -> Self;
    /// Wraps a vector as an owned buffer.
    #[doc(hidden)]
    fn wrap(values: Vec<Self>) -> crate::OwnedBuffer;
    /// Reads an owned buffer of this type.
    #[doc(hidden)]
    fn slice(buffer: &crate::OwnedBuffer) -> Option<&[Self]>;
}

macro_rules! element {
    ($t:ty, $dtype:ident, |$v:ident| $to:expr, |$w:ident| $from:expr) => {
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const DTYPE: DType = DType::$dtype;
            fn to_f64(self) -> f64 {
                let $v = self;
                $to
            }
            fn from_f64(value: f64) -> Self {
                let $w = value;
                $from
            }
            fn wrap(values: Vec<Self>) -> crate::OwnedBuffer {
                crate::OwnedBuffer::$dtype(ndarray::ArcArray1::from_vec(values))
            }
            fn slice(buffer: &crate::OwnedBuffer) -> Option<&[Self]> {
                match buffer {
                    crate::OwnedBuffer::$dtype(a) => a.as_slice(),
                    _ => None,
                }
            }
        }
    };
}

element!(f32, F32, |v| v as f64, |w| w as f32);
element!(f64, F64, |v| v, |w| w);
element!(f16, F16, |v| v.to_f64(), |w| f16::from_f64(w));
element!(bf16, BF16, |v| v.to_f64(), |w| bf16::from_f64(w));
element!(u32, U32, |v| v as f64, |w| w.round() as u32);
element!(i64, I64, |v| v as f64, |w| w.round() as i64);
