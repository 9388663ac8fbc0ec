// gemm.cu: C = alpha·op(A)·op(B) + beta·C, row-major, batched, f32 accumulation.
//
// Per batch item z (blockIdx.z), with element offsets z·stride_a, z·stride_b,
// z·stride_c into the three buffers:
//   A: (M, K) row-major, or stored (K, M) when the layout's first letter is t;
//   B: (K, N) row-major, or stored (N, K) when the second letter is t (the
//      nn.Linear weight layout: x·Wᵀ is layout "nt");
//   C: (M, N) row-major; read only when beta != 0, so it may hold garbage.
// Layout suffixes: nn, nt, tn, tt.
//
// Kernels:
// - gemm_tc_{in}_{out}_{layout}: bf16/f16 inputs, tensor cores (mma.sync
//   m16n8k16, f32 accumulation), output in the input type or f32. Block tile
//   128×128, K step 32, 4 warps (each 64×64), 3-stage cp.async pipeline in
//   48 KiB of static shared memory (XOR-swizzled, conflict-free ldmatrix).
//   Grid (ceil(M/128)·ceil(N/128), 1, batch), block 128. `aligned` != 0 when
//   every stored row length (K or M for A, N or K for B) is a multiple of 8
//   elements, so 16-byte async copies are legal; otherwise tiles are loaded
//   element by element (same results, slower).
// - gemm_simt_{in}_{out}_{layout}: any float type, f32 FMA. Block tile
//   128×128, K step 8, 256 threads (8×8 outputs each), register-prefetched
//   double buffer. Grid as above, block 256.
// Any M, N, K ≥ 0 (partial tiles are zero-filled; K = 0 gives beta·C).

// The inline-PTX helpers (cp.async, ldmatrix, mma.sync, store2) are in
// tensor_core.cuh, prepended to this file.


__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }

// Tile (tm, tn) of block `pid`, rasterized in groups of 8 tile rows so that
// blocks running together share A and B tiles in L2.
__device__ __forceinline__ void tile_of_block(int pid, int tiles_m, int tiles_n, int& tm, int& tn) {
    const int group_m = 8;
    const int width = group_m * tiles_n;
    const int first_m = (pid / width) * group_m;
    const int size = imin(tiles_m - first_m, group_m);
    const int local = pid % width;
    tm = first_m + local % size;
    tn = local / size;
}

// Output element pair (row, col), (row, col + 1): C = alpha·acc + beta·C.
template <typename TO>
__device__ __forceinline__ void store_pair(TO* C, int M, int N, int row, int col, float x, float y, float alpha,
                                           float beta, bool pairs) {
    if (row >= M) return;
    TO* p = C + (u64)row * N + col;
    x *= alpha;
    y *= alpha;
    if (pairs && col < N) {  // N even and col even: col + 1 < N, p two-element aligned
        if (beta != 0.0f) {
            x += beta * to_f32(p[0]);
            y += beta * to_f32(p[1]);
        }
        store2<TO>(p, x, y);
    } else {
        if (col < N) p[0] = from_f32<TO>(beta != 0.0f ? x + beta * to_f32(p[0]) : x);
        if (col + 1 < N) p[1] = from_f32<TO>(beta != 0.0f ? y + beta * to_f32(p[1]) : y);
    }
}

// ===========================================================================
// Tensor-core GEMM (bf16 / f16 inputs).
// ===========================================================================

#define TC_BM 128
#define TC_BN 128
#define TC_BK 32
#define TC_STAGES 3
#define TC_THREADS 128

// A "k-major" tile holds 128 rows × 32 k (rows of a (rows, K) matrix): 4
// chunks of 8 elements per row, chunk c of row r stored at c ^ ((r >> 1) & 3).
__device__ __forceinline__ int kmajor_offset(int r, int c) { return r * 32 + ((c ^ ((r >> 1) & 3)) << 3); }

// An "mn-major" tile holds 32 k rows × 128 columns (of a (K, MN) matrix): 16
// chunks per row, chunk c of row r stored at c ^ (r & 7).
__device__ __forceinline__ int mnmajor_offset(int r, int c) { return r * 128 + ((c ^ (r & 7)) << 3); }

