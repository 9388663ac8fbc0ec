// kaiyuan_emu.h: force-included (-include) before every kernel file the
// kaiyuan CUDA emulator compiles as host C++ (src/device_emu.rs). It maps
// the CUDA C++ the kernels use onto the emulator's runtime
// (kaiyuan_emu_runtime.h): execution-space keywords, thread and block
// indices, shared memory, barriers, warp shuffles and votes, atomics,
// vector types, the device math functions and intrinsics. cuda_fp16.h,
// cuda_bf16.h and math_constants.h beside it stand in for CUDA's.
//
// Semantics kept: one fiber per CUDA thread; blocks one after the other
// (so `__shared__` variables are per-OS-thread statics); exited threads
// drop out of __syncthreads and warp calls; a warp call completes once
// every non-exited lane of its mask has made it, and reading the value of a
// lane that did not take part is reported as an error. Not kept: timing,
// the memory model (there are no data races between fibers: a missing
// __syncthreads only shows when the schedule exposes it; the emulator runs
// the threads of odd blocks in reverse order to help), tensor cores other
// than the helpers in kaiyuan_emu_ptx.h.
#pragma once

#define KAIYUAN_CUDA_EMULATOR 1
// Device code is compiled as if for sm_90.
#define __CUDACC__ 1
#define __CUDA_ARCH__ 900
#define __NVCC__ 1

#include <cassert>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <type_traits>

#include "kaiyuan_emu_runtime.h"

// ---- keywords -------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __noinline__ __attribute__((noinline))
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __managed__
#define __constant__
#define __align__(n) __attribute__((aligned(n)))
#define __grid_constant__
// Blocks run one at a time on the launching OS thread: a per-thread static
// is the block's shared memory. (`extern __shared__` declarations are
// rewritten to name the runtime's per-thread dynamic shared buffer.)
#define __shared__ static __thread

#define warpSize 32

// ---- errors ---------------------------------------------------------------------
[[noreturn]] inline void __trap() { kaiyuan_emu_fail("__trap() was called"); }
[[noreturn]] inline void __brkpt() { kaiyuan_emu_fail("__brkpt() was called"); }

inline void kaiyuan_emu_assert_fail(const char* expression, const char* file, int line) {
    char message[512];
    snprintf(message, sizeof message, "%s:%d: assertion `%s` failed", file, line, expression);
    kaiyuan_emu_fail(message);
}
#undef assert
#define assert(e) ((e) ? (void)0 : kaiyuan_emu_assert_fail(#e, __FILE__, __LINE__))

// ---- synchronisation ----------------------------------------------------------------
inline void __syncthreads() { kaiyuan_emu_syncthreads(0, nullptr); }
inline int __syncthreads_count(int predicate) { return kaiyuan_emu_syncthreads(predicate, nullptr); }
inline int __syncthreads_and(int predicate) {
    int arrived = 0;
    const int count = kaiyuan_emu_syncthreads(predicate, &arrived);
    return count == arrived;
}
inline int __syncthreads_or(int predicate) { return kaiyuan_emu_syncthreads(predicate, nullptr) != 0; }
// Fibers switch only at barriers and warp calls: every write is visible.
inline void __threadfence() {}
inline void __threadfence_block() {}
inline void __threadfence_system() {}

// ---- warp collectives -----------------------------------------------------------------
namespace kaiyuan_emu {

template <typename T>
inline unsigned long long to_word(T value) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "a shuffled value fits in 8 bytes");
    unsigned long long word = 0;
    std::memcpy(&word, &value, sizeof(T));
    return word;
}

template <typename T>
inline T from_word(unsigned long long word) {
    T value;
    std::memcpy(&value, &word, sizeof(T));
    return value;
}

// The lane whose value `lane` reads, or `lane` itself when the source is
// outside its width-wide segment (the hardware's rule for up/down/xor).
template <typename T>
inline T shuffle(const char* name, unsigned mask, T value, int lane_of_source, bool stay_when_outside, int width) {
    const unsigned long long word = to_word(value);
    const EmuWarpResult* all = kaiyuan_emu_warp(KAIYUAN_EMU_OP_SHFL, name, mask, &word, 1);
    const int lane = static_cast<int>(kaiyuan_emu_lane());
    if (width <= 0 || width > 32 || (width & (width - 1)) != 0) {
        char message[160];
        snprintf(message, sizeof message, "%s with width %d (a power of two, 1 to 32)", name, width);
        kaiyuan_emu_fail(message);
    }
    const int base = lane & ~(width - 1);
    int source = lane_of_source;
    if (source < base || source >= base + width) {
        if (stay_when_outside) return value;
        source = base + (source & (width - 1));
    }
    if (!(all->valid >> source & 1)) {
        char message[200];
        snprintf(message, sizeof message,
                 "%s (mask 0x%08x): lane %d reads lane %d, which did not take part (exited, or not in the mask)", name,
                 mask, lane, source);
        kaiyuan_emu_fail(message);
    }
    return from_word<T>(all->data[source][0]);
}

}  // namespace kaiyuan_emu

