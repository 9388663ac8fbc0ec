// attention.cu: fused scaled-dot-product attention (flash-attention style,
// online softmax), forward and backward, with grouped-query heads and an
// optional causal mask. Storage f32/bf16/f16, arithmetic f32.
//
// Shapes (contiguous, row-major):
//   q, o, dq, do: (B, Hq, Tq, D);  k, v, dk, dv: (B, Hkv, Tk, D);
//   lse, delta: (B, Hq, Tq) f32;  dq_acc: (B, Hq, Tq, D) f32.
// Query head h reads key/value head h / (Hq / Hkv). With `causal`, query i
// (0-based within Tq) sees key j iff j <= i + (Tk - Tq): the queries are the
// last Tq of Tk positions, as with a KV cache. A query that sees no key gets
// o = 0 and lse = -inf, and contributes no gradient.
// lse = log Σ_j exp(scale · q·k_j), the natural log-sum-exp of the scaled scores.
//
// Kernels, D ∈ {32, 64, 80, 96, 128} as the _d{D} suffix:
// - attn_fwd_tc_{bf16,f16}_d{D}: tensor cores (mma.sync m16n8k16): 64
//   queries per block, 4 warps of 16 rows, 64-key tiles (K and V loads
//   overlapping the products), P kept in registers. Grid (B·Hq,
//   ceil(Tq/64)), the longest causal rows first; block 128; static smem
//   2·64·(D+8) elements.
// - attn_fwd_simt_{f32,bf16,f16}_d{D}: f32 FMA: 32 queries per block, 32-key
//   tiles, 8 threads per query row. Grid (B·Hq, ceil(Tq/32)), block 256.
// - attn_bwd_pre_{T}: delta = rowsum(o ∘ do) and zeroes dq_acc; one warp
//   per row, any grid, block 256.
// - attn_bwd_tc_{bf16,f16}_d{D}: one block per (b, kv head, 64-key tile),
//   looping over the query heads of the group and 16-query tiles (the next
//   tile loading during the dQ products); dk and dv accumulate in registers
//   and are written once (deterministic), dq is added to dq_acc with f32
//   atomics. Grid (B·Hkv, ceil(Tk/64)), block 128, static smem under 46 KiB.
// - attn_bwd_simt_{f32,bf16,f16}_d{D}: the same with f32 FMA, 16-key tiles,
//   16-query tiles. Grid (B·Hkv, ceil(Tk/16)), block 256.
// - attn_dq_convert_{T}: dq = dq_acc rounded to T. Any grid, block 256.

// The inline-PTX helpers (cp.async, ldmatrix, mma.sync, store2, pack2) are
// in tensor_core.cuh, prepended to this file.


#define LOG2E_F 1.4426950408889634f
#define LN2_F 0.6931471805599453f
#define FULL_MASK 0xffffffffu

__device__ __forceinline__ int imax(int a, int b) { return a > b ? a : b; }

// Rows [row0, row0 + ROWS) of src (rows, D) into S[ROWS][D + 8] with 16-byte
// async copies; rows past `rows` are zero-filled. D % 8 == 0, so every row
// starts 16-byte aligned.
template <typename T, int D, int ROWS, int THREADS>
__device__ __forceinline__ void load_rows_async(T* S, const T* src, int row0, int rows, int tid) {
    constexpr int CHUNKS = D / 8;
    constexpr int TOTAL = ROWS * CHUNKS;
#pragma unroll
    for (int i = 0; i < (TOTAL + THREADS - 1) / THREADS; ++i) {
        const int e = tid + i * THREADS;
        if (TOTAL % THREADS == 0 || e < TOTAL) {
            const int r = e / CHUNKS, c = e % CHUNKS;
            const int gr = row0 + r;
            const bool ok = gr < rows;
            cp_async_16(S + r * (D + 8) + c * 8, ok ? src + ((u64)gr * D + c * 8) : src, ok ? 16 : 0);
        }
    }
}

// Rows [row0, row0 + ROWS) of src (rows, D) into S[ROWS][D + 1] as f32,
// zero past `rows`.
template <typename T, int D, int ROWS, int THREADS>
__device__ __forceinline__ void load_rows_f32(float* S, const T* src, int row0, int rows, int tid) {
    for (int e = tid; e < ROWS * D; e += THREADS) {
        const int r = e / D, c = e % D;
        const int gr = row0 + r;
        S[r * (D + 1) + c] = gr < rows ? to_f32(src[(u64)gr * D + c]) : 0.0f;
    }
}

// ===========================================================================
// Forward, tensor cores.
// ===========================================================================

#define FA_BQ 64
#define FA_BK 64
#define FA_THREADS 128
// Blocks per SM the register budget must allow (ptxas otherwise picks a
// register target of its own, and spilled at D = 32 on sm_80).
#define FA_MIN_BLOCKS(D) ((D) <= 32 ? 4 : (D) <= 64 ? 3 : 2)

