// tensor_core.cuh: the inline-PTX helpers of the tensor-core kernels
// (gemm.cu, gemm_sm90.cu, attention.cu), prepended after common.cuh to the
// files whose KernelFile sets `tensor_cores`, then small helpers the GEMM
// kernels share (imin, tile rasterization, the epilogue's store_pair). The
// CUDA emulator replaces everything between the two marker lines with
// emu/include/kaiyuan_emu_ptx.h.
//
// Needs sm_80 or newer: cp.async (global → shared copies that bypass the
// registers), ldmatrix (8×8 b16 tiles from shared memory into the mma
// fragment layout) and mma.sync m16n8k16 (bf16/f16 in, f32 accumulate).

// ---- PTX helpers (sm_80+) -------------------------------------------------
__device__ __forceinline__ u32 smem_addr(const void* p) { return static_cast<u32>(__cvta_generic_to_shared(p)); }

// 16 bytes global → shared, asynchronously; reads src_bytes (16 or 0) bytes
// and zero-fills the rest.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(src_bytes)
                 : "memory");
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

// Waits until at most N of this thread's committed groups are pending.
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Four 8×8 b16 matrices; lanes 8j..8j+7 give the row addresses of matrix j;
// register j of lane l holds row l/4, columns 2(l%4), 2(l%4)+1 of matrix j.
__device__ __forceinline__ void ldsm_x4(u32 (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p))
                 : "memory");
}

// As ldsm_x4, each matrix transposed: register j of lane l holds rows
// 2(l%4), 2(l%4)+1 of column l/4 of matrix j.
__device__ __forceinline__ void ldsm_x4_trans(u32 (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p))
                 : "memory");
}

// d += a·b for one m16n8k16 tile (a row-major 16×16, b "col" 16×8).
template <typename T> __device__ __forceinline__ void mma_16816(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1);

template <> __device__ __forceinline__ void mma_16816<bf16>(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <> __device__ __forceinline__ void mma_16816<f16>(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Stores two adjacent elements (p must be aligned to two elements).
template <typename T> __device__ __forceinline__ void store2(T* p, float x, float y);
template <> __device__ __forceinline__ void store2<float>(float* p, float x, float y) {
    *reinterpret_cast<float2*>(p) = make_float2(x, y);
}
template <> __device__ __forceinline__ void store2<bf16>(bf16* p, float x, float y) {
    *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(x, y);
}
template <> __device__ __forceinline__ void store2<f16>(f16* p, float x, float y) {
    *reinterpret_cast<__half2*>(p) = __floats2half2_rn(x, y);
}
// Two floats rounded to T, packed as one 32-bit register (lo in the low half).
template <typename T> __device__ __forceinline__ u32 pack2(float lo, float hi);
template <> __device__ __forceinline__ u32 pack2<bf16>(float lo, float hi) {
    return (u32)__bfloat16_as_ushort(__float2bfloat16_rn(lo)) | ((u32)__bfloat16_as_ushort(__float2bfloat16_rn(hi)) << 16);
}
template <> __device__ __forceinline__ u32 pack2<f16>(float lo, float hi) {
    return (u32)__half_as_ushort(__float2half_rn(lo)) | ((u32)__half_as_ushort(__float2half_rn(hi)) << 16);
}
// ---- end of PTX helpers ---------------------------------------------------

// ---- shared by the GEMM kernels (gemm.cu, gemm_sm90.cu) ---------------------

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
