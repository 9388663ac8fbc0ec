//! The floating-point types ops compute in (`f32` and `f64`) and their
//! vector-friendly elementary functions.

/// A compute type: `f32` (also for f16/bf16 tensors) or `f64`.
pub(crate) trait Float:
    num_traits::Float
    + Default
    + Send
    + Sync
    + std::fmt::Debug
    + std::iter::Sum
    + Stored<Self>
    + 'static
{
    /// Whether [`Float::gemm`] is the tiled SIMD GEMM (f32), whose speed
    /// depends on how the output fills its tiles, rather than plain loops
    /// (f64, the reference path).
    const TILED_GEMM: bool;
    /// Converts a constant.
    fn of(value: f64) -> Self;
    /// `exp`, branch-free so loops over it vectorise (f32), or std's (f64).
    fn exp_fast(self) -> Self;
    /// `exp` of a value that is ≤ 0 or −∞ (never NaN): what softmax needs
    /// after subtracting the row maximum; cheaper than [`Float::exp_fast`].
    fn exp_nonpositive(self) -> Self;
    /// The error function.
    fn gauss_erf(self) -> Self;
    /// `C[m×n] = A[m×k]·B[k×n]` with explicit strides (C's column stride is 1).
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        m: usize,
        n: usize,
        k: usize,
        a: &[Self],
        a_rs: usize,
        a_cs: usize,
        b: &[Self],
        b_rs: usize,
        b_cs: usize,
        c: &mut [Self],
        c_rs: usize,
    );
}

impl Float for f64 {
    const TILED_GEMM: bool = false;
    #[inline(always)]
    fn of(value: f64) -> Self {
        value
    }
    #[inline(always)]
    fn exp_fast(self) -> Self {
        self.exp()
    }
    #[inline(always)]
    fn exp_nonpositive(self) -> Self {
        self.exp()
    }
    #[inline(always)]
    fn gauss_erf(self) -> Self {
        libm::erf(self)
    }
    fn gemm(
        m: usize,
        n: usize,
        k: usize,
        a: &[Self],
        a_rs: usize,
        a_cs: usize,
        b: &[Self],
        b_rs: usize,
        b_cs: usize,
        c: &mut [Self],
        c_rs: usize,
    ) {
        for i in 0..m {
            let row = &mut c[i * c_rs..i * c_rs + n];
            row.fill(0.0);
            for p in 0..k {
                let x = a[i * a_rs + p * a_cs];
                for (j, dst) in row.iter_mut().enumerate() {
                    *dst += x * b[p * b_rs + j * b_cs];
                }
            }
        }
    }
}

impl Float for f32 {
    const TILED_GEMM: bool = true;
    #[inline(always)]
    fn of(value: f64) -> Self {
        value as f32
    }
    #[inline(always)]
    fn exp_fast(self) -> Self {
        exp_f32(self)
    }
    #[inline(always)]
    fn exp_nonpositive(self) -> Self {
        exp_nonpositive_f32(self)
    }
    #[inline(always)]
    fn gauss_erf(self) -> Self {
        libm::erff(self)
    }
    fn gemm(
        m: usize,
        n: usize,
        k: usize,
        a: &[Self],
        a_rs: usize,
        a_cs: usize,
        b: &[Self],
        b_rs: usize,
        b_cs: usize,
        c: &mut [Self],
        c_rs: usize,
    ) {
        super::gemm::sgemm(m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, c, c_rs, false);
    }
}

/// `e^x` in f32 within 2 ulp for normal results, exactly 0 below −87.3
/// (where e^x is subnormal), +∞ above 88.7, NaN for NaN.
///
/// Range reduction `x = n·ln2 + r` with |r| ≤ ln2/2, where adding 1.5·2²³
/// rounds `x·log2(e)` to the integer n and leaves n in the low mantissa bits
/// (so no float-to-int conversion is needed); a degree-7 Taylor polynomial
/// for e^r (truncation error < 2e-8 relative); and 2ⁿ built in the exponent
/// bits. Only arithmetic, bit casts and selects, so loops vectorise.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    let (p, n_int) = exp_reduced(x.clamp(-87.3, 88.7));
    // n ∈ [−126, 128]: split 2ⁿ in two factors so n = 128 does not overflow
    // the exponent field.
    let half = n_int >> 1;
    let rest = n_int - half;
    let scale_a = f32::from_bits(((half + 127) << 23) as u32);
    let scale_b = f32::from_bits(((rest + 127) << 23) as u32);
    let y = p * scale_a * scale_b;
    let y = if x < -87.3 { 0.0 } else { y };
    let y = if x > 88.7 { f32::INFINITY } else { y };
    if x.is_nan() { x } else { y }
}

/// e^x = p · 2ⁿ for `clamped` in [−87.3, 88.7]: returns (p, n) with
/// x = n·ln2 + r, |r| ≤ ln2/2, and p = e^r from a degree-7 Taylor polynomial
/// in fused multiply-adds (single instructions inside the AVX2/AVX-512
/// wrappers of `simd::dispatch`).
#[inline(always)]
fn exp_reduced(clamped: f32) -> (f32, i32) {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUNDER: f32 = 12_582_912.0; // 1.5·2²³: rounds and leaves n in the low bits
    let biased = clamped.mul_add(LOG2E, ROUNDER);
    let n_int = biased.to_bits() as i32 - ROUNDER.to_bits() as i32;
    let n = biased - ROUNDER;
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, clamped));
    let mut p: f32 = 1.0 / 5040.0;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p.mul_add(r, c);
    }
    (p, n_int)
}