template <typename T, int D>
__device__ __forceinline__ void attn_fwd_tc(const T* __restrict__ q, const T* __restrict__ k,
                                            const T* __restrict__ v, T* __restrict__ o, float* __restrict__ lse,
                                            int Hq, int Hkv, int Tq, int Tk, float scale, int causal) {
    constexpr int LD = D + 8;  // padded rows: conflict-free ldmatrix for every supported D
    __shared__ __align__(128) T Ks[FA_BK * LD];
    __shared__ __align__(128) T Vs[FA_BK * LD];  // holds the Q tile until it is in registers

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int bh = blockIdx.x;
    const int b = bh / Hq, h = bh % Hq;
    const int hk = h / (Hq / Hkv);
    const int q0 = (gridDim.y - 1 - blockIdx.y) * FA_BQ;  // the longest causal rows first
    const T* qb = q + (u64)bh * Tq * D;
    const T* kb = k + ((u64)b * Hkv + hk) * Tk * D;
    const T* vb = v + ((u64)b * Hkv + hk) * Tk * D;
    const int off = Tk - Tq;
    // Keys [0, kend) are visible to some row of this block.
    const int kend = causal ? imin(Tk, q0 + FA_BQ + off) : Tk;
    const int ntiles = kend > 0 ? (kend + FA_BK - 1) / FA_BK : 0;

    load_rows_async<T, D, FA_BQ, FA_THREADS>(Vs, qb, q0, Tq, tid);
    cp_async_commit();
    if (ntiles > 0) load_rows_async<T, D, FA_BK, FA_THREADS>(Ks, kb, 0, Tk, tid);
    cp_async_commit();
    cp_async_wait<1>();  // the Q tile
    __syncthreads();
    // Q fragments of this warp's 16 rows: A operands (m = query, k = d).
    u32 qf[D / 16][4];
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) ldsm_x4(qf[kk], Vs + (warp * 16 + (lane & 15)) * LD + kk * 16 + (lane >> 4) * 8);
    __syncthreads();  // the V loads below overwrite the Q tile

    float oacc[D / 8][4];
#pragma unroll
    for (int nd = 0; nd < D / 8; ++nd)
#pragma unroll
        for (int e = 0; e < 4; ++e) oacc[nd][e] = 0.0f;
    // Row statistics of rows g and g + 8 of this warp, in log2 units.
    float row_max[2] = {-CUDART_INF_F, -CUDART_INF_F};
    float row_sum[2] = {0.0f, 0.0f};  // this thread's columns only, reduced at the end
    const float sl2 = scale * LOG2E_F;
    const int qrow = q0 + warp * 16 + g;

    for (int j = 0; j < ntiles; ++j) {
        const int k0 = j * FA_BK;
        load_rows_async<T, D, FA_BK, FA_THREADS>(Vs, vb, k0, Tk, tid);
        cp_async_commit();
        cp_async_wait<1>();  // K_j (committed before V_j)
        __syncthreads();

        // S = Q·K_jᵀ: 16 rows × 64 keys per warp; B operands (k = d, n = key)
        // from K rows, two key n-tiles per ldmatrix.
        float s[FA_BK / 8][4];
#pragma unroll
        for (int ni = 0; ni < FA_BK / 8; ++ni)
#pragma unroll
            for (int e = 0; e < 4; ++e) s[ni][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk)
#pragma unroll
            for (int np = 0; np < FA_BK / 16; ++np) {
                u32 r[4];
                ldsm_x4(r, Ks + (np * 16 + ((lane >> 4) << 3) + (lane & 7)) * LD + kk * 16 + ((lane >> 3) & 1) * 8);
                mma_16816<T>(s[2 * np], qf[kk], r[0], r[1]);
                mma_16816<T>(s[2 * np + 1], qf[kk], r[2], r[3]);
            }
        __syncthreads();  // every warp is done with K_j
        if (j + 1 < ntiles) load_rows_async<T, D, FA_BK, FA_THREADS>(Ks, kb, k0 + FA_BK, Tk, tid);
        cp_async_commit();

        // s[ni][e]: row qrow + (e >> 1)·8, key k0 + ni·8 + 2t + (e & 1).
        const bool need_mask = k0 + FA_BK > Tk || (causal && k0 + FA_BK - 1 > q0 + off);
        float tile_max[2] = {-CUDART_INF_F, -CUDART_INF_F};
#pragma unroll
        for (int ni = 0; ni < FA_BK / 8; ++ni)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                float x = s[ni][e] * sl2;
                if (need_mask) {
                    const int key = k0 + ni * 8 + 2 * t + (e & 1);
                    const int row = qrow + (e >> 1) * 8;
                    if (key >= Tk || (causal && key > row + off)) x = -CUDART_INF_F;
                }
                s[ni][e] = x;
                tile_max[e >> 1] = fmaxf(tile_max[e >> 1], x);
            }
        float rescale[2], base[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            float mx = fmaxf(tile_max[r], __shfl_xor_sync(FULL_MASK, tile_max[r], 1));
            mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 2));
            const float m_new = fmaxf(row_max[r], mx);
            // No key seen yet: subtract 0, so exp2(-inf - 0) = 0, never NaN.
            base[r] = m_new == -CUDART_INF_F ? 0.0f : m_new;
            rescale[r] = exp2f(row_max[r] - base[r]);
            row_max[r] = m_new;
        }
        float tile_sum[2] = {0.0f, 0.0f};
