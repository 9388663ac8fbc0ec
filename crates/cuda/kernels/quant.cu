// quant.cu: products with quantized weights, y = x·Wᵀ.
//
// W: (n, k), n output features (rows) by k input features, stored quantized
// row after row; x: (m, k) f32; y: (m, n) f32. Arithmetic in f32.
//
// Launch (every product kernel): one warp per weight row, QUANT_WARPS = 4
// rows per block of 128 threads, grid.x = ceil(n / 4); a warp whose row is
// past n returns at once (no block-level synchronisation follows). Each
// `gemv_*` kernel is the MT = 1 instance and each `gemm_*` kernel the MT = 8
// instance of one template: the warp walks its weight row once per tile of
// MT rows of x, keeping MT dot products, so either serves any m (the gemv
// ones are the fast path for m = 1).
//
// Alignment: weight buffers are whole device allocations (256-byte aligned).
// - Q8_0 (34-byte blocks) and Q4_0 (18-byte blocks) are only 2-byte aligned:
//   read as 16-bit words.
// - Q4_K rows are k/256 blocks of 144 = 9·16 bytes: every block is 16-byte
//   aligned; the header is read as 32-bit words, the nibbles as 8-byte words.
// - Int codes (the layout of kaiyuan-tensor's QMatrix::from_int): rows of k
//   (int8) or k/2 (int4) bytes with k a multiple of 32: 16-byte words.
// - x rows are k floats with k a multiple of 32: float4 loads at offsets
//   that are multiples of 4 floats.

#define QUANT_WARPS 4

// The f16 in the low 16 bits of `bits`, widened (exact).
__device__ __forceinline__ float half_bits_to_f32(u32 bits) {
    return __half2float(__ushort_as_half((unsigned short)(bits & 0xffffu)));
}

// Four bytes at a 2-byte aligned address, little-endian.
__device__ __forceinline__ u32 load_u32_a2(const unsigned char* p) {
    const unsigned short* h = reinterpret_cast<const unsigned short*>(p);
    return (u32)h[0] | ((u32)h[1] << 16);
}

// Byte `i` of `w` as a signed value.
__device__ __forceinline__ float signed_byte(u32 w, int i) {
    return (float)((int)(w << (24 - 8 * i)) >> 24);
}

// Byte `i` of `w` (unsigned).
__device__ __forceinline__ float unsigned_byte(u32 w, int i) { return (float)((w >> (8 * i)) & 0xffu); }

// The low (high = 0) or high (high = 1) nibble of byte `i` of `w`.
__device__ __forceinline__ float nibble(u32 w, int i, int high) {
    return (float)((w >> (8 * i + 4 * high)) & 0xfu);
}

__device__ __forceinline__ float4 load_x4(const float* p) { return *reinterpret_cast<const float4*>(p); }

__device__ __forceinline__ float sum4(float4 a) { return (a.x + a.y) + (a.z + a.w); }

// Σ_t q_t·a_t for the four bytes (signed) of `w`.
__device__ __forceinline__ float dot_signed_bytes(u32 w, float4 a) {
    return signed_byte(w, 0) * a.x + signed_byte(w, 1) * a.y + signed_byte(w, 2) * a.z + signed_byte(w, 3) * a.w;
}

// Σ_t q_t·a_t for the four bytes (unsigned) of `w`.
__device__ __forceinline__ float dot_unsigned_bytes(u32 w, float4 a) {
    return unsigned_byte(w, 0) * a.x + unsigned_byte(w, 1) * a.y + unsigned_byte(w, 2) * a.z +
           unsigned_byte(w, 3) * a.w;
}

// Σ_t q_t·a_t for the low (high = 0) or high nibbles of the four bytes of `w`.
__device__ __forceinline__ float dot_nibbles(u32 w, int high, float4 a) {
    return nibble(w, 0, high) * a.x + nibble(w, 1, high) * a.y + nibble(w, 2, high) * a.z + nibble(w, 3, high) * a.w;
}

// Reduces the warp's MT partial dot products and writes y[m0 + i][row] for
// the rows of x that exist. Every lane of the warp must call it.
template <int MT>
__device__ __forceinline__ void store_tile(const float (&acc)[MT], float* __restrict__ y, int n, int row, int m0,
                                           int m, int lane) {
#pragma unroll
    for (int i = 0; i < MT; ++i) {
        const float v = warp_sum(acc[i]);
        if (lane == 0 && m0 + i < m) y[(u64)(m0 + i) * n + row] = v;
    }
}