/// [`exp_f32`] for `x ≤ 0` or `x = −∞` (not NaN): 2ⁿ with n ∈ [−126, 0]
/// fits the exponent field in one factor, and no overflow or NaN handling is
/// needed, so about a third fewer instructions.
#[inline(always)]
pub(crate) fn exp_nonpositive_f32(x: f32) -> f32 {
    let (p, n) = exp_reduced(x.max(-87.3));
    let y = p * f32::from_bits(((n + 127) << 23) as u32);
    if x < -87.3 { 0.0 } else { y }
}

/// A value as stored (in a KV cache, say), read as the compute type `F`:
/// exactly, and with integer and float arithmetic only, so that the loops
/// reading it vectorise.
pub(crate) trait Stored<F>: Copy + Send + Sync + 'static {
    /// Whether this is `F` itself (widening is the identity).
    const IS_COMPUTE: bool = false;
    fn widen(self) -> F;
    /// `src` widened into `dst` (of its length).
    #[inline(always)]
    fn widen_slice(src: &[Self], dst: &mut [F]) {
        for (w, &x) in dst.iter_mut().zip(src) {
            *w = x.widen();
        }
    }
}

impl Stored<f32> for f32 {
    const IS_COMPUTE: bool = true;
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
}

impl Stored<f64> for f64 {
    const IS_COMPUTE: bool = true;
    #[inline(always)]
    fn widen(self) -> f64 {
        self
    }
}

impl<F: Float> Stored<F> for half::f16 {
    #[inline(always)]
    fn widen(self) -> F {
        // f32 → f64 → f32 folds away; f64 is exact too.
        F::of(f64::from(f16_to_f32_exact(self)))
    }
}

impl<F: Float> Stored<F> for half::bf16 {
    #[inline(always)]
    fn widen(self) -> F {
        // NaNs quiet, as `half`'s conversion makes them.
        let bits = u32::from(self.to_bits()) << 16;
        let nan = bits & 0x7f80_0000 == 0x7f80_0000 && bits & 0x007f_ffff != 0;
        F::of(f64::from(f32::from_bits(if nan {
            bits | 0x0040_0000
        } else {
            bits
        })))
    }
}

/// `h` as f32 without F16C: its bits moved into f32's fields and scaled by
/// 2¹¹² (the difference of the exponent biases), which is exact for normal
/// and subnormal values alike; infinities and NaNs get f32's all-ones
/// exponent (NaNs quiet, as `half`'s conversion makes them).
#[inline(always)]
pub(crate) fn f16_to_f32_exact(h: half::f16) -> f32 {
    let bits = u32::from(h.to_bits());
    let sign = (bits & 0x8000) << 16;
    let magnitude = (bits & 0x7fff) << 13;
    let scaled = (f32::from_bits(magnitude) * f32::from_bits(0x7780_0000)).to_bits();
    let special = magnitude | 0x7f80_0000 | if bits & 0x03ff != 0 { 0x0040_0000 } else { 0 };
    f32::from_bits(
        sign | if bits & 0x7c00 == 0x7c00 {
            special
        } else {
            scaled
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every f16 and bf16 bit pattern widens to the bits `half`'s
    /// conversion gives (NaNs included), as f32 and as f64.
    #[test]
    fn stored_halves_widen_exactly() {
        for bits in 0..=u16::MAX {
            let h = half::f16::from_bits(bits);
            let ours: f32 = h.widen();
            assert_eq!(ours.to_bits(), h.to_f32().to_bits(), "f16 {bits:#06x}");
            let wide: f64 = h.widen();
            assert!(
                wide.to_bits() == h.to_f64().to_bits() || wide.is_nan(),
                "f16 {bits:#06x} as f64"
            );
            let b = half::bf16::from_bits(bits);
            let ours: f32 = b.widen();
            assert_eq!(ours.to_bits(), b.to_f32().to_bits(), "bf16 {bits:#06x}");
        }
    }

    /// Largest error of `exp` in f32 ulps of the exact value over `from..=to`.
    fn worst_ulp(exp: impl Fn(f32) -> f32, from: f32, to: f32, step: f32) -> f64 {
        let mut worst = 0.0f64;
        let mut x = from;
        while x <= to {
            let exact = (x as f64).exp();
            let ulp = (exact as f32).abs() as f64 * f32::EPSILON as f64;
            worst = worst.max((exp(x) as f64 - exact).abs() / ulp);
            x += step;
        }
        worst
    }

    #[test]
    fn exp_f32_matches_std_within_two_ulp() {
        let worst = worst_ulp(exp_f32, -87.0, 88.5, 0.0137);
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(exp_f32(-100.0), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(100.0), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
        assert_eq!(exp_f32(0.0), 1.0);
    }

    #[test]
    fn exp_nonpositive_matches_std_within_two_ulp() {
        let worst = worst_ulp(exp_nonpositive_f32, -87.0, 0.0, 0.0071);
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(exp_nonpositive_f32(0.0), 1.0);
        assert_eq!(exp_nonpositive_f32(-0.0), 1.0);
        assert_eq!(exp_nonpositive_f32(-100.0), 0.0);
        assert_eq!(exp_nonpositive_f32(f32::NEG_INFINITY), 0.0);
    }
}