template <typename T>
inline T __shfl_sync(unsigned mask, T value, int source_lane, int width = 32) {
    const int lane = static_cast<int>(kaiyuan_emu_lane());
    const int base = lane & ~(width - 1);
    return kaiyuan_emu::shuffle("__shfl_sync", mask, value, base + (source_lane & (width - 1)), false, width);
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = 32) {
    const int lane = static_cast<int>(kaiyuan_emu_lane());
    return kaiyuan_emu::shuffle("__shfl_xor_sync", mask, value, lane ^ lane_mask, true, width);
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T value, unsigned delta, int width = 32) {
    const int lane = static_cast<int>(kaiyuan_emu_lane());
    return kaiyuan_emu::shuffle("__shfl_down_sync", mask, value, lane + static_cast<int>(delta), true, width);
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T value, unsigned delta, int width = 32) {
    const int lane = static_cast<int>(kaiyuan_emu_lane());
    return kaiyuan_emu::shuffle("__shfl_up_sync", mask, value, lane - static_cast<int>(delta), true, width);
}

inline void __syncwarp(unsigned mask = 0xffffffffu) {
    kaiyuan_emu_warp(KAIYUAN_EMU_OP_SYNCWARP, "__syncwarp", mask, nullptr, 0);
}

inline unsigned __ballot_sync(unsigned mask, int predicate) {
    const unsigned long long word = predicate != 0;
    const EmuWarpResult* all = kaiyuan_emu_warp(KAIYUAN_EMU_OP_VOTE, "__ballot_sync", mask, &word, 1);
    unsigned ballot = 0;
    for (int l = 0; l < 32; ++l)
        if (all->valid >> l & 1 && all->data[l][0]) ballot |= 1u << l;
    return ballot;
}
inline int __any_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }
inline int __all_sync(unsigned mask, int predicate) {
    const unsigned long long word = predicate != 0;
    const EmuWarpResult* all = kaiyuan_emu_warp(KAIYUAN_EMU_OP_VOTE, "__all_sync", mask, &word, 1);
    for (int l = 0; l < 32; ++l)
        if (all->valid >> l & 1 && !all->data[l][0]) return 0;
    return 1;
}
inline unsigned __activemask() { return kaiyuan_emu_active_mask(); }

namespace kaiyuan_emu {
template <typename T, typename F>
inline T warp_reduce(const char* name, unsigned mask, T value, F combine) {
    const unsigned long long word = to_word(value);
    const EmuWarpResult* all = kaiyuan_emu_warp(KAIYUAN_EMU_OP_REDUCE, name, mask, &word, 1);
    bool first = true;
    T total{};
    for (int l = 0; l < 32; ++l) {
        if (!(all->valid >> l & 1)) continue;
        const T v = from_word<T>(all->data[l][0]);
        total = first ? v : combine(total, v);
        first = false;
    }
    return total;
}
}  // namespace kaiyuan_emu
inline unsigned __reduce_add_sync(unsigned mask, unsigned v) {
    return kaiyuan_emu::warp_reduce("__reduce_add_sync", mask, v, [](unsigned a, unsigned b) { return a + b; });
}
inline int __reduce_add_sync(unsigned mask, int v) {
    return static_cast<int>(__reduce_add_sync(mask, static_cast<unsigned>(v)));
}
inline unsigned __reduce_min_sync(unsigned mask, unsigned v) {
    return kaiyuan_emu::warp_reduce("__reduce_min_sync", mask, v, [](unsigned a, unsigned b) { return a < b ? a : b; });
}
inline int __reduce_min_sync(unsigned mask, int v) {
    return kaiyuan_emu::warp_reduce("__reduce_min_sync", mask, v, [](int a, int b) { return a < b ? a : b; });
}
inline unsigned __reduce_max_sync(unsigned mask, unsigned v) {
    return kaiyuan_emu::warp_reduce("__reduce_max_sync", mask, v, [](unsigned a, unsigned b) { return a > b ? a : b; });
}
inline int __reduce_max_sync(unsigned mask, int v) {
    return kaiyuan_emu::warp_reduce("__reduce_max_sync", mask, v, [](int a, int b) { return a > b ? a : b; });
}

// ---- vector types ---------------------------------------------------------------------
#define KAIYUAN_EMU_VECTOR2(NAME, T, ALIGN)                                                           \
    struct __attribute__((aligned(ALIGN))) NAME {                                                     \
        T x, y;                                                                                       \
    };                                                                                                \
    inline NAME make_##NAME(T x, T y) { return NAME{x, y}; }
