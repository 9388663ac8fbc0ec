// reduce.cu: sums, maxima and argmax along one axis; softmax and
// log-softmax over the last axis, forward and backward.
//
// An axis reduction sees x as (outer, len, inner) and writes y (outer, inner).
// The last axis (inner == 1) gets one block per row; other axes one thread
// per output element, reading coalesced along inner.
// Softmax, log-softmax and their backward keep the row in registers when it
// fits (common.cuh, "Rows in registers"), reading it once; otherwise a scalar
// loop reads it twice, the forward with an online max and sum.

// x: (rows, cols) → y: (rows); op 0 sum, 1 max, 2 mean.
template <typename T>
__device__ void reduce_rows_impl(int rows, int cols, int op, const T* x, T* y) {
    const int row = blockIdx.x;
    if (row >= rows) return;
    const T* in = x + (u64)row * cols;
    float acc = (op == 1) ? -CUDART_INF_F : 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        const float v = to_f32(in[j]);
        acc = (op == 1) ? fmaxf(acc, v) : acc + v;
    }
    acc = (op == 1) ? block_max(acc) : block_sum(acc);
    if (threadIdx.x == 0) y[row] = from_f32<T>(op == 2 ? acc / (float)cols : acc);
}

// x: (outer, len, inner) → y: (outer, inner); op as reduce_rows.
template <typename T>
__device__ void reduce_axis_impl(u64 outer, int len, u64 inner, int op, const T* x, T* y) {
    const u64 total = outer * inner;
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
        const u64 o = i / inner, k = i % inner;
        const T* in = x + o * (u64)len * inner + k;
        float acc = (op == 1) ? -CUDART_INF_F : 0.0f;
        for (int j = 0; j < len; ++j) {
            const float v = to_f32(in[(u64)j * inner]);
            acc = (op == 1) ? fmaxf(acc, v) : acc + v;
        }
        y[i] = from_f32<T>(op == 2 ? acc / (float)len : acc);
    }
}

// x: (rows, cols) → index of the first maximum of each row: (rows) u32.
template <typename T>
__device__ void argmax_rows_impl(int rows, int cols, const T* x, u32* y) {
    __shared__ float best_values[32];
    __shared__ int best_indices[32];
    const int row = blockIdx.x;
    if (row >= rows) return;
    const T* in = x + (u64)row * cols;
    float best = -CUDART_INF_F;
    int index = 0x7fffffff;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        const float v = to_f32(in[j]);
        // NaN never wins; ties keep the smaller index (j grows per thread).
        if (v > best) { best = v; index = j; }
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        const float other = __shfl_xor_sync(0xffffffffu, best, offset);
        const int other_index = __shfl_xor_sync(0xffffffffu, index, offset);
        if (other > best || (other == best && other_index < index)) { best = other; index = other_index; }
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) { best_values[warp] = best; best_indices[warp] = index; }
    __syncthreads();
    if (warp == 0) {
        const bool live = lane < (int)(blockDim.x >> 5);
        best = live ? best_values[lane] : -CUDART_INF_F;
        index = live ? best_indices[lane] : 0x7fffffff;
#pragma unroll
        for (int offset = 16; offset > 0; offset >>= 1) {
            const float other = __shfl_xor_sync(0xffffffffu, best, offset);
            const int other_index = __shfl_xor_sync(0xffffffffu, index, offset);
            if (other > best || (other == best && other_index < index)) { best = other; index = other_index; }
        }
        // A row of NaN (or all -inf) reports index 0, as the CPU does.
        if (lane == 0) y[row] = (index == 0x7fffffff) ? 0u : (u32)index;
    }
}

// x, y: (rows, cols); y = softmax(x) or log_softmax(x) along cols.
template <typename T>
__device__ void softmax_impl(int rows, int cols, int log, const T* x, T* y) {
    const int row = blockIdx.x;
    if (row >= rows) return;
    const T* in = x + (u64)row * cols;
    T* out = y + (u64)row * cols;
    constexpr int N = Vec16<T>::N, V = ROW_ELEMS / N;
    if (row_in_registers<T>(cols, V) && aligned16(x) && aligned16(y)) {
        // The row in registers: its maximum, then exp(x − max) once per
        // element (kept for the softmax; the log-softmax keeps x − max).
        // −inf elements give exp = 0 and a −inf maximum only when the whole
        // row is −inf, which gives NaN as the scalar path does.
        const int vecs = cols / N;
        const uint4* xv = reinterpret_cast<const uint4*>(in);
        uint4* yv = reinterpret_cast<uint4*>(out);
        float v[V][N];
        float m = -CUDART_INF_F;
#pragma unroll
        for (int i = 0; i < V; ++i) {
            const int k = threadIdx.x + i * blockDim.x;
            if (k < vecs) {
                Vec16<T>::unpack(xv[k], v[i]);
#pragma unroll
                for (int e = 0; e < N; ++e) m = fmaxf(m, v[i][e]);
            }
        }
        const float row_max = block_max(m);
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < V; ++i) {
            const int k = threadIdx.x + i * blockDim.x;
            if (k < vecs) {
#pragma unroll
                for (int e = 0; e < N; ++e) {
                    const float shifted = v[i][e] - row_max, ex = expf(shifted);
                    s += ex;
                    v[i][e] = log ? shifted : ex;
                }
            }
        }
        const float sum = block_sum(s);
        const float log_sum = logf(sum), inverse = 1.0f / sum;
#pragma unroll
        for (int i = 0; i < V; ++i) {
            const int k = threadIdx.x + i * blockDim.x;
            if (k < vecs) {
#pragma unroll
                for (int e = 0; e < N; ++e) v[i][e] = log ? v[i][e] - log_sum : v[i][e] * inverse;
                yv[k] = Vec16<T>::pack(v[i]);
            }
        }
        return;
    }
    const float2 ms = row_max_sumexp(in, cols);
    const float log_sum = logf(ms.y);
    const float inverse = 1.0f / ms.y;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        const float shifted = to_f32(in[j]) - ms.x;
        out[j] = from_f32<T>(log ? shifted - log_sum : expf(shifted) * inverse);
    }
}

