//! Runtime choice of instruction set for the row kernels.
//!
//! Kernels are written once as plain Rust over slices, with fixed-width lane
//! arrays so the compiler vectorises them without reordering any float
//! operation. [`dispatch`] runs a kernel inside a function compiled for the
//! best instruction set this CPU has (AVX-512, else AVX2+FMA, else the
//! portable baseline), detected once and cached. Because the float operations
//! and their order are the same in every build, results do not depend on the
//! path taken.

use std::sync::OnceLock;

/// A kernel run by [`dispatch`]. `run` must be `#[inline(always)]` so its body
/// is compiled inside the feature-enabled wrapper.
pub(crate) trait Kernel {
    /// What the kernel returns.
    type Output;
    /// Runs the kernel.
    fn run(self) -> Self::Output;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// The best instruction set of this CPU, detected on first use.
pub(crate) fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vl")
            {
                return Level::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Level::Avx2;
            }
        }
        Level::Portable
    })
}

/// Runs `kernel` compiled for [`level`].
#[inline]
pub(crate) fn dispatch<K: Kernel>(kernel: K) -> K::Output {
    dispatch_at(level(), kernel)
}

/// Runs `kernel` compiled for `level`, which must be supported by this CPU
/// (tests use it to check every path on one machine).
#[inline]
pub(crate) fn dispatch_at<K: Kernel>(level: Level, kernel: K) -> K::Output {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
        fn avx512<K: Kernel>(kernel: K) -> K::Output {
            kernel.run()
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2<K: Kernel>(kernel: K) -> K::Output {
            kernel.run()
        }
        match level {
            Level::Avx512 if self::level() == Level::Avx512 => {
                // SAFETY: `level()` detected avx512f and avx512vl (and AVX-512
                // CPUs have AVX2 and FMA) on this CPU.
                return unsafe { avx512(kernel) };
            }
            Level::Avx2 | Level::Avx512 if self::level() != Level::Portable => {
                // SAFETY: `level()` detected avx2 and fma on this CPU (or AVX-512, which implies them).
                return unsafe { avx2(kernel) };
            }
            _ => {}
        }
    }
    let _ = level;
    kernel.run()
}

/// Adapts a closure to [`Kernel`].
struct Call<F>(F);

impl<R, F: FnOnce() -> R> Kernel for Call<F> {
    type Output = R;
    #[inline(always)]
    fn run(self) -> R {
        (self.0)()
    }
}

/// Runs `f` inside the [`dispatch`] wrapper, so that the closures it calls
/// (inlined there) get the CPU's vector instructions and single-instruction
/// fused multiply-adds instead of calls to libm's `fmaf`. Same results on
/// every path: `mul_add` is exactly rounded either way.
#[inline(always)]
pub(crate) fn with_simd<R>(f: impl FnOnce() -> R) -> R {
    dispatch(Call(f))
}