// Rows [row0, row0 + 128), k [k0, k0 + 32) of src (rows, K) into a k-major tile.
template <typename T>
__device__ __forceinline__ void load_kmajor(T* tile, const T* src, int rows, int K, int row0, int k0, bool aligned,
                                            int tid) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int e = tid + i * TC_THREADS;
        const int r = e >> 2, c = e & 3;
        const int gr = row0 + r, gk = k0 + c * 8;
        T* dst = tile + kmajor_offset(r, c);
        if (aligned) {
            // K % 8 == 0: a chunk is entirely inside or entirely outside.
            const bool ok = gr < rows && gk < K;
            cp_async_16(dst, ok ? src + ((u64)gr * K + gk) : src, ok ? 16 : 0);
        } else {
#pragma unroll
            for (int q = 0; q < 8; ++q) {
                const bool ok = gr < rows && gk + q < K;
                dst[q] = ok ? src[(u64)gr * K + gk + q] : from_f32<T>(0.0f);
            }
        }
    }
}

// k [k0, k0 + 32), columns [mn0, mn0 + 128) of src (K, MN) into an mn-major tile.
template <typename T>
__device__ __forceinline__ void load_mnmajor(T* tile, const T* src, int MN, int K, int mn0, int k0, bool aligned,
                                             int tid) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int e = tid + i * TC_THREADS;
        const int r = e >> 4, c = e & 15;
        const int gk = k0 + r, gc = mn0 + c * 8;
        T* dst = tile + mnmajor_offset(r, c);
        if (aligned) {
            const bool ok = gk < K && gc < MN;
            cp_async_16(dst, ok ? src + ((u64)gk * MN + gc) : src, ok ? 16 : 0);
        } else {
#pragma unroll
            for (int q = 0; q < 8; ++q) {
                const bool ok = gk < K && gc + q < MN;
                dst[q] = ok ? src[(u64)gk * MN + gc + q] : from_f32<T>(0.0f);
            }
        }
    }
}

// The A fragment (16 rows from `m`, k16 step kk of the tile).
template <bool TA, typename T>
__device__ __forceinline__ void load_a_frag(u32 (&a)[4], const T* As, int m, int kk, int lane) {
    if (!TA) {
        // Matrices: (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15).
        const int r = m + (lane & 15);
        const int c = kk * 2 + (lane >> 4);
        ldsm_x4(a, As + kmajor_offset(r, c));
    } else {
        // Stored rows are k: transposed loads of the same four matrices.
        const int j = lane >> 3;
        const int r = kk * 16 + ((j >> 1) << 3) + (lane & 7);
        const int c = (m >> 3) + (j & 1);
        ldsm_x4_trans(a, As + mnmajor_offset(r, c));
    }
}

// The B fragments of n-tiles n/8 and n/8 + 1 (k16 step kk): b[0], b[1] for
// the first, b[2], b[3] for the second.
template <bool TB, typename T>
__device__ __forceinline__ void load_b_frag(u32 (&b)[4], const T* Bs, int n, int kk, int lane) {
    if (TB) {
        // Stored rows are n: matrices (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15).
        const int r = n + ((lane >> 4) << 3) + (lane & 7);
        const int c = kk * 2 + ((lane >> 3) & 1);
        ldsm_x4(b, Bs + kmajor_offset(r, c));
    } else {
        // Stored rows are k: transposed (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15, n 8-15).
        const int r = kk * 16 + (((lane >> 3) & 1) << 3) + (lane & 7);
        const int c = (n >> 3) + (lane >> 4);
        ldsm_x4_trans(b, Bs + mnmajor_offset(r, c));
    }
}

template <bool TA, bool TB, typename T>
__device__ __forceinline__ void gemm_tc_load_stage(T* As, T* Bs, const T* A, const T* B, int M, int N, int K, int m0,
                                                   int n0, int k0, bool aligned, int tid) {
    if (TA)
        load_mnmajor(As, A, M, K, m0, k0, aligned, tid);
    else
        load_kmajor(As, A, M, K, m0, k0, aligned, tid);
    if (TB)
        load_kmajor(Bs, B, N, K, n0, k0, aligned, tid);
    else
        load_mnmajor(Bs, B, N, K, n0, k0, aligned, tid);
}

