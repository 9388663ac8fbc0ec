//! Matrix products: `kernels/gemm.cu` (tensor-core and SIMT kernels), and a
//! cuBLAS path to measure them against.
//!
//! Every product is `C = alpha·op(A)·op(B) + beta·C`, row-major, optionally
//! batched (`batch` independent products stacked contiguously). Shapes per
//! batch item:
//! - `a`: (m, k), or stored (k, m) when [`Gemm::a_transposed`];
//! - `b`: (k, n), or stored (n, k) when [`Gemm::b_transposed`] (the
//!   nn.Linear weight layout: `x·Wᵀ` is [`Gemm::linear`]);
//! - `c`: (m, n); read only when `beta != 0`.
//!
//! So the buffers hold `batch·m·k`, `batch·k·n` and `batch·m·n` elements.
//! Inputs bf16/f16 go through tensor cores (f32 accumulation) by default,
//! f32 inputs through f32 FMA ([`GemmKernel`]); the output is the input type
//! or f32.

use crate::device::{Arg, Launch, check_len};
use crate::kernels::{GEMM, GEMM_SM90, KernelFile};
use crate::{CudaError, GpuBuffer, GpuDevice, GpuFloat, Result};

const OP: &str = "gemm";

/// Which kernel family computes a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GemmKernel {
    /// Tensor cores for bf16/f16 inputs, f32 FMA for f32 inputs.
    #[default]
    Auto,
    /// Tensor cores (`gemm_tc_*`, bf16/f16 inputs only) with the default
    /// tile, [`TcTile::DEFAULT`].
    TensorCore,
    /// Tensor cores with a given tile: [`TcTile::DEFAULT`] (every type and
    /// layout) or one of [`TC_TUNING_TILES`] (bf16 → bf16 only, in the
    /// layouts of [`TcTile::candidate_layouts`]).
    TensorCoreTile(TcTile),
    /// Hopper's warpgroup instruction (`gemm_wgmma_*` of
    /// `kernels/gemm_sm90.cu`): sm_90 devices only, bf16 → bf16, layout nt
    /// ([`Gemm::linear`]), k a multiple of 8, with a tile of
    /// [`WGMMA_TILES`].
    Wgmma(WgmmaTile),
    /// f32 FMA (`gemm_simt_*`, any input type): 128×128 block tiles.
    Simt,
}

/// A tensor-core block tile: `bm`×`bn` outputs per block, K step `bk`,
/// `stages` cp.async stages in dynamic shared memory, one warp per 64×64
/// sub-tile. Names the kernel `gemm_tc_{bm}x{bn}x{bk}s{stages}_…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcTile {
    /// Output rows per block (a multiple of 64).
    pub bm: u32,
    /// Output columns per block (a multiple of 64).
    pub bn: u32,
    /// The K step (32 or 64).
    pub bk: u32,
    /// Pipeline depth.
    pub stages: u32,
}

impl TcTile {
    /// The tile compiled for every input type, output type and layout.
    pub const DEFAULT: TcTile = TcTile::new(128, 128, 32, 3);

    /// A tile (not checked: only the compiled ones launch).
    pub const fn new(bm: u32, bn: u32, bk: u32, stages: u32) -> Self {
        Self { bm, bn, bk, stages }
    }

    /// Threads per block: a warp per 64×64 sub-tile.
    pub const fn threads(&self) -> u32 {
        32 * (self.bm / 64) * (self.bn / 64)
    }

    /// Shared memory per block: `stages` A and B tiles of bf16/f16.
    pub const fn shared_bytes(&self) -> u32 {
        self.stages * (self.bm + self.bn) * self.bk * 2
    }

    /// The dynamic part the launch passes: up to 48 KiB the kernel holds
    /// its tiles in static shared memory.
    pub const fn dynamic_shared_bytes(&self) -> u32 {
        let bytes = self.shared_bytes();
        if bytes <= 48 * 1024 { 0 } else { bytes }
    }

