// gemm_sm90.cu: C = alpha·A·Bᵀ + beta·C on Hopper's warpgroup tensor-core
// instruction (wgmma), bf16 in, f32 accumulation, bf16 out, row-major,
// batched. Compiled only for sm_90a (`KernelFile::sm90a`): wgmma exists on
// no other architecture, and the CUDA emulator cannot run it (its tests skip
// there; the mma.sync kernels of gemm.cu are the portable path).
//
// Per batch item z (blockIdx.z), with element offsets z·stride_a, z·stride_b,
// z·stride_c:
//   A: (M, K) row-major; B: (N, K) row-major (the nn.Linear weight: layout
//   "nt"); C: (M, N), read only when beta != 0.
// K must be a multiple of 8 (16-byte copies; the launcher falls back to
// gemm.cu otherwise); any M, N ≥ 0 (partial tiles are zero-filled).
//
// Kernels gemm_wgmma_{BM}x{BN}s{STAGES}[o]_bf16_bf16_nt, BM = 128: two
// warpgroups (256 threads), each computing 64 rows × BN columns with
// m64n{BN}k16 instructions. A STAGES-deep cp.async pipeline fills K steps of
// 64 in dynamic shared memory (STAGES·(BM + BN)·64·2 bytes + 1 KiB for
// alignment), in the 128-byte-swizzled K-major layout the wgmma descriptors
// name: rows of 128 bytes, 16-byte chunk c of row r at c ^ (r mod 8), tiles
// aligned to 1 KiB. Grid (ceil(M/128)·ceil(N/BN), 1, batch), block 256.

// ---- PTX helpers (sm_90a) -------------------------------------------------
// A wgmma shared-memory matrix descriptor for a K-major tile in the 128-byte
// swizzle: start address >> 4 (bits 0-13), leading byte offset (unused for
// swizzled K-major tiles; 16 bytes) >> 4 (bits 16-29), stride byte offset
// between 8-row groups (8 × 128 bytes) >> 4 (bits 32-45), swizzle mode 1 =
// 128 bytes (bits 62-63). One k16 step further along K is +32 bytes, +2.
__device__ __forceinline__ u64 sw128_descriptor(const void* tile) {
    const u64 address = smem_addr(tile);
    return ((address & 0x3FFFF) >> 4) | ((u64)1 << 16) | ((u64)(1024 >> 4) << 32) | ((u64)1 << 62);
}

// Orders this thread's earlier register and shared-memory accesses before
// the wgmma instructions that follow.
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Waits until at most N committed wgmma groups are pending.
template <int N> __device__ __forceinline__ void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Makes shared-memory writes of the generic proxy (cp.async, st.shared)
// visible to the async proxy that wgmma reads through.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// d (64×128 f32 fragments, 64 per thread) += A (64×16, smem desc_a) · B
// (128×16 K-major, smem desc_b)ᵀ; both K-major (no transpose).
__device__ __forceinline__ void wgmma_m64n128k16_bf16(float (&d)[64], u64 desc_a, u64 desc_b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
        "}, %64, %65, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(desc_a), "l"(desc_b), "r"(1));
}

// d (64×256 f32 fragments, 128 per thread) += A (64×16, smem desc_a) · B
// (256×16 K-major, smem desc_b)ᵀ; both K-major (no transpose).
__device__ __forceinline__ void wgmma_m64n256k16_bf16(float (&d)[128], u64 desc_a, u64 desc_b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
        "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
        "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "
        "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "
        "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
        "}, %128, %129, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
          "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
          "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
          "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
          "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),
          "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
          "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
          "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),
          "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
        : "l"(desc_a), "l"(desc_b), "r"(1));
}

// ---- end of PTX helpers ---------------------------------------------------

extern __shared__ __align__(16) unsigned char wgmma_smem[];

template <int BN> struct WgmmaAcc;
template <> struct WgmmaAcc<128> {
    static __device__ __forceinline__ void mma(float (&d)[64], u64 a, u64 b) { wgmma_m64n128k16_bf16(d, a, b); }
};
template <> struct WgmmaAcc<256> {
    static __device__ __forceinline__ void mma(float (&d)[128], u64 a, u64 b) { wgmma_m64n256k16_bf16(d, a, b); }
};

// Rows [row0, row0 + ROWS), k [k0, k0 + 64) of src (rows, K) into a
// 128-byte-swizzled K-major tile (K % 8 == 0: a chunk is wholly in or out).
template <int ROWS, int THREADS>
__device__ __forceinline__ void load_sw128(bf16* tile, const bf16* src, int rows, int K, int row0, int k0, int tid) {
    static_assert((ROWS * 8) % THREADS == 0, "whole chunks per thread");
#pragma unroll
    for (int i = 0; i < ROWS * 8 / THREADS; ++i) {
        const int e = tid + i * THREADS;
        const int r = e >> 3, c = e & 7;
        const int gr = row0 + r, gk = k0 + c * 8;
        const bool ok = gr < rows && gk < K;
        cp_async_16(tile + r * 64 + ((c ^ (r & 7)) << 3), ok ? src + ((u64)gr * K + gk) : src, ok ? 16 : 0);
    }
}

