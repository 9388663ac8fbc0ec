// elementwise.cu: affine, unary maps and their derivatives, binary maps with
// broadcasting through strides, strided copies (views made contiguous,
// pieces written into a larger tensor), dtype casts.
//
// Unary op codes (UNARY_* in src/ops/elementwise.rs): 0 exp, 1 silu,
// 2 gelu_tanh, 3 gelu_erf. Binary op codes: 0 add, 1 sub, 2 mul, 3 div.

#define GRID_STRIDE(i, n) \
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < (n); i += (u64)gridDim.x * blockDim.x)

__device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + __expf(-x)); }

// sqrt(2/pi)
#define GELU_K 0.7978845608028654f

__device__ __forceinline__ float unary_op(int op, float x) {
    switch (op) {
        case 0: return expf(x);
        case 1: return x / (1.0f + expf(-x));
        case 2: {
            const float u = GELU_K * (x + 0.044715f * x * x * x);
            return 0.5f * x * (1.0f + tanhf(u));
        }
        default: return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
    }
}

// d op(x) / dx
__device__ __forceinline__ float unary_derivative(int op, float x) {
    switch (op) {
        case 0: return expf(x);
        case 1: {
            const float s = 1.0f / (1.0f + expf(-x));
            return s * (1.0f + x * (1.0f - s));
        }
        case 2: {
            const float u = GELU_K * (x + 0.044715f * x * x * x);
            const float t = tanhf(u);
            const float du = GELU_K * (1.0f + 3.0f * 0.044715f * x * x);
            return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du;
        }
        default: {
            const float cdf = 0.5f * (1.0f + erff(x * 0.7071067811865476f));
            const float pdf = expf(-0.5f * x * x) * 0.3989422804014327f;
            return cdf + x * pdf;
        }
    }
}

__device__ __forceinline__ float binary_op(int op, float a, float b) {
    switch (op) {
        case 0: return a + b;
        case 1: return a - b;
        case 2: return a * b;
        default: return a / b;
    }
}

// x, y: (n)
template <typename T>
__device__ void affine_impl(u64 n, const T* x, T* y, float mul, float add) {
    GRID_STRIDE(i, n) y[i] = from_f32<T>(to_f32(x[i]) * mul + add);
}

// x, y: (n)
template <typename T>
__device__ void unary_impl(u64 n, int op, const T* x, T* y) {
    GRID_STRIDE(i, n) y[i] = from_f32<T>(unary_op(op, to_f32(x[i])));
}

// x, dy, dx: (n); dx = op'(x) · dy
template <typename T>
__device__ void unary_backward_impl(u64 n, int op, const T* x, const T* dy, T* dx) {
    GRID_STRIDE(i, n) dx[i] = from_f32<T>(unary_derivative(op, to_f32(x[i])) * to_f32(dy[i]));
}

// a, b, y: (n), same shape.
template <typename T>
__device__ void binary_contiguous_impl(u64 n, int op, const T* a, const T* b, T* y) {
    GRID_STRIDE(i, n) y[i] = from_f32<T>(binary_op(op, to_f32(a[i]), to_f32(b[i])));
}

// y: (n) contiguous with dims info[0..rank]; a and b read at strides
// info[rank..2·rank] and info[2·rank..3·rank] (0 along broadcast axes).
template <typename T>
__device__ void binary_strided_impl(u64 n, int op, int rank, const u64* info, const T* a, const T* b, T* y) {
    const u64* dims = info;
    const u64* a_strides = info + rank;
    const u64* b_strides = info + 2 * rank;
    GRID_STRIDE(i, n) {
        u64 rest = i, a_offset = 0, b_offset = 0;
        for (int axis = rank - 1; axis >= 0; --axis) {
            const u64 coordinate = rest % dims[axis];
            rest /= dims[axis];
            a_offset += coordinate * a_strides[axis];
            b_offset += coordinate * b_strides[axis];
        }
        y[i] = from_f32<T>(binary_op(op, to_f32(a[a_offset]), to_f32(b[b_offset])));
    }
}

// Copies the n elements of a strided view of x into a strided view of y:
// element i, with coordinates c over dims info[0..rank] (row-major), is read
// at x[x_offset + Σ c·info[rank + axis]] and written at
// y[y_offset + Σ c·info[2·rank + axis]]. Makes a view contiguous (y strides
// row-major) or writes a piece into a larger tensor (concat, padding).
template <typename T>
__device__ void copy_strided_impl(u64 n, int rank, const u64* info, const T* x, u64 x_offset, T* y,
                                  u64 y_offset) {
    const u64* dims = info;
    const u64* x_strides = info + rank;
    const u64* y_strides = info + 2 * rank;
    GRID_STRIDE(i, n) {
        u64 rest = i, from = x_offset, to = y_offset;
        for (int axis = rank - 1; axis >= 0; --axis) {
            const u64 coordinate = rest % dims[axis];
            rest /= dims[axis];
            from += coordinate * x_strides[axis];
            to += coordinate * y_strides[axis];
        }
        y[to] = x[from];
    }
}

#define ELEMENTWISE(T, S)                                                                          \
    extern "C" __global__ void affine_##S(u64 n, const T* x, T* y, float mul, float add) {         \
        affine_impl<T>(n, x, y, mul, add);                                                         \
    }                                                                                              \
    extern "C" __global__ void unary_##S(u64 n, int op, const T* x, T* y) { unary_impl<T>(n, op, x, y); } \
    extern "C" __global__ void unary_backward_##S(u64 n, int op, const T* x, const T* dy, T* dx) { \
        unary_backward_impl<T>(n, op, x, dy, dx);                                                  \
    }                                                                                              \
    extern "C" __global__ void binary_contiguous_##S(u64 n, int op, const T* a, const T* b, T* y) { \
        binary_contiguous_impl<T>(n, op, a, b, y);                                                 \
    }                                                                                              \
    extern "C" __global__ void binary_strided_##S(u64 n, int op, int rank, const u64* info, const T* a, \
                                                  const T* b, T* y) {                              \
        binary_strided_impl<T>(n, op, rank, info, a, b, y);                                        \
    }                                                                                              \
    extern "C" __global__ void copy_strided_##S(u64 n, int rank, const u64* info, const T* x,      \
                                                u64 x_offset, T* y, u64 y_offset) {                \
        copy_strided_impl<T>(n, rank, info, x, x_offset, y, y_offset);                             \
    }
FOR_EACH_FLOAT(ELEMENTWISE)
// Token ids (u32) are copied the same way.
extern "C" __global__ void copy_strided_u32(u64 n, int rank, const u64* info, const unsigned* x, u64 x_offset,
                                            unsigned* y, u64 y_offset) {
    copy_strided_impl<unsigned>(n, rank, info, x, x_offset, y, y_offset);
}

// x: (n) of From, y: (n) of To, rounding to nearest even.
template <typename From, typename To>
__device__ void cast_impl(u64 n, const From* x, To* y) {
    GRID_STRIDE(i, n) y[i] = from_f32<To>(to_f32(x[i]));
}

#define CAST(FROM_T, FROM_S, TO_T, TO_S) \
    extern "C" __global__ void cast_##FROM_S##_##TO_S(u64 n, const FROM_T* x, TO_T* y) { cast_impl<FROM_T, TO_T>(n, x, y); }
CAST(float, f32, bf16, bf16)
CAST(float, f32, f16, f16)
CAST(bf16, bf16, float, f32)
CAST(f16, f16, float, f32)
CAST(bf16, bf16, f16, f16)
CAST(f16, f16, bf16, bf16)