// ---------------------------------------------------------------------------
// GGUF Q8_0: blocks of 32 elements in 34 bytes: d (f16), 32 × i8; w = d·q.
// Lane `lane` takes block lane/4 + 8·t (t = 0, 1, …) and in it the eight
// elements 8·(lane mod 4) … + 7: a warp covers 8 blocks (256 elements) per step.
// ---------------------------------------------------------------------------
template <int MT>
__device__ __forceinline__ void q8_0_impl(const unsigned char* __restrict__ w, const float* __restrict__ x,
                                          float* __restrict__ y, int n, int k, int m) {
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * QUANT_WARPS + (threadIdx.x >> 5);
    if (row >= n) return;
    const int blocks = k >> 5;
    const unsigned char* wrow = w + (u64)row * blocks * 34;
    const int part = lane & 3;
    for (int m0 = 0; m0 < m; m0 += MT) {
        float acc[MT];
#pragma unroll
        for (int i = 0; i < MT; ++i) acc[i] = 0.0f;
        for (int b = lane >> 2; b < blocks; b += 8) {
            const unsigned char* block = wrow + (u64)b * 34;
            const float d = half_bits_to_f32(*reinterpret_cast<const unsigned short*>(block));
            const u32 q0 = load_u32_a2(block + 2 + 8 * part);
            const u32 q1 = load_u32_a2(block + 6 + 8 * part);
            const u64 col = (u64)b * 32 + 8 * part;
#pragma unroll
            for (int i = 0; i < MT; ++i) {
                if (m0 + i < m) {
                    const float* xr = x + (u64)(m0 + i) * k + col;
                    const float4 a0 = load_x4(xr), a1 = load_x4(xr + 4);
                    acc[i] += d * (dot_signed_bytes(q0, a0) + dot_signed_bytes(q1, a1));
                }
            }
        }
        store_tile<MT>(acc, y, n, row, m0, m, lane);
    }
}

// ---------------------------------------------------------------------------
// GGUF Q4_0: blocks of 32 elements in 18 bytes: d (f16), 16 bytes; byte j
// holds element j (low nibble) and j + 16 (high nibble); w = d·(q − 8).
// Lane `lane` takes block lane/4 + 8·t and in it bytes 4·(lane mod 4) … + 3,
// elements 4·(lane mod 4) + {0..3} and 16 + 4·(lane mod 4) + {0..3}.
// ---------------------------------------------------------------------------
template <int MT>
__device__ __forceinline__ void q4_0_impl(const unsigned char* __restrict__ w, const float* __restrict__ x,
                                          float* __restrict__ y, int n, int k, int m) {
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * QUANT_WARPS + (threadIdx.x >> 5);
    if (row >= n) return;
    const int blocks = k >> 5;
    const unsigned char* wrow = w + (u64)row * blocks * 18;
    const int part = lane & 3;
    for (int m0 = 0; m0 < m; m0 += MT) {
        float acc[MT];
#pragma unroll
        for (int i = 0; i < MT; ++i) acc[i] = 0.0f;
        for (int b = lane >> 2; b < blocks; b += 8) {
            const unsigned char* block = wrow + (u64)b * 18;
            const float d = half_bits_to_f32(*reinterpret_cast<const unsigned short*>(block));
            const u32 q = load_u32_a2(block + 2 + 4 * part);
            const u64 col = (u64)b * 32 + 4 * part;
#pragma unroll
            for (int i = 0; i < MT; ++i) {
                if (m0 + i < m) {
                    const float* xr = x + (u64)(m0 + i) * k + col;
                    const float4 lo = load_x4(xr), hi = load_x4(xr + 16);
                    // Σ (q − 8)·x = Σ q·x − 8·Σ x
                    const float dot = dot_nibbles(q, 0, lo) + dot_nibbles(q, 1, hi);
                    acc[i] += d * (dot - 8.0f * (sum4(lo) + sum4(hi)));
                }
            }
        }
        store_tile<MT>(acc, y, n, row, m0, m, lane);
    }
}