    /// The layouts a candidate tile is compiled for: `nt`, and `nn` when
    /// its K step is 32 (with 64 the `nn` kernels spill registers).
    pub fn candidate_layouts(&self) -> &'static [&'static str] {
        if self.bk == 32 {
            &["nn", "nt"]
        } else {
            &["nt"]
        }
    }

    /// `{bm}x{bn}x{bk}s{stages}`, as in the kernel names.
    pub fn name(&self) -> String {
        format!("{}x{}x{}s{}", self.bm, self.bn, self.bk, self.stages)
    }
}

/// Candidate tiles compiled for bf16 inputs and outputs (in the layouts of
/// [`TcTile::candidate_layouts`]), to measure against [`TcTile::DEFAULT`]
/// (`gpu_bench`).
pub const TC_TUNING_TILES: [TcTile; 2] =
    [TcTile::new(128, 128, 64, 3), TcTile::new(128, 128, 32, 4)];

/// A tile of the Hopper kernels: 128 × `bn` outputs per block (two
/// warpgroups of 64 rows), K step 64, `stages` cp.async stages, and
/// whether one wgmma group stays in flight while the next k-tile is issued
/// (`overlap`). Names the kernel `gemm_wgmma_128x{bn}s{stages}[o]_bf16_bf16_nt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WgmmaTile {
    /// Output columns per block (128 or 256: the instruction's N).
    pub bn: u32,
    /// Pipeline depth.
    pub stages: u32,
    /// Wait for all but the last wgmma group (tiles prefetched `stages − 2`
    /// ahead) rather than for all of them.
    pub overlap: bool,
}

impl WgmmaTile {
    /// `128x{bn}s{stages}[o]`, as in the kernel names.
    pub fn name(&self) -> String {
        let overlap = if self.overlap { "o" } else { "" };
        format!("128x{}s{}{overlap}", self.bn, self.stages)
    }

    /// Dynamic shared memory: `stages` A (128 × 64) and B (`bn` × 64) bf16
    /// tiles, plus 1 KiB to align them to the swizzle's 1 KiB period.
    pub const fn shared_bytes(&self) -> u32 {
        self.stages * (128 + self.bn) * 64 * 2 + 1024
    }
}

/// The tiles `kernels/gemm_sm90.cu` is compiled for.
pub const WGMMA_TILES: [WgmmaTile; 5] = [
    WgmmaTile {
        bn: 128,
        stages: 4,
        overlap: false,
    },
    WgmmaTile {
        bn: 256,
        stages: 3,
        overlap: false,
    },
    WgmmaTile {
        bn: 256,
        stages: 4,
        overlap: false,
    },
    WgmmaTile {
        bn: 128,
        stages: 4,
        overlap: true,
    },
    WgmmaTile {
        bn: 256,
        stages: 4,
        overlap: true,
    },
];

/// The shape, layout and scalars of one (batched) product; see the module
/// docs for the operand shapes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gemm {
    /// Rows of `op(A)` and `C`.
    pub m: usize,
    /// Columns of `op(B)` and `C`.
    pub n: usize,
    /// The reduction length.
    pub k: usize,
    /// Independent products stacked contiguously in each buffer (at most 65535).
    pub batch: usize,
    /// `a` is stored (k, m) rather than (m, k).
    pub a_transposed: bool,
    /// `b` is stored (n, k) rather than (k, n).
    pub b_transposed: bool,
    /// Scale of the product.
    pub alpha: f32,
    /// Scale of the previous `C` (0: `C` is not read).
    pub beta: f32,
    /// The kernel family.
    pub kernel: GemmKernel,
}