template <typename T, typename TO, bool TA, bool TB>
__device__ __forceinline__ void gemm_tc(const T* __restrict__ A, const T* __restrict__ B, TO* __restrict__ C, int M,
                                        int N, int K, u64 stride_a, u64 stride_b, u64 stride_c, float alpha,
                                        float beta, int aligned_flag) {
    __shared__ __align__(128) T As[TC_STAGES][TC_BM * TC_BK];
    __shared__ __align__(128) T Bs[TC_STAGES][TC_BN * TC_BK];

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp >> 1, wn = warp & 1;  // warp tile (wm, wn) of 64×64
    int tm, tn;
    tile_of_block(blockIdx.x, (M + TC_BM - 1) / TC_BM, (N + TC_BN - 1) / TC_BN, tm, tn);
    const int m0 = tm * TC_BM, n0 = tn * TC_BN;
    const u64 z = blockIdx.z;
    A += z * stride_a;
    B += z * stride_b;
    C += z * stride_c;
    const bool aligned = aligned_flag != 0;

    float acc[4][8][4];
#pragma unroll
    for (int mi = 0; mi < 4; ++mi)
#pragma unroll
        for (int ni = 0; ni < 8; ++ni)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[mi][ni][e] = 0.0f;

    const int ktiles = (K + TC_BK - 1) / TC_BK;
    // Prologue: tiles 0 .. STAGES-2, one commit group each (possibly empty).
#pragma unroll
    for (int s = 0; s < TC_STAGES - 1; ++s) {
        if (s < ktiles)
            gemm_tc_load_stage<TA, TB>(As[s], Bs[s], A, B, M, N, K, m0, n0, s * TC_BK, aligned, tid);
        cp_async_commit();
    }
    for (int kt = 0; kt < ktiles; ++kt) {
        // Groups committed so far: STAGES-1+kt, group g holding tile g; at
        // most STAGES-2 pending means tile kt has landed (for this thread).
        cp_async_wait<TC_STAGES - 2>();
        // Every thread's copies of tile kt are visible, and every warp is
        // done with tile kt-1, whose stage the prefetch below overwrites.
        __syncthreads();
        const int next = kt + TC_STAGES - 1;
        if (next < ktiles) {
            const int s = next % TC_STAGES;
            gemm_tc_load_stage<TA, TB>(As[s], Bs[s], A, B, M, N, K, m0, n0, next * TC_BK, aligned, tid);
        }
        cp_async_commit();
        const T* as = As[kt % TC_STAGES];
        const T* bs = Bs[kt % TC_STAGES];
#pragma unroll
        for (int kk = 0; kk < TC_BK / 16; ++kk) {
            u32 af[4][4], bf[4][4];
#pragma unroll
            for (int mi = 0; mi < 4; ++mi) load_a_frag<TA>(af[mi], as, wm * 64 + mi * 16, kk, lane);
#pragma unroll
            for (int np = 0; np < 4; ++np) load_b_frag<TB>(bf[np], bs, wn * 64 + np * 16, kk, lane);
#pragma unroll
            for (int mi = 0; mi < 4; ++mi)
#pragma unroll
                for (int ni = 0; ni < 8; ++ni)
                    mma_16816<T>(acc[mi][ni], af[mi], bf[ni >> 1][(ni & 1) * 2], bf[ni >> 1][(ni & 1) * 2 + 1]);
        }
    }
    cp_async_wait<0>();

    // acc[mi][ni]: rows g, g + 8 of m-tile mi; columns 2t, 2t + 1 of n-tile ni.
    const int g = lane >> 2, t = lane & 3;
    const bool pairs = (N & 1) == 0;
#pragma unroll
    for (int mi = 0; mi < 4; ++mi)
#pragma unroll
        for (int ni = 0; ni < 8; ++ni) {
            const int row = m0 + wm * 64 + mi * 16 + g;
            const int col = n0 + wn * 64 + ni * 8 + 2 * t;
            store_pair(C, M, N, row, col, acc[mi][ni][0], acc[mi][ni][1], alpha, beta, pairs);
            store_pair(C, M, N, row + 8, col, acc[mi][ni][2], acc[mi][ni][3], alpha, beta, pairs);
        }
}

// ===========================================================================
// SIMT GEMM (any float type, f32 FMA).
// ===========================================================================