#pragma unroll
        for (int ni = 0; ni < FA_BK / 8; ++ni)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const float p = exp2f(s[ni][e] - base[e >> 1]);
                s[ni][e] = p;
                tile_sum[e >> 1] += p;
            }
#pragma unroll
        for (int r = 0; r < 2; ++r) row_sum[r] = row_sum[r] * rescale[r] + tile_sum[r];
#pragma unroll
        for (int nd = 0; nd < D / 8; ++nd) {
            oacc[nd][0] *= rescale[0];
            oacc[nd][1] *= rescale[0];
            oacc[nd][2] *= rescale[1];
            oacc[nd][3] *= rescale[1];
        }

        cp_async_wait<1>();  // V_j (K_{j+1} may still be in flight)
        __syncthreads();
        // O += P·V_j: P from registers as A operands (m = query, k = key; the
        // accumulator layout of key n-tiles 2kk, 2kk+1 is the A layout of k16
        // step kk), B operands (k = key, n = d) by transposed ldmatrix.
#pragma unroll
        for (int kk = 0; kk < FA_BK / 16; ++kk) {
            u32 pa[4];
            pa[0] = pack2<T>(s[2 * kk][0], s[2 * kk][1]);
            pa[1] = pack2<T>(s[2 * kk][2], s[2 * kk][3]);
            pa[2] = pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            pa[3] = pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
            for (int dp = 0; dp < D / 16; ++dp) {
                u32 r[4];
                ldsm_x4_trans(r, Vs + (kk * 16 + (((lane >> 3) & 1) << 3) + (lane & 7)) * LD + dp * 16 + (lane >> 4) * 8);
                mma_16816<T>(oacc[2 * dp], pa, r[0], r[1]);
                mma_16816<T>(oacc[2 * dp + 1], pa, r[2], r[3]);
            }
        }
        __syncthreads();  // every warp is done with V_j before the next V load
    }
    cp_async_wait<0>();

#pragma unroll
    for (int r = 0; r < 2; ++r) {
        row_sum[r] += __shfl_xor_sync(FULL_MASK, row_sum[r], 1);
        row_sum[r] += __shfl_xor_sync(FULL_MASK, row_sum[r], 2);
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int row = qrow + r * 8;
        if (row < Tq) {
            const float inv = row_sum[r] > 0.0f ? 1.0f / row_sum[r] : 0.0f;
            T* orow = o + ((u64)bh * Tq + row) * D;
#pragma unroll
            for (int nd = 0; nd < D / 8; ++nd)
                store2<T>(orow + nd * 8 + 2 * t, oacc[nd][2 * r] * inv, oacc[nd][2 * r + 1] * inv);
            if (t == 0)
                lse[(u64)bh * Tq + row] =
                    row_sum[r] > 0.0f ? (row_max[r] + log2f(row_sum[r])) * LN2_F : -CUDART_INF_F;
        }
    }
}

// ===========================================================================
// Forward, f32 FMA (any storage type).
// ===========================================================================

#define FS_BQ 32
#define FS_BK 32
#define FS_THREADS 256

