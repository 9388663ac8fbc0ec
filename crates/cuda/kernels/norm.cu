// norm.cu: RMSNorm and LayerNorm over the last axis, forward and backward.
// Statistics in f32. The forwards run one block per row; the backwards a
// capped grid of blocks, each looping over rows blockIdx.x + k·gridDim.x,
// and accumulate the weight and bias gradients into f32 buffers (zeroed by
// the launcher) with atomics: in the register fast path one per column per
// block (each thread sums its columns over the block's rows in registers),
// in the scalar loop one per element. Every kernel keeps the row in
// registers when it fits (common.cuh, "Rows in registers": cols a multiple
// of the vector width, 16-byte aligned pointers, at most ROW_ELEMS f32 or
// ROW_VECS_PACKED vectors per input per thread), reading it once; otherwise
// a scalar loop reads it twice (three times for the LayerNorm forward).

// x, y: (rows, cols); w: (cols); rstd: (rows) f32, saved for the backward.
// y = x · rstd · w with rstd = 1/√(mean(x²) + eps).
template <typename T>
__device__ void rms_norm_impl(int rows, int cols, float eps, const T* x, const T* w, T* y, float* rstd) {
    const int row = blockIdx.x;
    if (row >= rows) return;
    const u64 base = (u64)row * cols;
    constexpr int N = Vec16<T>::N, V = ROW_ELEMS / N;
    if (row_in_registers<T>(cols, V) && aligned16(x) && aligned16(w) && aligned16(y)) {
        const int vecs = cols / N;
        const uint4* xv = reinterpret_cast<const uint4*>(x + base);
        const uint4* wv = reinterpret_cast<const uint4*>(w);
        uint4* yv = reinterpret_cast<uint4*>(y + base);
        float v[V][N];
        float squares = 0.0f;
#pragma unroll
        for (int i = 0; i < V; ++i) {
            const int k = threadIdx.x + i * blockDim.x;
            if (k < vecs) {
                Vec16<T>::unpack(xv[k], v[i]);
#pragma unroll
                for (int e = 0; e < N; ++e) squares += v[i][e] * v[i][e];
            }
        }
        const float r = rsqrtf(block_sum(squares) / (float)cols + eps);
#pragma unroll
        for (int i = 0; i < V; ++i) {
            const int k = threadIdx.x + i * blockDim.x;
            if (k < vecs) {
                float wf[N];
                Vec16<T>::unpack(wv[k], wf);
#pragma unroll
                for (int e = 0; e < N; ++e) v[i][e] = v[i][e] * r * wf[e];
                yv[k] = Vec16<T>::pack(v[i]);
            }
        }
        if (threadIdx.x == 0) rstd[row] = r;
        return;
    }
    float squares = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        const float v = to_f32(x[base + j]);
        squares += v * v;
    }
    const float r = rsqrtf(block_sum(squares) / (float)cols + eps);
    for (int j = threadIdx.x; j < cols; j += blockDim.x)
        y[base + j] = from_f32<T>(to_f32(x[base + j]) * r * to_f32(w[j]));
    if (threadIdx.x == 0) rstd[row] = r;
}

