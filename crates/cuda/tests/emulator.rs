//! The CPU emulator itself (feature `emulator`): the CUDA semantics the
//! parity tests rely on (argument passing, warp collectives, barriers,
//! dynamic shared memory, exact half conversions), and the bugs it must
//! catch rather than pass silently: accesses past a buffer, writes into an
//! input, misaligned or out-of-bounds accesses, deadlocks, shuffles reading
//! exited lanes, a missing `__syncthreads`, files it cannot build.
#![cfg(feature = "emulator")]

use kaiyuan_cuda::device::{Arg, Launch};
use kaiyuan_cuda::kernels::{self, KernelFile};
use kaiyuan_cuda::{CudaError, GpuDevice};

/// Kernels written for these tests (the common header is prepended, as to
/// every kernel file).
static SELFTEST: KernelFile = KernelFile {
    name: "emu_selftest",
    source: r#"
#define GRID_STRIDE(i, n) \
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < (n); i += (u64)gridDim.x * blockDim.x)

extern "C" __global__ void write_shifted(u64 n, int shift, float* y) { GRID_STRIDE(i, n) y[i + shift] = 1.0f; }

extern "C" __global__ void read_shifted(u64 n, int shift, const float* x, float* y) {
    GRID_STRIDE(i, n) y[i] = x[i + shift];
}

extern "C" __global__ void write_input(u64 n, const float* x) { GRID_STRIDE(i, n) const_cast<float*>(x)[i] = 0.0f; }

extern "C" __global__ void misaligned_load(const float* x, float* y) {
    const float4 v = *reinterpret_cast<const float4*>(x + 1);
    y[threadIdx.x] = v.x;
}

extern "C" __global__ void shared_index(int index, float* y) {
    __shared__ float s[32];
    s[threadIdx.x] = 1.0f;
    __syncthreads();
    y[threadIdx.x] = s[index];
}

extern "C" __global__ void deep_stack(int n, float* y) {
    volatile float big[200000];
    for (int i = 0; i < n; ++i) big[i] = (float)i;
    y[threadIdx.x] = big[n - 1];
}

extern "C" __global__ void diverged(float* y) {
    if (threadIdx.x == 0) __syncthreads();
    else y[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}

extern "C" __global__ void exited_lane(float* y) {
    if (threadIdx.x >= 16) return;
    y[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (float)threadIdx.x, 16);
}

// Reverses each block's slice through shared memory; without the barrier
// a thread may read its partner's slot before the partner wrote it.
extern "C" __global__ void reverse_block(int sync, const float* x, float* y) {
    __shared__ float s[256];
    const u64 base = (u64)blockIdx.x * blockDim.x;
    s[threadIdx.x] = x[base + threadIdx.x];
    if (sync) __syncthreads();
    y[base + threadIdx.x] = s[blockDim.x - 1 - threadIdx.x];
}

extern "C" __global__ void dynamic_reverse(const float* x, float* y) {
    extern __shared__ __align__(16) float buffer[];
    buffer[threadIdx.x] = x[threadIdx.x];
    __syncthreads();
    y[threadIdx.x] = buffer[blockDim.x - 1 - threadIdx.x];
}

// Integer and float parameters interleaved, more than fit in registers.
extern "C" __global__ void many_args(float a, int b, u64 c, float d, float* out, int e, float f, float g, u64 h,
                                     float i, float j, int k, int l, float m, int n, int o, u64 p) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    out[0] = a; out[1] = (float)b; out[2] = (float)c; out[3] = d; out[4] = (float)e; out[5] = f; out[6] = g;
    out[7] = (float)h; out[8] = i; out[9] = j; out[10] = (float)k; out[11] = (float)l; out[12] = m;
    out[13] = (float)n; out[14] = (float)o; out[15] = (float)p;
}

// Block of 64: eight results per thread.
extern "C" __global__ void warp_ops(const int* x, int* y) {
    const int v = x[threadIdx.x];
    const int lane = threadIdx.x & 31;
    int* o = y + threadIdx.x * 8;
    o[0] = __shfl_sync(0xffffffffu, v, 3);
    o[1] = __shfl_up_sync(0xffffffffu, v, 1);
    o[2] = __shfl_down_sync(0xffffffffu, v, 2);
    o[3] = __shfl_xor_sync(0xffffffffu, v, 5);
    o[4] = (int)__ballot_sync(0xffffffffu, v & 1);
    o[5] = __shfl_sync(0xffffffffu, v, lane + 1, 8);
    o[6] = __syncthreads_count(v & 1);
    o[7] = __any_sync(0xffffffffu, v == 7) + 2 * __all_sync(0xffffffffu, v >= 0);
}

