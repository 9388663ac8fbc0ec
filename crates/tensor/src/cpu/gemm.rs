//! Single-precision GEMM for the CPU backend: `C = A·B` or `C += A·B` with
//! arbitrary operand strides, SIMD micro-kernels chosen at run time, and
//! rayon threading whose results do not depend on the thread count.
//!
//! Public API: [`sgemm`] (fast path) and [`sgemm_naive`] (f64-accumulating
//! reference that shares no code with the fast path).
//!
//! # Design
//!
//! GotoBLAS/BLIS loop nest (`block_gemm`; `shared_b_gemm` when threaded):
//!
//! ```text
//! for jc in 0..n step NC = 2048        pack B[pc.., jc..]: KC×NC in 64-column
//!   for pc in 0..k step KC (≤ 256)       panels [p][64] (≤ 2 MiB, lives in L3)
//!     for ic in 0..m step MC = 480     pack A[ic.., pc..]: MC×KC in 6-row
//!                                        panels [p][6] (480 KiB, lives in L2)
//!       for jr over 64-column panels   B micro-panel KC×64 (64 KiB, L1/L2)
//!         for ir over 6-row panels     A micro-panel 6×KC streams from L2
//!           6×64 micro-kernel on C[ir, jr]
//! ```
//!
//! * AVX-512 micro-kernel: a 6×64 C tile in 24 zmm accumulators. Each depth
//!   step does 4 vector loads of B, 6 broadcasts of A and 24 FMAs, i.e. 10
//!   loads per 24 FMAs, so the two FMA ports, not the load ports, set the
//!   speed. It is inline asm, which fixes the register allocation and the
//!   order of every instruction (it predates the stable AVX-512 intrinsics of
//!   Rust 1.89, the workspace's minimum). It prefetches the next C tile towards L2 during the first steps
//!   and the current tile into L1 during the last 24, which cut the
//!   write-back from about 20 % of kernel time to under 1 %.
//! * AVX2+FMA: a 6×16 tile in 12 ymm accumulators. Blocking and FMA order
//!   are the same as the AVX-512 kernel, so the two give bit-identical results
//!   (tested). Portable fallback: a 4×8 kernel in plain Rust.
//! * Any strides work; packing takes care of the layout. Row-major B rows and
//!   column-major A columns are copied as they are. Row-major A and
//!   column-major B (the usual transposed operands) go through AVX2 8×8
//!   register transposes. Other strides use scalar gathers. Edge panels are
//!   zero-padded, and partial C tiles go through a scratch tile that is then
//!   added to C.
//! * Threads: below m·n·k = 64³ everything runs on the calling thread.
//!   Otherwise, for each (NC, KC) block the rayon pool first packs B together
//!   (one shared copy). It then computes row chunks of C: whole 6-row panels,
//!   at most MC rows, about four chunks per thread so that work stealing
//!   evens out a thread slowed down by a noisy machine. Each chunk packs its
//!   own rows of A into a thread-local buffer, so nothing is packed twice, and
//!   the only synchronisation is the two rayon joins per block. Problems with
//!   too few rows for this are cut into column slabs instead, one per thread.
//! * Determinism: the depth blocks depend only on k (`depth_block`). Each C
//!   element is `((C₀ +) S₀) + S₁ + …`, where S_b is a chain of FMAs in
//!   increasing p over depth block b, whichever chunk and tile the element
//!   lands in. So results are bit-identical for 1, 2, 3, … threads (tested).
//!   The scalar fallback does a separate multiply and add, so its last bits
//!   differ from the SIMD paths.
//!
//! # Performance
//!
//! Measured on a 2-vCPU Intel Xeon (Ice Lake server, 2.8 GHz, AVX-512 with 2
//! FMA units; measured FMA peak 176 GFLOP/s per core = 2.75 GHz × 2 × 16 × 2)
//! against numpy 2.3.5 + OpenBLAS 0.3.30 (SkylakeX kernels, float32 `a @ b`),
//! square row-major n×n×n, GFLOP/s = 2n³ / median time. The VM is noisy (up
//! to 2× from run to run), so runs were interleaved with numpy in 9 rounds of
//! 5 timed runs each. The table gives the median of the round medians, with
//! the best round in parentheses; the ratio is the median of the per-round
//! ratios.
//!
//! | n    | threads | numpy/OpenBLAS | this module  | ratio |
//! |------|---------|----------------|--------------|-------|
//! | 512  | 1       |  80 (117)      | 123 (149)    | 1.55  |
//! | 512  | 2       | 150 (169)      | 160 (218)    | 1.13  |
//! | 1024 | 1       |  94 (114)      | 120 (149)    | 1.27  |
//! | 1024 | 2       | 163 (188)      | 188 (221)    | 1.18  |
//! | 2048 | 1       |  99 (128)      | 110 (146)    | 1.08  |
//! | 2048 | 2       | 195 (242)      | 199 (232)    | 0.99  |
//!
//! Other runs of the same code put the 2048 ratios at 1.14 (1 thread) and
//! 1.08 and 1.27 (2 threads), so 2048 with 2 threads is at parity within the
//! noise, and the rest are ahead. The best single-thread runs reach
//! 149–157 GFLOP/s, 85–89 % of the FMA peak. Transposed operands (A, B or
//! both column-major, n = 1024, 1 thread) measured 1.13–1.25× numpy.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]
// BLAS-style entry points and kernels take many scalar arguments.
#![allow(clippy::too_many_arguments)]

use std::cell::RefCell;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::float::Stored;

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

/// C[m×n] (row stride c_rs, column stride 1) = A[m×k]·B[k×n] (+ C if accumulate).
/// A element (i,p) is a[i*a_rs + p*a_cs]; B element (p,j) is b[p*b_rs + j*b_cs].
///
/// Any strides are accepted, so a transposed operand is just a swapped pair of
/// strides (packing absorbs the layout; row-major and column-major operands
/// take vectorised packing paths). With `k == 0` the product is zero: C is
/// zeroed, or left unchanged when `accumulate` is true.
///
/// Large problems (m·n·k ≥ 64³) are split over the current rayon pool
/// ([`rayon::current_num_threads`]); the result is bit-identical for every
/// thread count, because the depth (k) blocking and summation order of each
/// output element depend only on `k`.
///
/// The AVX-512 / AVX2+FMA / portable micro-kernel is chosen once at run time.
/// Each thread keeps its packing buffers (≤ ~2.5 MiB) in thread-local storage
/// for reuse by later calls.
///
/// # Panics
/// The caller is expected to validate shapes before calling; as a last line of
/// defence this `assert!`s that
/// * `a` holds element (m-1, k-1), `b` holds element (k-1, n-1) and `c` holds
///   element (m-1, n-1) for the given strides (checked without overflow; empty
///   operands need no elements), and
/// * `c_rs >= n` when `m > 1` (rows of C must not overlap).
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    b_rs: usize,
    b_cs: usize,
    c: &mut [f32],
    c_rs: usize,
    accumulate: bool,
) {
    sgemm_with(
        detect_path(),
        m,
        n,
        k,
        a,
        a_rs,
        a_cs,
        BElems::F32(b),
        b_rs,
        b_cs,
        c,
        c_rs,
        accumulate,
    );
}

/// The stored elements of a GEMM's B operand. Half-precision B (a model's
/// f16 or bf16 weights) is widened to f32 as it is packed, one block at a
/// time, instead of into a whole f32 copy first: a prefill of SmolLM2's f16
/// weights would otherwise write and read back 540 MB of widened weights.
#[derive(Clone, Copy, Debug)]
pub enum BElems<'a> {
    /// Single precision, read as it is.
    F32(&'a [f32]),
    /// IEEE half precision, widened exactly.
    F16(&'a [half::f16]),
    /// bfloat16, widened exactly (NaNs quiet, as `half` makes them).
    BF16(&'a [half::bf16]),
}

impl<'a> BElems<'a> {
    /// Number of stored elements.
    pub fn len(&self) -> usize {
        match self {
            BElems::F32(b) => b.len(),
            BElems::F16(b) => b.len(),
            BElems::BF16(b) => b.len(),
        }
    }

    /// Whether no element is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements from `offset` on.
    ///
    /// # Panics
    /// When `offset > self.len()`.
    pub fn skip(self, offset: usize) -> BElems<'a> {
        match self {
            BElems::F32(b) => BElems::F32(&b[offset..]),
            BElems::F16(b) => BElems::F16(&b[offset..]),
            BElems::BF16(b) => BElems::BF16(&b[offset..]),
        }
    }
}

/// [`sgemm`] with B stored as f32, f16 or bf16 (see [`BElems`]). The result
/// is bit-identical to [`sgemm`] on B widened to f32 beforehand.
///
/// # Panics
/// As [`sgemm`].
pub fn sgemm_mixed(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: BElems<'_>,
    b_rs: usize,
    b_cs: usize,
    c: &mut [f32],
    c_rs: usize,
    accumulate: bool,
) {
    sgemm_with(
        detect_path(),
        m,
        n,
        k,
        a,
        a_rs,
        a_cs,
        b,
        b_rs,
        b_cs,
        c,
        c_rs,
        accumulate,
    );
}

/// Reference implementation with the same contract as [`sgemm`]: a plain
/// triple loop accumulating each dot product in f64 (then rounded to f32).
/// Slow; meant for tests and for checking the fast path.
///
/// # Panics
/// Same argument checks as [`sgemm`].
// Tests and benchmarks call this; a crate that keeps this module private may
// not call it outside tests.
#[cfg_attr(not(test), allow(dead_code))]
pub fn sgemm_naive(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    b_rs: usize,
    b_cs: usize,
    c: &mut [f32],
    c_rs: usize,
    accumulate: bool,
) {
    check_args(
        m,
        n,
        k,
        a.len(),
        a_rs,
        a_cs,
        b.len(),
        b_rs,
        b_cs,
        c.len(),
        c_rs,
    );
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f64;
            for p in 0..k {
                s += f64::from(a[i * a_rs + p * a_cs]) * f64::from(b[p * b_rs + j * b_cs]);
            }
            let dst = &mut c[i * c_rs + j];
            *dst = if accumulate {
                (f64::from(*dst) + s) as f32
            } else {
                s as f32
            };
        }
    }
}