// dx = rstd·(w·dy) − x·rstd³·Σ(w·dy·x)/cols;  dw += dy·x·rstd.
// A block handles rows blockIdx.x, blockIdx.x + gridDim.x, … (the launcher
// caps the grid, norm.rs BACKWARD_BLOCKS). In the register fast path each
// thread owns fixed columns and sums their dw over its block's rows in
// registers, then adds them to dw once (one atomicAdd per column per block);
// the scalar loop adds each element's term with its own atomicAdd.
template <typename T>
__device__ void rms_norm_backward_impl(int rows, int cols, const T* x, const T* w, const float* rstd, const T* dy,
                                       T* dx, float* dw) {
    constexpr int N = Vec16<T>::N, V = ROW_VECS_PACKED;
    if (row_in_registers<T>(cols, V) && aligned16(x) && aligned16(w) && aligned16(dy) && aligned16(dx)) {
        // x and dy stay packed in registers; w is read in both passes (one
        // row of it, shared by every block).
        const int vecs = cols / N;
        const uint4* wv = reinterpret_cast<const uint4*>(w);
        float dw_sum[V][N];
#pragma unroll
        for (int i = 0; i < V; ++i)
#pragma unroll
            for (int e = 0; e < N; ++e) dw_sum[i][e] = 0.0f;
        for (int row = blockIdx.x; row < rows; row += gridDim.x) {
            const u64 base = (u64)row * cols;
            const float r = rstd[row];
            const uint4* xv = reinterpret_cast<const uint4*>(x + base);
            const uint4* gv = reinterpret_cast<const uint4*>(dy + base);
            uint4* dxv = reinterpret_cast<uint4*>(dx + base);
            uint4 xs[V], gs[V];
            float dot = 0.0f;
#pragma unroll
            for (int i = 0; i < V; ++i) {
                const int k = threadIdx.x + i * blockDim.x;
                if (k < vecs) {
                    xs[i] = xv[k];
                    gs[i] = gv[k];
                    float xf[N], gf[N], wf[N];
                    Vec16<T>::unpack(xs[i], xf);
                    Vec16<T>::unpack(gs[i], gf);
                    Vec16<T>::unpack(wv[k], wf);
#pragma unroll
                    for (int e = 0; e < N; ++e) dot += wf[e] * gf[e] * xf[e];
                }
            }
            const float correction = block_sum(dot) * r * r * r / (float)cols;
#pragma unroll
            for (int i = 0; i < V; ++i) {
                const int k = threadIdx.x + i * blockDim.x;
                if (k < vecs) {
                    float xf[N], gf[N], wf[N], out[N];
                    Vec16<T>::unpack(xs[i], xf);
                    Vec16<T>::unpack(gs[i], gf);
                    Vec16<T>::unpack(wv[k], wf);
#pragma unroll
                    for (int e = 0; e < N; ++e) {
                        out[e] = r * wf[e] * gf[e] - xf[e] * correction;
                        dw_sum[i][e] += gf[e] * xf[e] * r;
                    }
                    dxv[k] = Vec16<T>::pack(out);
                }
            }
        }
#pragma unroll
        for (int i = 0; i < V; ++i) {
            const int k = threadIdx.x + i * blockDim.x;
            if (k < vecs) {
#pragma unroll
                for (int e = 0; e < N; ++e) atomicAdd(&dw[k * N + e], dw_sum[i][e]);
            }
        }
        return;
    }
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const u64 base = (u64)row * cols;
        const float r = rstd[row];
        float dot = 0.0f;
        for (int j = threadIdx.x; j < cols; j += blockDim.x)
            dot += to_f32(w[j]) * to_f32(dy[base + j]) * to_f32(x[base + j]);
        const float correction = block_sum(dot) * r * r * r / (float)cols;
        for (int j = threadIdx.x; j < cols; j += blockDim.x) {
            const float xv = to_f32(x[base + j]), g = to_f32(dy[base + j]);
            dx[base + j] = from_f32<T>(r * to_f32(w[j]) * g - xv * correction);
            atomicAdd(&dw[j], g * xv * r);
        }
    }
}