extern "C" __global__ void checked(int value, float* y) {
    assert(value > 0);
    if (value == 7) __trap();
    y[threadIdx.x] = (float)value;
}

// Every f16 bit pattern widened, and f32 values narrowed to f16 and bf16.
extern "C" __global__ void widen_f16(u64 n, float* y) { GRID_STRIDE(i, n) y[i] = __half2float(__ushort_as_half((unsigned short)i)); }

extern "C" __global__ void narrow(u64 n, const float* x, unsigned short* h, unsigned short* b) {
    GRID_STRIDE(i, n) {
        h[i] = __half_as_ushort(__float2half_rn(x[i]));
        b[i] = __bfloat16_as_ushort(__float2bfloat16_rn(x[i]));
    }
}
"#,
    tensor_cores: false,
    sm90a: false,
};

/// A file with inline PTX outside a helper block: not emulatable.
static INLINE_PTX: KernelFile = KernelFile {
    name: "emu_selftest_ptx",
    source: r#"
extern "C" __global__ void uses_ptx(float* y) {
    unsigned r;
    asm volatile("mov.u32 %0, %%laneid;" : "=r"(r));
    y[threadIdx.x] = (float)r;
}
"#,
    tensor_cores: false,
    sm90a: false,
};

fn device() -> GpuDevice {
    GpuDevice::new(0).expect("the emulator runs wherever a C++ compiler does")
}

fn one_block(threads: u32) -> Launch {
    Launch {
        grid: (1, 1, 1),
        block: (threads, 1, 1),
        shared_bytes: 0,
    }
}

/// The launch's error message, which must exist.
fn failure(result: kaiyuan_cuda::Result<()>) -> String {
    match result {
        Err(error @ CudaError::Emulator { .. }) => error.to_string(),
        other => panic!("the emulator must report this launch, got {other:?}"),
    }
}

#[test]
fn the_device_is_the_emulator() {
    let device = device();
    assert_eq!(device.info().name, "kaiyuan CUDA emulator (CPU)");
    assert_eq!(device.info().arch(), "sm_90");
    assert!(GpuDevice::new(1).is_err());
}

#[test]
fn a_write_past_the_end_faults_at_the_guard_page() {
    let device = device();
    let mut y = device.zeros::<f32>(1024).expect("y");
    let message = failure(device.launch(
        &SELFTEST,
        "write_shifted",
        Launch::linear(1024, 256),
        &mut [Arg::U64(1024), Arg::I32(1), y.arg_mut()],
    ));
    assert!(
        message.contains("byte 4096 of argument #2 (output, 4096 bytes), past its end"),
        "{message}"
    );
    assert!(message.contains("emu_selftest.cu:5"), "{message}");
    assert!(
        message.contains("block (3, 0, 0) thread (255, 0, 0)"),
        "{message}"
    );
    // The same launch within bounds works afterwards.
    device
        .launch(
            &SELFTEST,
            "write_shifted",
            Launch::linear(1024, 256),
            &mut [Arg::U64(1023), Arg::I32(1), y.arg_mut()],
        )
        .expect("in bounds");
    assert_eq!(device.download(&y).expect("y")[1..], vec![1.0f32; 1023][..]);
}

#[test]
fn a_write_into_the_padding_is_found_after_the_launch() {
    let device = device();
    // 5 floats: 20 bytes, padded to 32 before the guard page.
    let mut y = device.zeros::<f32>(5).expect("y");
    let message = failure(device.launch(
        &SELFTEST,
        "write_shifted",
        Launch::linear(5, 32),
        &mut [Arg::U64(5), Arg::I32(1), y.arg_mut()],
    ));
    assert!(
        message.contains("wrote byte 20 of argument #2 (output, 20 bytes), past its end"),
        "{message}"
    );
    // And before the start.
    let message = failure(device.launch(
        &SELFTEST,
        "write_shifted",
        Launch::linear(5, 32),
        &mut [Arg::U64(5), Arg::I32(-1), y.arg_mut()],
    ));
    assert!(
        message.contains("4 bytes before the start of argument #2"),
        "{message}"
    );
}

