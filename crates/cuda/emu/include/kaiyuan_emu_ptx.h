// kaiyuan_emu_ptx.h: what the kaiyuan CUDA emulator puts in place of a
// kernel file's inline-PTX helpers. A file whose inline PTX is confined to a
// block between the lines
//     // ---- PTX helpers ...
//     // ---- end of PTX helpers ...
// (gemm.cu, attention.cu) gets this header instead of that block; it
// defines the same helpers, following the PTX ISA:
//   smem_addr, cp_async_16 / cp_async_commit / cp_async_wait<N>
//   (cp.async.cg 16 bytes, zero fill; the data lands at the wait, and reads
//   as NaN until then), ldsm_x4 / ldsm_x4_trans (ldmatrix .x4 [.trans]
//   .b16, every lane's row address 16-byte aligned), mma_16816<bf16|f16>
//   (mma.sync.aligned.m16n8k16.row.col.f32, products exact, summed in f32 in
//   k order), store2<T> and pack2<T>.
// A block defining anything else fails to compile, and the file is reported
// as not emulatable.
#pragma once

__device__ __forceinline__ u32 smem_addr(const void* p) { return static_cast<u32>(__cvta_generic_to_shared(p)); }

__device__ __forceinline__ void cp_async_16(void* dst, const void* src, int src_bytes) {
    kaiyuan_emu_cp_async(dst, src, 16, src_bytes);
}
__device__ __forceinline__ void cp_async_commit() { kaiyuan_emu_cp_async_commit(); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    kaiyuan_emu_cp_async_wait(N);
}

namespace kaiyuan_emu {

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lanes 8j..8j+7 give the
// row addresses of matrix j. Without .trans register j of lane l holds row
// l/4, columns 2(l%4) and 2(l%4)+1 of matrix j; with .trans rows 2(l%4) and
// 2(l%4)+1 of column l/4.
inline void ldmatrix_x4(u32 (&r)[4], const void* p, bool transposed) {
    const char* name = transposed ? "ldmatrix.x4.trans" : "ldmatrix.x4";
    if (reinterpret_cast<uintptr_t>(p) & 15) {
        char message[160];
        snprintf(message, sizeof message, "%s: row address %p of lane %u is not 16-byte aligned", name, p,
                 kaiyuan_emu_lane());
        kaiyuan_emu_fail(message);
    }
    const unsigned long long mine = reinterpret_cast<uintptr_t>(p);
    const EmuWarpResult* all = kaiyuan_emu_warp(KAIYUAN_EMU_OP_LDMATRIX, name, 0xffffffffu, &mine, 1);
    if (all->valid != 0xffffffffu) kaiyuan_emu_fail("ldmatrix: every lane of the warp must take part");
    const unsigned l = kaiyuan_emu_lane();
    for (int j = 0; j < 4; ++j) {
        unsigned short lo, hi;
        if (!transposed) {
            const auto* row = reinterpret_cast<const unsigned short*>(all->data[j * 8 + l / 4][0]);
            lo = row[2 * (l % 4)];
            hi = row[2 * (l % 4) + 1];
        } else {
            const auto* row0 = reinterpret_cast<const unsigned short*>(all->data[j * 8 + 2 * (l % 4)][0]);
            const auto* row1 = reinterpret_cast<const unsigned short*>(all->data[j * 8 + 2 * (l % 4) + 1][0]);
            lo = row0[l / 4];
            hi = row1[l / 4];
        }
        r[j] = static_cast<u32>(lo) | (static_cast<u32>(hi) << 16);
    }
}

template <typename T>
inline float half_at(unsigned long long reg, int which) {
    const auto bits = static_cast<unsigned short>((reg >> (16 * which)) & 0xffffu);
    if constexpr (sizeof(T) == 2 && std::is_same<T, __nv_bfloat16>::value) return bf16_bits_to_f32(bits);
    else return f16_bits_to_f32(bits);
}

// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32, with
// groupID g = lane/4 and t = lane%4:
//   A (16×16): a0 (g, 2t..2t+1), a1 (g+8, 2t..), a2 (g, 2t+8..), a3 (g+8, 2t+8..)
//   B (16×8):  b0 (k = 2t..2t+1, n = g), b1 (k = 2t+8.., n = g)
//   C/D (16×8): c0,c1 (g, 2t..2t+1), c2,c3 (g+8, 2t..2t+1)
template <typename T>
inline void mma_m16n8k16(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    unsigned long long mine[6] = {a[0], a[1], a[2], a[3], b0, b1};
    const EmuWarpResult* all = kaiyuan_emu_warp(KAIYUAN_EMU_OP_MMA, "mma.sync.m16n8k16", 0xffffffffu, mine, 6);
    if (all->valid != 0xffffffffu) kaiyuan_emu_fail("mma.sync: every lane of the warp must take part");
    // The first lane to get here decodes A (16×16, row-major) and B (16×8,
    // k-major) for the whole warp.
    float* A = all->scratch;
    float* B = all->scratch + 16 * 16;
    if (all->scratch_serial != all->serial) {
        for (unsigned row = 0; row < 16; ++row)
            for (unsigned k = 0; k < 16; ++k) {
                const unsigned lane = (row % 8) * 4 + (k % 8) / 2;
                const unsigned reg = (row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0);
                A[row * 16 + k] = half_at<T>(all->data[lane][reg], static_cast<int>(k % 2));
            }
        for (unsigned k = 0; k < 16; ++k)
            for (unsigned col = 0; col < 8; ++col) {
                const unsigned lane = col * 4 + (k % 8) / 2;
                const unsigned reg = 4 + (k >= 8 ? 1 : 0);
                B[k * 8 + col] = half_at<T>(all->data[lane][reg], static_cast<int>(k % 2));
            }
        all->scratch_serial = all->serial;
    }
    const unsigned lane = kaiyuan_emu_lane(), g = lane / 4, t = lane % 4;
    for (int i = 0; i < 4; ++i) {
        const unsigned row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i % 2);
        float sum = d[i];
        for (unsigned k = 0; k < 16; ++k) sum += A[row * 16 + k] * B[k * 8 + col];  // exact products, f32 sum
        d[i] = sum;
    }
}

}  // namespace kaiyuan_emu