#define SIMT_BM 128
#define SIMT_BN 128
#define SIMT_BK 8
#define SIMT_LDS 132
#define SIMT_THREADS 256

// The 1024 A and 1024 B values of k tile k0 this thread loads (4 each).
template <typename T, bool TA, bool TB>
__device__ __forceinline__ void simt_fetch(float (&ra)[4], float (&rb)[4], const T* A, const T* B, int M, int N,
                                           int K, int m0, int n0, int k0, int tid) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int e = tid + i * SIMT_THREADS;
        if (!TA) {  // (M, K): 8 consecutive threads read one row's 8 k
            const int r = e >> 3, c = e & 7, gm = m0 + r, gk = k0 + c;
            ra[i] = (gm < M && gk < K) ? to_f32(A[(u64)gm * K + gk]) : 0.0f;
        } else {  // (K, M): consecutive threads read consecutive m
            const int c = e >> 7, r = e & 127, gm = m0 + r, gk = k0 + c;
            ra[i] = (gm < M && gk < K) ? to_f32(A[(u64)gk * M + gm]) : 0.0f;
        }
        if (TB) {  // (N, K)
            const int r = e >> 3, c = e & 7, gn = n0 + r, gk = k0 + c;
            rb[i] = (gn < N && gk < K) ? to_f32(B[(u64)gn * K + gk]) : 0.0f;
        } else {  // (K, N)
            const int c = e >> 7, r = e & 127, gn = n0 + r, gk = k0 + c;
            rb[i] = (gn < N && gk < K) ? to_f32(B[(u64)gk * N + gn]) : 0.0f;
        }
    }
}

// Stores what simt_fetch loaded as As[k][m], Bs[k][n].
template <bool TA, bool TB>
__device__ __forceinline__ void simt_stash(float (*As)[SIMT_LDS], float (*Bs)[SIMT_LDS], const float (&ra)[4],
                                           const float (&rb)[4], int tid) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int e = tid + i * SIMT_THREADS;
        if (!TA)
            As[e & 7][e >> 3] = ra[i];
        else
            As[e >> 7][e & 127] = ra[i];
        if (TB)
            Bs[e & 7][e >> 3] = rb[i];
        else
            Bs[e >> 7][e & 127] = rb[i];
    }
}

template <typename T, typename TO, bool TA, bool TB>
__device__ __forceinline__ void gemm_simt(const T* __restrict__ A, const T* __restrict__ B, TO* __restrict__ C, int M,
                                          int N, int K, u64 stride_a, u64 stride_b, u64 stride_c, float alpha,
                                          float beta) {
    __shared__ __align__(16) float As[2][SIMT_BK][SIMT_LDS];
    __shared__ __align__(16) float Bs[2][SIMT_BK][SIMT_LDS];

    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    int tm, tn;
    tile_of_block(blockIdx.x, (M + SIMT_BM - 1) / SIMT_BM, (N + SIMT_BN - 1) / SIMT_BN, tm, tn);
    const int m0 = tm * SIMT_BM, n0 = tn * SIMT_BN;
    const u64 z = blockIdx.z;
    A += z * stride_a;
    B += z * stride_b;
    C += z * stride_c;

    // Thread (ty, tx) owns rows ty·4 + {0..3}, 64 + ty·4 + {0..3} and the
    // same pattern of columns with tx.
    float acc[8][8];
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = 0.0f;

    const int ktiles = (K + SIMT_BK - 1) / SIMT_BK;
    float ra[4], rb[4];
    if (ktiles > 0) {
        simt_fetch<T, TA, TB>(ra, rb, A, B, M, N, K, m0, n0, 0, tid);
        simt_stash<TA, TB>(As[0], Bs[0], ra, rb, tid);
    }
    __syncthreads();
    for (int kt = 0; kt < ktiles; ++kt) {
        const int buf = kt & 1;
        const bool more = kt + 1 < ktiles;
        if (more) simt_fetch<T, TA, TB>(ra, rb, A, B, M, N, K, m0, n0, (kt + 1) * SIMT_BK, tid);
#pragma unroll
        for (int kk = 0; kk < SIMT_BK; ++kk) {
            float a[8], b[8];
            const float4 a0 = *reinterpret_cast<const float4*>(&As[buf][kk][ty * 4]);
            const float4 a1 = *reinterpret_cast<const float4*>(&As[buf][kk][64 + ty * 4]);
            const float4 b0 = *reinterpret_cast<const float4*>(&Bs[buf][kk][tx * 4]);
            const float4 b1 = *reinterpret_cast<const float4*>(&Bs[buf][kk][64 + tx * 4]);
            a[0] = a0.x, a[1] = a0.y, a[2] = a0.z, a[3] = a0.w;
            a[4] = a1.x, a[5] = a1.y, a[6] = a1.z, a[7] = a1.w;
            b[0] = b0.x, b[1] = b0.y, b[2] = b0.z, b[3] = b0.w;
            b[4] = b1.x, b[5] = b1.y, b[6] = b1.z, b[7] = b1.w;
#pragma unroll
            for (int i = 0; i < 8; ++i)
#pragma unroll
                for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        // The other buffer was last read in iteration kt - 1, before the
        // barrier that ended it.
        if (more) simt_stash<TA, TB>(As[buf ^ 1], Bs[buf ^ 1], ra, rb, tid);
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const int row = m0 + (i < 4 ? ty * 4 + i : 64 + ty * 4 + i - 4);
        if (row >= M) continue;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            const int col = n0 + (j < 4 ? tx * 4 + j : 64 + tx * 4 + j - 4);
            if (col >= N) continue;
            TO* p = C + (u64)row * N + col;
            const float v = alpha * acc[i][j];
            *p = from_f32<TO>(beta != 0.0f ? v + beta * to_f32(*p) : v);
        }
    }
}