#[test]
fn a_read_past_the_end_faults() {
    let device = device();
    let x = device.upload(&vec![1.0f32; 1000]).expect("x");
    let mut y = device.zeros::<f32>(1000).expect("y");
    let message = failure(device.launch(
        &SELFTEST,
        "read_shifted",
        Launch::linear(1000, 256),
        &mut [Arg::U64(1000), Arg::I32(1), x.arg(), y.arg_mut()],
    ));
    assert!(
        message.contains("byte 4000 of argument #2 (input, 4000 bytes), past its end"),
        "{message}"
    );
}

#[test]
fn inputs_are_read_only_during_a_launch() {
    let device = device();
    let x = device.upload(&[1.0f32; 64]).expect("x");
    let message = failure(device.launch(
        &SELFTEST,
        "write_input",
        one_block(64),
        &mut [Arg::U64(64), x.arg()],
    ));
    assert!(
        message.contains("a write at byte 0 of argument #1 (input, 256 bytes)"),
        "{message}"
    );
    // Writable again afterwards (the host side copies into it through &mut).
    let mut x = x;
    device.fill_zeros(&mut x).expect("fill");
}

#[test]
fn misaligned_and_out_of_bounds_accesses_trap_with_their_line() {
    let device = device();
    let x = device.upload(&[1.0f32; 64]).expect("x");
    let mut y = device.zeros::<f32>(64).expect("y");
    let message = failure(device.launch(
        &SELFTEST,
        "misaligned_load",
        one_block(32),
        &mut [x.arg(), y.arg_mut()],
    ));
    assert!(message.contains("a failed check"), "{message}");
    assert!(message.contains("emu_selftest.cu:14"), "{message}");
    let message = failure(device.launch(
        &SELFTEST,
        "shared_index",
        one_block(32),
        &mut [Arg::I32(40), y.arg_mut()],
    ));
    assert!(
        message.contains("a failed check") && message.contains("emu_selftest.cu:22"),
        "{message}"
    );
    device
        .launch(
            &SELFTEST,
            "shared_index",
            one_block(32),
            &mut [Arg::I32(31), y.arg_mut()],
        )
        .expect("in bounds");
}

#[test]
fn assert_and_trap_end_the_launch() {
    let device = device();
    let mut y = device.zeros::<f32>(32).expect("y");
    let message = failure(device.launch(
        &SELFTEST,
        "checked",
        one_block(32),
        &mut [Arg::I32(-1), y.arg_mut()],
    ));
    assert!(
        message.contains("emu_selftest.cu") && message.contains("assertion `value > 0` failed"),
        "{message}"
    );
    let message = failure(device.launch(
        &SELFTEST,
        "checked",
        one_block(32),
        &mut [Arg::I32(7), y.arg_mut()],
    ));
    assert!(message.contains("__trap() was called"), "{message}");
    device
        .launch(
            &SELFTEST,
            "checked",
            one_block(32),
            &mut [Arg::I32(3), y.arg_mut()],
        )
        .expect("a passing check");
}

#[test]
fn a_stack_overflow_is_reported() {
    let device = device();
    let mut y = device.zeros::<f32>(32).expect("y");
    let message = failure(device.launch(
        &SELFTEST,
        "deep_stack",
        one_block(32),
        &mut [Arg::I32(200_000), y.arg_mut()],
    ));
    assert!(message.contains("stack overflow"), "{message}");
}

#[test]
fn a_deadlock_is_reported() {
    let device = device();
    let mut y = device.zeros::<f32>(32).expect("y");
    let message = failure(device.launch(&SELFTEST, "diverged", one_block(32), &mut [y.arg_mut()]));
    assert!(message.contains("deadlock"), "{message}");
    assert!(
        message.contains("1 threads wait at __syncthreads"),
        "{message}"
    );
}

#[test]
fn a_shuffle_reading_an_exited_lane_is_an_error() {
    let device = device();
    let mut y = device.zeros::<f32>(32).expect("y");
    let message =
        failure(device.launch(&SELFTEST, "exited_lane", one_block(32), &mut [y.arg_mut()]));
    assert!(
        message.contains("lane 0 reads lane 16, which did not take part"),
        "{message}"
    );
}

#[test]
fn a_missing_syncthreads_gives_wrong_results() {
    let device = device();
    let values: Vec<f32> = (0..512).map(|i| i as f32).collect();
    let x = device.upload(&values).expect("x");
    let want: Vec<f32> = values
        .chunks(256)
        .flat_map(|c| c.iter().rev().copied())
        .collect();
    let launch = Launch {
        grid: (2, 1, 1),
        block: (256, 1, 1),
        shared_bytes: 0,
    };
    let mut y = device.zeros::<f32>(512).expect("y");
    device
        .launch(
            &SELFTEST,
            "reverse_block",
            launch,
            &mut [Arg::I32(1), x.arg(), y.arg_mut()],
        )
        .expect("with the barrier");
    assert_eq!(device.download(&y).expect("y"), want);
    device
        .launch(
            &SELFTEST,
            "reverse_block",
            launch,
            &mut [Arg::I32(0), x.arg(), y.arg_mut()],
        )
        .expect("without the barrier");
    assert_ne!(device.download(&y).expect("y"), want, "the race must show");
}