impl Gemm {
    /// `C (m, n) = A (m, k) · B (k, n)`.
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        Self {
            m,
            n,
            k,
            batch: 1,
            a_transposed: false,
            b_transposed: false,
            alpha: 1.0,
            beta: 0.0,
            kernel: GemmKernel::Auto,
        }
    }

    /// `Y (m, n) = X (m, k) · Wᵀ` with `W` stored (n, k), as nn.Linear.
    pub fn linear(m: usize, n: usize, k: usize) -> Self {
        Self {
            b_transposed: true,
            ..Self::new(m, n, k)
        }
    }

    /// The same product over `batch` stacked operand triples.
    pub fn batched(self, batch: usize) -> Self {
        Self { batch, ..self }
    }

    /// Sets whether `a` is stored (k, m) and `b` stored (n, k).
    pub fn transposed(self, a_transposed: bool, b_transposed: bool) -> Self {
        Self {
            a_transposed,
            b_transposed,
            ..self
        }
    }

    /// Sets `alpha` and `beta`.
    pub fn scaled(self, alpha: f32, beta: f32) -> Self {
        Self {
            alpha,
            beta,
            ..self
        }
    }

    /// Chooses the kernel family.
    pub fn with_kernel(self, kernel: GemmKernel) -> Self {
        Self { kernel, ..self }
    }

    /// Elements of `a`: batch·m·k.
    pub fn a_len(&self) -> Result<usize> {
        product(&[self.batch, self.m, self.k])
    }

    /// Elements of `b`: batch·k·n.
    pub fn b_len(&self) -> Result<usize> {
        product(&[self.batch, self.k, self.n])
    }

    /// Elements of `c`: batch·m·n.
    pub fn c_len(&self) -> Result<usize> {
        product(&[self.batch, self.m, self.n])
    }

    /// Floating-point operations of the product: 2·batch·m·n·k.
    pub fn flops(&self) -> f64 {
        2.0 * self.batch as f64 * self.m as f64 * self.n as f64 * self.k as f64
    }

    /// The kernel-name suffix of the layout: nn, nt, tn or tt.
    pub fn layout(&self) -> &'static str {
        match (self.a_transposed, self.b_transposed) {
            (false, false) => "nn",
            (false, true) => "nt",
            (true, false) => "tn",
            (true, true) => "tt",
        }
    }

    /// Checks the dimensions against the kernels' limits.
    fn check(&self) -> Result<()> {
        for (name, value) in [("m", self.m), ("n", self.n), ("k", self.k)] {
            if value > i32::MAX as usize {
                return Err(CudaError::shape(
                    OP,
                    format!("{name} = {value} exceeds {}", i32::MAX),
                ));
            }
        }
        if self.batch > 65535 {
            return Err(CudaError::shape(
                OP,
                format!("batch = {} exceeds 65535", self.batch),
            ));
        }
        let tiles = self.m.div_ceil(128) * self.n.div_ceil(128);
        if tiles > i32::MAX as usize {
            return Err(CudaError::shape(
                OP,
                format!(
                    "{} × {} needs {tiles} blocks, more than one launch allows",
                    self.m, self.n
                ),
            ));
        }
        Ok(())
    }
}

fn product(factors: &[usize]) -> Result<usize> {
    factors
        .iter()
        .try_fold(1usize, |acc, &f| acc.checked_mul(f))
        .ok_or_else(|| CudaError::shape(OP, format!("{factors:?} overflows usize")))
}

/// How one product launches: the kernel file and name, the block tile, the
/// block size, the dynamic shared memory and whether the kernel takes the
/// `aligned` flag (the mma.sync tensor-core kernels do).
struct Plan {
    file: &'static KernelFile,
    name: String,
    tile: (usize, usize),
    threads: u32,
    shared_bytes: u32,
    aligned_flag: bool,
}