__device__ __forceinline__ void ldsm_x4(u32 (&r)[4], const void* p) { kaiyuan_emu::ldmatrix_x4(r, p, false); }
__device__ __forceinline__ void ldsm_x4_trans(u32 (&r)[4], const void* p) { kaiyuan_emu::ldmatrix_x4(r, p, true); }

template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    static_assert(std::is_same<T, __nv_bfloat16>::value || std::is_same<T, __half>::value, "bf16 or f16 inputs");
    kaiyuan_emu::mma_m16n8k16<T>(d, a, b0, b1);
}

// Two adjacent elements (p aligned to two elements).
template <typename T>
__device__ __forceinline__ void store2(T* p, float x, float y);
template <>
__device__ __forceinline__ void store2<float>(float* p, float x, float y) {
    *reinterpret_cast<float2*>(p) = make_float2(x, y);
}
template <>
__device__ __forceinline__ void store2<__nv_bfloat16>(__nv_bfloat16* p, float x, float y) {
    *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(x, y);
}
template <>
__device__ __forceinline__ void store2<__half>(__half* p, float x, float y) {
    *reinterpret_cast<__half2*>(p) = __floats2half2_rn(x, y);
}

// Two floats rounded to T, as one 32-bit register (lo in the low half).
template <typename T>
__device__ __forceinline__ u32 pack2(float lo, float hi);
template <>
__device__ __forceinline__ u32 pack2<__nv_bfloat16>(float lo, float hi) {
    return static_cast<u32>(__bfloat16_as_ushort(__float2bfloat16_rn(lo))) |
           (static_cast<u32>(__bfloat16_as_ushort(__float2bfloat16_rn(hi))) << 16);
}
template <>
__device__ __forceinline__ u32 pack2<__half>(float lo, float hi) {
    return static_cast<u32>(__half_as_ushort(__float2half_rn(lo))) |
           (static_cast<u32>(__half_as_ushort(__float2half_rn(hi))) << 16);
}