// x, y: (rows, cols); w, b: (cols), used when has_weight / has_bias;
// mean, rstd: (rows) f32. y = (x − mean)·rstd·w + b, biased variance.
template <typename T>
__device__ void layer_norm_impl(int rows, int cols, float eps, int has_weight, int has_bias, const T* x, const T* w,
                                const T* b, T* y, float* mean_out, float* rstd_out) {
    const int row = blockIdx.x;
    if (row >= rows) return;
    const u64 base = (u64)row * cols;
    constexpr int N = Vec16<T>::N, V = ROW_ELEMS / N;
    if (row_in_registers<T>(cols, V) && aligned16(x) && aligned16(y) && (!has_weight || aligned16(w)) &&
        (!has_bias || aligned16(b))) {
        const int vecs = cols / N;
        const uint4* xv = reinterpret_cast<const uint4*>(x + base);
        uint4* yv = reinterpret_cast<uint4*>(y + base);
        float v[V][N];
        float sum = 0.0f;
#pragma unroll
        for (int i = 0; i < V; ++i) {
            const int k = threadIdx.x + i * blockDim.x;
            if (k < vecs) {
                Vec16<T>::unpack(xv[k], v[i]);
#pragma unroll
                for (int e = 0; e < N; ++e) sum += v[i][e];
            }
        }
        const float mean = block_sum(sum) / (float)cols;
        float squares = 0.0f;
#pragma unroll
        for (int i = 0; i < V; ++i) {
            const int k = threadIdx.x + i * blockDim.x;
            if (k < vecs) {
#pragma unroll
                for (int e = 0; e < N; ++e) {
                    const float d = v[i][e] - mean;
                    squares += d * d;
                }
            }
        }
        const float r = rsqrtf(block_sum(squares) / (float)cols + eps);
#pragma unroll
        for (int i = 0; i < V; ++i) {
            const int k = threadIdx.x + i * blockDim.x;
            if (k < vecs) {
#pragma unroll
                for (int e = 0; e < N; ++e) v[i][e] = (v[i][e] - mean) * r;
                float p[N];
                if (has_weight) {
                    Vec16<T>::unpack(reinterpret_cast<const uint4*>(w)[k], p);
#pragma unroll
                    for (int e = 0; e < N; ++e) v[i][e] *= p[e];
                }
                if (has_bias) {
                    Vec16<T>::unpack(reinterpret_cast<const uint4*>(b)[k], p);
#pragma unroll
                    for (int e = 0; e < N; ++e) v[i][e] += p[e];
                }
                yv[k] = Vec16<T>::pack(v[i]);
            }
        }
        if (threadIdx.x == 0) {
            mean_out[row] = mean;
            rstd_out[row] = r;
        }
        return;
    }
    float sum = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) sum += to_f32(x[base + j]);
    const float mean = block_sum(sum) / (float)cols;
    float squares = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        const float d = to_f32(x[base + j]) - mean;
        squares += d * d;
    }
    const float r = rsqrtf(block_sum(squares) / (float)cols + eps);
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        float v = (to_f32(x[base + j]) - mean) * r;
        if (has_weight) v *= to_f32(w[j]);
        if (has_bias) v += to_f32(b[j]);
        y[base + j] = from_f32<T>(v);
    }
    if (threadIdx.x == 0) {
        mean_out[row] = mean;
        rstd_out[row] = r;
    }
}

// Vector k of the weight w (16-byte vectors wv) unpacked into wf, or ones
// when the forward had no weight.
template <typename T>
__device__ __forceinline__ void weight_or_ones(int has_weight, const uint4* wv, int k, float* wf) {
    if (has_weight) {
        Vec16<T>::unpack(wv[k], wf);
    } else {
#pragma unroll
        for (int e = 0; e < Vec16<T>::N; ++e) wf[e] = 1.0f;
    }
}