// ---------------------------------------------------------------------------
// Argument checks
// ---------------------------------------------------------------------------

/// Number of elements a strided `rows × cols` operand spans (0 if empty), or
/// `None` on overflow.
fn span(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return Some(0);
    }
    (rows - 1)
        .checked_mul(rs)?
        .checked_add((cols - 1).checked_mul(cs)?)?
        .checked_add(1)
}

/// The `# Panics` contract of [`sgemm`]. Everything the unsafe code relies on
/// about the extent of A, B and C is established here.
fn check_args(
    m: usize,
    n: usize,
    k: usize,
    a_len: usize,
    a_rs: usize,
    a_cs: usize,
    b_len: usize,
    b_rs: usize,
    b_cs: usize,
    c_len: usize,
    c_rs: usize,
) {
    let a_need = span(m, k, a_rs, a_cs);
    assert!(
        a_need.is_some_and(|s| s <= a_len),
        "sgemm: `a` too short for m={m}, k={k}, strides ({a_rs}, {a_cs}): len {a_len}"
    );
    let b_need = span(k, n, b_rs, b_cs);
    assert!(
        b_need.is_some_and(|s| s <= b_len),
        "sgemm: `b` too short for k={k}, n={n}, strides ({b_rs}, {b_cs}): len {b_len}"
    );
    assert!(
        m <= 1 || n == 0 || c_rs >= n,
        "sgemm: c_rs={c_rs} < n={n} would make rows of C overlap"
    );
    let c_need = span(m, n, c_rs, 1);
    assert!(
        c_need.is_some_and(|s| s <= c_len),
        "sgemm: `c` too short for m={m}, n={n}, c_rs={c_rs}: len {c_len}"
    );
}

// ---------------------------------------------------------------------------
// Dispatch and blocking
// ---------------------------------------------------------------------------

/// Micro-kernel family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// 6×64 AVX-512F kernel (inline asm) plus AVX2 packing transposes;
    /// requires AVX-512F, AVX2 and FMA.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Avx512,
    /// 6×16 AVX2+FMA kernel plus AVX2 packing transposes.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Avx2,
    /// 4×8 portable kernel.
    Scalar,
}

/// Best path for this CPU, detected once.
fn detect_path() -> Path {
    static PATH: OnceLock<Path> = OnceLock::new();
    *PATH.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma");
            if avx2 && std::arch::is_x86_feature_detected!("avx512f") {
                return Path::Avx512;
            }
            if avx2 {
                return Path::Avx2;
            }
        }
        Path::Scalar
    })
}

/// Share of an m×n product's micro-kernel work that is real output on this
/// CPU's kernel (MR×NR tiles; edge tiles are zero-padded): 1 when `m` is a
/// multiple of MR and `n` of NR. A caller free to compute `C` or `Cᵀ` (an
/// n×m product) picks the orientation with the larger fill: at n = 32 the
/// 6×64 AVX-512 kernel leaves half of every tile empty.
pub(crate) fn tile_fill(m: usize, n: usize) -> f64 {
    let (mr, nr) = match detect_path() {
        #[cfg(target_arch = "x86_64")]
        Path::Avx512 => (AVX512_MR, AVX512_NR),
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => (AVX2_MR, AVX2_NR),
        _ => (SCALAR_MR, SCALAR_NR),
    };
    if m == 0 || n == 0 {
        return 1.0;
    }
    (m * n) as f64 / (round_up(m, mr) * round_up(n, nr)) as f64
}

/// Cache blocking: `kc` is the maximum depth of a packed block (the actual
/// depth is [`depth_block`]), `mc` the rows of a packed A block, `nc` the
/// columns of a packed B block.
#[derive(Clone, Copy, Debug)]
struct Blocking {
    mc: usize,
    kc: usize,
    nc: usize,
}

/// Problems with fewer multiply-adds than this run on the calling thread.
const PARALLEL_THRESHOLD: usize = 64 * 64 * 64;

/// [`sgemm`] with an explicit kernel family (tests force each one).
fn sgemm_with(
    path: Path,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: BElems<'_>,
    b_rs: usize,
    b_cs: usize,
    c: &mut [f32],
    c_rs: usize,
    accumulate: bool,
) {
    check_args(
        m,
        n,
        k,
        a.len(),
        a_rs,
        a_cs,
        b.len(),
        b_rs,
        b_cs,
        c.len(),
        c_rs,
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                c[i * c_rs..i * c_rs + n].fill(0.0);
            }
        }
        return;
    }
    let threads = if m.saturating_mul(n).saturating_mul(k) < PARALLEL_THRESHOLD {
        1
    } else {
        rayon::current_num_threads().max(1)
    };
    let args = Args {
        m,
        n,
        k,
        a,
        a_rs,
        a_cs,
        b,
        b_rs,
        b_cs,
        c: CPtr(c.as_mut_ptr()),
        c_rs,
        accumulate,
        threads,
        avx2_pack: false,
        f16c_pack: false,
    };
    match path {
        #[cfg(target_arch = "x86_64")]
        Path::Avx512 => drive::<AVX512_MR, AVX512_NR>(
            kernel_avx512_entry,
            Blocking {
                mc: 480,
                kc: 256,
                nc: 2048,
            },
            &Args {
                avx2_pack: true,
                f16c_pack: has_f16c(),
                ..args
            },
        ),
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => drive::<AVX2_MR, AVX2_NR>(
            kernel_avx2_entry,
            Blocking {
                mc: 240,
                kc: 256,
                nc: 2048,
            },
            &Args {
                avx2_pack: true,
                f16c_pack: has_f16c(),
                ..args
            },
        ),
        _ => drive::<SCALAR_MR, SCALAR_NR>(
            kernel_scalar,
            Blocking {
                mc: 120,
                kc: 256,
                nc: 1024,
            },
            &args,
        ),
    }
}

/// Base pointer of C, shared by the worker threads.
#[derive(Clone, Copy)]
struct CPtr(*mut f32);
// SAFETY: the pointer comes from the `&mut [f32]` passed to `sgemm`, which
// outlives the parallel region; the threads write disjoint slabs of C (see
// `drive`), so sending/sharing the pointer cannot cause a data race.
unsafe impl Send for CPtr {}
// SAFETY: as above.
unsafe impl Sync for CPtr {}

/// Validated problem description shared by the blocked driver.
#[derive(Clone, Copy)]
struct Args<'a> {
    m: usize,
    n: usize,
    k: usize,
    a: &'a [f32],
    a_rs: usize,
    a_cs: usize,
    b: BElems<'a>,
    b_rs: usize,
    b_cs: usize,
    /// C[i, j] is at `c.0 + i*c_rs + j`; extent checked by `check_args`.
    c: CPtr,
    c_rs: usize,
    accumulate: bool,
    threads: usize,
    /// The AVX2 packing transposes may be used (AVX2 detected).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    avx2_pack: bool,
    /// F16C's widening may be used as well (F16C detected).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    f16c_pack: bool,
}

/// Whether this CPU converts f16 to f32 in vectors (F16C), detected once.
fn has_f16c() -> bool {
    static F16C: OnceLock<bool> = OnceLock::new();
    *F16C.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("f16c")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Micro-kernel: the MR×NR tile at `c` (row stride `c_rs`) is set to (or, if
/// the flag is true, incremented by) `sum_p a[p*MR + i] * b[p*NR + j]` for
/// `p in 0..kc`, accumulated in increasing `p`.
///
/// The trailing pointer (row stride given by the last argument) is the C tile
/// that will be computed next; its cache lines are prefetched. It is only a
/// hint: it is never dereferenced and may point anywhere.
///
/// # Safety
/// `a` must be valid for reading `kc*MR` floats, `b` for `kc*NR`, the MR×NR
/// tile at `c` must be valid for reads and writes and not accessed by anyone
/// else during the call, and the CPU must support the kernel's features.
type Kernel = unsafe fn(usize, *const f32, *const f32, *mut f32, usize, bool, *const f32, usize);

// ---------------------------------------------------------------------------
// Packing buffers
// ---------------------------------------------------------------------------

/// Reusable f32 buffer whose usable part starts on a 64-byte boundary.
struct AlignedBuf {
    data: Vec<f32>,
    off: usize,
}

impl AlignedBuf {
    const fn new() -> Self {
        AlignedBuf {
            data: Vec::new(),
            off: 0,
        }
    }

    /// A 64-byte aligned slice of `len` floats (contents unspecified).
    fn get(&mut self, len: usize) -> &mut [f32] {
        if self.data.len() < len + 16 {
            self.data = vec![0.0; len + 16];
            let addr = self.data.as_ptr() as usize;
            self.off = ((64 - addr % 64) % 64) / 4;
        }
        &mut self.data[self.off..self.off + len]
    }
}

thread_local! {
    static A_PACK: RefCell<AlignedBuf> = const { RefCell::new(AlignedBuf::new()) };
    static B_PACK: RefCell<AlignedBuf> = const { RefCell::new(AlignedBuf::new()) };
}

/// Runs `f` with this thread's buffer `key`, or with a fresh buffer if it is
/// already borrowed (a re-entrant call).
fn with_buf<R>(
    key: &'static std::thread::LocalKey<RefCell<AlignedBuf>>,
    f: impl FnOnce(&mut AlignedBuf) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => f(&mut buf),
        Err(_) => f(&mut AlignedBuf::new()),
    })
}

fn round_up(x: usize, m: usize) -> usize {
    x.div_ceil(m) * m
}

// ---------------------------------------------------------------------------
// Blocked driver
// ---------------------------------------------------------------------------

