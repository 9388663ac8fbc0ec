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
// - gemm_tc_{tile}_{in}_{out}_{layout}: bf16/f16 inputs, tensor cores
//   (mma.sync m16n8k16, f32 accumulation), output in the input type or f32.
//   A tile {BM}x{BN}x{BK}s{STAGES} is a BM×BN block tile with K step BK, one
//   warp per 64×64 sub-tile, and a STAGES-deep cp.async pipeline in dynamic
//   shared memory (XOR-swizzled, conflict-free ldmatrix). The default tile
//   128x128x32s3 (4 warps, 48 KiB) exists for every type and layout; the
//   candidate tiles of ops::gemm::TC_TUNING_TILES only for bf16 → bf16, in
//   layout nt, and nn when their K step is 32. Grid (ceil(M/BM)·ceil(N/BN), 1, batch), block 32·(BM/64)·(BN/64),
//   STAGES·(BM + BN)·BK·2 bytes of dynamic shared memory. `aligned` != 0
//   when every stored row length (K or M for A, N or K for B) is a multiple
//   of 8 elements, so 16-byte async copies are legal; otherwise tiles are
//   loaded element by element (same results, slower).
// - gemm_simt_{in}_{out}_{layout}: any float type, f32 FMA. Block tile
//   128×128, K step 8, 256 threads (8×8 outputs each), register-prefetched
//   double buffer. Grid as above, block 256.
// Any M, N, K ≥ 0 (partial tiles are zero-filled; K = 0 gives beta·C).

// The inline-PTX helpers (cp.async, ldmatrix, mma.sync, store2), the tile
// rasterization and the epilogue's store_pair are in tensor_core.cuh,
// prepended to this file.


// ===========================================================================
// Tensor-core GEMM (bf16 / f16 inputs).
// ===========================================================================

// A block tile configuration: BM×BN outputs, K step BK (32 or 64), STAGES
// cp.async stages in dynamic shared memory, one warp per 64×64 sub-tile
// (4 m16 × 8 n8 mma tiles), so THREADS = 32·(BM/64)·(BN/64).
// log2 of a power of two, at compile time.
__host__ __device__ constexpr int log2i(int v) { return v <= 1 ? 0 : 1 + log2i(v / 2); }

template <int BM_, int BN_, int BK_, int STAGES_>
struct TcTile {
    static constexpr int BM = BM_, BN = BN_, BK = BK_, STAGES = STAGES_;
    static constexpr int WARPS_N = BN / 64;
    static constexpr int THREADS = 32 * (BM / 64) * (BN / 64);
    static constexpr int A_ELEMS = BM * BK, B_ELEMS = BN * BK;
    static constexpr int SMEM_BYTES = STAGES * (A_ELEMS + B_ELEMS) * 2;
    static_assert(BM % 64 == 0 && BN % 64 == 0 && (BK == 32 || BK == 64) && STAGES >= 2, "tile");
    static_assert((WARPS_N & (WARPS_N - 1)) == 0, "a power-of-two number of warp columns");
};

// Shared memory of the tensor-core kernels: STAGES A tiles, then STAGES B
// tiles. Up to 48 KiB it is static (constant addresses save registers: the
// default tile spills without them); above, dynamic (the launcher passes
// SMEM_BYTES and opts in).
extern __shared__ __align__(16) unsigned char gemm_smem[];

template <typename Cfg> __device__ __forceinline__ unsigned char* tc_shared() {
    if constexpr (Cfg::SMEM_BYTES <= 48 * 1024) {
        __shared__ __align__(128) unsigned char tile_smem[Cfg::SMEM_BYTES];
        return tile_smem;
    } else {
        return gemm_smem;
    }
}

// A "k-major" tile holds rows × BK k (rows of a (rows, K) matrix) in chunks
// of 8 elements, XOR-swizzled so that the 8 row addresses of an ldmatrix hit
// 8 different 16-byte bank groups: BK 32 (4 chunks, 64-byte rows): chunk c
// of row r at c ^ ((r >> 1) & 3); BK 64 (8 chunks, 128-byte rows): c ^ (r & 7).
template <int BK> __device__ __forceinline__ int kmajor_offset(int r, int c);
template <> __device__ __forceinline__ int kmajor_offset<32>(int r, int c) { return r * 32 + ((c ^ ((r >> 1) & 3)) << 3); }
template <> __device__ __forceinline__ int kmajor_offset<64>(int r, int c) { return r * 64 + ((c ^ (r & 7)) << 3); }

// An "mn-major" tile holds BK k rows × MN columns (of a (K, MN) matrix):
// MN/8 chunks per row, chunk c of row r stored at c ^ (r & 7).
template <int MN> __device__ __forceinline__ int mnmajor_offset(int r, int c) { return r * MN + ((c ^ (r & 7)) << 3); }