// x̂ = (x − mean)·rstd, g = dy·w:
// dx = rstd·(g − mean(g) − x̂·mean(g·x̂));  dw += dy·x̂;  db += dy.
// Rows, grid and the dw / db accumulation as rms_norm_backward_impl.
template <typename T>
__device__ void layer_norm_backward_impl(int rows, int cols, int has_weight, const T* x, const T* w,
                                         const float* mean, const float* rstd, const T* dy, T* dx, float* dw,
                                         float* db) {
    constexpr int N = Vec16<T>::N, V = ROW_VECS_PACKED;
    if (row_in_registers<T>(cols, V) && aligned16(x) && aligned16(dy) && aligned16(dx) &&
        (!has_weight || aligned16(w))) {
        // x and dy stay packed in registers; w (when given) is read in both
        // passes.
        const int vecs = cols / N;
        const uint4* wv = reinterpret_cast<const uint4*>(w);
        float dw_sum[V][N], db_sum[V][N];
#pragma unroll
        for (int i = 0; i < V; ++i)
#pragma unroll
            for (int e = 0; e < N; ++e) dw_sum[i][e] = db_sum[i][e] = 0.0f;
        for (int row = blockIdx.x; row < rows; row += gridDim.x) {
            const u64 base = (u64)row * cols;
            const float mu = mean[row], r = rstd[row];
            const uint4* xv = reinterpret_cast<const uint4*>(x + base);
            const uint4* gv = reinterpret_cast<const uint4*>(dy + base);
            uint4* dxv = reinterpret_cast<uint4*>(dx + base);
            uint4 xs[V], gs[V];
            float sum_g = 0.0f, sum_gx = 0.0f;
#pragma unroll
            for (int i = 0; i < V; ++i) {
                const int k = threadIdx.x + i * blockDim.x;
                if (k < vecs) {
                    xs[i] = xv[k];
                    gs[i] = gv[k];
                    float xf[N], gf[N], wf[N];
                    Vec16<T>::unpack(xs[i], xf);
                    Vec16<T>::unpack(gs[i], gf);
                    weight_or_ones<T>(has_weight, wv, k, wf);
#pragma unroll
                    for (int e = 0; e < N; ++e) {
                        const float g = gf[e] * wf[e];
                        sum_g += g;
                        sum_gx += g * ((xf[e] - mu) * r);
                    }
                }
            }
            const float mean_g = block_sum(sum_g) / (float)cols;
            const float mean_gx = block_sum(sum_gx) / (float)cols;
#pragma unroll
            for (int i = 0; i < V; ++i) {
                const int k = threadIdx.x + i * blockDim.x;
                if (k < vecs) {
                    float xf[N], gf[N], wf[N], out[N];
                    Vec16<T>::unpack(xs[i], xf);
                    Vec16<T>::unpack(gs[i], gf);
                    weight_or_ones<T>(has_weight, wv, k, wf);
#pragma unroll
                    for (int e = 0; e < N; ++e) {
                        const float xhat = (xf[e] - mu) * r;
                        out[e] = r * (gf[e] * wf[e] - mean_g - xhat * mean_gx);
                        dw_sum[i][e] += gf[e] * xhat;
                        db_sum[i][e] += gf[e];
                    }
                    dxv[k] = Vec16<T>::pack(out);
                }
            }
        }
#pragma unroll
        for (int i = 0; i < V; ++i) {
            const int k = threadIdx.x + i * blockDim.x;
            if (k < vecs) {
#pragma unroll
                for (int e = 0; e < N; ++e) {
                    atomicAdd(&dw[k * N + e], dw_sum[i][e]);
                    atomicAdd(&db[k * N + e], db_sum[i][e]);
                }
            }
        }
        return;
    }
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const u64 base = (u64)row * cols;
        const float mu = mean[row], r = rstd[row];
        float sum_g = 0.0f, sum_gx = 0.0f;
        for (int j = threadIdx.x; j < cols; j += blockDim.x) {
            const float xhat = (to_f32(x[base + j]) - mu) * r;
            const float g = to_f32(dy[base + j]) * (has_weight ? to_f32(w[j]) : 1.0f);
            sum_g += g;
            sum_gx += g * xhat;
        }
        const float mean_g = block_sum(sum_g) / (float)cols;
        const float mean_gx = block_sum(sum_gx) / (float)cols;
        for (int j = threadIdx.x; j < cols; j += blockDim.x) {
            const float xhat = (to_f32(x[base + j]) - mu) * r;
            const float up = to_f32(dy[base + j]);
            const float g = up * (has_weight ? to_f32(w[j]) : 1.0f);
            dx[base + j] = from_f32<T>(r * (g - mean_g - xhat * mean_gx));
            atomicAdd(&dw[j], up * xhat);
            atomicAdd(&db[j], up);
        }
    }
}

// __launch_bounds__(1024): the forward launchers may give a row 1024 threads,
// so the forwards holding a row in registers must fit in 64 registers per
// thread. The backward launchers give at most 512 (norm.rs BACKWARD_THREADS),
// leaving 128 registers for the packed row and the dw (and db) sums.
#define NORM(T, S)                                                                                          \
    extern "C" __global__ void __launch_bounds__(1024)                                                      \
        rms_norm_##S(int rows, int cols, float eps, const T* x, const T* w, T* y, float* rstd) {            \
        rms_norm_impl<T>(rows, cols, eps, x, w, y, rstd);                                                   \
    }                                                                                                       \
    extern "C" __global__ void __launch_bounds__(512) rms_norm_backward_##S(                                \
        int rows, int cols, const T* x, const T* w, const float* rstd, const T* dy, T* dx, float* dw) {     \
        rms_norm_backward_impl<T>(rows, cols, x, w, rstd, dy, dx, dw);                                      \
    }                                                                                                       \
    extern "C" __global__ void __launch_bounds__(1024)                                                      \
        layer_norm_##S(int rows, int cols, float eps, int has_weight, int has_bias, const T* x, const T* w, \
                       const T* b, T* y, float* mean, float* rstd) {                                        \
        layer_norm_impl<T>(rows, cols, eps, has_weight, has_bias, x, w, b, y, mean, rstd);                  \
    }                                                                                                       \
    extern "C" __global__ void __launch_bounds__(512)                                                       \
        layer_norm_backward_##S(int rows, int cols, int has_weight, const T* x, const T* w, const float* mean, \
                                const float* rstd, const T* dy, T* dx, float* dw, float* db) {              \
        layer_norm_backward_impl<T>(rows, cols, has_weight, x, w, mean, rstd, dy, dx, dw, db);              \
    }
FOR_EACH_FLOAT(NORM)