template <typename T, int D>
__device__ __forceinline__ void attn_fwd_simt(const T* __restrict__ q, const T* __restrict__ k,
                                              const T* __restrict__ v, T* __restrict__ o, float* __restrict__ lse,
                                              int Hq, int Hkv, int Tq, int Tk, float scale, int causal) {
    constexpr int LD = D + 1, LP = FS_BK + 1;
    __shared__ float Qs[FS_BQ * LD];
    __shared__ float KVs[FS_BK * LD];  // K_j, then V_j
    __shared__ float Ps[FS_BQ * LP];

    const int tid = threadIdx.x, qi = tid >> 3, sub = tid & 7;  // 8 threads per query row
    const int bh = blockIdx.x;
    const int b = bh / Hq, h = bh % Hq;
    const int hk = h / (Hq / Hkv);
    const int q0 = (gridDim.y - 1 - blockIdx.y) * FS_BQ;
    const T* qb = q + (u64)bh * Tq * D;
    const T* kb = k + ((u64)b * Hkv + hk) * Tk * D;
    const T* vb = v + ((u64)b * Hkv + hk) * Tk * D;
    const int off = Tk - Tq;
    const int kend = causal ? imin(Tk, q0 + FS_BQ + off) : Tk;
    const int ntiles = kend > 0 ? (kend + FS_BK - 1) / FS_BK : 0;
    const int row = q0 + qi;
    const float sl2 = scale * LOG2E_F;

    load_rows_f32<T, D, FS_BQ, FS_THREADS>(Qs, qb, q0, Tq, tid);
    float oacc[D / 8];  // columns sub + 8c
#pragma unroll
    for (int c = 0; c < D / 8; ++c) oacc[c] = 0.0f;
    float row_max = -CUDART_INF_F, row_sum = 0.0f;

    for (int j = 0; j < ntiles; ++j) {
        const int k0 = j * FS_BK;
        load_rows_f32<T, D, FS_BK, FS_THREADS>(KVs, kb, k0, Tk, tid);
        __syncthreads();  // K_j (and, the first time, Q) visible
        float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // keys sub + 8r
#pragma unroll 4
        for (int d = 0; d < D; ++d) {
            const float qv = Qs[qi * LD + d];
#pragma unroll
            for (int r = 0; r < 4; ++r) s[r] = fmaf(qv, KVs[(sub + 8 * r) * LD + d], s[r]);
        }
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int kg = k0 + sub + 8 * r;
            s[r] = (kg >= Tk || (causal && kg > row + off)) ? -CUDART_INF_F : s[r] * sl2;
        }
        float mx = fmaxf(fmaxf(s[0], s[1]), fmaxf(s[2], s[3]));
        mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 2));
        mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 4));
        const float m_new = fmaxf(row_max, mx);
        const float base = m_new == -CUDART_INF_F ? 0.0f : m_new;
        const float rescale = exp2f(row_max - base);
        row_max = m_new;
        float tile_sum = 0.0f;
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const float p = exp2f(s[r] - base);
            tile_sum += p;
            Ps[qi * LP + sub + 8 * r] = p;
        }
        row_sum = row_sum * rescale + tile_sum;
        __syncthreads();  // every thread is done with K_j; P visible
        load_rows_f32<T, D, FS_BK, FS_THREADS>(KVs, vb, k0, Tk, tid);
        __syncthreads();
#pragma unroll
        for (int c = 0; c < D / 8; ++c) {
            const int d = sub + 8 * c;
            float acc = oacc[c] * rescale;
#pragma unroll 8
            for (int key = 0; key < FS_BK; ++key) acc = fmaf(Ps[qi * LP + key], KVs[key * LD + d], acc);
            oacc[c] = acc;
        }
        __syncthreads();  // every thread is done with V_j before the next K load
    }

    row_sum += __shfl_xor_sync(FULL_MASK, row_sum, 1);
    row_sum += __shfl_xor_sync(FULL_MASK, row_sum, 2);
    row_sum += __shfl_xor_sync(FULL_MASK, row_sum, 4);
    if (row < Tq) {
        const float inv = row_sum > 0.0f ? 1.0f / row_sum : 0.0f;
        T* orow = o + ((u64)bh * Tq + row) * D;
#pragma unroll
        for (int c = 0; c < D / 8; ++c) orow[sub + 8 * c] = from_f32<T>(oacc[c] * inv);
        if (sub == 0) lse[(u64)bh * Tq + row] = row_sum > 0.0f ? (row_max + log2f(row_sum)) * LN2_F : -CUDART_INF_F;
    }
}

// ===========================================================================
// Backward.
// ===========================================================================

// delta[row] = Σ_d o[row, d]·do[row, d]; dq_acc[row, :] = 0. rows = B·Hq·Tq.
template <typename T>
__device__ __forceinline__ void attn_bwd_pre(const T* __restrict__ o, const T* __restrict__ dout,
                                             float* __restrict__ delta, float* __restrict__ dq_acc, u64 rows, int D) {
    const int lane = threadIdx.x & 31;
    const u64 first = (blockIdx.x * (u64)blockDim.x + threadIdx.x) >> 5;
    const u64 step = ((u64)gridDim.x * blockDim.x) >> 5;
    for (u64 row = first; row < rows; row += step) {  // warp-uniform
        float s = 0.0f;
        for (int d = lane; d < D; d += 32) {
            s += to_f32(o[row * D + d]) * to_f32(dout[row * D + d]);
            dq_acc[row * D + d] = 0.0f;
        }
        s = warp_sum(s);
        if (lane == 0) delta[row] = s;
    }
}

template <typename T>
__device__ __forceinline__ void attn_dq_convert(const float* __restrict__ dq_acc, T* __restrict__ dq, u64 n) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x)
        dq[i] = from_f32<T>(dq_acc[i]);
}

#define FB_BK 64
#define FB_BQ 16
#define FB_THREADS 128

