// common.cuh: prepended by the Rust side to every kernel file before NVRTC
// compiles it (NVRTC resolves only the CUDA headers through include paths).
//
// Conventions of every kernel file:
// - `extern "C"` entry points named `{op}_{dtype}` with dtype f32, bf16 or f16,
//   instantiated with FOR_EACH_FLOAT; arithmetic is in f32 whatever the storage.
// - Element counts are `unsigned long long` (u64 on the Rust side), row and
//   column counts `int` (i32).
// - Shapes are written next to each pointer argument: (rows, cols) etc.
// - No INFINITY under NVRTC: use CUDART_INF_F.
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <math_constants.h>

typedef unsigned long long u64;
typedef unsigned int u32;
typedef __nv_bfloat16 bf16;
typedef __half f16;

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(f16 x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(bf16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ f16 from_f32<f16>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ bf16 from_f32<bf16>(float x) { return __float2bfloat16_rn(x); }

#define FOR_EACH_FLOAT(M) M(float, f32) M(bf16, bf16) M(f16, f16)

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every
// thread gets the result. Safe to call repeatedly in one kernel.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float partial[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = (threadIdx.x < (blockDim.x >> 5)) ? partial[lane] : 0.0f;
    if (warp == 0) v = warp_sum(v);
    if (threadIdx.x == 0) partial[0] = v;
    __syncthreads();
    v = partial[0];
    __syncthreads();
    return v;
}

// Maximum over the whole block, as block_sum.
__device__ __forceinline__ float block_max(float v) {
    __shared__ float partial[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_max(v);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = (threadIdx.x < (blockDim.x >> 5)) ? partial[lane] : -CUDART_INF_F;
    if (warp == 0) v = warp_max(v);
    if (threadIdx.x == 0) partial[0] = v;
    __syncthreads();
    v = partial[0];
    __syncthreads();
    return v;
}

// ---- Rows in registers ------------------------------------------------------
// The fast path of the row kernels (norm.cu, reduce.cu) reads a row with
// 16-byte vector loads (uint4: VEC16<T> elements, 4 f32 or 8 bf16/f16),
// thread t taking vectors t, t + blockDim.x, …, keeps it in registers and
// writes it with 16-byte stores: one read and one write of global memory. It
// runs when row_in_registers says so (uniform over the block); otherwise the
// kernel's scalar loop runs.

template <typename T> struct Vec16;  // unpack / pack one 16-byte vector of T to / from f32
template <> struct Vec16<float> {
    static constexpr int N = 4;
    static __device__ __forceinline__ void unpack(uint4 v, float* out) {
        out[0] = __uint_as_float(v.x);
        out[1] = __uint_as_float(v.y);
        out[2] = __uint_as_float(v.z);
        out[3] = __uint_as_float(v.w);
    }
    static __device__ __forceinline__ uint4 pack(const float* in) {
        return make_uint4(__float_as_uint(in[0]), __float_as_uint(in[1]), __float_as_uint(in[2]),
                          __float_as_uint(in[3]));
    }
};
__device__ __forceinline__ float bits_to_f32(u32 bits, bf16*) { return __uint_as_float(bits << 16); }
__device__ __forceinline__ float bits_to_f32(u32 bits, f16*) { return __half2float(__ushort_as_half((unsigned short)bits)); }
__device__ __forceinline__ u32 f32_to_bits(float x, bf16*) { return __bfloat16_as_ushort(__float2bfloat16_rn(x)); }
__device__ __forceinline__ u32 f32_to_bits(float x, f16*) { return __half_as_ushort(__float2half_rn(x)); }
template <typename T> struct Vec16 {  // bf16 and f16: element 2k in the low half of word k
    static constexpr int N = 8;
    static __device__ __forceinline__ void unpack(uint4 v, float* out) {
        const u32 words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            out[2 * k] = bits_to_f32(words[k] & 0xffffu, (T*)0);
            out[2 * k + 1] = bits_to_f32(words[k] >> 16, (T*)0);
        }
    }
    static __device__ __forceinline__ uint4 pack(const float* in) {
        u32 words[4];
#pragma unroll
        for (int k = 0; k < 4; ++k)
            words[k] = f32_to_bits(in[2 * k], (T*)0) | (f32_to_bits(in[2 * k + 1], (T*)0) << 16);
        return make_uint4(words[0], words[1], words[2], words[3]);
    }
};

// Most elements of a row one thread keeps in f32 registers (the forward
// kernels), and most 16-byte vectors of each input one thread keeps packed
// (the backward kernels, two inputs): 32 registers of row data either way,
// which fits the 64 registers a 1024-thread block allows. The launchers
// (ops::vector_row_threads) give each thread about 4 vectors.
#define ROW_ELEMS 32
#define ROW_VECS_PACKED 4

__device__ __forceinline__ bool aligned16(const void* p) { return ((u64)p & 15) == 0; }

// Whether a row of `cols` elements of T goes through the fast path with at
// most `max_vecs` vectors per thread (the caller checks its pointers with
// aligned16: the first row's start, and with cols a multiple of the vector
// width every row's).
template <typename T>
__device__ __forceinline__ bool row_in_registers(int cols, int max_vecs) {
    return cols % Vec16<T>::N == 0 && cols / Vec16<T>::N <= (int)blockDim.x * max_vecs;
}

// Block-wide online max and sum of exp over one row: returns (max, Σ exp(x − max)).
template <typename T>
__device__ __forceinline__ float2 row_max_sumexp(const T* in, int cols) {
    float m = -CUDART_INF_F, s = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        const float v = to_f32(in[j]);
        if (v == -CUDART_INF_F) continue;  // exp(−∞ − m) = 0, and keeps m = −∞ from giving NaN
        if (v > m) {
            s = s * expf(m - v) + 1.0f;
            m = v;
        } else {
            s += expf(v - m);
        }
    }
    const float row_max = block_max(m);
    // A thread that saw no element (or only -inf) contributes 0.
    const float scaled = (m == -CUDART_INF_F) ? 0.0f : s * expf(m - row_max);
    return make_float2(row_max, block_sum(scaled));
}