#define KAIYUAN_EMU_VECTOR3(NAME, T)                                                                  \
    struct NAME {                                                                                     \
        T x, y, z;                                                                                    \
    };                                                                                                \
    inline NAME make_##NAME(T x, T y, T z) { return NAME{x, y, z}; }
#define KAIYUAN_EMU_VECTOR4(NAME, T, ALIGN)                                                           \
    struct __attribute__((aligned(ALIGN))) NAME {                                                     \
        T x, y, z, w;                                                                                 \
    };                                                                                                \
    inline NAME make_##NAME(T x, T y, T z, T w) { return NAME{x, y, z, w}; }

KAIYUAN_EMU_VECTOR2(char2, signed char, 2)
KAIYUAN_EMU_VECTOR2(uchar2, unsigned char, 2)
KAIYUAN_EMU_VECTOR4(char4, signed char, 4)
KAIYUAN_EMU_VECTOR4(uchar4, unsigned char, 4)
KAIYUAN_EMU_VECTOR2(short2, short, 4)
KAIYUAN_EMU_VECTOR2(ushort2, unsigned short, 4)
KAIYUAN_EMU_VECTOR4(short4, short, 8)
KAIYUAN_EMU_VECTOR4(ushort4, unsigned short, 8)
KAIYUAN_EMU_VECTOR2(int2, int, 8)
KAIYUAN_EMU_VECTOR3(int3, int)
KAIYUAN_EMU_VECTOR4(int4, int, 16)
KAIYUAN_EMU_VECTOR2(uint2, unsigned int, 8)
KAIYUAN_EMU_VECTOR4(uint4, unsigned int, 16)
KAIYUAN_EMU_VECTOR2(float2, float, 8)
KAIYUAN_EMU_VECTOR3(float3, float)
KAIYUAN_EMU_VECTOR4(float4, float, 16)
KAIYUAN_EMU_VECTOR2(longlong2, long long, 16)
KAIYUAN_EMU_VECTOR2(ulonglong2, unsigned long long, 16)
KAIYUAN_EMU_VECTOR2(double2, double, 16)
inline uint3 make_uint3(unsigned x, unsigned y, unsigned z) { return uint3{x, y, z}; }

// ---- min / max -------------------------------------------------------------------------
// CUDA's overloads: the usual arithmetic conversions, fmin/fmax for floats.
template <typename A, typename B,
          typename = std::enable_if_t<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value>>
inline std::common_type_t<A, B> min(A a, B b) {
    using C = std::common_type_t<A, B>;
    if constexpr (std::is_floating_point<C>::value) return std::fmin(static_cast<C>(a), static_cast<C>(b));
    else return static_cast<C>(a) < static_cast<C>(b) ? static_cast<C>(a) : static_cast<C>(b);
}
template <typename A, typename B,
          typename = std::enable_if_t<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value>>
inline std::common_type_t<A, B> max(A a, B b) {
    using C = std::common_type_t<A, B>;
    if constexpr (std::is_floating_point<C>::value) return std::fmax(static_cast<C>(a), static_cast<C>(b));
    else return static_cast<C>(a) > static_cast<C>(b) ? static_cast<C>(a) : static_cast<C>(b);
}

