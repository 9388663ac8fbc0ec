// cuda_fp16.h for the kaiyuan CUDA emulator: __half and __half2 as 16-bit
// storage with exact conversions (round to nearest, ties to even, as the
// hardware's cvt.rn.f16.f32). Arithmetic goes through float and rounds once.
#pragma once

#include <cstdint>
#include <cstring>

struct __half {
    unsigned short __x;
    __half() = default;
    __half(float f);  // NOLINT: CUDA's implicit conversions
    __half(double d) : __half(static_cast<float>(d)) {}
    __half(int i) : __half(static_cast<float>(i)) {}
    operator float() const;
};

struct __attribute__((aligned(4))) __half2 {
    __half x, y;
};

typedef __half half;
typedef __half2 half2;
typedef __half __nv_half;
typedef __half2 __nv_half2;

namespace kaiyuan_emu {

inline unsigned int float_bits(float f) {
    unsigned int u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float bits_float(unsigned int u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// Round to nearest even; NaN becomes the canonical 0x7fff, as on the GPU.
inline unsigned short f32_to_f16_bits(float f) {
    const unsigned int x = float_bits(f);
    const unsigned short sign = static_cast<unsigned short>((x >> 16) & 0x8000u);
    const unsigned int ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return 0x7fff;
    if (ax >= 0x477ff000u) return sign | 0x7c00u;  // ≥ 65520 (and ∞) rounds to ∞
    if (ax < 0x38800000u) {  // below 2^-14: a subnormal half (or zero), in units of 2^-24
        const unsigned int exponent = ax >> 23;
        if (exponent < 102) return sign;  // below 2^-25: rounds to zero
        const unsigned int mantissa = (ax & 0x7fffffu) | 0x800000u;
        const unsigned int shift = 126 - exponent;  // value = mantissa · 2^(exponent-150); units of 2^-24
        unsigned int q = mantissa >> shift;
        const unsigned int rest = mantissa & ((1u << shift) - 1);
        const unsigned int half_unit = 1u << (shift - 1);
        if (rest > half_unit || (rest == half_unit && (q & 1))) ++q;
        return sign | static_cast<unsigned short>(q);
    }
    unsigned int h = ((((ax >> 23) - 112) << 10) | ((ax >> 13) & 0x3ffu));
    const unsigned int rest = ax & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1))) ++h;
    return sign | static_cast<unsigned short>(h);
}

inline float f16_bits_to_f32(unsigned short h) {
    const unsigned int sign = (h & 0x8000u) << 16;
    const unsigned int exponent = (h >> 10) & 0x1fu;
    const unsigned int mantissa = h & 0x3ffu;
    if (exponent == 0) {
        const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;  // 2^-24, exact
        return sign ? -magnitude : magnitude;
    }
    if (exponent == 31) return bits_float(sign | 0x7f800000u | (mantissa << 13));
    return bits_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

}  // namespace kaiyuan_emu

inline __half __ushort_as_half(unsigned short bits) {
    __half h;
    h.__x = bits;
    return h;
}
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __half __short_as_half(short bits) { return __ushort_as_half(static_cast<unsigned short>(bits)); }
inline short __half_as_short(__half h) { return static_cast<short>(h.__x); }
inline __half __float2half_rn(float f) { return __ushort_as_half(kaiyuan_emu::f32_to_f16_bits(f)); }
inline __half __float2half(float f) { return __float2half_rn(f); }
inline float __half2float(__half h) { return kaiyuan_emu::f16_bits_to_f32(h.__x); }
inline __half __double2half(double d) { return __float2half_rn(static_cast<float>(d)); }
inline __half __int2half_rn(int i) { return __float2half_rn(static_cast<float>(i)); }
inline int __half2int_rz(__half h) { return static_cast<int>(__half2float(h)); }

inline __half::__half(float f) : __x(kaiyuan_emu::f32_to_f16_bits(f)) {}
inline __half::operator float() const { return kaiyuan_emu::f16_bits_to_f32(__x); }

inline __half2 __halves2half2(__half lo, __half hi) { return __half2{lo, hi}; }
inline __half2 __floats2half2_rn(float lo, float hi) { return __half2{__float2half_rn(lo), __float2half_rn(hi)}; }
inline __half2 __float2half2_rn(float f) { return __half2{__float2half_rn(f), __float2half_rn(f)}; }
inline float __low2float(__half2 h) { return __half2float(h.x); }
inline float __high2float(__half2 h) { return __half2float(h.y); }
inline __half __low2half(__half2 h) { return h.x; }
inline __half __high2half(__half2 h) { return h.y; }
inline float2 __half22float2(__half2 h) { return make_float2(__half2float(h.x), __half2float(h.y)); }
inline __half2 __float22half2_rn(float2 f) { return __floats2half2_rn(f.x, f.y); }

inline __half __hadd(__half a, __half b) { return __float2half_rn(__half2float(a) + __half2float(b)); }
inline __half __hsub(__half a, __half b) { return __float2half_rn(__half2float(a) - __half2float(b)); }
inline __half __hmul(__half a, __half b) { return __float2half_rn(__half2float(a) * __half2float(b)); }
inline __half __hdiv(__half a, __half b) { return __float2half_rn(__half2float(a) / __half2float(b)); }
inline __half __hfma(__half a, __half b, __half c) {
    return __float2half_rn(static_cast<float>(
        static_cast<double>(__half2float(a)) * static_cast<double>(__half2float(b)) + __half2float(c)));
}
inline __half __hneg(__half a) { return __ushort_as_half(a.__x ^ 0x8000u); }
inline __half __hmax(__half a, __half b) { return __half2float(a) >= __half2float(b) ? a : b; }
inline __half __hmin(__half a, __half b) { return __half2float(a) <= __half2float(b) ? a : b; }
inline bool __hisnan(__half a) { return (a.__x & 0x7fffu) > 0x7c00u; }
inline bool __hisinf(__half a) { return (a.__x & 0x7fffu) == 0x7c00u; }

inline __half operator+(__half a, __half b) { return __hadd(a, b); }
inline __half operator-(__half a, __half b) { return __hsub(a, b); }
inline __half operator*(__half a, __half b) { return __hmul(a, b); }
inline __half operator/(__half a, __half b) { return __hdiv(a, b); }
inline __half operator-(__half a) { return __hneg(a); }
inline __half& operator+=(__half& a, __half b) { return a = __hadd(a, b); }
inline __half& operator-=(__half& a, __half b) { return a = __hsub(a, b); }
inline __half& operator*=(__half& a, __half b) { return a = __hmul(a, b); }
inline __half& operator/=(__half& a, __half b) { return a = __hdiv(a, b); }
inline bool operator==(__half a, __half b) { return __half2float(a) == __half2float(b); }
inline bool operator!=(__half a, __half b) { return __half2float(a) != __half2float(b); }
inline bool operator<(__half a, __half b) { return __half2float(a) < __half2float(b); }
inline bool operator>(__half a, __half b) { return __half2float(a) > __half2float(b); }
inline bool operator<=(__half a, __half b) { return __half2float(a) <= __half2float(b); }
inline bool operator>=(__half a, __half b) { return __half2float(a) >= __half2float(b); }

inline __half atomicAdd(__half* address, __half value) {
    const __half old = *address;
    *address = __hadd(old, value);
    return old;
}
inline __half2 atomicAdd(__half2* address, __half2 value) {
    const __half2 old = *address;
    *address = __half2{__hadd(old.x, value.x), __hadd(old.y, value.y)};
    return old;
}