// y, dy, dx: (rows, cols), y the forward output.
// softmax:     dx = y · (dy − Σ dy·y)
// log_softmax: dx = dy − exp(y) · Σ dy
template <typename T>
__device__ void softmax_backward_impl(int rows, int cols, int log, const T* y, const T* dy, T* dx) {
    const int row = blockIdx.x;
    if (row >= rows) return;
    const u64 base = (u64)row * cols;
    constexpr int N = Vec16<T>::N, V = ROW_VECS_PACKED;
    if (row_in_registers<T>(cols, V) && aligned16(y) && aligned16(dy) && aligned16(dx)) {
        // y and dy stay packed in registers between the two passes.
        const int vecs = cols / N;
        const uint4* yv = reinterpret_cast<const uint4*>(y + base);
        const uint4* gv = reinterpret_cast<const uint4*>(dy + base);
        uint4* dxv = reinterpret_cast<uint4*>(dx + base);
        uint4 ys[V], gs[V];
        float partial = 0.0f;
#pragma unroll
        for (int i = 0; i < V; ++i) {
            const int k = threadIdx.x + i * blockDim.x;
            if (k < vecs) {
                ys[i] = yv[k];
                gs[i] = gv[k];
                float yf[N], gf[N];
                Vec16<T>::unpack(ys[i], yf);
                Vec16<T>::unpack(gs[i], gf);
#pragma unroll
                for (int e = 0; e < N; ++e) partial += log ? gf[e] : gf[e] * yf[e];
            }
        }
        const float total = block_sum(partial);
#pragma unroll
        for (int i = 0; i < V; ++i) {
            const int k = threadIdx.x + i * blockDim.x;
            if (k < vecs) {
                float yf[N], gf[N];
                Vec16<T>::unpack(ys[i], yf);
                Vec16<T>::unpack(gs[i], gf);
#pragma unroll
                for (int e = 0; e < N; ++e) gf[e] = log ? gf[e] - expf(yf[e]) * total : yf[e] * (gf[e] - total);
                dxv[k] = Vec16<T>::pack(gf);
            }
        }
        return;
    }
    float partial = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        const float g = to_f32(dy[base + j]);
        partial += log ? g : g * to_f32(y[base + j]);
    }
    const float total = block_sum(partial);
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        const float g = to_f32(dy[base + j]), out = to_f32(y[base + j]);
        dx[base + j] = from_f32<T>(log ? g - expf(out) * total : out * (g - total));
    }
}

// __launch_bounds__(1024): the launchers may give a row 1024 threads, so the
// kernels holding a row in registers must fit in 64 registers per thread.
#define REDUCE(T, S)                                                                                              \
    extern "C" __global__ void reduce_rows_##S(int rows, int cols, int op, const T* x, T* y) {                    \
        reduce_rows_impl<T>(rows, cols, op, x, y);                                                                \
    }                                                                                                             \
    extern "C" __global__ void reduce_axis_##S(u64 outer, int len, u64 inner, int op, const T* x, T* y) {         \
        reduce_axis_impl<T>(outer, len, inner, op, x, y);                                                         \
    }                                                                                                             \
    extern "C" __global__ void argmax_rows_##S(int rows, int cols, const T* x, u32* y) {                          \
        argmax_rows_impl<T>(rows, cols, x, y);                                                                    \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(1024)                                                            \
        softmax_##S(int rows, int cols, int log, const T* x, T* y) {                                              \
        softmax_impl<T>(rows, cols, log, x, y);                                                                   \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(1024)                                                            \
        softmax_backward_##S(int rows, int cols, int log, const T* y, const T* dy, T* dx) {                       \
        softmax_backward_impl<T>(rows, cols, log, y, dy, dx);                                                     \
    }
FOR_EACH_FLOAT(REDUCE)