// OVERLAP: keep one wgmma group in flight (wait_group 1) while the next
// k-tile is issued; a stage is then released one tile later, so tiles are
// prefetched STAGES-2 ahead instead of STAGES-1.
template <int BN, int STAGES, bool OVERLAP>
__device__ __forceinline__ void gemm_wgmma_nt(const bf16* __restrict__ A, const bf16* __restrict__ B,
                                              bf16* __restrict__ C, int M, int N, int K, u64 stride_a, u64 stride_b,
                                              u64 stride_c, float alpha, float beta) {
    constexpr int BM = 128, BK = 64, THREADS = 256;
    constexpr int A_ELEMS = BM * BK, B_ELEMS = BN * BK;  // 16 KiB and 16 or 32 KiB: 1 KiB multiples
    // The descriptors' swizzle is a function of address bits, so tiles start
    // on 1 KiB boundaries (the launcher adds 1 KiB of slack).
    const u32 raw = smem_addr(wgmma_smem);
    bf16* const As = reinterpret_cast<bf16*>(wgmma_smem + (((raw + 1023u) & ~1023u) - raw));
    bf16* const Bs = As + STAGES * A_ELEMS;

    const int tid = threadIdx.x, warpgroup = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
    int tm, tn;
    tile_of_block(blockIdx.x, (M + BM - 1) / BM, (N + BN - 1) / BN, tm, tn);
    const int m0 = tm * BM, n0 = tn * BN;
    const u64 z = blockIdx.z;
    A += z * stride_a;
    B += z * stride_b;
    C += z * stride_c;

    float acc[BN / 2];
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) acc[i] = 0.0f;

    static_assert(!OVERLAP || STAGES >= 3, "an overlapped pipeline needs three stages");
    constexpr int AHEAD = OVERLAP ? STAGES - 2 : STAGES - 1;  // tiles prefetched ahead
    const int ktiles = (K + BK - 1) / BK;
#pragma unroll
    for (int s = 0; s < AHEAD; ++s) {
        if (s < ktiles) {
            load_sw128<BM, THREADS>(As + s * A_ELEMS, A, M, K, m0, s * BK, tid);
            load_sw128<BN, THREADS>(Bs + s * B_ELEMS, B, N, K, n0, s * BK, tid);
        }
        cp_async_commit();
    }
    for (int kt = 0; kt < ktiles; ++kt) {
        // Tile kt has landed for this thread (AHEAD + kt groups committed);
        // make it visible to the async proxy, then to every thread. Every
        // warpgroup finished reading the stage the prefetch overwrites: tile
        // kt-1's after wgmma_wait<0>, or tile kt-2's after wgmma_wait<1>
        // (OVERLAP), both in the previous iteration.
        cp_async_wait<AHEAD - 1>();
        fence_proxy_async();
        __syncthreads();
        const int next = kt + AHEAD;
        if (next < ktiles) {
            const int s = next % STAGES;
            load_sw128<BM, THREADS>(As + s * A_ELEMS, A, M, K, m0, next * BK, tid);
            load_sw128<BN, THREADS>(Bs + s * B_ELEMS, B, N, K, n0, next * BK, tid);
        }
        cp_async_commit();
        const int s = kt % STAGES;
        const u64 desc_a = sw128_descriptor(As + s * A_ELEMS + warpgroup * 64 * BK);
        const u64 desc_b = sw128_descriptor(Bs + s * B_ELEMS);
        // As CUTLASS does: keep the compiler's accumulator accesses before
        // the fence that orders them against the wgmma below.
#pragma unroll
        for (int i = 0; i < BN / 2; ++i) asm volatile("" : "+f"(acc[i])::"memory");
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < BK / 16; ++kk) WgmmaAcc<BN>::mma(acc, desc_a + 2 * kk, desc_b + 2 * kk);
        wgmma_commit();
        wgmma_wait<OVERLAP ? 1 : 0>();
        // The compiler does not know wgmma writes acc asynchronously: tie
        // every accumulator to a point after the wait.
#pragma unroll
        for (int i = 0; i < BN / 2; ++i) asm volatile("" : "+f"(acc[i])::"memory");
    }
    wgmma_wait<0>();
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) asm volatile("" : "+f"(acc[i])::"memory");
    cp_async_wait<0>();

    // acc[4i..4i+3]: rows g and g + 8 (g = 16·warp + lane/4 within the
    // warpgroup's 64), columns 8i + 2·(lane mod 4) and the next.
    const bool pairs = (N & 1) == 0;
    const int row = m0 + warpgroup * 64 + warp * 16 + (lane >> 2);
#pragma unroll
    for (int i = 0; i < BN / 8; ++i) {
        const int col = n0 + i * 8 + 2 * (lane & 3);
        store_pair(C, M, N, row, col, acc[4 * i], acc[4 * i + 1], alpha, beta, pairs);
        store_pair(C, M, N, row + 8, col, acc[4 * i + 2], acc[4 * i + 3], alpha, beta, pairs);
    }
}

// Arguments: A, B, C, M, N, K, stride_a, stride_b, stride_c, alpha, beta.
// Names gemm_wgmma_128x{BN}s{STAGES}[o]_bf16_bf16_nt (o: OVERLAP).
#define GEMM_WGMMA_ENTRY(BN, ST, SUFFIX, OVERLAP)                                                               \
    extern "C" __global__ void __launch_bounds__(256, 1)                                                        \
        gemm_wgmma_128x##BN##s##ST##SUFFIX##_bf16_bf16_nt(const bf16* A, const bf16* B, bf16* C, int M, int N,  \
                                                          int K, u64 stride_a, u64 stride_b, u64 stride_c,      \
                                                          float alpha, float beta) {                            \
        gemm_wgmma_nt<BN, ST, OVERLAP>(A, B, C, M, N, K, stride_a, stride_b, stride_c, alpha, beta);            \
    }

GEMM_WGMMA_ENTRY(128, 4, , false)
GEMM_WGMMA_ENTRY(256, 3, , false)
GEMM_WGMMA_ENTRY(256, 4, , false)
GEMM_WGMMA_ENTRY(128, 4, o, true)
GEMM_WGMMA_ENTRY(256, 4, o, true)