/// Depth of the k-blocks: the fewest blocks of at most `kc_max` covering `k`,
/// made about equal and rounded up to a multiple of 8 (keeps packed A panels
/// 64-byte aligned): k = 2048 → 8×256, k = 1000 → 256+256+256+232,
/// k = 300 → 152+148. It depends only on `k`, so each output element's
/// summation order is the same for every thread count.
fn depth_block(k: usize, kc_max: usize) -> usize {
    let blocks = k.div_ceil(kc_max);
    round_up(k.div_ceil(blocks), 8).min(kc_max)
}

/// Runs the blocked algorithm on the current rayon pool.
///
/// * One thread: [`block_gemm`] on the whole of C.
/// * Several threads and enough rows: for each (NC, KC) block, the threads
///   pack B together, then compute row chunks of C (whole MR panels, at most
///   MC rows, about four chunks per thread so work stealing evens out
///   uneven progress), each chunk packing its own rows of A. Nothing is
///   packed twice.
/// * Several threads and few rows: C is cut into column slabs of whole NR
///   panels, one per thread, each running [`block_gemm`] (the small A is
///   packed by every thread).
fn drive<const MR: usize, const NR: usize>(kernel: Kernel, blk: Blocking, g: &Args<'_>) {
    let kc = depth_block(g.k, blk.kc);
    let m_panels = g.m.div_ceil(MR);
    let n_panels = g.n.div_ceil(NR);
    let t = g.threads;
    if t == 1 {
        block_gemm::<MR, NR>(kernel, blk, kc, g, (0, g.m), (0, g.n));
    } else if m_panels >= 2 * t || m_panels * MR >= n_panels * NR {
        shared_b_gemm::<MR, NR>(kernel, blk, kc, g);
    } else {
        let parts = t.min(n_panels);
        (0..parts).into_par_iter().for_each(|p| {
            let lo = (n_panels * p / parts * NR).min(g.n);
            let hi = (n_panels * (p + 1) / parts * NR).min(g.n);
            if lo < hi {
                block_gemm::<MR, NR>(kernel, blk, kc, g, (0, g.m), (lo, hi));
            }
        });
    }
}

/// Multi-threaded loop nest with one shared packed B block per (NC, KC)
/// block; see [`drive`].
fn shared_b_gemm<const MR: usize, const NR: usize>(
    kernel: Kernel,
    blk: Blocking,
    kc_max: usize,
    g: &Args<'_>,
) {
    let nc_max = round_up(blk.nc.min(g.n), NR);
    let m_panels = g.m.div_ceil(MR);
    let chunk_panels = m_panels.div_ceil(4 * g.threads).clamp(1, blk.mc / MR);
    let chunks = m_panels.div_ceil(chunk_panels);
    with_buf(&B_PACK, |b_buf| {
        let b_pack = b_buf.get(kc_max * nc_max);
        for jc in (0..g.n).step_by(nc_max) {
            let nc = nc_max.min(g.n - jc);
            let n_panels = nc.div_ceil(NR);
            for pc in (0..g.k).step_by(kc_max) {
                let kc = kc_max.min(g.k - pc);
                b_pack[..n_panels * kc * NR]
                    .par_chunks_mut(kc * NR)
                    .enumerate()
                    .for_each(|(jp, panel)| {
                        let j0 = jc + jp * NR;
                        pack_b_panel::<NR>(panel, g, pc, kc, j0, NR.min(jc + nc - j0));
                    });
                let b_pack: &[f32] = b_pack;
                (0..chunks).into_par_iter().for_each(|ci| {
                    let ic = ci * chunk_panels * MR;
                    let mc = (chunk_panels * MR).min(g.m - ic);
                    with_buf(&A_PACK, |a_buf| {
                        let a_pack = a_buf.get(kc_max * chunk_panels * MR);
                        let a_pack = &mut a_pack[..mc.div_ceil(MR) * kc * MR];
                        pack_a::<MR>(a_pack, g, ic, mc, pc, kc);
                        macro_kernel::<MR, NR>(
                            kernel,
                            g,
                            a_pack,
                            b_pack,
                            (ic, mc),
                            (jc, nc),
                            pc,
                            kc,
                        );
                    });
                });
            }
        }
    })
}

/// Single-threaded GotoBLAS/BLIS loop nest on C[rows.0..rows.1, cols.0..cols.1]:
/// for each NC column block and KC depth block, pack B (KC×NC, NR-column
/// panels); for each MC row block pack A (MC×KC, MR-row panels) and run
/// [`macro_kernel`].
fn block_gemm<const MR: usize, const NR: usize>(
    kernel: Kernel,
    blk: Blocking,
    kc_max: usize,
    g: &Args<'_>,
    rows: (usize, usize),
    cols: (usize, usize),
) {
    let nc_max = round_up(blk.nc.min(cols.1 - cols.0), NR);
    let mc_max = round_up(blk.mc.min(rows.1 - rows.0), MR);
    with_buf(&B_PACK, |b_buf| {
        with_buf(&A_PACK, |a_buf| {
            let b_pack = b_buf.get(kc_max * nc_max);
            let a_pack = a_buf.get(kc_max * mc_max);
            for jc in (cols.0..cols.1).step_by(nc_max) {
                let nc = nc_max.min(cols.1 - jc);
                let n_panels = nc.div_ceil(NR);
                for pc in (0..g.k).step_by(kc_max) {
                    let kc = kc_max.min(g.k - pc);
                    for (jp, panel) in b_pack[..n_panels * kc * NR]
                        .chunks_exact_mut(kc * NR)
                        .enumerate()
                    {
                        let j0 = jc + jp * NR;
                        pack_b_panel::<NR>(panel, g, pc, kc, j0, NR.min(jc + nc - j0));
                    }
                    for ic in (rows.0..rows.1).step_by(mc_max) {
                        let mc = mc_max.min(rows.1 - ic);
                        let a_pack = &mut a_pack[..mc.div_ceil(MR) * kc * MR];
                        pack_a::<MR>(a_pack, g, ic, mc, pc, kc);
                        macro_kernel::<MR, NR>(
                            kernel,
                            g,
                            a_pack,
                            b_pack,
                            (ic, mc),
                            (jc, nc),
                            pc,
                            kc,
                        );
                    }
                }
            }
        })
    })
}

/// Multiplies a packed A block (rows `ic..ic+mc`) by a packed B block
/// (columns `jc..jc+nc`) of depth `kc` starting at `pc`, into C. The
/// micro-kernel runs over the NR-column panels (outer) and MR-row panels
/// (inner), so one B micro-panel stays in L1/L2 while A streams from L2.
fn macro_kernel<const MR: usize, const NR: usize>(
    kernel: Kernel,
    g: &Args<'_>,
    a_pack: &[f32],
    b_pack: &[f32],
    (ic, mc): (usize, usize),
    (jc, nc): (usize, usize),
    pc: usize,
    kc: usize,
) {
    let overwrite = pc == 0 && !g.accumulate;
    let a_panels = mc.div_ceil(MR);
    for jp in 0..nc.div_ceil(NR) {
        let j0 = jc + jp * NR;
        let nr = NR.min(jc + nc - j0);
        let bp = b_pack[jp * kc * NR..][..kc * NR].as_ptr();
        for ip in 0..a_panels {
            let i0 = ic + ip * MR;
            let mr = MR.min(ic + mc - i0);
            let ap = a_pack[ip * kc * MR..][..kc * MR].as_ptr();
            // Next tile: down this column of tiles, else the top of the next one.
            let next = if ip + 1 < a_panels {
                (i0 + MR) * g.c_rs + j0
            } else {
                ic * g.c_rs + j0 + NR
            };
            let pf = g.c.0.wrapping_add(next).cast_const();
            tile::<MR, NR>(kernel, kc, ap, bp, g, (i0, j0), (mr, nr), overwrite, pf);
        }
    }
}

/// Size of the edge-tile scratch buffer (≥ MR·NR of every kernel).
const SCRATCH: usize = 6 * 64;

