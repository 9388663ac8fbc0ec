//! Fused causal/grouped-query attention: `kernels/attention.cu`.
//!
//! Shapes (contiguous, row-major):
//! - `q`, `o`, `do`, `dq`: (B, Hq, Tq, D);
//! - `k`, `v`, `dk`, `dv`: (B, Hkv, Tk, D);
//! - `lse`: (B, Hq, Tq), f32: the natural log-sum-exp of each query's
//!   scaled scores, saved by the forward for the backward.
//!
//! Query head `h` reads key/value head `h / (Hq / Hkv)`. With `causal`, query
//! `i` (0-based within Tq) sees key `j` iff `j ≤ i + (Tk − Tq)`: the queries
//! are the last Tq of Tk positions, so decoding with a KV cache (Tq = 1)
//! sees every key. A query that sees no key (causal with Tq > Tk, or Tk = 0)
//! gets `o = 0`, `lse = −∞` and no gradient (PyTorch gives NaN there).
//! D ∈ {32, 64, 80, 96, 128}; storage f32, bf16 or f16, arithmetic f32 (the
//! tensor-core kernels round P and dS to the storage type for their
//! products, as flash-attention does).

use crate::device::{Arg, Launch, check_len};
use crate::kernels::ATTENTION;
use crate::{CudaError, GpuBuffer, GpuDevice, GpuFloat, Result};

const OP: &str = "attention";

/// The head dimensions the kernels are instantiated for.
pub const HEAD_DIMS: [usize; 5] = [32, 64, 80, 96, 128];

/// Which kernel family runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionKernel {
    /// Tensor cores for bf16/f16 storage, f32 FMA for f32.
    #[default]
    Auto,
    /// Tensor cores (`attn_*_tc_*`, bf16/f16 only).
    TensorCore,
    /// f32 FMA (`attn_*_simt_*`, any storage type).
    Simt,
}

/// The geometry and options of one attention call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attention {
    /// B.
    pub batch: usize,
    /// Hq, a multiple of `kv_heads`.
    pub q_heads: usize,
    /// Hkv.
    pub kv_heads: usize,
    /// Tq.
    pub q_len: usize,
    /// Tk.
    pub kv_len: usize,
    /// D, one of [`HEAD_DIMS`].
    pub head_dim: usize,
    /// The score scale (1/√D by default).
    pub scale: f32,
    /// Whether query `i` sees only keys `j ≤ i + Tk − Tq`.
    pub causal: bool,
    /// The kernel family.
    pub kernel: AttentionKernel,
}

impl Attention {
    /// Causal attention with scale 1/√D.
    pub fn new(
        batch: usize,
        q_heads: usize,
        kv_heads: usize,
        q_len: usize,
        kv_len: usize,
        head_dim: usize,
    ) -> Self {
        Self {
            batch,
            q_heads,
            kv_heads,
            q_len,
            kv_len,
            head_dim,
            scale: 1.0 / (head_dim as f32).sqrt(),
            causal: true,
            kernel: AttentionKernel::Auto,
        }
    }

    /// Sets the causal flag.
    pub fn with_causal(self, causal: bool) -> Self {
        Self { causal, ..self }
    }

    /// Sets the score scale.
    pub fn with_scale(self, scale: f32) -> Self {
        Self { scale, ..self }
    }

    /// Chooses the kernel family.
    pub fn with_kernel(self, kernel: AttentionKernel) -> Self {
        Self { kernel, ..self }
    }

    /// Elements of `q`, `o`, `do`, `dq`: B·Hq·Tq·D.
    pub fn q_len_elements(&self) -> Result<usize> {
        product(&[self.batch, self.q_heads, self.q_len, self.head_dim])
    }

    /// Elements of `k`, `v`, `dk`, `dv`: B·Hkv·Tk·D.
    pub fn kv_len_elements(&self) -> Result<usize> {
        product(&[self.batch, self.kv_heads, self.kv_len, self.head_dim])
    }

    /// Elements of `lse`: B·Hq·Tq.
    pub fn rows(&self) -> Result<usize> {
        product(&[self.batch, self.q_heads, self.q_len])
    }