/// The launch plan of `spec` for inputs `T` and output `O`.
fn plan<T: GpuFloat, O: GpuFloat>(spec: &Gemm) -> Result<Plan> {
    let half_input = T::SUFFIX != "f32";
    if O::SUFFIX != "f32" && O::SUFFIX != T::SUFFIX {
        return Err(CudaError::shape(
            OP,
            format!(
                "{} inputs give {} or f32 outputs, not {}",
                T::SUFFIX,
                T::SUFFIX,
                O::SUFFIX
            ),
        ));
    }
    let tile = match spec.kernel {
        GemmKernel::Auto => half_input.then_some(TcTile::DEFAULT),
        GemmKernel::TensorCore | GemmKernel::TensorCoreTile(_) if !half_input => {
            return Err(CudaError::shape(
                OP,
                "the tensor-core kernels take bf16 or f16 inputs, not f32",
            ));
        }
        GemmKernel::TensorCore => Some(TcTile::DEFAULT),
        GemmKernel::TensorCoreTile(tile) => {
            let candidate = TC_TUNING_TILES.contains(&tile)
                && T::SUFFIX == "bf16"
                && O::SUFFIX == "bf16"
                && tile.candidate_layouts().contains(&spec.layout());
            if tile != TcTile::DEFAULT && !candidate {
                return Err(CudaError::shape(
                    OP,
                    format!(
                        "tile {} is not compiled for {}→{} layout {} (the candidate tiles exist for bf16→bf16 in layouts {:?})",
                        tile.name(),
                        T::SUFFIX,
                        O::SUFFIX,
                        spec.layout(),
                        tile.candidate_layouts()
                    ),
                ));
            }
            Some(tile)
        }
        GemmKernel::Wgmma(tile) => {
            if !WGMMA_TILES.contains(&tile)
                || T::SUFFIX != "bf16"
                || O::SUFFIX != "bf16"
                || spec.layout() != "nt"
                || !spec.k.is_multiple_of(8)
            {
                return Err(CudaError::shape(
                    OP,
                    format!(
                        "the wgmma kernels take bf16 → bf16 in layout nt with k a multiple of 8 and a tile of WGMMA_TILES, not {}→{} layout {} k={} tile {}",
                        T::SUFFIX,
                        O::SUFFIX,
                        spec.layout(),
                        spec.k,
                        tile.name()
                    ),
                ));
            }
            return Ok(Plan {
                file: &GEMM_SM90,
                name: format!("gemm_wgmma_{}_bf16_bf16_nt", tile.name()),
                tile: (128, tile.bn as usize),
                threads: 256,
                shared_bytes: tile.shared_bytes(),
                aligned_flag: false,
            });
        }
        GemmKernel::Simt => None,
    };
    let family = match tile {
        Some(tile) => format!("tc_{}", tile.name()),
        None => "simt".to_string(),
    };
    Ok(Plan {
        file: &GEMM,
        name: format!(
            "gemm_{family}_{}_{}_{}",
            T::SUFFIX,
            O::SUFFIX,
            spec.layout()
        ),
        tile: tile.map_or((128, 128), |t| (t.bm as usize, t.bn as usize)),
        threads: tile.map_or(256, |t| t.threads()),
        shared_bytes: tile.map_or(0, |t| t.dynamic_shared_bytes()),
        aligned_flag: tile.is_some(),
    })
}