// ---------------------------------------------------------------------------
// GGUF Q4_K: super-blocks of 256 elements in 144 bytes: d, dmin (f16), 12
// bytes of 6-bit scales and minimums of the 8 sub-blocks of 32, 128 bytes of
// nibbles. Sub-blocks 2p and 2p + 1 share bytes 32p … 32p + 31 of the
// nibbles (low, high); element l of sub-block j is w = (d·sc_j)·q − dmin·mn_j
// (ggml's dequantize_row_q4_K).
// Lane `lane` takes super-block lane/16 + 2·t and in it the nibble bytes
// 8·u … 8·u + 7 (u = lane mod 16): pair p = u/4, elements
// 64p + 8·(u mod 4) + {0..7} (low nibbles) and the same + 32 (high nibbles).
// ---------------------------------------------------------------------------

// ggml's get_scale_min_k4: scale and minimum of sub-block j (0..7) from the
// 12 packed bytes, held as the little-endian words s0 (bytes 0–3), s1 (4–7),
// s2 (8–11).
__device__ __forceinline__ void scale_min_k4(int j, u32 s0, u32 s1, u32 s2, float& sc, float& mn) {
    if (j < 4) {
        const int shift = 8 * j;
        sc = (float)((s0 >> shift) & 63u);
        mn = (float)((s1 >> shift) & 63u);
    } else {
        const int shift = 8 * (j - 4);
        const u32 b0 = (s0 >> shift) & 0xffu, b1 = (s1 >> shift) & 0xffu, b2 = (s2 >> shift) & 0xffu;
        sc = (float)((b2 & 0x0fu) | ((b0 >> 6) << 4));
        mn = (float)((b2 >> 4) | ((b1 >> 6) << 4));
    }
}

template <int MT>
__device__ __forceinline__ void q4_k_impl(const unsigned char* __restrict__ w, const float* __restrict__ x,
                                          float* __restrict__ y, int n, int k, int m) {
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * QUANT_WARPS + (threadIdx.x >> 5);
    if (row >= n) return;
    const int supers = k >> 8;
    const unsigned char* wrow = w + (u64)row * supers * 144;
    const int u = lane & 15;
    const int pair = u >> 2;
    const int offset = 64 * pair + 8 * (u & 3);
    for (int m0 = 0; m0 < m; m0 += MT) {
        float acc[MT];
#pragma unroll
        for (int i = 0; i < MT; ++i) acc[i] = 0.0f;
        for (int sb = lane >> 4; sb < supers; sb += 2) {
            const unsigned char* block = wrow + (u64)sb * 144;
            const u32* head = reinterpret_cast<const u32*>(block);
            const u32 dd = head[0];
            const float d = half_bits_to_f32(dd), dmin = half_bits_to_f32(dd >> 16);
            const u32 s0 = head[1], s1 = head[2], s2 = head[3];
            float sc_lo, mn_lo, sc_hi, mn_hi;
            scale_min_k4(2 * pair, s0, s1, s2, sc_lo, mn_lo);
            scale_min_k4(2 * pair + 1, s0, s1, s2, sc_hi, mn_hi);
            const float d_lo = d * sc_lo, m_lo = dmin * mn_lo;
            const float d_hi = d * sc_hi, m_hi = dmin * mn_hi;
            const uint2 q = *reinterpret_cast<const uint2*>(block + 16 + 8 * u);
            const u64 col = (u64)sb * 256 + offset;
#pragma unroll
            for (int i = 0; i < MT; ++i) {
                if (m0 + i < m) {
                    const float* xr = x + (u64)(m0 + i) * k + col;
                    const float4 l0 = load_x4(xr), l1 = load_x4(xr + 4);
                    const float4 h0 = load_x4(xr + 32), h1 = load_x4(xr + 36);
                    const float dot_lo = dot_nibbles(q.x, 0, l0) + dot_nibbles(q.y, 0, l1);
                    const float dot_hi = dot_nibbles(q.x, 1, h0) + dot_nibbles(q.y, 1, h1);
                    const float sum_lo = sum4(l0) + sum4(l1), sum_hi = sum4(h0) + sum4(h1);
                    acc[i] += (d_lo * dot_lo - m_lo * sum_lo) + (d_hi * dot_hi - m_hi * sum_hi);
                }
            }
        }
        store_tile<MT>(acc, y, n, row, m0, m, lane);
    }
}