    /// (query, key) pairs a head attends to: Tq·Tk, or the causal count.
    pub fn visible_pairs(&self) -> u64 {
        let (tq, tk) = (self.q_len as i64, self.kv_len as i64);
        if !self.causal {
            return (tq * tk) as u64;
        }
        // Query i sees min(Tk, max(0, i + Tk − Tq + 1)) keys.
        (0..tq).map(|i| (i + tk - tq + 1).clamp(0, tk) as u64).sum()
    }

    /// Floating-point operations of the forward's two products:
    /// 4·B·Hq·D·(visible pairs).
    pub fn forward_flops(&self) -> f64 {
        4.0 * self.batch as f64
            * self.q_heads as f64
            * self.head_dim as f64
            * self.visible_pairs() as f64
    }

    /// Floating-point operations of the backward's five products: 2.5× the
    /// forward's.
    pub fn backward_flops(&self) -> f64 {
        2.5 * self.forward_flops()
    }

    fn check(&self) -> Result<()> {
        if !HEAD_DIMS.contains(&self.head_dim) {
            return Err(CudaError::shape(
                OP,
                format!(
                    "head dimension {} is not supported (the kernels take {HEAD_DIMS:?})",
                    self.head_dim
                ),
            ));
        }
        if self.kv_heads == 0 || !self.q_heads.is_multiple_of(self.kv_heads) {
            return Err(CudaError::shape(
                OP,
                format!(
                    "{} query heads are not a multiple of {} key/value heads",
                    self.q_heads, self.kv_heads
                ),
            ));
        }
        // Grids: x = B·H (≤ 2³¹ − 1), y = query or key tiles (≤ 65535, for
        // the smallest tiles, 16 rows); the kernels index rows with i32.
        for (name, value) in [
            ("B·Hq", self.batch.saturating_mul(self.q_heads)),
            ("Tq", self.q_len),
            ("Tk", self.kv_len),
        ] {
            if value > i32::MAX as usize {
                return Err(CudaError::shape(
                    OP,
                    format!("{name} = {value} exceeds {}", i32::MAX),
                ));
            }
        }
        for (name, value) in [("Tq", self.q_len), ("Tk", self.kv_len)] {
            if value.div_ceil(16) > 65535 {
                return Err(CudaError::shape(
                    OP,
                    format!("{name} = {value} exceeds {} positions", 65535 * 16),
                ));
            }
        }
        self.q_len_elements()?;
        self.kv_len_elements()?;
        Ok(())
    }

    /// Whether the tensor-core kernels run, for storage type `T`.
    fn tensor_cores<T: GpuFloat>(&self) -> Result<bool> {
        let half = T::SUFFIX != "f32";
        match self.kernel {
            AttentionKernel::Auto => Ok(half),
            AttentionKernel::TensorCore if !half => Err(CudaError::shape(
                OP,
                "the tensor-core kernels take bf16 or f16 storage, not f32",
            )),
            AttentionKernel::TensorCore => Ok(true),
            AttentionKernel::Simt => Ok(false),
        }
    }
}

fn product(factors: &[usize]) -> Result<usize> {
    factors
        .iter()
        .try_fold(1usize, |acc, &f| acc.checked_mul(f))
        .ok_or_else(|| CudaError::shape(OP, format!("{factors:?} overflows usize")))
}

/// The forward's outputs.
#[derive(Debug)]
pub struct AttentionOutput<T: GpuFloat> {
    /// (B, Hq, Tq, D).
    pub o: GpuBuffer<T>,
    /// (B, Hq, Tq), f32.
    pub lse: GpuBuffer<f32>,
}

/// The backward's outputs.
#[derive(Debug)]
pub struct AttentionGrads<T: GpuFloat> {
    /// (B, Hq, Tq, D).
    pub dq: GpuBuffer<T>,
    /// (B, Hkv, Tk, D), summed over the query heads of each group.
    pub dk: GpuBuffer<T>,
    /// (B, Hkv, Tk, D), summed over the query heads of each group.
    pub dv: GpuBuffer<T>,
}

/// The backward's f32 scratch: `delta` (B, Hq, Tq) = rowsum(o ∘ do) and
/// `dq_acc` (B, Hq, Tq, D), where dq accumulates with atomics. Reusable
/// across calls of the same geometry (the backward clears it).
#[derive(Debug)]
pub struct AttentionWorkspace {
    delta: GpuBuffer<f32>,
    dq_acc: GpuBuffer<f32>,
}