/// Computes `c = alpha·op(a)·op(b) + beta·c` into a preallocated `c`
/// (nothing is allocated: the call to time in a benchmark).
///
/// Shapes: `a` (batch, m, k) or (batch, k, m) when `a_transposed`; `b`
/// (batch, k, n) or (batch, n, k) when `b_transposed`; `c` (batch, m, n).
/// `O` is `T` or f32.
///
/// # Errors
/// [`CudaError::Shape`] when a buffer's length does not match the shapes,
/// a dimension exceeds the kernels' limits, the dtypes are not a supported
/// pair, or tensor cores are asked for with f32 inputs.
pub fn gemm_into<T: GpuFloat, O: GpuFloat>(
    device: &GpuDevice,
    spec: &Gemm,
    a: &GpuBuffer<T>,
    b: &GpuBuffer<T>,
    c: &mut GpuBuffer<O>,
) -> Result<()> {
    spec.check()?;
    let plan = plan::<T, O>(spec)?;
    check_len(OP, "a", a, spec.a_len()?)?;
    check_len(OP, "b", b, spec.b_len()?)?;
    check_len(OP, "c", c, spec.c_len()?)?;
    if spec.m == 0 || spec.n == 0 || spec.batch == 0 {
        return Ok(());
    }
    let (m, n, k) = (spec.m, spec.n, spec.k);
    let tiles = m.div_ceil(plan.tile.0) * n.div_ceil(plan.tile.1);
    let launch = Launch {
        grid: (tiles as u32, 1, spec.batch as u32),
        block: (plan.threads, 1, 1),
        shared_bytes: plan.shared_bytes,
    };
    let mut args = vec![
        a.arg(),
        b.arg(),
        c.arg_mut(),
        Arg::I32(m as i32),
        Arg::I32(n as i32),
        Arg::I32(k as i32),
        Arg::U64((m * k) as u64),
        Arg::U64((k * n) as u64),
        Arg::U64((m * n) as u64),
        Arg::F32(spec.alpha),
        Arg::F32(spec.beta),
    ];
    if plan.aligned_flag {
        // 16-byte async copies need every stored row to be a multiple of 8
        // elements (buffers themselves are allocation-aligned).
        let a_row = if spec.a_transposed { m } else { k };
        let b_row = if spec.b_transposed { k } else { n };
        args.push(Arg::I32(i32::from(a_row % 8 == 0 && b_row % 8 == 0)));
    }
    device.launch(plan.file, &plan.name, launch, &mut args)
}

/// `op(a)·op(b)` (alpha 1, beta 0 unless `spec` says otherwise) into a new
/// buffer of `O` (T or f32); shapes as in [`gemm_into`].
pub fn gemm<T: GpuFloat, O: GpuFloat>(
    device: &GpuDevice,
    spec: &Gemm,
    a: &GpuBuffer<T>,
    b: &GpuBuffer<T>,
) -> Result<GpuBuffer<O>> {
    let mut c = device.zeros::<O>(spec.c_len()?)?;
    gemm_into(device, spec, a, b, &mut c)?;
    Ok(c)
}

/// `a (m, k) · b (k, n)` → (m, n).
pub fn matmul<T: GpuFloat>(
    device: &GpuDevice,
    a: &GpuBuffer<T>,
    b: &GpuBuffer<T>,
    m: usize,
    n: usize,
    k: usize,
) -> Result<GpuBuffer<T>> {
    gemm(device, &Gemm::new(m, n, k), a, b)
}

/// `x (m, k) · wᵀ` with `w` stored (n, k) → (m, n), as nn.Linear without bias.
pub fn linear<T: GpuFloat>(
    device: &GpuDevice,
    x: &GpuBuffer<T>,
    w: &GpuBuffer<T>,
    m: usize,
    n: usize,
    k: usize,
) -> Result<GpuBuffer<T>> {
    gemm(device, &Gemm::linear(m, n, k), x, w)
}

// ---------------------------------------------------------------------------
// cuBLAS, the yardstick.
// ---------------------------------------------------------------------------

/// A cuBLAS handle on a device's stream, to time the hand-written kernels
/// against ([`gemm_cublas_into`]). Create it once, outside a timed loop.
#[derive(Debug)]
pub struct Cublas {
    #[cfg(feature = "cuda")]
    blas: cudarc::cublas::CudaBlas,
    #[cfg(not(feature = "cuda"))]
    never: std::convert::Infallible,
}

impl Cublas {
    /// Loads cuBLAS and creates a handle bound to `device`'s stream.
    ///
    /// # Errors
    /// [`CudaError::NoDevice`] when libcublas cannot be loaded or the build
    /// has no `cuda` feature (the emulator has no cuBLAS),
    /// [`CudaError::Driver`] when the handle cannot be created.
    pub fn new(device: &GpuDevice) -> Result<Self> {
        blas::new(device)
    }
}