// Rows [row0, row0 + ROWS), k [k0, k0 + BK) of src (rows, K) into a k-major tile.
template <int ROWS, int BK, int THREADS, typename T>
__device__ __forceinline__ void load_kmajor(T* tile, const T* src, int rows, int K, int row0, int k0, bool aligned,
                                            int tid) {
    constexpr int CHUNKS = BK / 8;
    static_assert((ROWS * CHUNKS) % THREADS == 0, "whole chunks per thread");
#pragma unroll
    for (int i = 0; i < ROWS * CHUNKS / THREADS; ++i) {
        const int e = tid + i * THREADS;
        const int r = e >> log2i(CHUNKS), c = e & (CHUNKS - 1);  // e ≥ 0: shifts, not signed division
        const int gr = row0 + r, gk = k0 + c * 8;
        T* dst = tile + kmajor_offset<BK>(r, c);
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

// k [k0, k0 + BK), columns [mn0, mn0 + MN) of src (K, MN_total) into an mn-major tile.
template <int MN, int BK, int THREADS, typename T>
__device__ __forceinline__ void load_mnmajor(T* tile, const T* src, int mn_total, int K, int mn0, int k0,
                                             bool aligned, int tid) {
    constexpr int CHUNKS = MN / 8;
    static_assert((BK * CHUNKS) % THREADS == 0, "whole chunks per thread");
#pragma unroll
    for (int i = 0; i < BK * CHUNKS / THREADS; ++i) {
        const int e = tid + i * THREADS;
        const int r = e >> log2i(CHUNKS), c = e & (CHUNKS - 1);
        const int gk = k0 + r, gc = mn0 + c * 8;
        T* dst = tile + mnmajor_offset<MN>(r, c);
        if (aligned) {
            const bool ok = gk < K && gc < mn_total;
            cp_async_16(dst, ok ? src + ((u64)gk * mn_total + gc) : src, ok ? 16 : 0);
        } else {
#pragma unroll
            for (int q = 0; q < 8; ++q) {
                const bool ok = gk < K && gc + q < mn_total;
                dst[q] = ok ? src[(u64)gk * mn_total + gc + q] : from_f32<T>(0.0f);
            }
        }
    }
}

// The A fragment (16 rows from `m`, k16 step kk of the tile); BM the tile's
// rows (the width of a transposed A tile).
template <bool TA, int BM, int BK, typename T>
__device__ __forceinline__ void load_a_frag(u32 (&a)[4], const T* As, int m, int kk, int lane) {
    if (!TA) {
        // Matrices: (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15).
        const int r = m + (lane & 15);
        const int c = kk * 2 + (lane >> 4);
        ldsm_x4(a, As + kmajor_offset<BK>(r, c));
    } else {
        // Stored rows are k: transposed loads of the same four matrices.
        const int j = lane >> 3;
        const int r = kk * 16 + ((j >> 1) << 3) + (lane & 7);
        const int c = (m >> 3) + (j & 1);
        ldsm_x4_trans(a, As + mnmajor_offset<BM>(r, c));
    }
}

// The B fragments of n-tiles n/8 and n/8 + 1 (k16 step kk): b[0], b[1] for
// the first, b[2], b[3] for the second; BN the tile's columns.
template <bool TB, int BN, int BK, typename T>
__device__ __forceinline__ void load_b_frag(u32 (&b)[4], const T* Bs, int n, int kk, int lane) {
    if (TB) {
        // Stored rows are n: matrices (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15).
        const int r = n + ((lane >> 4) << 3) + (lane & 7);
        const int c = kk * 2 + ((lane >> 3) & 1);
        ldsm_x4(b, Bs + kmajor_offset<BK>(r, c));
    } else {
        // Stored rows are k: transposed (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15, n 8-15).
        const int r = kk * 16 + (((lane >> 3) & 1) << 3) + (lane & 7);
        const int c = (n >> 3) + (lane >> 4);
        ldsm_x4_trans(b, Bs + mnmajor_offset<BN>(r, c));
    }
}

template <typename Cfg, bool TA, bool TB, typename T>
__device__ __forceinline__ void gemm_tc_load_stage(T* As, T* Bs, const T* A, const T* B, int M, int N, int K, int m0,
                                                   int n0, int k0, bool aligned, int tid) {
    if (TA)
        load_mnmajor<Cfg::BM, Cfg::BK, Cfg::THREADS>(As, A, M, K, m0, k0, aligned, tid);
    else
        load_kmajor<Cfg::BM, Cfg::BK, Cfg::THREADS>(As, A, M, K, m0, k0, aligned, tid);
    if (TB)
        load_kmajor<Cfg::BN, Cfg::BK, Cfg::THREADS>(Bs, B, N, K, n0, k0, aligned, tid);
    else
        load_mnmajor<Cfg::BN, Cfg::BK, Cfg::THREADS>(Bs, B, N, K, n0, k0, aligned, tid);
}

template <typename Cfg, typename T, typename TO, bool TA, bool TB>
__device__ __forceinline__ void gemm_tc(const T* __restrict__ A, const T* __restrict__ B, TO* __restrict__ C, int M,
                                        int N, int K, u64 stride_a, u64 stride_b, u64 stride_c, float alpha,
                                        float beta, int aligned_flag) {
    constexpr int BM = Cfg::BM, BN = Cfg::BN, BK = Cfg::BK, STAGES = Cfg::STAGES;
    T* const As = reinterpret_cast<T*>(tc_shared<Cfg>());
    T* const Bs = As + STAGES * Cfg::A_ELEMS;

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp >> log2i(Cfg::WARPS_N), wn = warp & (Cfg::WARPS_N - 1);  // warp tile (wm, wn) of 64×64
    int tm, tn;
    tile_of_block(blockIdx.x, (M + BM - 1) / BM, (N + BN - 1) / BN, tm, tn);
    const int m0 = tm * BM, n0 = tn * BN;
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

    const int ktiles = (K + BK - 1) / BK;
    // Prologue: tiles 0 .. STAGES-2, one commit group each (possibly empty).
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < ktiles)
            gemm_tc_load_stage<Cfg, TA, TB>(As + s * Cfg::A_ELEMS, Bs + s * Cfg::B_ELEMS, A, B, M, N, K, m0, n0,
                                            s * BK, aligned, tid);
        cp_async_commit();
    }
    for (int kt = 0; kt < ktiles; ++kt) {
        // Groups committed so far: STAGES-1+kt, group g holding tile g; at
        // most STAGES-2 pending means tile kt has landed (for this thread).
        cp_async_wait<STAGES - 2>();
        // Every thread's copies of tile kt are visible, and every warp is
        // done with tile kt-1, whose stage the prefetch below overwrites.
        __syncthreads();
        const int next = kt + STAGES - 1;
        if (next < ktiles) {
            const int s = next % STAGES;
            gemm_tc_load_stage<Cfg, TA, TB>(As + s * Cfg::A_ELEMS, Bs + s * Cfg::B_ELEMS, A, B, M, N, K, m0, n0,
                                            next * BK, aligned, tid);
        }
        cp_async_commit();
        const T* as = As + (kt % STAGES) * Cfg::A_ELEMS;
        const T* bs = Bs + (kt % STAGES) * Cfg::B_ELEMS;
#pragma unroll
        for (int kk = 0; kk < BK / 16; ++kk) {
            u32 af[4][4], bf[4][4];
#pragma unroll
            for (int mi = 0; mi < 4; ++mi) load_a_frag<TA, BM, BK>(af[mi], as, wm * 64 + mi * 16, kk, lane);
#pragma unroll
            for (int np = 0; np < 4; ++np) load_b_frag<TB, BN, BK>(bf[np], bs, wn * 64 + np * 16, kk, lane);
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

// gemm_tc_{BM}x{BN}x{BK}s{STAGES}_{in}_{out}_{layout}.
#define GEMM_TC_ENTRY_TILE(BM, BN, BK, ST, T, TS, TO, TOS, LS, TA, TB)                                               \
    extern "C" __global__ void __launch_bounds__(TcTile<BM, BN, BK, ST>::THREADS)                                   \
        gemm_tc_##BM##x##BN##x##BK##s##ST##_##TS##_##TOS##_##LS(const T* A, const T* B, TO* C, int M, int N, int K, \
                                                                u64 stride_a, u64 stride_b, u64 stride_c,           \
                                                                float alpha, float beta, int aligned) {             \
        gemm_tc<TcTile<BM, BN, BK, ST>, T, TO, TA, TB>(A, B, C, M, N, K, stride_a, stride_b, stride_c, alpha, beta, \
                                                       aligned);                                                    \
    }
// The default tile, compiled for every input, output and layout.
#define GEMM_TC_ENTRY(T, TS, TO, TOS, LS, TA, TB) GEMM_TC_ENTRY_TILE(128, 128, 32, 3, T, TS, TO, TOS, LS, TA, TB)

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

// Candidate tiles (ops::gemm::TC_TUNING_TILES), bf16 → bf16: layout nt for
// every one, nn for the K-step-32 ones (with K step 64 the nn layout spills).
// On an H200 (docs/performance.md) none beat the default by more than the
// noise; 128x256 and 256x128 tiles and a 4-stage 128x128x64 were slower.
#define GEMM_TC_TUNING_NT(BM, BN, BK, ST) \
    GEMM_TC_ENTRY_TILE(BM, BN, BK, ST, bf16, bf16, bf16, bf16, nt, false, true)
#define GEMM_TC_TUNING_NN(BM, BN, BK, ST) \
    GEMM_TC_ENTRY_TILE(BM, BN, BK, ST, bf16, bf16, bf16, bf16, nn, false, false)
GEMM_TC_TUNING_NT(128, 128, 64, 3)
GEMM_TC_TUNING_NT(128, 128, 32, 4)
GEMM_TC_TUNING_NN(128, 128, 32, 4)

GEMM_LAYOUTS(GEMM_SIMT_ENTRY, float, f32, float, f32)
GEMM_LAYOUTS(GEMM_SIMT_ENTRY, bf16, bf16, bf16, bf16)
GEMM_LAYOUTS(GEMM_SIMT_ENTRY, bf16, bf16, float, f32)
GEMM_LAYOUTS(GEMM_SIMT_ENTRY, f16, f16, f16, f16)
GEMM_LAYOUTS(GEMM_SIMT_ENTRY, f16, f16, float, f32)