// ---------------------------------------------------------------------------
// Group-wise integers (GPTQ / RTN) in the layout of kaiyuan-tensor's
// QMatrix::from_int: codes (n, k) in stored column order, int8 one byte per
// code, int4 per 32 codes 16 bytes whose byte j holds code j (low nibble) and
// j + 16 (high nibble); scales, mins: (n, groups) f32 with groups =
// ceil(k / group) (the last group shorter when group does not divide k);
// w = s·q + mn. An act-order permutation is applied to x beforehand
// (gather_cols_f32), so x here is in stored column order.
// ---------------------------------------------------------------------------

// int4: lane `lane` takes 32-element block lane + 32·t (16 bytes).
template <int MT>
__device__ __forceinline__ void int4_impl(const unsigned char* __restrict__ codes, const float* __restrict__ scales,
                                          const float* __restrict__ mins, const float* __restrict__ x,
                                          float* __restrict__ y, int n, int k, int m, int group) {
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * QUANT_WARPS + (threadIdx.x >> 5);
    if (row >= n) return;
    const int blocks = k >> 5;
    const int groups = (k - 1) / group + 1;  // ceil(k / group) without overflow
    const int blocks_per_group = group >> 5;
    const unsigned char* wrow = codes + (u64)row * (k >> 1);
    const float* srow = scales + (u64)row * groups;
    const float* mrow = mins + (u64)row * groups;
    for (int m0 = 0; m0 < m; m0 += MT) {
        float acc[MT];
#pragma unroll
        for (int i = 0; i < MT; ++i) acc[i] = 0.0f;
        for (int b = lane; b < blocks; b += 32) {
            const uint4 q = *reinterpret_cast<const uint4*>(wrow + (u64)b * 16);
            const int g = b / blocks_per_group;
            const float s = srow[g], mn = mrow[g];
            const u64 col = (u64)b * 32;
#pragma unroll
            for (int i = 0; i < MT; ++i) {
                if (m0 + i < m) {
                    const float* xr = x + (u64)(m0 + i) * k + col;
                    // Word t holds bytes 4t … 4t + 3: elements 4t + {0..3}
                    // (low nibbles) and 16 + 4t + {0..3} (high nibbles).
                    const float4 l0 = load_x4(xr), l1 = load_x4(xr + 4), l2 = load_x4(xr + 8),
                                 l3 = load_x4(xr + 12);
                    const float4 h0 = load_x4(xr + 16), h1 = load_x4(xr + 20), h2 = load_x4(xr + 24),
                                 h3 = load_x4(xr + 28);
                    const float dot = (dot_nibbles(q.x, 0, l0) + dot_nibbles(q.y, 0, l1)) +
                                      (dot_nibbles(q.z, 0, l2) + dot_nibbles(q.w, 0, l3)) +
                                      (dot_nibbles(q.x, 1, h0) + dot_nibbles(q.y, 1, h1)) +
                                      (dot_nibbles(q.z, 1, h2) + dot_nibbles(q.w, 1, h3));
                    const float sum = ((sum4(l0) + sum4(l1)) + (sum4(l2) + sum4(l3))) +
                                      ((sum4(h0) + sum4(h1)) + (sum4(h2) + sum4(h3)));
                    acc[i] += s * dot + mn * sum;
                }
            }
        }
        store_tile<MT>(acc, y, n, row, m0, m, lane);
    }
}

