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