// ---- math ---------------------------------------------------------------------------------
// The C library's functions (expf, logf, tanhf, erff, sqrtf, fmaxf, …) are
// used as they are; the CUDA-only ones follow. Fast-math intrinsics
// (__expf …) are computed exactly here, within the hardware's error bounds.
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float rcbrtf(float x) { return 1.0f / cbrtf(x); }
inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return exp10f(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log10f(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline void __sincosf(float x, float* s, float* c) { sincosf(x, s, c); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __frsqrt_rn(float x) { return 1.0f / sqrtf(x); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __saturatef(float x) { return x != x ? 0.0f : (x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x)); }
inline float normcdff(float x) { return 0.5f * erfcf(-x * 0.70710678118654752f); }
inline float fdividef(float a, float b) { return a / b; }

inline int __float_as_int(float x) { return kaiyuan_emu::from_word<int>(kaiyuan_emu::to_word(x)); }
inline unsigned __float_as_uint(float x) { return kaiyuan_emu::from_word<unsigned>(kaiyuan_emu::to_word(x)); }
inline float __int_as_float(int x) { return kaiyuan_emu::from_word<float>(kaiyuan_emu::to_word(x)); }
inline float __uint_as_float(unsigned x) { return kaiyuan_emu::from_word<float>(kaiyuan_emu::to_word(x)); }
inline long long __double_as_longlong(double x) { return kaiyuan_emu::from_word<long long>(kaiyuan_emu::to_word(x)); }
inline double __longlong_as_double(long long x) { return kaiyuan_emu::from_word<double>(kaiyuan_emu::to_word(x)); }
inline int __float2int_rn(float x) { return static_cast<int>(nearbyintf(x)); }
inline int __float2int_rz(float x) { return static_cast<int>(x); }
inline int __float2int_rd(float x) { return static_cast<int>(floorf(x)); }
inline int __float2int_ru(float x) { return static_cast<int>(ceilf(x)); }
inline unsigned __float2uint_rn(float x) { return static_cast<unsigned>(nearbyintf(x)); }
inline float __int2float_rn(int x) { return static_cast<float>(x); }
inline float __uint2float_rn(unsigned x) { return static_cast<float>(x); }

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
    unsigned r = 0;
    for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
    return r;
}
inline unsigned __umulhi(unsigned a, unsigned b) { return static_cast<unsigned>((1ull * a * b) >> 32); }
inline int __mulhi(int a, int b) { return static_cast<int>((1ll * a * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return static_cast<unsigned long long>((static_cast<unsigned __int128>(a) * b) >> 64);
}
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    const unsigned long long bytes = (static_cast<unsigned long long>(y) << 32) | x;
    unsigned r = 0;
    for (int i = 0; i < 4; ++i) r |= static_cast<unsigned>((bytes >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
    return r;
}
inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned shift) {
    const unsigned long long both = (static_cast<unsigned long long>(hi) << 32) | lo;
    return static_cast<unsigned>((both << (shift & 31)) >> 32);
}
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned shift) {
    const unsigned long long both = (static_cast<unsigned long long>(hi) << 32) | lo;
    return static_cast<unsigned>(both >> (shift & 31));
}
template <typename T>
inline T __ldg(const T* p) {
    return *p;
}
template <typename T>
inline T __ldcs(const T* p) {
    return *p;
}
template <typename T>
inline void __stcs(T* p, T v) {
    *p = v;
}
inline unsigned long long __cvta_generic_to_shared(const void* p) { return reinterpret_cast<uintptr_t>(p); }
inline long long clock64() { return 0; }
inline int clock() { return 0; }

// ---- atomics ------------------------------------------------------------------------------
// Fibers switch only at barriers and warp calls, and one launch runs on one
// OS thread: a plain read-modify-write is atomic.
#define KAIYUAN_EMU_ATOMIC(NAME, T, EXPR)                                                            \
    inline T NAME(T* address, T value) {                                                             \
        const T old = *address;                                                                      \
        *address = (EXPR);                                                                           \
        return old;                                                                                  \
    }
#define KAIYUAN_EMU_ATOMIC_ARITH(T)                                                                  \
    KAIYUAN_EMU_ATOMIC(atomicAdd, T, old + value)                                                    \
    KAIYUAN_EMU_ATOMIC(atomicExch, T, value)
#define KAIYUAN_EMU_ATOMIC_INT(T)                                                                    \
    KAIYUAN_EMU_ATOMIC_ARITH(T)                                                                      \
    KAIYUAN_EMU_ATOMIC(atomicSub, T, old - value)                                                    \
    KAIYUAN_EMU_ATOMIC(atomicMin, T, value < old ? value : old)                                      \
    KAIYUAN_EMU_ATOMIC(atomicMax, T, value > old ? value : old)                                      \
    KAIYUAN_EMU_ATOMIC(atomicAnd, T, old & value)                                                    \
    KAIYUAN_EMU_ATOMIC(atomicOr, T, old | value)                                                     \
    KAIYUAN_EMU_ATOMIC(atomicXor, T, old ^ value)                                                    \
    inline T atomicCAS(T* address, T compare, T value) {                                             \
        const T old = *address;                                                                      \
        if (old == compare) *address = value;                                                        \
        return old;                                                                                  \
    }
KAIYUAN_EMU_ATOMIC_INT(int)
KAIYUAN_EMU_ATOMIC_INT(unsigned int)
KAIYUAN_EMU_ATOMIC_INT(unsigned long long)
KAIYUAN_EMU_ATOMIC_INT(long long)
KAIYUAN_EMU_ATOMIC_ARITH(float)
KAIYUAN_EMU_ATOMIC_ARITH(double)
inline unsigned atomicInc(unsigned* address, unsigned limit) {
    const unsigned old = *address;
    *address = old >= limit ? 0u : old + 1u;
    return old;
}
inline unsigned atomicDec(unsigned* address, unsigned limit) {
    const unsigned old = *address;
    *address = (old == 0u || old > limit) ? limit : old - 1u;
    return old;
}
#undef KAIYUAN_EMU_ATOMIC
#undef KAIYUAN_EMU_ATOMIC_ARITH
#undef KAIYUAN_EMU_ATOMIC_INT