// Query tile `it` of a backward block (head gh = it / q_tiles of the kv
// head's group, rows qstart + (it % q_tiles)·16 ...): Q and dO rows by async
// copies (not committed), lse (as log2, +inf for rows that saw no key or do
// not exist) and delta by plain stores.
template <typename T, int D>
__device__ __forceinline__ void bwd_tc_load_tile(T* Qs, T* dOs, float* lse_s, float* delta_s, const T* q,
                                                 const T* dout, const float* lse, const float* delta, int b, int Hq,
                                                 int hk, int group, int Tq, int qstart, int it, int q_tiles, int tid) {
    const u64 bhq = (u64)b * Hq + (u64)hk * group + it / q_tiles;
    const int qt0 = qstart + (it % q_tiles) * FB_BQ;
    load_rows_async<T, D, FB_BQ, FB_THREADS>(Qs, q + bhq * Tq * D, qt0, Tq, tid);
    load_rows_async<T, D, FB_BQ, FB_THREADS>(dOs, dout + bhq * Tq * D, qt0, Tq, tid);
    if (tid < FB_BQ) {
        const int row = qt0 + tid;
        const float L = row < Tq ? lse[bhq * Tq + row] : -CUDART_INF_F;
        // P = exp2(x - inf) = 0 for a row that saw no key.
        lse_s[tid] = L == -CUDART_INF_F ? CUDART_INF_F : L * LOG2E_F;
        delta_s[tid] = row < Tq ? delta[bhq * Tq + row] : 0.0f;
    }
}