/// `c = alpha·op(a)·op(b) + beta·c` by cuBLAS (`cublasGemmEx` with f32
/// compute for bf16/f16, `cublasSgemm` for f32; strided-batched when
/// `batch > 1`), into a preallocated `c` of the input type. Shapes as in
/// [`gemm_into`]; `spec.kernel` is ignored.
///
/// cuBLAS is column-major: the row-major `C = op(A)·op(B)` is computed as
/// the column-major `Cᵀ = op(B)ᵀ·op(A)ᵀ`, which reads the same memory.
///
/// # Errors
/// [`CudaError::Shape`] on mismatched lengths or oversized dimensions,
/// [`CudaError::Driver`] when cuBLAS reports an error.
pub fn gemm_cublas_into<T: GpuFloat>(
    blas: &Cublas,
    spec: &Gemm,
    a: &GpuBuffer<T>,
    b: &GpuBuffer<T>,
    c: &mut GpuBuffer<T>,
) -> Result<()> {
    spec.check()?;
    check_len(OP, "a", a, spec.a_len()?)?;
    check_len(OP, "b", b, spec.b_len()?)?;
    check_len(OP, "c", c, spec.c_len()?)?;
    if spec.m == 0 || spec.n == 0 || spec.batch == 0 {
        return Ok(());
    }
    blas::gemm(blas, spec, a, b, c)
}

/// [`gemm_cublas_into`] into a new buffer, with a handle made for the call.
pub fn gemm_cublas<T: GpuFloat>(
    device: &GpuDevice,
    spec: &Gemm,
    a: &GpuBuffer<T>,
    b: &GpuBuffer<T>,
) -> Result<GpuBuffer<T>> {
    let blas = Cublas::new(device)?;
    let mut c = device.zeros::<T>(spec.c_len()?)?;
    gemm_cublas_into(&blas, spec, a, b, &mut c)?;
    Ok(c)
}

#[cfg(feature = "cuda")]
mod blas {
    use std::any::Any;

    use cudarc::cublas::sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
    use cudarc::cublas::{CudaBlas, Gemm as _, GemmConfig, StridedBatchedConfig};
    use cudarc::driver::CudaSlice;

    use super::{Cublas, Gemm};
    use crate::{CudaError, GpuBuffer, GpuDevice, GpuFloat, Result};

