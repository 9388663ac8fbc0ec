// rope.cu: rotary position embedding of the first rotary_dim features of
// each head; the rest pass through. sign = −1 rotates backwards (the
// gradient: the rotation is orthogonal).
//
// x, y: (outer, t, d); cos, sin: (t, rotary_dim/2) f32, the angle table
// rows of this call's positions. interleaved = 0: feature i pairs with
// i + rotary_dim/2 (HF LLaMA, Qwen); 1: feature 2i with 2i + 1 (GPT-J, GLM).
// One thread per pair (or per passed-through feature).
template <typename T>
__device__ void rope_impl(u64 outer, int t, int d, int rotary_dim, int interleaved, float sign, const T* x,
                          const float* cos_table, const float* sin_table, T* y) {
    const int half = rotary_dim / 2;
    const int rest = d - rotary_dim;
    const int per_row = half + rest;  // work items per (outer, t) row
    const u64 total = outer * (u64)t * per_row;
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
        const u64 row = i / per_row;
        const int item = (int)(i % per_row);
        const int step = (int)(row % t);
        const u64 base = row * d;
        if (item < half) {
            const float c = cos_table[step * half + item];
            const float s = sign * sin_table[step * half + item];
            const int first = interleaved ? 2 * item : item;
            const int second = interleaved ? 2 * item + 1 : item + half;
            const float a = to_f32(x[base + first]), b = to_f32(x[base + second]);
            y[base + first] = from_f32<T>(a * c - b * s);
            y[base + second] = from_f32<T>(b * c + a * s);
        } else {
            const int feature = rotary_dim + (item - half);
            y[base + feature] = x[base + feature];
        }
    }
}

#define ROPE(T, S)                                                                                      \
    extern "C" __global__ void rope_##S(u64 outer, int t, int d, int rotary_dim, int interleaved, float sign, \
                                        const T* x, const float* cos_table, const float* sin_table, T* y) { \
        rope_impl<T>(outer, t, d, rotary_dim, interleaved, sign, x, cos_table, sin_table, y);           \
    }
FOR_EACH_FLOAT(ROPE)