#[test]
fn dynamic_shared_memory() {
    let device = device();
    let values: Vec<f32> = (0..128).map(|i| i as f32).collect();
    let x = device.upload(&values).expect("x");
    let mut y = device.zeros::<f32>(128).expect("y");
    let launch = Launch {
        shared_bytes: 128 * 4,
        ..one_block(128)
    };
    device
        .launch(
            &SELFTEST,
            "dynamic_reverse",
            launch,
            &mut [x.arg(), y.arg_mut()],
        )
        .expect("launch");
    let want: Vec<f32> = values.iter().rev().copied().collect();
    assert_eq!(device.download(&y).expect("y"), want);
    let too_much = Launch {
        shared_bytes: 164 * 1024,
        ..one_block(128)
    };
    let message = failure(device.launch(
        &SELFTEST,
        "dynamic_reverse",
        too_much,
        &mut [x.arg(), y.arg_mut()],
    ));
    assert!(message.contains("dynamic shared memory"), "{message}");
}

#[test]
fn arguments_reach_the_kernel_in_order() {
    let device = device();
    let mut out = device.zeros::<f32>(16).expect("out");
    device
        .launch(
            &SELFTEST,
            "many_args",
            one_block(32),
            &mut [
                Arg::F32(0.5),
                Arg::I32(-2),
                Arg::U64(3),
                Arg::F32(4.5),
                out.arg_mut(),
                Arg::I32(5),
                Arg::F32(6.5),
                Arg::F32(7.5),
                Arg::U64(1 << 40),
                Arg::F32(9.5),
                Arg::F32(10.5),
                Arg::I32(-11),
                Arg::I32(12),
                Arg::F32(13.5),
                Arg::I32(14),
                Arg::I32(15),
                Arg::U64(16),
            ],
        )
        .expect("launch");
    let want = [
        0.5,
        -2.0,
        3.0,
        4.5,
        5.0,
        6.5,
        7.5,
        (1u64 << 40) as f32,
        9.5,
        10.5,
        -11.0,
        12.0,
        13.5,
        14.0,
        15.0,
        16.0,
    ];
    assert_eq!(device.download(&out).expect("out"), want);
}

#[test]
fn warp_collectives_follow_cuda() {
    let device = device();
    let x: Vec<i32> = (0..64).map(|i| (i * 7 + 3) % 19).collect();
    let xd = device.upload(&x).expect("x");
    let mut y = device.zeros::<i32>(64 * 8).expect("y");
    device
        .launch(
            &SELFTEST,
            "warp_ops",
            one_block(64),
            &mut [xd.arg(), y.arg_mut()],
        )
        .expect("launch");
    let got = device.download(&y).expect("y");
    let odd_in_block = x.iter().filter(|&&v| v & 1 == 1).count() as i32;
    for t in 0..64usize {
        let (warp, lane) = (t / 32 * 32, t % 32);
        let at = |l: usize| x[warp + l];
        let ballot = (0..32)
            .filter(|&l| at(l) & 1 == 1)
            .fold(0u32, |b, l| b | 1 << l) as i32;
        let any7 = (0..32).any(|l| at(l) == 7) as i32;
        let want = [
            at(3),
            if lane >= 1 { at(lane - 1) } else { at(lane) },
            if lane + 2 < 32 {
                at(lane + 2)
            } else {
                at(lane)
            },
            at(lane ^ 5),
            ballot,
            at(lane / 8 * 8 + (lane + 1) % 8),
            odd_in_block,
            any7 + 2,
        ];
        assert_eq!(&got[t * 8..t * 8 + 8], &want, "thread {t}");
    }
}