// With P = exp(scale·QKᵀ − lse), dP = dO·Vᵀ, dS = P∘(dP − delta):
// dV = Pᵀ·dO, dK = scale·dSᵀ·Q, dQ = scale·dS·K.
// Each warp owns 16 keys of the block's 64 and computes Sᵀ and dPᵀ (keys ×
// queries) for them, so Pᵀ and dSᵀ are A operands straight from registers
// for dV and dK; dSᵀ also goes through shared memory for dQ.
template <typename T, int D>
__device__ __forceinline__ void attn_bwd_tc(const T* __restrict__ q, const T* __restrict__ k,
                                            const T* __restrict__ v, const T* __restrict__ dout,
                                            const float* __restrict__ lse, const float* __restrict__ delta,
                                            float* __restrict__ dq_acc, T* __restrict__ dk, T* __restrict__ dv,
                                            int Hq, int Hkv, int Tq, int Tk, float scale, int causal) {
    constexpr int LD = D + 8;
    constexpr int LDS = FB_BQ + 8;  // dSᵀ rows: 48 bytes, conflict-free transposed ldmatrix
    __shared__ __align__(128) T Ks[FB_BK * LD];
    __shared__ __align__(128) T Vs[FB_BK * LD];
    __shared__ __align__(128) T Qs[FB_BQ * LD];
    __shared__ __align__(128) T dOs[FB_BQ * LD];
    __shared__ __align__(128) T dSt[FB_BK * LDS];
    __shared__ float lse_s[FB_BQ], delta_s[FB_BQ];

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int bkv = blockIdx.x;  // b·Hkv + kv head
    const int b = bkv / Hkv, hk = bkv % Hkv;
    const int group = Hq / Hkv;
    const int k0 = blockIdx.y * FB_BK;
    const int off = Tk - Tq;
    const T* kb = k + (u64)bkv * Tk * D;
    const T* vb = v + (u64)bkv * Tk * D;
    const int kw = warp * 16;  // this warp's keys, local rows kw .. kw + 15
    const float sl2 = scale * LOG2E_F;
    // The first query that sees key k0 is k0 - off.
    const int qstart = causal ? imax(0, k0 - off) / FB_BQ * FB_BQ : 0;

    load_rows_async<T, D, FB_BK, FB_THREADS>(Ks, kb, k0, Tk, tid);
    load_rows_async<T, D, FB_BK, FB_THREADS>(Vs, vb, k0, Tk, tid);
    cp_async_commit();

    float dk_acc[D / 8][4], dv_acc[D / 8][4];
#pragma unroll
    for (int nd = 0; nd < D / 8; ++nd)
#pragma unroll
        for (int e = 0; e < 4; ++e) dk_acc[nd][e] = dv_acc[nd][e] = 0.0f;

    // Iterations: (query head gh of the group, query tile qt0), tile-major
    // within a head. Tile it + 1 loads while tile it computes dQ.
    const int q_tiles = qstart < Tq ? (Tq - qstart + FB_BQ - 1) / FB_BQ : 0;
    const int iterations = group * q_tiles;
    if (iterations > 0)
        bwd_tc_load_tile<T, D>(Qs, dOs, lse_s, delta_s, q, dout, lse, delta, b, Hq, hk, group, Tq, qstart, 0, q_tiles,
                               tid);
    cp_async_commit();

    for (int it = 0; it < iterations; ++it) {
        const int gh = it / q_tiles;
        const int qt0 = qstart + (it % q_tiles) * FB_BQ;
        const u64 bhq = (u64)b * Hq + (u64)hk * group + gh;
        float* dqb = dq_acc + bhq * Tq * D;
        cp_async_wait<0>();  // tile it (and, the first time, K and V)
        __syncthreads();     // ... visible to every thread, with lse_s and delta_s

        // Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ: 16 keys × 16 queries per warp.
        float st[2][4], dpt[2][4];
#pragma unroll
        for (int nt = 0; nt < 2; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) st[nt][e] = dpt[nt][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
            u32 ka[4], va[4], qf[4], dof[4];
            ldsm_x4(ka, Ks + (kw + (lane & 15)) * LD + kk * 16 + (lane >> 4) * 8);
            ldsm_x4(va, Vs + (kw + (lane & 15)) * LD + kk * 16 + (lane >> 4) * 8);
            ldsm_x4(qf, Qs + (((lane >> 4) << 3) + (lane & 7)) * LD + kk * 16 + ((lane >> 3) & 1) * 8);
            ldsm_x4(dof, dOs + (((lane >> 4) << 3) + (lane & 7)) * LD + kk * 16 + ((lane >> 3) & 1) * 8);
            mma_16816<T>(st[0], ka, qf[0], qf[1]);
            mma_16816<T>(st[1], ka, qf[2], qf[3]);
            mma_16816<T>(dpt[0], va, dof[0], dof[1]);
            mma_16816<T>(dpt[1], va, dof[2], dof[3]);
        }
        // st[nt][e]: key kw + g + (e >> 1)·8, query nt·8 + 2t + (e & 1).
#pragma unroll
        for (int nt = 0; nt < 2; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int ql = nt * 8 + 2 * t + (e & 1);
                const int key = k0 + kw + g + (e >> 1) * 8;
                const int row = qt0 + ql;
                const bool visible = key < Tk && row < Tq && (!causal || key <= row + off);
                const float p = visible ? exp2f(st[nt][e] * sl2 - lse_s[ql]) : 0.0f;
                st[nt][e] = p;
                dpt[nt][e] = p * (dpt[nt][e] - delta_s[ql]) * scale;
            }
        // As A operands (m = key, k = query).
        u32 pa[4], da[4];
        pa[0] = pack2<T>(st[0][0], st[0][1]);
        pa[1] = pack2<T>(st[0][2], st[0][3]);
        pa[2] = pack2<T>(st[1][0], st[1][1]);
        pa[3] = pack2<T>(st[1][2], st[1][3]);
        da[0] = pack2<T>(dpt[0][0], dpt[0][1]);
        da[1] = pack2<T>(dpt[0][2], dpt[0][3]);
        da[2] = pack2<T>(dpt[1][0], dpt[1][1]);
        da[3] = pack2<T>(dpt[1][2], dpt[1][3]);
        // dV += Pᵀ·dO, dK += dSᵀ·Q: B operands (k = query, n = d) by
        // transposed ldmatrix of the query rows.
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
            u32 r[4];
            const int at = ((((lane >> 3) & 1) << 3) + (lane & 7)) * LD + dp * 16 + (lane >> 4) * 8;
            ldsm_x4_trans(r, dOs + at);
            mma_16816<T>(dv_acc[2 * dp], pa, r[0], r[1]);
            mma_16816<T>(dv_acc[2 * dp + 1], pa, r[2], r[3]);
            ldsm_x4_trans(r, Qs + at);
            mma_16816<T>(dk_acc[2 * dp], da, r[0], r[1]);
            mma_16816<T>(dk_acc[2 * dp + 1], da, r[2], r[3]);
        }
        // dSᵀ (scaled) to shared memory: dSt[key][query].
        *reinterpret_cast<u32*>(dSt + (kw + g) * LDS + 2 * t) = da[0];
        *reinterpret_cast<u32*>(dSt + (kw + g + 8) * LDS + 2 * t) = da[1];
        *reinterpret_cast<u32*>(dSt + (kw + g) * LDS + 8 + 2 * t) = da[2];
        *reinterpret_cast<u32*>(dSt + (kw + g + 8) * LDS + 8 + 2 * t) = da[3];
        // dSt is complete, and every thread is done with Qs, dOs, lse_s
        // and delta_s: the next tile loads into them during the dQ phase
        // (which reads only dSt and Ks).
        __syncthreads();
        if (it + 1 < iterations)
            bwd_tc_load_tile<T, D>(Qs, dOs, lse_s, delta_s, q, dout, lse, delta, b, Hq, hk, group, Tq, qstart,
                                   it + 1, q_tiles, tid);
        cp_async_commit();

        // dQ (16 queries × D) += dS·K: warp w takes d n-tiles w, w + 4, ...
        // A operands (m = query, k = key) by transposed ldmatrix of dSt;
        // B operands (k = key, n = d) by transposed ldmatrix of K rows,
        // two k16 steps per load.
        constexpr int NT = D / 8;
        constexpr int PER = (NT + 3) / 4;
        float dq[PER][4];
#pragma unroll
        for (int i = 0; i < PER; ++i)
#pragma unroll
            for (int e = 0; e < 4; ++e) dq[i][e] = 0.0f;
#pragma unroll
        for (int s2 = 0; s2 < FB_BK / 32; ++s2) {
            u32 a0[4], a1[4];
            const int jm = lane >> 3;
            ldsm_x4_trans(a0, dSt + (s2 * 32 + ((jm >> 1) << 3) + (lane & 7)) * LDS + (jm & 1) * 8);
            ldsm_x4_trans(a1, dSt + (s2 * 32 + 16 + ((jm >> 1) << 3) + (lane & 7)) * LDS + (jm & 1) * 8);
#pragma unroll
            for (int i = 0; i < PER; ++i) {
                const int nt = warp + 4 * i;
                if (nt < NT) {  // warp-uniform
                    u32 r[4];
                    ldsm_x4_trans(r, Ks + (s2 * 32 + lane) * LD + nt * 8);
                    mma_16816<T>(dq[i], a0, r[0], r[1]);
                    mma_16816<T>(dq[i], a1, r[2], r[3]);
                }
            }
        }
        // dq[i][e]: query g + (e >> 1)·8, column nt·8 + 2t + (e & 1).
#pragma unroll
        for (int i = 0; i < PER; ++i) {
            const int nt = warp + 4 * i;
            if (nt < NT) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int row = qt0 + g + (e >> 1) * 8;
                    if (row < Tq) atomicAdd(dqb + (u64)row * D + nt * 8 + 2 * t + (e & 1), dq[i][e]);
                }
            }
        }
    }
    cp_async_wait<0>();

    // dk_acc[nd][e]: key kw + g + (e >> 1)·8, column nd·8 + 2t + (e & 1).
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int key = k0 + kw + g + r * 8;
        if (key < Tk) {
            T* dkrow = dk + ((u64)bkv * Tk + key) * D;
            T* dvrow = dv + ((u64)bkv * Tk + key) * D;
#pragma unroll
            for (int nd = 0; nd < D / 8; ++nd) {
                store2<T>(dkrow + nd * 8 + 2 * t, dk_acc[nd][2 * r], dk_acc[nd][2 * r + 1]);
                store2<T>(dvrow + nd * 8 + 2 * t, dv_acc[nd][2 * r], dv_acc[nd][2 * r + 1]);
            }
        }
    }
}