// ---- entry points -----------------------------------------------------------
// Arguments: A, B, C, M, N, K, stride_a, stride_b, stride_c, alpha, beta
// (+ aligned for the tensor-core kernels).

#define GEMM_TC_ENTRY(T, TS, TO, TOS, LS, TA, TB)                                                                     \
    extern "C" __global__ void __launch_bounds__(TC_THREADS)                                                        \
        gemm_tc_##TS##_##TOS##_##LS(const T* A, const T* B, TO* C, int M, int N, int K, u64 stride_a, u64 stride_b, \
                                    u64 stride_c, float alpha, float beta, int aligned) {                            \
        gemm_tc<T, TO, TA, TB>(A, B, C, M, N, K, stride_a, stride_b, stride_c, alpha, beta, aligned);                \
    }

#define GEMM_SIMT_ENTRY(T, TS, TO, TOS, LS, TA, TB)                                                       \
    extern "C" __global__ void __launch_bounds__(SIMT_THREADS)                                          \
        gemm_simt_##TS##_##TOS##_##LS(const T* A, const T* B, TO* C, int M, int N, int K, u64 stride_a, \
                                      u64 stride_b, u64 stride_c, float alpha, float beta) {            \
        gemm_simt<T, TO, TA, TB>(A, B, C, M, N, K, stride_a, stride_b, stride_c, alpha, beta);          \
    }

#define GEMM_LAYOUTS(ENTRY, T, TS, TO, TOS) \
    ENTRY(T, TS, TO, TOS, nn, false, false) \
    ENTRY(T, TS, TO, TOS, nt, false, true)  \
    ENTRY(T, TS, TO, TOS, tn, true, false)  \
    ENTRY(T, TS, TO, TOS, tt, true, true)

GEMM_LAYOUTS(GEMM_TC_ENTRY, bf16, bf16, bf16, bf16)
GEMM_LAYOUTS(GEMM_TC_ENTRY, bf16, bf16, float, f32)
GEMM_LAYOUTS(GEMM_TC_ENTRY, f16, f16, f16, f16)
GEMM_LAYOUTS(GEMM_TC_ENTRY, f16, f16, float, f32)

GEMM_LAYOUTS(GEMM_SIMT_ENTRY, float, f32, float, f32)
GEMM_LAYOUTS(GEMM_SIMT_ENTRY, bf16, bf16, bf16, bf16)
GEMM_LAYOUTS(GEMM_SIMT_ENTRY, bf16, bf16, float, f32)
GEMM_LAYOUTS(GEMM_SIMT_ENTRY, f16, f16, f16, f16)
GEMM_LAYOUTS(GEMM_SIMT_ENTRY, f16, f16, float, f32)