#[test]
fn half_conversions_are_exact() {
    let device = device();
    let mut wide = device.zeros::<f32>(65_536).expect("wide");
    device
        .launch(
            &SELFTEST,
            "widen_f16",
            Launch::linear(65_536, 256),
            &mut [Arg::U64(65_536), wide.arg_mut()],
        )
        .expect("widen");
    for (bits, got) in device
        .download(&wide)
        .expect("wide")
        .into_iter()
        .enumerate()
    {
        let want = half::f16::from_bits(bits as u16).to_f32();
        assert!(
            got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
            "f16 {bits:#06x}"
        );
    }
    // Every f16 and bf16 value, the midpoints between neighbours (ties),
    // and random bit patterns.
    let mut values: Vec<f32> = Vec::new();
    for bits in 0..=u16::MAX {
        let h = half::f16::from_bits(bits).to_f32();
        let b = half::bf16::from_bits(bits).to_f32();
        values.extend([h, b, h * (1.0 + f32::EPSILON), b * (1.0 - f32::EPSILON)]);
        let next = half::f16::from_bits(bits.wrapping_add(1)).to_f32();
        let b_next = half::bf16::from_bits(bits.wrapping_add(1)).to_f32();
        values.extend([(h + next) / 2.0, (b + b_next) / 2.0]);
    }
    let mut state = 0x1234_5678_9abc_def0u64;
    for _ in 0..100_000 {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        values.push(f32::from_bits((state >> 32) as u32));
    }
    let n = values.len();
    let x = device.upload(&values).expect("x");
    let (mut h, mut b) = (
        device.zeros::<u16>(n).expect("h"),
        device.zeros::<u16>(n).expect("b"),
    );
    device
        .launch(
            &SELFTEST,
            "narrow",
            Launch::linear(n, 256),
            &mut [Arg::U64(n as u64), x.arg(), h.arg_mut(), b.arg_mut()],
        )
        .expect("narrow");
    let (h, b) = (
        device.download(&h).expect("h"),
        device.download(&b).expect("b"),
    );
    for (i, &v) in values.iter().enumerate() {
        if v.is_nan() {
            assert!(half::f16::from_bits(h[i]).is_nan() && half::bf16::from_bits(b[i]).is_nan());
            continue;
        }
        assert_eq!(
            h[i],
            half::f16::from_f32(v).to_bits(),
            "f16 of {v:e} ({:#010x})",
            v.to_bits()
        );
        assert_eq!(
            b[i],
            half::bf16::from_f32(v).to_bits(),
            "bf16 of {v:e} ({:#010x})",
            v.to_bits()
        );
    }
}

#[test]
fn bad_configurations_and_names_are_errors() {
    let device = device();
    let mut y = device.zeros::<f32>(32).expect("y");
    let message = failure(device.launch(
        &SELFTEST,
        "write_shifted",
        one_block(2048),
        &mut [Arg::U64(1), Arg::I32(0), y.arg_mut()],
    ));
    assert!(message.contains("1024 threads"), "{message}");
    let message = failure(device.launch(
        &SELFTEST,
        "no_such_kernel",
        one_block(32),
        &mut [y.arg_mut()],
    ));
    assert!(
        message.contains("exports no kernel no_such_kernel"),
        "{message}"
    );
}

#[test]
fn a_file_with_inline_ptx_is_not_emulatable() {
    let device = device();
    let message = match device.load(&INLINE_PTX) {
        Err(error @ CudaError::Emulator { .. }) => error.to_string(),
        other => panic!("inline PTX cannot be emulated, got {other:?}"),
    };
    assert!(
        message.contains("kernels/emu_selftest_ptx.cu: cannot be built for the emulator"),
        "{message}"
    );
    let mut y = device.zeros::<f32>(32).expect("y");
    let again = failure(device.launch(&INLINE_PTX, "uses_ptx", one_block(32), &mut [y.arg_mut()]));
    assert_eq!(again, message);
}

/// Every kernel file but the tensor-core ones (whose inline PTX the
/// emulator replaces only while it stays in their helper block) must build,
/// and the sm_90a-only ones must be refused; the report says which files
/// run on the emulator.
#[test]
fn the_kernel_files_build_for_the_emulator() {
    let device = device();
    for file in kernels::ALL {
        match device.load(file) {
            Ok(()) if file.sm90a => panic!("kernels/{}.cu is sm_90a-only", file.name),
            Ok(()) => eprintln!("kernels/{}.cu: emulated", file.name),
            Err(error) if file.sm90a => {
                eprintln!("kernels/{}.cu: NOT emulated (sm_90a): {error}", file.name)
            }
            Err(error) if matches!(file.name, "gemm" | "attention") => {
                eprintln!("kernels/{}.cu: NOT emulated: {error}", file.name)
            }
            Err(error) => panic!("kernels/{}.cu must run on the emulator: {error}", file.name),
        }
    }
}