#define BS_BK 16
#define BS_BQ 16
#define BS_THREADS 256

template <typename T, int D>
__device__ __forceinline__ void attn_bwd_simt(const T* __restrict__ q, const T* __restrict__ k,
                                              const T* __restrict__ v, const T* __restrict__ dout,
                                              const float* __restrict__ lse, const float* __restrict__ delta,
                                              float* __restrict__ dq_acc, T* __restrict__ dk, T* __restrict__ dv,
                                              int Hq, int Hkv, int Tq, int Tk, float scale, int causal) {
    constexpr int LD = D + 1, LP = BS_BK + 1;
    __shared__ float Ks[BS_BK * LD], Vs[BS_BK * LD], Qs[BS_BQ * LD], dOs[BS_BQ * LD];
    __shared__ float Ps[BS_BQ * LP], dSs[BS_BQ * LP];
    __shared__ float lse_s[BS_BQ], delta_s[BS_BQ];

    const int tid = threadIdx.x;
    const int bkv = blockIdx.x;
    const int b = bkv / Hkv, hk = bkv % Hkv;
    const int group = Hq / Hkv;
    const int k0 = blockIdx.y * BS_BK;
    const int off = Tk - Tq;
    const int qstart = causal ? imax(0, k0 - off) / BS_BQ * BS_BQ : 0;
    // Score element (query si, key sj); dK/dV rows kr, columns dc + 16c;
    // dQ rows kr (as a query), same columns.
    const int si = tid >> 4, sj = tid & 15;
    const int kr = tid >> 4, dc = tid & 15;

    load_rows_f32<T, D, BS_BK, BS_THREADS>(Ks, k + (u64)bkv * Tk * D, k0, Tk, tid);
    load_rows_f32<T, D, BS_BK, BS_THREADS>(Vs, v + (u64)bkv * Tk * D, k0, Tk, tid);
    float dk_acc[D / 16], dv_acc[D / 16];
#pragma unroll
    for (int c = 0; c < D / 16; ++c) dk_acc[c] = dv_acc[c] = 0.0f;

    for (int gh = 0; gh < group; ++gh) {
        const u64 bhq = (u64)b * Hq + (u64)hk * group + gh;
        const T* qb = q + bhq * Tq * D;
        const T* dob = dout + bhq * Tq * D;
        float* dqb = dq_acc + bhq * Tq * D;
        for (int qt0 = qstart; qt0 < Tq; qt0 += BS_BQ) {
            __syncthreads();  // the previous tile's readers are done (the first time: K, V visible)
            load_rows_f32<T, D, BS_BQ, BS_THREADS>(Qs, qb, qt0, Tq, tid);
            load_rows_f32<T, D, BS_BQ, BS_THREADS>(dOs, dob, qt0, Tq, tid);
            if (tid < BS_BQ) {
                const int row = qt0 + tid;
                lse_s[tid] = row < Tq ? lse[bhq * Tq + row] : -CUDART_INF_F;
                delta_s[tid] = row < Tq ? delta[bhq * Tq + row] : 0.0f;
            }
            __syncthreads();
            float sdot = 0.0f, pdot = 0.0f;
#pragma unroll 8
            for (int d = 0; d < D; ++d) {
                sdot = fmaf(Qs[si * LD + d], Ks[sj * LD + d], sdot);
                pdot = fmaf(dOs[si * LD + d], Vs[sj * LD + d], pdot);
            }
            const int row = qt0 + si, key = k0 + sj;
            const float L = lse_s[si];
            const bool visible =
                row < Tq && key < Tk && (!causal || key <= row + off) && L != -CUDART_INF_F;
            const float p = visible ? expf(sdot * scale - L) : 0.0f;
            Ps[si * LP + sj] = p;
            dSs[si * LP + sj] = p * (pdot - delta_s[si]) * scale;
            __syncthreads();
#pragma unroll
            for (int c = 0; c < D / 16; ++c) {
                const int d = dc + 16 * c;
                float av = 0.0f, ak = 0.0f, aq = 0.0f;
#pragma unroll
                for (int i = 0; i < BS_BQ; ++i) {
                    av = fmaf(Ps[i * LP + kr], dOs[i * LD + d], av);
                    ak = fmaf(dSs[i * LP + kr], Qs[i * LD + d], ak);
                }
#pragma unroll
                for (int j = 0; j < BS_BK; ++j) aq = fmaf(dSs[kr * LP + j], Ks[j * LD + d], aq);
                dv_acc[c] += av;
                dk_acc[c] += ak;
                if (qt0 + kr < Tq) atomicAdd(dqb + (u64)(qt0 + kr) * D + d, aq);
            }
        }
    }

    const int key = k0 + kr;
    if (key < Tk) {
#pragma unroll
        for (int c = 0; c < D / 16; ++c) {
            dk[((u64)bkv * Tk + key) * D + dc + 16 * c] = from_f32<T>(dk_acc[c]);
            dv[((u64)bkv * Tk + key) * D + dc + 16 * c] = from_f32<T>(dv_acc[c]);
        }
    }
}