    pub(super) fn new(device: &GpuDevice) -> Result<Cublas> {
        // SAFETY: `is_culib_present` only tries to dlopen libcublas and
        // reports whether it could; it has no preconditions.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(CudaError::no_device(
                "libcublas could not be loaded (install the nvidia-cublas wheel or CUDA and put its lib/ on LD_LIBRARY_PATH)",
            ));
        }
        let blas = CudaBlas::new(device.stream().clone())
            .map_err(|e| CudaError::driver("cublasCreate", e))?;
        Ok(Cublas { blas })
    }

    /// The column-major call: C'(n×m) = op(B')·op(A'), where B' and A' are
    /// our row-major B and A read column-major (B' = Bᵀ or B, A' = Aᵀ or A).
    fn config<T: GpuFloat>(spec: &Gemm) -> GemmConfig<T> {
        let (m, n, k) = (spec.m as i32, spec.n as i32, spec.k as i32);
        GemmConfig {
            // Row-major B (k, n) read column-major is Bᵀ (n×k): no transpose;
            // stored (n, k) it reads as B (k×n): transpose.
            transa: if spec.b_transposed {
                CUBLAS_OP_T
            } else {
                CUBLAS_OP_N
            },
            // Row-major A (m, k) read column-major is Aᵀ (k×m): no transpose.
            transb: if spec.a_transposed {
                CUBLAS_OP_T
            } else {
                CUBLAS_OP_N
            },
            m: n,
            n: m,
            k,
            alpha: T::from_f32(spec.alpha),
            lda: (if spec.b_transposed { k } else { n }).max(1),
            ldb: (if spec.a_transposed { m } else { k }).max(1),
            beta: T::from_f32(spec.beta),
            ldc: n.max(1),
        }
    }

    fn run<T: GpuFloat>(
        blas: &CudaBlas,
        spec: &Gemm,
        a: &CudaSlice<T>,
        b: &CudaSlice<T>,
        c: &mut CudaSlice<T>,
    ) -> Result<()>
    where
        CudaBlas: cudarc::cublas::Gemm<T>,
    {
        let cfg = config::<T>(spec);
        let outcome = if spec.batch == 1 {
            // SAFETY: the caller checked a, b and c against the shapes (a:
            // m·k, b: k·n, c: m·n elements), which are exactly the extents
            // the leading dimensions and sizes in `cfg` address; the slices
            // live on the handle's stream and outlive the call.
            unsafe { blas.gemm(cfg, b, a, c) }
        } else {
            let batched = StridedBatchedConfig {
                gemm: cfg,
                batch_size: spec.batch as i32,
                stride_a: (spec.k * spec.n) as i64,
                stride_b: (spec.m * spec.k) as i64,
                stride_c: (spec.m * spec.n) as i64,
            };
            // SAFETY: as above, with `batch` items of exactly the strides
            // given (the lengths were checked as batch·m·k etc.).
            unsafe { blas.gemm_strided_batched(batched, b, a, c) }
        };
        outcome.map_err(|e| CudaError::driver("cuBLAS gemm", e))
    }

    fn cast<U: 'static, T: 'static>(slice: &CudaSlice<T>) -> Option<&CudaSlice<U>> {
        (slice as &dyn Any).downcast_ref::<CudaSlice<U>>()
    }

    fn cast_mut<U: 'static, T: 'static>(slice: &mut CudaSlice<T>) -> Option<&mut CudaSlice<U>> {
        (slice as &mut dyn Any).downcast_mut::<CudaSlice<U>>()
    }

    fn typed<U: GpuFloat, T: GpuFloat>(
        blas: &CudaBlas,
        spec: &Gemm,
        a: &GpuBuffer<T>,
        b: &GpuBuffer<T>,
        c: &mut GpuBuffer<T>,
    ) -> Option<Result<()>>
    where
        CudaBlas: cudarc::cublas::Gemm<U>,
    {
        let a = cast::<U, T>(a.slice())?;
        let b = cast::<U, T>(b.slice())?;
        let c = cast_mut::<U, T>(c.slice_mut())?;
        Some(run(blas, spec, a, b, c))
    }

    pub(super) fn gemm<T: GpuFloat>(
        blas: &Cublas,
        spec: &Gemm,
        a: &GpuBuffer<T>,
        b: &GpuBuffer<T>,
        c: &mut GpuBuffer<T>,
    ) -> Result<()> {
        let handle = &blas.blas;
        typed::<f32, T>(handle, spec, a, b, c)
            .or_else(|| typed::<half::bf16, T>(handle, spec, a, b, c))
            .or_else(|| typed::<half::f16, T>(handle, spec, a, b, c))
            .unwrap_or_else(|| {
                Err(CudaError::shape(
                    super::OP,
                    format!("cuBLAS has no path for {}", T::SUFFIX),
                ))
            })
    }
}

#[cfg(not(feature = "cuda"))]
mod blas {
    use super::{Cublas, Gemm};
    use crate::{CudaError, GpuBuffer, GpuDevice, GpuFloat, Result};

    pub(super) fn new(_device: &GpuDevice) -> Result<Cublas> {
        Err(CudaError::no_device(
            "cuBLAS exists only in the `cuda` build",
        ))
    }

    pub(super) fn gemm<T: GpuFloat>(
        blas: &Cublas,
        _spec: &Gemm,
        _a: &GpuBuffer<T>,
        _b: &GpuBuffer<T>,
        _c: &mut GpuBuffer<T>,
    ) -> Result<()> {
        match blas.never {}
    }
}