impl AttentionWorkspace {
    /// Allocates the scratch of `spec`.
    pub fn new(device: &GpuDevice, spec: &Attention) -> Result<Self> {
        spec.check()?;
        Ok(Self {
            delta: device.zeros::<f32>(spec.rows()?)?,
            dq_acc: device.zeros::<f32>(spec.q_len_elements()?)?,
        })
    }
}

/// Forward attention into preallocated `o` (B, Hq, Tq, D) and `lse`
/// (B, Hq, Tq) (nothing is allocated: the call to time in a benchmark).
/// `q`: (B, Hq, Tq, D); `k`, `v`: (B, Hkv, Tk, D).
///
/// # Errors
/// [`CudaError::Shape`] for an unsupported head dimension, heads that do not
/// group, lengths beyond the kernels' limits, buffers whose lengths do not
/// match, or tensor cores asked for f32 storage.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward_into<T: GpuFloat>(
    device: &GpuDevice,
    spec: &Attention,
    q: &GpuBuffer<T>,
    k: &GpuBuffer<T>,
    v: &GpuBuffer<T>,
    o: &mut GpuBuffer<T>,
    lse: &mut GpuBuffer<f32>,
) -> Result<()> {
    spec.check()?;
    let tensor_cores = spec.tensor_cores::<T>()?;
    let (nq, nk, rows) = (
        spec.q_len_elements()?,
        spec.kv_len_elements()?,
        spec.rows()?,
    );
    check_len(OP, "q", q, nq)?;
    check_len(OP, "k", k, nk)?;
    check_len(OP, "v", v, nk)?;
    check_len(OP, "o", o, nq)?;
    check_len(OP, "lse", lse, rows)?;
    if rows == 0 {
        return Ok(());
    }
    let (rows_per_block, threads, family) = if tensor_cores {
        (64, 128, "tc")
    } else {
        (32, 256, "simt")
    };
    let launch = Launch {
        grid: (
            (spec.batch * spec.q_heads) as u32,
            spec.q_len.div_ceil(rows_per_block) as u32,
            1,
        ),
        block: (threads, 1, 1),
        shared_bytes: 0,
    };
    device.launch(
        &ATTENTION,
        &format!("attn_fwd_{family}_{}_d{}", T::SUFFIX, spec.head_dim),
        launch,
        &mut [
            q.arg(),
            k.arg(),
            v.arg(),
            o.arg_mut(),
            lse.arg_mut(),
            Arg::I32(spec.q_heads as i32),
            Arg::I32(spec.kv_heads as i32),
            Arg::I32(spec.q_len as i32),
            Arg::I32(spec.kv_len as i32),
            Arg::F32(spec.scale),
            Arg::I32(i32::from(spec.causal)),
        ],
    )
}

/// Forward attention into new buffers; shapes as in
/// [`attention_forward_into`].
pub fn attention_forward<T: GpuFloat>(
    device: &GpuDevice,
    spec: &Attention,
    q: &GpuBuffer<T>,
    k: &GpuBuffer<T>,
    v: &GpuBuffer<T>,
) -> Result<AttentionOutput<T>> {
    spec.check()?;
    let mut o = device.zeros::<T>(spec.q_len_elements()?)?;
    let mut lse = device.zeros::<f32>(spec.rows()?)?;
    attention_forward_into(device, spec, q, k, v, &mut o, &mut lse)?;
    Ok(AttentionOutput { o, lse })
}