// ---- entry points -----------------------------------------------------------

#define ATTN_FWD_ARGS(T) \
    const T *q, const T *k, const T *v, T *o, float *lse, int Hq, int Hkv, int Tq, int Tk, float scale, int causal
#define ATTN_BWD_ARGS(T)                                                                                           \
    const T *q, const T *k, const T *v, const T *dout, const float *lse, const float *delta, float *dq_acc, T *dk, \
        T *dv, int Hq, int Hkv, int Tq, int Tk, float scale, int causal

#define ATTN_TC_ENTRIES(T, TS, D)                                                                                    \
    extern "C" __global__ void __launch_bounds__(FA_THREADS, FA_MIN_BLOCKS(D)) attn_fwd_tc_##TS##_d##D(ATTN_FWD_ARGS(T)) {              \
        attn_fwd_tc<T, D>(q, k, v, o, lse, Hq, Hkv, Tq, Tk, scale, causal);                                          \
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(FB_THREADS) attn_bwd_tc_##TS##_d##D(ATTN_BWD_ARGS(T)) {              \
        attn_bwd_tc<T, D>(q, k, v, dout, lse, delta, dq_acc, dk, dv, Hq, Hkv, Tq, Tk, scale, causal);                \
    }

#define ATTN_SIMT_ENTRIES(T, TS, D)                                                                                  \
    extern "C" __global__ void __launch_bounds__(FS_THREADS, 2) attn_fwd_simt_##TS##_d##D(ATTN_FWD_ARGS(T)) {            \
        attn_fwd_simt<T, D>(q, k, v, o, lse, Hq, Hkv, Tq, Tk, scale, causal);                                        \
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(BS_THREADS) attn_bwd_simt_##TS##_d##D(ATTN_BWD_ARGS(T)) {            \
        attn_bwd_simt<T, D>(q, k, v, dout, lse, delta, dq_acc, dk, dv, Hq, Hkv, Tq, Tk, scale, causal);              \
    }

#define ATTN_HEAD_DIMS(M, T, TS) M(T, TS, 32) M(T, TS, 64) M(T, TS, 80) M(T, TS, 96) M(T, TS, 128)

ATTN_HEAD_DIMS(ATTN_TC_ENTRIES, bf16, bf16)
ATTN_HEAD_DIMS(ATTN_TC_ENTRIES, f16, f16)
ATTN_HEAD_DIMS(ATTN_SIMT_ENTRIES, float, f32)
ATTN_HEAD_DIMS(ATTN_SIMT_ENTRIES, bf16, bf16)
ATTN_HEAD_DIMS(ATTN_SIMT_ENTRIES, f16, f16)

#define ATTN_ROW_ENTRIES(T, TS)                                                                                      \
    extern "C" __global__ void attn_bwd_pre_##TS(const T* o, const T* dout, float* delta, float* dq_acc, u64 rows,   \
                                                 int D) {                                                            \
        attn_bwd_pre<T>(o, dout, delta, dq_acc, rows, D);                                                            \
    }                                                                                                                \
    extern "C" __global__ void attn_dq_convert_##TS(const float* dq_acc, T* dq, u64 n) {                             \
        attn_dq_convert<T>(dq_acc, dq, n);                                                                           \
    }

FOR_EACH_FLOAT(ATTN_ROW_ENTRIES)