/// Runs the micro-kernel for the C tile at `at` = (i0, j0) of which
/// `valid` = (mr, nr) elements exist; partial tiles go through a scratch tile
/// so the kernel always computes a full, zero-padded MR×NR tile.
#[inline]
fn tile<const MR: usize, const NR: usize>(
    kernel: Kernel,
    kc: usize,
    ap: *const f32,
    bp: *const f32,
    g: &Args<'_>,
    at: (usize, usize),
    valid: (usize, usize),
    overwrite: bool,
    pf: *const f32,
) {
    let ((i0, j0), (mr, nr)) = (at, valid);
    if mr == MR && nr == NR {
        // SAFETY: `ap`/`bp` come from in-bounds sub-slices of kc*MR / kc*NR
        // floats of the packing buffers. The full tile (rows i0..i0+MR <= m,
        // columns j0..j0+NR <= n) lies inside C, whose extent `check_args`
        // verified, and it belongs to this thread's slab only (slabs are
        // disjoint whole-panel row or column ranges). `kernel` was selected
        // for the detected CPU features.
        unsafe {
            kernel(
                kc,
                ap,
                bp,
                g.c.0.add(i0 * g.c_rs + j0),
                g.c_rs,
                !overwrite,
                pf,
                g.c_rs,
            )
        };
    } else {
        let mut scratch = [0f32; SCRATCH];
        assert!(MR * NR <= SCRATCH);
        // SAFETY: as above for `ap`/`bp`; the output is the local scratch
        // buffer, which holds a full MR×NR tile with row stride NR.
        unsafe { kernel(kc, ap, bp, scratch.as_mut_ptr(), NR, false, pf, g.c_rs) };
        for i in 0..mr {
            // SAFETY: row i0+i < m and columns j0..j0+nr <= n are inside C
            // (`check_args`) and inside this thread's slab; no other reference
            // to these elements exists while the slice lives.
            let row =
                unsafe { std::slice::from_raw_parts_mut(g.c.0.add((i0 + i) * g.c_rs + j0), nr) };
            // Same single rounding (C + tile sum) as the full-tile kernels.
            for (x, &s) in row.iter_mut().zip(&scratch[i * NR..i * NR + nr]) {
                *x = if overwrite { s } else { *x + s };
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Packing
// ---------------------------------------------------------------------------

/// Packs A[i0..i0+mc, p0..p0+kc] into MR-row panels laid out `[panel][p][MR]`
/// (`dst.len()` = panels·kc·MR), zero-padding the rows of the last panel.
fn pack_a<const MR: usize>(
    dst: &mut [f32],
    g: &Args<'_>,
    i0: usize,
    mc: usize,
    p0: usize,
    kc: usize,
) {
    let (a, a_rs, a_cs) = (g.a, g.a_rs, g.a_cs);
    for (ip, panel) in dst.chunks_exact_mut(kc * MR).enumerate() {
        let r0 = i0 + ip * MR;
        let rows = MR.min(i0 + mc - r0);
        if rows == MR && a_cs == 1 {
            // Row-major A: transpose MR contiguous row segments.
            let src: [&[f32]; MR] = std::array::from_fn(|i| &a[(r0 + i) * a_rs + p0..][..kc]);
            // Depth steps packed by the vectorised transpose (a multiple of 8).
            #[cfg(target_arch = "x86_64")]
            let done = if MR == 6 && g.avx2_pack {
                let done = kc / 8 * 8;
                let rows_ptr: [*const f32; 6] = std::array::from_fn(|i| src[i].as_ptr());
                // SAFETY: every row slice has kc >= done floats, `panel` has
                // 6*kc >= 6*done, and `avx2_pack` is only set when AVX2 was
                // detected.
                unsafe {
                    pack_a6_rowmajor_avx2(rows_ptr, a_rs.wrapping_mul(6), done, panel.as_mut_ptr())
                };
                done
            } else {
                0
            };
            #[cfg(not(target_arch = "x86_64"))]
            let done = 0;
            for (p, d) in panel.chunks_exact_mut(MR).enumerate().skip(done) {
                for (x, s) in d.iter_mut().zip(&src) {
                    *x = s[p];
                }
            }
        } else if rows == MR && a_rs == 1 {
            // Column-major (transposed) A: each depth step is MR contiguous floats.
            for (p, d) in panel.chunks_exact_mut(MR).enumerate() {
                d.copy_from_slice(&a[r0 + (p0 + p) * a_cs..][..MR]);
            }
        } else {
            for (p, d) in panel.chunks_exact_mut(MR).enumerate() {
                for (i, x) in d.iter_mut().enumerate() {
                    *x = if i < rows {
                        a[(r0 + i) * a_rs + (p0 + p) * a_cs]
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// Packs B[p0..p0+kc, j0..j0+cols] into one NR-column panel laid out
/// `[p][NR]` (`panel.len()` = kc·NR), zero-padding missing columns;
/// half-precision elements are widened here.
fn pack_b_panel<const NR: usize>(
    panel: &mut [f32],
    g: &Args<'_>,
    p0: usize,
    kc: usize,
    j0: usize,
    cols: usize,
) {
    // The vectorised column-major packer of each element type, where this
    // CPU has one.
    #[cfg(target_arch = "x86_64")]
    let (f32_vec, f16_vec, bf16_vec) = (
        g.avx2_pack
            .then_some(pack_b_colmajor_avx2::<NR> as ColPacker<f32>),
        (g.avx2_pack && g.f16c_pack)
            .then_some(pack_b_colmajor_f16_avx2::<NR> as ColPacker<half::f16>),
        g.avx2_pack
            .then_some(pack_b_colmajor_bf16_avx2::<NR> as ColPacker<_>),
    );
    #[cfg(not(target_arch = "x86_64"))]
    let (f32_vec, f16_vec, bf16_vec) = (None, None, None);
    let at = (p0, kc, j0, cols);
    match g.b {
        BElems::F32(b) => pack_b_typed::<NR, f32>(panel, b, g, at, f32_vec),
        BElems::F16(b) => pack_b_typed::<NR, half::f16>(panel, b, g, at, f16_vec),
        BElems::BF16(b) => pack_b_typed::<NR, half::bf16>(panel, b, g, at, bf16_vec),
    }
}

/// Packs `done` (a multiple of 8) depth steps of NR column-major columns:
/// column j starts at `src + j*b_cs`; writes `dst[p*NR + j]`, widened.
///
/// # Safety
/// `src + j*b_cs` must be valid for reading `done` elements for every
/// j < NR, `dst` for writing `NR*done` floats, and the CPU must support the
/// packer's instructions.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
type ColPacker<T> = unsafe fn(*const T, usize, usize, *mut f32);

/// [`pack_b_panel`] for B stored as `T`; `vector` packs column-major
/// blocks (see [`ColPacker`]).
fn pack_b_typed<const NR: usize, T: Stored<f32>>(
    panel: &mut [f32],
    b: &[T],
    g: &Args<'_>,
    (p0, kc, j0, cols): (usize, usize, usize, usize),
    vector: Option<ColPacker<T>>,
) {
    let (b_rs, b_cs) = (g.b_rs, g.b_cs);
    if cols == NR && b_cs == 1 {
        // Row-major B: each depth step is NR contiguous elements.
        for (p, d) in panel.chunks_exact_mut(NR).enumerate() {
            T::widen_slice(&b[(p0 + p) * b_rs + j0..][..NR], d);
        }
    } else if cols == NR && b_rs == 1 {
        // Column-major (transposed) B: transpose NR contiguous column segments.
        let src: [&[T]; NR] = std::array::from_fn(|j| &b[(j0 + j) * b_cs + p0..][..kc]);
        // Depth steps packed by the vectorised transpose (a multiple of 8).
        let done = match vector {
            Some(pack) if NR.is_multiple_of(8) => {
                let done = kc / 8 * 8;
                let base = b[j0 * b_cs + p0..].as_ptr();
                // SAFETY: `base` (derived from all of `b` from B[p0, j0] on)
                // plus j*b_cs is the start of `src[j]` (b_rs == 1), which
                // proves kc >= done elements are readable there for every
                // j < NR; `panel` has kc*NR floats; a packer is only offered
                // when its instructions were detected.
                unsafe { pack(base, b_cs, done, panel.as_mut_ptr()) };
                done
            }
            _ => 0,
        };
        // Remaining depth steps, in chunks of 16 so the writes stay in L1.
        for blk in panel[done * NR..].chunks_mut(16 * NR).enumerate() {
            let (q0, out) = (done + blk.0 * 16, blk.1);
            for (j, s) in src.iter().enumerate() {
                for (q, d) in out.chunks_exact_mut(NR).enumerate() {
                    d[j] = s[q0 + q].widen();
                }
            }
        }
    } else {
        for (p, d) in panel.chunks_exact_mut(NR).enumerate() {
            for (j, x) in d.iter_mut().enumerate() {
                *x = if j < cols {
                    b[(p0 + p) * b_rs + (j0 + j) * b_cs].widen()
                } else {
                    0.0
                };
            }
        }
    }
}

/// Transposes 6 rows of `done` floats (a multiple of 8) into
/// `dst[p*6 + i] = rows[i][p]` with 8×8 register transposes (rows 6 and 7
/// zero; overlapping full-width stores, the very last one masked), prefetching the rows `next` floats
/// further on (the next panel).
///
/// # Safety
/// Each `rows[i]` must be valid for reading `done` floats, `dst` for writing
/// `6*done`, and the CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unused_unsafe)] // the intrinsics are `unsafe fn`s before Rust 1.87
unsafe fn pack_a6_rowmajor_avx2(rows: [*const f32; 6], next: usize, done: usize, dst: *mut f32) {
    use std::arch::x86_64::*;
    for blk in 0..done / 8 {
        // SAFETY: blk*8 + 8 <= done, so each row load reads floats
        // blk*8..blk*8+8 of that row. The stores write floats
        // blk*48..blk*48+50, within 6*done when another block follows
        // (6*done >= blk*48 + 96), and only up to blk*48+48 <= 6*done for
        // the last block, whose final store is masked to 6 lanes. Prefetches are hints that
        // never fault; `wrapping_add` keeps their address computation defined.
        unsafe {
            let mask = _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, 0, 0);
            let mut r = [_mm256_setzero_ps(); 8];
            for (x, row) in r.iter_mut().zip(rows) {
                _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(next.wrapping_add(blk * 8)).cast());
                *x = _mm256_loadu_ps(row.add(blk * 8));
            }
            let t = transpose8(r);
            // Each store writes 8 lanes where 6 belong to depth step p; the
            // 2 extra lanes land on step p + 1's start and are overwritten
            // by the next store (full-width stores: masked stores are slow
            // on some CPUs). The last step of the last block, whose extra
            // lanes would pass the end of `dst`, is stored with a mask.
            for (p, &v) in t.iter().enumerate().take(7) {
                _mm256_storeu_ps(dst.add(blk * 48 + p * 6), v);
            }
            if blk + 1 < done / 8 {
                _mm256_storeu_ps(dst.add(blk * 48 + 42), t[7]);
            } else {
                _mm256_maskstore_ps(dst.add(blk * 48 + 42), mask, t[7]);
            }
        }
    }
}

/// Packs NR (a multiple of 8) columns of a column-major B block: column j
/// starts at `src + j*b_cs` and is contiguous in depth; writes
/// `dst[p*NR + j]` for `p < done` (a multiple of 8) via 8×8 transposes.
///
/// # Safety
/// `src + j*b_cs` must be valid for reading `done` floats for every j < NR,
/// `dst` for writing `NR*done` floats, and the CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unused_unsafe)] // the intrinsics are `unsafe fn`s before Rust 1.87
unsafe fn pack_b_colmajor_avx2<const NR: usize>(
    src: *const f32,
    b_cs: usize,
    done: usize,
    dst: *mut f32,
) {
    // SAFETY: forwarded from this function's contract; each load reads 8
    // floats, AVX is enabled here.
    unsafe {
        pack_b_colmajor_8x8::<NR, f32>(src, b_cs, done, dst, |p| {
            std::arch::x86_64::_mm256_loadu_ps(p)
        })
    }
}

/// [`pack_b_colmajor_avx2`] for f16 columns, widened by F16C (exact).
///
/// # Safety
/// As [`ColPacker`]; the CPU must support AVX2 and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
#[allow(unused_unsafe)] // the intrinsics are `unsafe fn`s before Rust 1.87
unsafe fn pack_b_colmajor_f16_avx2<const NR: usize>(
    src: *const half::f16,
    b_cs: usize,
    done: usize,
    dst: *mut f32,
) {
    use std::arch::x86_64::*;
    // SAFETY: forwarded from this function's contract; each load reads 8
    // halves (16 bytes), F16C is enabled here.
    unsafe {
        pack_b_colmajor_8x8::<NR, half::f16>(src, b_cs, done, dst, |p| {
            _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
        })
    }
}

/// [`pack_b_colmajor_avx2`] for bf16 columns: each value's bits move to
/// the top of an f32 (exact), and NaNs are made quiet as `half` makes them.
///
/// # Safety
/// As [`ColPacker`]; the CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unused_unsafe)] // the intrinsics are `unsafe fn`s before Rust 1.87
unsafe fn pack_b_colmajor_bf16_avx2<const NR: usize>(
    src: *const half::bf16,
    b_cs: usize,
    done: usize,
    dst: *mut f32,
) {
    use std::arch::x86_64::*;
    // SAFETY: forwarded from this function's contract; each load reads 8
    // bf16 values (16 bytes), the rest is register arithmetic under AVX2.
    unsafe {
        let magnitude = _mm256_set1_epi32(0x7fff_ffff);
        let infinity = _mm256_set1_epi32(0x7f80_0000);
        let quiet = _mm256_set1_epi32(0x0040_0000);
        pack_b_colmajor_8x8::<NR, half::bf16>(src, b_cs, done, dst, |p| {
            let h = _mm_loadu_si128(p.cast());
            let bits = _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h));
            let nan = _mm256_cmpgt_epi32(_mm256_and_si256(bits, magnitude), infinity);
            _mm256_castsi256_ps(_mm256_or_si256(bits, _mm256_and_si256(nan, quiet)))
        })
    }
}

/// The column-major packers' loop: `load(p)` gives the 8 consecutive
/// elements at `p` widened to f32, and 8 columns' loads go through one 8×8
/// transpose.
///
/// # Safety
/// As [`ColPacker`], with `load` reading no more than 8 elements; the
/// caller enables the instruction sets of `load` and of AVX.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(unused_unsafe)] // the intrinsics are `unsafe fn`s before Rust 1.87
unsafe fn pack_b_colmajor_8x8<const NR: usize, T>(
    src: *const T,
    b_cs: usize,
    done: usize,
    dst: *mut f32,
    load: impl Fn(*const T) -> std::arch::x86_64::__m256,
) {
    use std::arch::x86_64::*;
    for pb in (0..done).step_by(8) {
        for jb in (0..NR).step_by(8) {
            // SAFETY: pb + 8 <= done and jb + j < NR, so every load is inside
            // column jb+j's first `done` elements and every store inside the
            // first NR*done floats of `dst`.
            unsafe {
                let r: [__m256; 8] = std::array::from_fn(|j| load(src.add((jb + j) * b_cs + pb)));
                for (c, v) in transpose8(r).into_iter().enumerate() {
                    _mm256_storeu_ps(dst.add((pb + c) * NR + jb), v);
                }
            }
        }
    }
}

/// 8×8 f32 transpose: output vector c holds element c of every input.
///
/// # Safety
/// The CPU must support AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[allow(unused_unsafe)] // the intrinsics are `unsafe fn`s before Rust 1.87
unsafe fn transpose8(r: [std::arch::x86_64::__m256; 8]) -> [std::arch::x86_64::__m256; 8] {
    use std::arch::x86_64::*;
    // SAFETY: register-only shuffles; AVX is enabled for this function.
    unsafe {
        // Per 128-bit half: pairs of rows, then quads (u[4h + q] holds rows
        // 4h..4h+4 at columns q and q + 4).
        let t: [__m256; 8] = std::array::from_fn(|i| {
            if i % 2 == 0 {
                _mm256_unpacklo_ps(r[i], r[i + 1])
            } else {
                _mm256_unpackhi_ps(r[i - 1], r[i])
            }
        });
        let u: [__m256; 8] = std::array::from_fn(|i| {
            let (h, q) = (i / 4, i % 4);
            let (x, y) = (t[4 * h + q / 2], t[4 * h + q / 2 + 2]);
            if q % 2 == 0 {
                _mm256_shuffle_ps::<0x44>(x, y)
            } else {
                _mm256_shuffle_ps::<0xEE>(x, y)
            }
        });
        std::array::from_fn(|c| {
            let (x, y) = (u[c % 4], u[4 + c % 4]);
            if c < 4 {
                _mm256_permute2f128_ps::<0x20>(x, y)
            } else {
                _mm256_permute2f128_ps::<0x31>(x, y)
            }
        })
    }
}

// ---------------------------------------------------------------------------
// Micro-kernels
// ---------------------------------------------------------------------------

const SCALAR_MR: usize = 4;
const SCALAR_NR: usize = 8;

/// Portable 4×8 micro-kernel (plain multiply then add, no intrinsics).
///
/// # Safety
/// See [`Kernel`].
unsafe fn kernel_scalar(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    c_rs: usize,
    accumulate: bool,
    _pf: *const f32,
    _pf_rs: usize,
) {
    // SAFETY: the caller guarantees kc*MR and kc*NR readable floats.
    let (a, b) = unsafe {
        (
            std::slice::from_raw_parts(a, kc * SCALAR_MR),
            std::slice::from_raw_parts(b, kc * SCALAR_NR),
        )
    };
    let mut acc = [[0f32; SCALAR_NR]; SCALAR_MR];
    for (ap, bp) in a.chunks_exact(SCALAR_MR).zip(b.chunks_exact(SCALAR_NR)) {
        for (acc_row, &ai) in acc.iter_mut().zip(ap) {
            for (x, &bj) in acc_row.iter_mut().zip(bp) {
                *x += ai * bj;
            }
        }
    }
    for (i, acc_row) in acc.iter().enumerate() {
        // SAFETY: the caller guarantees a writable MR×NR tile with row stride c_rs.
        let row = unsafe { std::slice::from_raw_parts_mut(c.add(i * c_rs), SCALAR_NR) };
        for (x, &s) in row.iter_mut().zip(acc_row) {
            *x = if accumulate { *x + s } else { s };
        }
    }
}

#[cfg(target_arch = "x86_64")]
const AVX512_MR: usize = 6;
#[cfg(target_arch = "x86_64")]
const AVX512_NR: usize = 64;
#[cfg(target_arch = "x86_64")]
const AVX2_MR: usize = 6;
#[cfg(target_arch = "x86_64")]
const AVX2_NR: usize = 16;

/// How far ahead (in floats) the packed A stream is prefetched.
#[cfg(target_arch = "x86_64")]
const A_PREFETCH: usize = 96;

/// Cache line `l` of a C tile with `per_row` lines per row (hint address).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn tile_line(base: *const f32, rs: usize, per_row: usize, l: usize) -> *const i8 {
    base.wrapping_add(
        (l / per_row)
            .wrapping_mul(rs)
            .wrapping_add((l % per_row) * 16),
    )
    .cast()
}

/// Asm text of one depth step of the 6×64 AVX-512 micro-kernel: load the 4
/// B vectors, prefetch the A stream 384 bytes ahead, then for each of the 6
/// rows broadcast its A value and do 4 FMAs into accumulators zmm(4i..4i+4).
#[cfg(target_arch = "x86_64")]
macro_rules! avx512_step {
    () => {
        concat!(
            "vmovups zmm24, [rdx]\n",
            "vmovups zmm25, [rdx + 64]\n",
            "vmovups zmm26, [rdx + 128]\n",
            "vmovups zmm27, [rdx + 192]\n",
            "prefetcht0 [rsi + 384]\n",
            "vbroadcastss zmm28, dword ptr [rsi]\n",
            "vfmadd231ps zmm0, zmm28, zmm24\n",
            "vfmadd231ps zmm1, zmm28, zmm25\n",
            "vfmadd231ps zmm2, zmm28, zmm26\n",
            "vfmadd231ps zmm3, zmm28, zmm27\n",
            "vbroadcastss zmm29, dword ptr [rsi + 4]\n",
            "vfmadd231ps zmm4, zmm29, zmm24\n",
            "vfmadd231ps zmm5, zmm29, zmm25\n",
            "vfmadd231ps zmm6, zmm29, zmm26\n",
            "vfmadd231ps zmm7, zmm29, zmm27\n",
            "vbroadcastss zmm28, dword ptr [rsi + 8]\n",
            "vfmadd231ps zmm8, zmm28, zmm24\n",
            "vfmadd231ps zmm9, zmm28, zmm25\n",
            "vfmadd231ps zmm10, zmm28, zmm26\n",
            "vfmadd231ps zmm11, zmm28, zmm27\n",
            "vbroadcastss zmm29, dword ptr [rsi + 12]\n",
            "vfmadd231ps zmm12, zmm29, zmm24\n",
            "vfmadd231ps zmm13, zmm29, zmm25\n",
            "vfmadd231ps zmm14, zmm29, zmm26\n",
            "vfmadd231ps zmm15, zmm29, zmm27\n",
            "vbroadcastss zmm28, dword ptr [rsi + 16]\n",
            "vfmadd231ps zmm16, zmm28, zmm24\n",
            "vfmadd231ps zmm17, zmm28, zmm25\n",
            "vfmadd231ps zmm18, zmm28, zmm26\n",
            "vfmadd231ps zmm19, zmm28, zmm27\n",
            "vbroadcastss zmm29, dword ptr [rsi + 20]\n",
            "vfmadd231ps zmm20, zmm29, zmm24\n",
            "vfmadd231ps zmm21, zmm29, zmm25\n",
            "vfmadd231ps zmm22, zmm29, zmm26\n",
            "vfmadd231ps zmm23, zmm29, zmm27\n",
            "add rsi, 24\n",
            "add rdx, 256\n",
        )
    };
}

/// AVX-512 6×64 micro-kernel, written in inline assembly so that the 30 zmm
/// registers it uses and the order of its loads, broadcasts and FMAs are
/// fixed rather than left to the compiler.
///
/// Accumulators: zmm(4i + v) holds C[i, 16v..16v+16] (i < 6, v < 4); zmm24-27
/// hold the current B row, zmm28/29 the broadcast A values. Per depth step: 4
/// loads, 6 broadcasts, 24 FMAs, accumulated in increasing depth order.
///
/// Prefetch schedule: the 24 cache lines of the *next* C tile are prefetched
/// towards L2 (T1), one every s1 ≈ (kc − 24)/24 steps; during the last 24
/// steps one line of *this* C tile per step is prefetched into L1 (T0), just
/// before the write-back; the packed A stream is kept 384 bytes ahead.
///
/// # Safety
/// See [`Kernel`]; the CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
unsafe fn kernel_avx512_entry(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    c_rs: usize,
    accumulate: bool,
    pf: *const f32,
    pf_rs: usize,
) {
    // Step counts of the three phases (see the prefetch schedule above):
    // n_pre·4·s1 + mid + n_post·4 = kc.
    let n_post = (kc / 4).min(AVX512_MR);
    let rest = kc - 4 * n_post;
    let s1 = (rest / (4 * AVX512_MR)).max(1);
    let n_pre = (rest / (4 * s1)).min(AVX512_MR);
    let mid = rest - 4 * s1 * n_pre;
    // SAFETY: the kernel reads kc*6 floats from `a` and kc*64 from `b` (one
    // step each per depth step, n_pre*4*s1 + mid + n_post*4 = kc steps) and
    // reads/writes the 6×64 tile at `c` with row stride c_rs, all guaranteed
    // by the caller (`Kernel` contract); `prefetcht0/1` never fault, whatever
    // the address. AVX-512F is available (caller contract). The general
    // registers it changes are operands; the vector and mask registers are
    // declared clobbered by `clobber_abi("C")` (they are all caller-saved).
    // When the crate is built without AVX-512 (the default) that list cannot
    // name zmm16-31, but then compiled code cannot use them either. It ends
    // with `vzeroupper` and does not touch the stack.
    unsafe {
        std::arch::asm!(
            "vpxord zmm0, zmm0, zmm0", "vpxord zmm1, zmm1, zmm1", "vpxord zmm2, zmm2, zmm2", "vpxord zmm3, zmm3, zmm3",
            "vpxord zmm4, zmm4, zmm4", "vpxord zmm5, zmm5, zmm5", "vpxord zmm6, zmm6, zmm6", "vpxord zmm7, zmm7, zmm7",
            "vpxord zmm8, zmm8, zmm8", "vpxord zmm9, zmm9, zmm9", "vpxord zmm10, zmm10, zmm10", "vpxord zmm11, zmm11, zmm11",
            "vpxord zmm12, zmm12, zmm12", "vpxord zmm13, zmm13, zmm13", "vpxord zmm14, zmm14, zmm14", "vpxord zmm15, zmm15, zmm15",
            "vpxord zmm16, zmm16, zmm16", "vpxord zmm17, zmm17, zmm17", "vpxord zmm18, zmm18, zmm18", "vpxord zmm19, zmm19, zmm19",
            "vpxord zmm20, zmm20, zmm20", "vpxord zmm21, zmm21, zmm21", "vpxord zmm22, zmm22, zmm22", "vpxord zmm23, zmm23, zmm23",
            // Phase 1: r9 rows × 4 lines × (one T1 prefetch of a line of the
            // next tile + s1 steps).
            "test r9, r9",
            "jz 3f",
            "2:",
            "prefetcht1 [r8]",
            "mov rcx, {s1_acc}",
            "shr rcx, 1",
            "20:",
            avx512_step!(),
            "dec rcx",
            "jnz 20b",
            "prefetcht1 [r8 + 64]",
            "mov rcx, {s1_acc}",
            "shr rcx, 1",
            "21:",
            avx512_step!(),
            "dec rcx",
            "jnz 21b",
            "prefetcht1 [r8 + 128]",
            "mov rcx, {s1_acc}",
            "shr rcx, 1",
            "22:",
            avx512_step!(),
            "dec rcx",
            "jnz 22b",
            "prefetcht1 [r8 + 192]",
            "mov rcx, {s1_acc}",
            "shr rcx, 1",
            "23:",
            avx512_step!(),
            "dec rcx",
            "jnz 23b",
            "add r8, {pf_rs}",
            "dec r9",
            "jnz 2b",
            "3:",
            // Phase 2: mid plain steps.
            "test r10, r10",
            "jz 5f",
            "4:",
            avx512_step!(),
            "dec r10",
            "jnz 4b",
            "5:",
            // Phase 3: n_post × (T0 prefetch of one line of this tile + 1 step) × 4.
            "mov rax, {c}",
            "test r11, r11",
            "jz 7f",
            "6:",
            "prefetcht0 [rax]",
            avx512_step!(),
            "prefetcht0 [rax + 64]",
            avx512_step!(),
            "prefetcht0 [rax + 128]",
            avx512_step!(),
            "prefetcht0 [rax + 192]",
            avx512_step!(),
            "add rax, {c_rs}",
            "dec r11",
            "jnz 6b",
            "7:",
            // Write-back: C = acc, or C = C + acc.
            "mov rax, {c}",
            "test {s1_acc:e}, 1",
            "jz 8f",
            "vaddps zmm0, zmm0, [rax]", "vaddps zmm1, zmm1, [rax + 64]", "vaddps zmm2, zmm2, [rax + 128]", "vaddps zmm3, zmm3, [rax + 192]",
            "add rax, {c_rs}",
            "vaddps zmm4, zmm4, [rax]", "vaddps zmm5, zmm5, [rax + 64]", "vaddps zmm6, zmm6, [rax + 128]", "vaddps zmm7, zmm7, [rax + 192]",
            "add rax, {c_rs}",
            "vaddps zmm8, zmm8, [rax]", "vaddps zmm9, zmm9, [rax + 64]", "vaddps zmm10, zmm10, [rax + 128]", "vaddps zmm11, zmm11, [rax + 192]",
            "add rax, {c_rs}",
            "vaddps zmm12, zmm12, [rax]", "vaddps zmm13, zmm13, [rax + 64]", "vaddps zmm14, zmm14, [rax + 128]", "vaddps zmm15, zmm15, [rax + 192]",
            "add rax, {c_rs}",
            "vaddps zmm16, zmm16, [rax]", "vaddps zmm17, zmm17, [rax + 64]", "vaddps zmm18, zmm18, [rax + 128]", "vaddps zmm19, zmm19, [rax + 192]",
            "add rax, {c_rs}",
            "vaddps zmm20, zmm20, [rax]", "vaddps zmm21, zmm21, [rax + 64]", "vaddps zmm22, zmm22, [rax + 128]", "vaddps zmm23, zmm23, [rax + 192]",
            "mov rax, {c}",
            "8:",
            "vmovups [rax], zmm0", "vmovups [rax + 64], zmm1", "vmovups [rax + 128], zmm2", "vmovups [rax + 192], zmm3",
            "add rax, {c_rs}",
            "vmovups [rax], zmm4", "vmovups [rax + 64], zmm5", "vmovups [rax + 128], zmm6", "vmovups [rax + 192], zmm7",
            "add rax, {c_rs}",
            "vmovups [rax], zmm8", "vmovups [rax + 64], zmm9", "vmovups [rax + 128], zmm10", "vmovups [rax + 192], zmm11",
            "add rax, {c_rs}",
            "vmovups [rax], zmm12", "vmovups [rax + 64], zmm13", "vmovups [rax + 128], zmm14", "vmovups [rax + 192], zmm15",
            "add rax, {c_rs}",
            "vmovups [rax], zmm16", "vmovups [rax + 64], zmm17", "vmovups [rax + 128], zmm18", "vmovups [rax + 192], zmm19",
            "add rax, {c_rs}",
            "vmovups [rax], zmm20", "vmovups [rax + 64], zmm21", "vmovups [rax + 128], zmm22", "vmovups [rax + 192], zmm23",
            "vzeroupper",
            // `clobber_abi` requires explicit (unnamed) registers for outputs:
            // rsi = A panel, rdx = B panel, r8 = next C tile row, r9/r10/r11 =
            // phase counters, rax = C row pointer.
            inout("rsi") a => _,
            inout("rdx") b => _,
            inout("r8") pf => _,
            inout("r9") n_pre => _,
            inout("r10") mid => _,
            inout("r11") n_post => _,
            out("rax") _,
            out("rcx") _,
            c = in(reg) c,
            c_rs = in(reg) c_rs.wrapping_mul(4),
            pf_rs = in(reg) pf_rs.wrapping_mul(4),
            // Steps per prefetched line in bits 1.., the accumulate flag in bit 0.
            s1_acc = in(reg) (s1 << 1) | usize::from(accumulate),
            clobber_abi("C"),
            options(nostack),
        );
    }
}

/// AVX2 entry point with the [`Kernel`] signature.
///
/// # Safety
/// See [`Kernel`]; the CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
unsafe fn kernel_avx2_entry(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    c_rs: usize,
    accumulate: bool,
    pf: *const f32,
    pf_rs: usize,
) {
    // SAFETY: forwarded contract; this entry is only selected when AVX2 and FMA were detected.
    unsafe { kernel_avx2::<AVX2_MR, { AVX2_NR / 8 }>(kc, a, b, c, c_rs, accumulate, pf, pf_rs) }
}

/// AVX2+FMA MR×(8·NV) micro-kernel: per depth step, load NV vectors of the
/// B panel, broadcast MR values of the A panel, MR·NV FMAs into register
/// accumulators; same prefetch schedule as the AVX-512 kernel (one C cache
/// line per tile row).
///
/// # Safety
/// See [`Kernel`]; the CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(unused_unsafe)] // the intrinsics are `unsafe fn`s before Rust 1.87
unsafe fn kernel_avx2<const MR: usize, const NV: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    c_rs: usize,
    accumulate: bool,
    pf: *const f32,
    pf_rs: usize,
) {
    use std::arch::x86_64::*;
    // SAFETY: register-only intrinsic; AVX is enabled for this function.
    let mut acc = unsafe { [[_mm256_setzero_ps(); NV]; MR] };
    macro_rules! step {
        ($p:expr) => {{
            let p = $p;
            // SAFETY: p < kc, so floats p*8*NV..(p+1)*8*NV of the B panel and
            // p*MR..(p+1)*MR of the A panel are inside the caller's panels; the
            // prefetch is a hint that never faults.
            unsafe {
                let bp = b.add(p * 8 * NV);
                let ap = a.add(p * MR);
                _mm_prefetch::<_MM_HINT_T0>(ap.wrapping_add(A_PREFETCH).cast());
                let mut bv = [_mm256_setzero_ps(); NV];
                for (v, x) in bv.iter_mut().enumerate() {
                    *x = _mm256_loadu_ps(bp.add(8 * v));
                }
                for (i, acc_row) in acc.iter_mut().enumerate() {
                    let ai = _mm256_broadcast_ss(&*ap.add(i));
                    for (x, &bvv) in acc_row.iter_mut().zip(&bv) {
                        *x = _mm256_fmadd_ps(ai, bvv, *x);
                    }
                }
            }
        }};
    }
    let per_row = (8 * NV).div_ceil(16);
    let lines = MR * per_row;
    let q1 = lines.min(kc / 4);
    for q in 0..q1 {
        prefetch_t1(tile_line(pf, pf_rs, per_row, q));
        step!(4 * q);
        step!(4 * q + 1);
        step!(4 * q + 2);
        step!(4 * q + 3);
    }
    let p3 = kc.saturating_sub(lines).max(4 * q1);
    for p in 4 * q1..p3 {
        step!(p);
    }
    for p in p3..kc {
        prefetch_t0(tile_line(c, c_rs, per_row, p - p3));
        step!(p);
    }
    for (i, acc_row) in acc.iter().enumerate() {
        for (v, &x) in acc_row.iter().enumerate() {
            // SAFETY: floats (i, 8v..8v+8) are inside the caller's writable MR×NR tile.
            unsafe {
                let dst = c.add(i * c_rs + 8 * v);
                let r = if accumulate {
                    _mm256_add_ps(_mm256_loadu_ps(dst), x)
                } else {
                    x
                };
                _mm256_storeu_ps(dst, r);
            }
        }
    }
}

/// Prefetch hint towards L1 (never faults, whatever the address).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(unused_unsafe)] // `_mm_prefetch` is an `unsafe fn` before Rust 1.87
fn prefetch_t0(p: *const i8) {
    // SAFETY: a prefetch only hints the cache; it never faults or reads
    // memory architecturally, so any address is fine. SSE is baseline on x86_64.
    unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p) }
}

/// Prefetch hint towards L2 (never faults, whatever the address).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(unused_unsafe)] // `_mm_prefetch` is an `unsafe fn` before Rust 1.87
fn prefetch_t1(p: *const i8) {
    // SAFETY: as for `prefetch_t0`.
    unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(p) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Operand storage layout used by the tests.
    #[derive(Clone, Copy, Debug)]
    enum Layout {
        /// Row-major with `pad` extra elements per row.
        Row(usize),
        /// Column-major (transposed) with `pad` extra elements per column.
        Col(usize),
        /// Both strides > 1: element (r, c) at r*rs + c*cs with cs = 2.
        Strided(usize),
        /// Row stride 0: every row aliases the same storage (broadcast).
        Broadcast,
    }

    /// Strides (rs, cs) and the buffer length for a `rows × cols` operand.
    fn strides(l: Layout, rows: usize, cols: usize) -> (usize, usize, usize) {
        let (rs, cs) = match l {
            Layout::Row(pad) => (cols + pad, 1),
            Layout::Col(pad) => (1, rows + pad),
            Layout::Strided(pad) => (2 * cols + pad, 2),
            Layout::Broadcast => (0, 1),
        };
        (rs, cs, span(rows, cols, rs, cs).unwrap() + 3)
    }

    fn layout() -> impl Strategy<Value = Layout> {
        prop_oneof![
            (0usize..3).prop_map(Layout::Row),
            (0usize..3).prop_map(Layout::Col),
            (0usize..3).prop_map(Layout::Strided),
            Just(Layout::Broadcast),
        ]
    }

    /// Deterministic pseudo-random values in [-1, 1).
    fn fill(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 23) as f32) - 1.0
            })
            .collect()
    }

    /// Runs `path` and the f64 reference on the same random problem and checks
    /// the results agree.
    ///
    /// Tolerance: an f32 dot product of length k accumulates at most ~k roundings
    /// of relative size 2^-24 ≈ 6e-8 on partial sums bounded by k·max|a|·max|b|,
    /// so we allow atol = 1e-6·k·max|a|·max|b| (≈ 16× headroom over the usual
    /// sqrt-k behaviour for k ≤ 300) plus rtol = 1e-5·|ref| for the final
    /// rounding and the accumulate add.
    fn check(
        path: Path,
        m: usize,
        n: usize,
        k: usize,
        la: Layout,
        lb: Layout,
        c_pad: usize,
        accumulate: bool,
        seed: u64,
    ) {
        let (a_rs, a_cs, a_len) = strides(la, m, k);
        let (b_rs, b_cs, b_len) = strides(lb, k, n);
        let c_rs = n + c_pad;
        let a = fill(a_len, seed);
        let b = fill(b_len, seed.wrapping_add(1));
        let c0 = fill(m * c_rs + 2, seed.wrapping_add(2));
        let mut c = c0.clone();
        let mut r = c0.clone();
        sgemm_with(
            path,
            m,
            n,
            k,
            &a,
            a_rs,
            a_cs,
            BElems::F32(&b),
            b_rs,
            b_cs,
            &mut c,
            c_rs,
            accumulate,
        );
        sgemm_naive(
            m, n, k, &a, a_rs, a_cs, &b, b_rs, b_cs, &mut r, c_rs, accumulate,
        );
        let amax = a.iter().fold(0f32, |x, y| x.max(y.abs()));
        let bmax = b.iter().fold(0f32, |x, y| x.max(y.abs()));
        let atol = 1e-6 * k as f32 * amax * bmax;
        for i in 0..m {
            for j in 0..n {
                let (x, y) = (c[i * c_rs + j], r[i * c_rs + j]);
                assert!(
                    (x - y).abs() <= atol + 1e-5 * y.abs(),
                    "{path:?} m={m} n={n} k={k} {la:?} {lb:?} acc={accumulate}: C[{i},{j}] = {x}, want {y}"
                );
            }
        }
        // Padding between/after rows of C is untouched.
        for i in 0..m {
            let end = if i + 1 < m { (i + 1) * c_rs } else { c.len() };
            assert_eq!(
                &c[i * c_rs + n..end],
                &c0[i * c_rs + n..end],
                "padding of row {i} modified"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        #[test]
        fn matches_naive(m in 1usize..=300, n in 1usize..=300, k in 1usize..=300,
                         la in layout(), lb in layout(), c_pad in 0usize..3,
                         acc in any::<bool>(), seed in any::<u64>()) {
            check(detect_path(), m, n, k, la, lb, c_pad, acc, seed);
        }

        #[test]
        fn matches_naive_small(m in 1usize..=20, n in 1usize..=80, k in 1usize..=40,
                               la in layout(), lb in layout(), acc in any::<bool>(), seed in any::<u64>()) {
            check(detect_path(), m, n, k, la, lb, 1, acc, seed);
        }

        #[cfg(target_arch = "x86_64")]
        #[test]
        fn avx2_path_matches_naive(m in 1usize..=200, n in 1usize..=200, k in 1usize..=200,
                                   la in layout(), lb in layout(), acc in any::<bool>(), seed in any::<u64>()) {
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                check(Path::Avx2, m, n, k, la, lb, 2, acc, seed);
            }
        }

        #[test]
        fn scalar_path_matches_naive(m in 1usize..=150, n in 1usize..=150, k in 1usize..=150,
                                     la in layout(), lb in layout(), acc in any::<bool>(), seed in any::<u64>()) {
            check(Path::Scalar, m, n, k, la, lb, 0, acc, seed);
        }
    }

    /// Every path, B stored as f16 or bf16 (values with any bits but NaN):
    /// the product is bit-identical to the same path on B widened first.
    fn check_half_b(path: Path, m: usize, n: usize, k: usize, lb: Layout, acc: bool, seed: u64) {
        let (a_rs, a_cs, a_len) = strides(Layout::Row(1), m, k);
        let (b_rs, b_cs, b_len) = strides(lb, k, n);
        let a = fill(a_len, seed);
        let mut bits = seed | 1;
        let mut next = || {
            bits ^= bits << 13;
            bits ^= bits >> 7;
            bits ^= bits << 17;
            (bits >> 20) as u16
        };
        // Not NaN: the NaN payloads are the widening test's; here they would
        // only make every product NaN.
        let h: Vec<half::f16> = (0..b_len)
            .map(|_| half::f16::from_bits(next() & 0xbbff))
            .collect();
        let hb: Vec<half::bf16> = (0..b_len)
            .map(|_| half::bf16::from_bits(next() & 0xbeff))
            .collect();
        let c0 = fill(m * n, seed.wrapping_add(2));
        let wide_h: Vec<f32> = h.iter().map(|&x| x.to_f32()).collect();
        let wide_b: Vec<f32> = hb.iter().map(|&x| x.to_f32()).collect();
        let cases = [
            ("f16", BElems::F16(&h), &wide_h),
            ("bf16", BElems::BF16(&hb), &wide_b),
        ];
        for (name, stored, wide) in cases {
            let (mut got, mut want) = (c0.clone(), c0.clone());
            sgemm_with(
                path, m, n, k, &a, a_rs, a_cs, stored, b_rs, b_cs, &mut got, n, acc,
            );
            sgemm_with(
                path,
                m,
                n,
                k,
                &a,
                a_rs,
                a_cs,
                BElems::F32(wide),
                b_rs,
                b_cs,
                &mut want,
                n,
                acc,
            );
            let same = got
                .iter()
                .zip(&want)
                .all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{path:?} {name}: m={m} n={n} k={k} {lb:?} acc={acc}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn half_b_equals_widened_b(m in 1usize..=80, n in 1usize..=150, k in 1usize..=300,
                                   lb in layout(), acc in any::<bool>(), seed in any::<u64>()) {
            #[allow(unused_mut)]
            let mut paths = vec![Path::Scalar, detect_path()];
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                paths.push(Path::Avx2);
            }
            for path in paths {
                check_half_b(path, m, n, k, lb, acc, seed);
            }
        }
    }

    /// Packing widens every f16 and bf16 bit pattern (NaNs included) to the
    /// bits `half` gives, in the vectorised column-major packers and in the
    /// element-wise remainder alike.
    #[test]
    fn packing_widens_every_half_bit_pattern() {
        const NR: usize = 16;
        // 16 columns of 4096 + 5 depth steps: all 65536 patterns, with a
        // remainder after the 8-step blocks.
        let k = 4096 + 5;
        let pattern = |i: usize| (i % 65536) as u16;
        let h: Vec<half::f16> = (0..NR * k)
            .map(|i| half::f16::from_bits(pattern(i)))
            .collect();
        let hb: Vec<half::bf16> = (0..NR * k)
            .map(|i| half::bf16::from_bits(pattern(i)))
            .collect();
        #[allow(unused_mut)]
        let mut flags = vec![(false, false)];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            flags.push((true, has_f16c()));
        }
        for (avx2_pack, f16c_pack) in flags {
            for (name, stored) in [("f16", BElems::F16(&h)), ("bf16", BElems::BF16(&hb))] {
                let g = Args {
                    m: 1,
                    n: NR,
                    k,
                    a: &[],
                    a_rs: 0,
                    a_cs: 0,
                    b: stored,
                    b_rs: 1,
                    b_cs: k,
                    c: CPtr(std::ptr::null_mut()),
                    c_rs: 0,
                    accumulate: false,
                    threads: 1,
                    avx2_pack,
                    f16c_pack,
                };
                let mut panel = vec![0f32; k * NR];
                pack_b_panel::<NR>(&mut panel, &g, 0, k, 0, NR);
                for p in 0..k {
                    for j in 0..NR {
                        let want = match stored {
                            BElems::F16(b) => b[j * k + p].to_f32(),
                            BElems::BF16(b) => b[j * k + p].to_f32(),
                            BElems::F32(b) => b[j * k + p],
                        };
                        let got = panel[p * NR + j];
                        assert_eq!(
                            got.to_bits(),
                            want.to_bits(),
                            "{name} avx2={avx2_pack} f16c={f16c_pack}: B[{p},{j}]"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn degenerate_sizes() {
        for path in [detect_path(), Path::Scalar] {
            for &(m, n, k) in &[
                (0, 5, 3),
                (5, 0, 3),
                (1, 1, 1),
                (1, 7, 1),
                (7, 1, 9),
                (1, 1, 500),
                (3, 70, 1),
                (130, 1, 2),
            ] {
                for acc in [false, true] {
                    if m > 0 && n > 0 {
                        check(path, m, n, k, Layout::Row(1), Layout::Col(2), 1, acc, 7);
                    }
                }
            }
        }
        // k = 0: C = 0 (or unchanged when accumulating); m or n = 0: no-op.
        let mut c = vec![3.0f32; 6];
        sgemm(2, 3, 0, &[], 0, 0, &[], 0, 0, &mut c, 3, true);
        assert_eq!(c, vec![3.0; 6]);
        sgemm(2, 3, 0, &[], 0, 0, &[], 0, 0, &mut c, 3, false);
        assert_eq!(c, vec![0.0; 6]);
        sgemm(0, 3, 4, &[], 0, 0, &[1.0; 12], 3, 1, &mut [], 3, false);
        sgemm(3, 0, 4, &[1.0; 12], 4, 1, &[], 0, 0, &mut [], 0, false);
    }

    /// The contract checks (`# Panics`) fire with their message; the
    /// tensor ops validate shapes before calling, so users never reach them.
    #[test]
    fn contract_violations_are_refused() {
        let refused = |f: &dyn Fn(), needle: &str| {
            let message = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .expect_err("the call must be refused");
            let text = message
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| message.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            assert!(text.contains(needle), "{text:?} lacks {needle:?}");
        };
        refused(
            &|| {
                sgemm(
                    2,
                    2,
                    2,
                    &[1.0; 3],
                    2,
                    1,
                    &[1.0; 4],
                    2,
                    1,
                    &mut [0.0; 4],
                    2,
                    false,
                )
            },
            "too short",
        );
        refused(
            &|| {
                sgemm(
                    2,
                    2,
                    2,
                    &[1.0; 4],
                    2,
                    1,
                    &[1.0; 4],
                    2,
                    1,
                    &mut [0.0; 4],
                    3,
                    false,
                )
            },
            "too short",
        );
        refused(
            &|| {
                sgemm(
                    2,
                    3,
                    2,
                    &[1.0; 4],
                    2,
                    1,
                    &[1.0; 6],
                    3,
                    1,
                    &mut [0.0; 8],
                    2,
                    false,
                )
            },
            "overlap",
        );
    }

    /// Shapes beyond the proptest range: several MC row blocks, KC depth
    /// blocks and NC column blocks, and a very thin problem.
    #[test]
    fn large_shapes_match_naive() {
        for path in [detect_path(), Path::Scalar] {
            check(
                path,
                1000,
                150,
                600,
                Layout::Row(3),
                Layout::Row(0),
                1,
                false,
                21,
            );
            check(
                path,
                13,
                2100,
                40,
                Layout::Col(0),
                Layout::Col(1),
                0,
                true,
                22,
            );
            check(
                path,
                70,
                65,
                1100,
                Layout::Row(0),
                Layout::Col(0),
                2,
                true,
                23,
            );
        }
    }

    /// The AVX-512 and AVX2 kernels use the same depth blocking and one fused
    /// multiply-add per step in the same order, so they agree bit for bit.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_and_avx2_paths_agree_bitwise() {
        if detect_path() == Path::Avx512 {
            for &(m, n, k) in &[(37, 150, 300), (200, 70, 530), (9, 300, 17)] {
                let (la, lb) = (Layout::Row(1), Layout::Col(2));
                let (a_rs, a_cs, a_len) = strides(la, m, k);
                let (b_rs, b_cs, b_len) = strides(lb, k, n);
                let a = fill(a_len, 31);
                let b = fill(b_len, 32);
                let c0 = fill(m * n, 33);
                let mut c512 = c0.clone();
                let mut c2 = c0;
                sgemm_with(
                    Path::Avx512,
                    m,
                    n,
                    k,
                    &a,
                    a_rs,
                    a_cs,
                    BElems::F32(&b),
                    b_rs,
                    b_cs,
                    &mut c512,
                    n,
                    true,
                );
                sgemm_with(
                    Path::Avx2,
                    m,
                    n,
                    k,
                    &a,
                    a_rs,
                    a_cs,
                    BElems::F32(&b),
                    b_rs,
                    b_cs,
                    &mut c2,
                    n,
                    true,
                );
                assert!(
                    c512.iter()
                        .zip(&c2)
                        .all(|(x, y)| x.to_bits() == y.to_bits()),
                    "m={m} n={n} k={k}"
                );
            }
        }
    }

    /// Results must be bit-identical whatever the rayon pool size.
    #[test]
    fn deterministic_across_thread_counts() {
        let shapes = [
            (200, 300, 700),
            (97, 513, 333),
            (7, 2000, 300),
            (1000, 9, 300),
            (130, 130, 1000),
        ];
        for &(m, n, k) in &shapes {
            for (la, lb) in [
                (Layout::Row(0), Layout::Row(0)),
                (Layout::Col(1), Layout::Col(0)),
                (Layout::Strided(1), Layout::Row(2)),
            ] {
                for acc in [false, true] {
                    let (a_rs, a_cs, a_len) = strides(la, m, k);
                    let (b_rs, b_cs, b_len) = strides(lb, k, n);
                    let a = fill(a_len, 11);
                    let b = fill(b_len, 12);
                    let c0 = fill(m * n, 13);
                    let run = |t: usize| {
                        let pool = rayon::ThreadPoolBuilder::new()
                            .num_threads(t)
                            .build()
                            .unwrap();
                        let mut c = c0.clone();
                        pool.install(|| {
                            sgemm(m, n, k, &a, a_rs, a_cs, &b, b_rs, b_cs, &mut c, n, acc)
                        });
                        c
                    };
                    let one = run(1);
                    for t in [2, 3, 4] {
                        let other = run(t);
                        assert!(
                            one.iter()
                                .zip(&other)
                                .all(|(x, y)| x.to_bits() == y.to_bits()),
                            "m={m} n={n} k={k} {la:?} {lb:?} acc={acc}: 1 vs {t} threads differ"
                        );
                    }
                }
            }
        }
    }
}