// int8: lane `lane` takes the 16 codes 16·(lane + 32·t) … + 15 (16 bytes).
template <int MT>
__device__ __forceinline__ void int8_impl(const unsigned char* __restrict__ codes, const float* __restrict__ scales,
                                          const float* __restrict__ mins, const float* __restrict__ x,
                                          float* __restrict__ y, int n, int k, int m, int group) {
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * QUANT_WARPS + (threadIdx.x >> 5);
    if (row >= n) return;
    const int chunks = k >> 4;
    const int groups = (k - 1) / group + 1;  // ceil(k / group) without overflow
    const unsigned char* wrow = codes + (u64)row * k;
    const float* srow = scales + (u64)row * groups;
    const float* mrow = mins + (u64)row * groups;
    for (int m0 = 0; m0 < m; m0 += MT) {
        float acc[MT];
#pragma unroll
        for (int i = 0; i < MT; ++i) acc[i] = 0.0f;
        for (int c = lane; c < chunks; c += 32) {
            const uint4 q = *reinterpret_cast<const uint4*>(wrow + (u64)c * 16);
            const int g = (c * 16) / group;
            const float s = srow[g], mn = mrow[g];
            const u64 col = (u64)c * 16;
#pragma unroll
            for (int i = 0; i < MT; ++i) {
                if (m0 + i < m) {
                    const float* xr = x + (u64)(m0 + i) * k + col;
                    const float4 a0 = load_x4(xr), a1 = load_x4(xr + 4), a2 = load_x4(xr + 8),
                                 a3 = load_x4(xr + 12);
                    const float dot = (dot_unsigned_bytes(q.x, a0) + dot_unsigned_bytes(q.y, a1)) +
                                      (dot_unsigned_bytes(q.z, a2) + dot_unsigned_bytes(q.w, a3));
                    const float sum = (sum4(a0) + sum4(a1)) + (sum4(a2) + sum4(a3));
                    acc[i] += s * dot + mn * sum;
                }
            }
        }
        store_tile<MT>(acc, y, n, row, m0, m, lane);
    }
}

// ---------------------------------------------------------------------------
// Entry points. GGUF: w: the n·(k / block) blocks, row after row; x: (m, k);
// y: (m, n). k is a positive multiple of the block size (32, or 256 for Q4_K).
// ---------------------------------------------------------------------------
#define GGUF_PRODUCT(FMT)                                                                                      \
    extern "C" __global__ void __launch_bounds__(QUANT_WARPS * 32)                                            \
        gemv_##FMT##_f32(const unsigned char* w, const float* x, float* y, int n, int k, int m) {              \
        FMT##_impl<1>(w, x, y, n, k, m);                                                                       \
    }                                                                                                          \
    extern "C" __global__ void __launch_bounds__(QUANT_WARPS * 32)                                            \
        gemm_##FMT##_f32(const unsigned char* w, const float* x, float* y, int n, int k, int m) {              \
        FMT##_impl<8>(w, x, y, n, k, m);                                                                       \
    }
GGUF_PRODUCT(q8_0)
GGUF_PRODUCT(q4_0)
GGUF_PRODUCT(q4_k)

// Group-wise integers: codes: n·k·bits/8 bytes; scales, mins: (n, ceil(k /
// group)); x: (m, k) in stored column order; y: (m, n). k and group are
// positive multiples of 32.
#define INT_PRODUCT(BITS)                                                                                      \
    extern "C" __global__ void __launch_bounds__(QUANT_WARPS * 32)                                            \
        gptq_gemv_##BITS##_f32(const unsigned char* codes, const float* scales, const float* mins,             \
                               const float* x, float* y, int n, int k, int m, int group) {                     \
        BITS##_impl<1>(codes, scales, mins, x, y, n, k, m, group);                                             \
    }                                                                                                          \
    extern "C" __global__ void __launch_bounds__(QUANT_WARPS * 32)                                            \
        gptq_gemm_##BITS##_f32(const unsigned char* codes, const float* scales, const float* mins,             \
                               const float* x, float* y, int n, int k, int m, int group) {                     \
        BITS##_impl<8>(codes, scales, mins, x, y, n, k, m, group);                                             \
    }
INT_PRODUCT(int4)
INT_PRODUCT(int8)

// x: (rows, k); perm: (k); out: (rows, k) with out[r][j] = x[r][perm[j]]
// (NaN where perm[j] ≥ k, so a bad permutation cannot read out of bounds and
// cannot go unnoticed). total = rows·k. Grid-stride, any 1-D launch.
extern "C" __global__ void gather_cols_f32(u64 total, int k, const float* x, const u32* perm, float* out) {
    for (u64 e = blockIdx.x * (u64)blockDim.x + threadIdx.x; e < total; e += (u64)gridDim.x * blockDim.x) {
        const u64 r = e / (u64)k;
        const u32 p = perm[e - r * (u64)k];
        out[e] = p < (u32)k ? x[r * (u64)k + p] : CUDART_NAN_F;
    }
}