/// Backward attention into preallocated `dq` (B, Hq, Tq, D), `dk`, `dv`
/// (B, Hkv, Tk, D), given the forward's inputs, its `o` and `lse`, and the
/// output gradient `dout` (B, Hq, Tq, D). `workspace` must have been made
/// for the same geometry. Nothing is allocated.
///
/// Three launches: `attn_bwd_pre` (delta, clears dq_acc), the main kernel
/// (one block per key tile and kv head, dk/dv in registers, dq by f32
/// atomics), `attn_dq_convert`.
///
/// # Errors
/// As [`attention_forward_into`].
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_into<T: GpuFloat>(
    device: &GpuDevice,
    spec: &Attention,
    q: &GpuBuffer<T>,
    k: &GpuBuffer<T>,
    v: &GpuBuffer<T>,
    o: &GpuBuffer<T>,
    lse: &GpuBuffer<f32>,
    dout: &GpuBuffer<T>,
    workspace: &mut AttentionWorkspace,
    dq: &mut GpuBuffer<T>,
    dk: &mut GpuBuffer<T>,
    dv: &mut GpuBuffer<T>,
) -> Result<()> {
    spec.check()?;
    let tensor_cores = spec.tensor_cores::<T>()?;
    let (nq, nk, rows) = (
        spec.q_len_elements()?,
        spec.kv_len_elements()?,
        spec.rows()?,
    );
    check_len(OP, "q", q, nq)?;
    check_len(OP, "k", k, nk)?;
    check_len(OP, "v", v, nk)?;
    check_len(OP, "o", o, nq)?;
    check_len(OP, "lse", lse, rows)?;
    check_len(OP, "dout", dout, nq)?;
    check_len(OP, "workspace delta", &workspace.delta, rows)?;
    check_len(OP, "workspace dq_acc", &workspace.dq_acc, nq)?;
    check_len(OP, "dq", dq, nq)?;
    check_len(OP, "dk", dk, nk)?;
    check_len(OP, "dv", dv, nk)?;
    if rows > 0 {
        device.launch(
            &ATTENTION,
            &format!("attn_bwd_pre_{}", T::SUFFIX),
            Launch::linear(rows.saturating_mul(32), 256),
            &mut [
                o.arg(),
                dout.arg(),
                workspace.delta.arg_mut(),
                workspace.dq_acc.arg_mut(),
                Arg::U64(rows as u64),
                Arg::I32(spec.head_dim as i32),
            ],
        )?;
    }
    if nk > 0 {
        let (keys_per_block, threads, family) = if tensor_cores {
            (64, 128, "tc")
        } else {
            (16, 256, "simt")
        };
        let launch = Launch {
            grid: (
                (spec.batch * spec.kv_heads) as u32,
                spec.kv_len.div_ceil(keys_per_block) as u32,
                1,
            ),
            block: (threads, 1, 1),
            shared_bytes: 0,
        };
        device.launch(
            &ATTENTION,
            &format!("attn_bwd_{family}_{}_d{}", T::SUFFIX, spec.head_dim),
            launch,
            &mut [
                q.arg(),
                k.arg(),
                v.arg(),
                dout.arg(),
                lse.arg(),
                workspace.delta.arg(),
                workspace.dq_acc.arg_mut(),
                dk.arg_mut(),
                dv.arg_mut(),
                Arg::I32(spec.q_heads as i32),
                Arg::I32(spec.kv_heads as i32),
                Arg::I32(spec.q_len as i32),
                Arg::I32(spec.kv_len as i32),
                Arg::F32(spec.scale),
                Arg::I32(i32::from(spec.causal)),
            ],
        )?;
    }
    if nq > 0 {
        device.launch(
            &ATTENTION,
            &format!("attn_dq_convert_{}", T::SUFFIX),
            Launch::linear(nq, 256),
            &mut [workspace.dq_acc.arg(), dq.arg_mut(), Arg::U64(nq as u64)],
        )?;
    }
    Ok(())
}

/// Backward attention into new buffers; shapes as in
/// [`attention_backward_into`].
#[allow(clippy::too_many_arguments)]
pub fn attention_backward<T: GpuFloat>(
    device: &GpuDevice,
    spec: &Attention,
    q: &GpuBuffer<T>,
    k: &GpuBuffer<T>,
    v: &GpuBuffer<T>,
    o: &GpuBuffer<T>,
    lse: &GpuBuffer<f32>,
    dout: &GpuBuffer<T>,
) -> Result<AttentionGrads<T>> {
    let mut workspace = AttentionWorkspace::new(device, spec)?;
    let mut grads = AttentionGrads {
        dq: device.zeros::<T>(spec.q_len_elements()?)?,
        dk: device.zeros::<T>(spec.kv_len_elements()?)?,
        dv: device.zeros::<T>(spec.kv_len_elements()?)?,
    };
    attention_backward_into(
        device,
        spec,
        q,
        k,
        v,
        o,
        lse,
        dout,
        &mut workspace,
        &mut grads.dq,
        &mut grads.dk,
        &mut grads.dv,
    )?;
    Ok(grads)
}
