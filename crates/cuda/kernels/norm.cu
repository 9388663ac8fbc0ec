// norm.cu: RMSNorm and LayerNorm over the last axis, forward and backward.
// One block per row; statistics in f32. The backward accumulates the weight
// and bias gradients into f32 buffers with atomics (zeroed by the launcher).

// x, y: (rows, cols); w: (cols); rstd: (rows) f32, saved for the backward.
// y = x · rstd · w with rstd = 1/√(mean(x²) + eps).
template <typename T>
__device__ void rms_norm_impl(int rows, int cols, float eps, const T* x, const T* w, T* y, float* rstd) {
    const int row = blockIdx.x;
    if (row >= rows) return;
    const u64 base = (u64)row * cols;
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
template <typename T>
__device__ void rms_norm_backward_impl(int rows, int cols, const T* x, const T* w, const float* rstd, const T* dy,
                                       T* dx, float* dw) {
    const int row = blockIdx.x;
    if (row >= rows) return;
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

// x, y: (rows, cols); w, b: (cols), used when has_weight / has_bias;
// mean, rstd: (rows) f32. y = (x − mean)·rstd·w + b, biased variance.
template <typename T>
__device__ void layer_norm_impl(int rows, int cols, float eps, int has_weight, int has_bias, const T* x, const T* w,
                                const T* b, T* y, float* mean_out, float* rstd_out) {
    const int row = blockIdx.x;
    if (row >= rows) return;
    const u64 base = (u64)row * cols;
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

// x̂ = (x − mean)·rstd, g = dy·w:
// dx = rstd·(g − mean(g) − x̂·mean(g·x̂));  dw += dy·x̂;  db += dy.
template <typename T>
__device__ void layer_norm_backward_impl(int rows, int cols, int has_weight, const T* x, const T* w,
                                         const float* mean, const float* rstd, const T* dy, T* dx, float* dw,
                                         float* db) {
    const int row = blockIdx.x;
    if (row >= rows) return;
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

#define NORM(T, S)                                                                                          \
    extern "C" __global__ void rms_norm_##S(int rows, int cols, float eps, const T* x, const T* w, T* y,    \
                                            float* rstd) {                                                  \
        rms_norm_impl<T>(rows, cols, eps, x, w, y, rstd);                                                   \
    }                                                                                                       \
    extern "C" __global__ void rms_norm_backward_##S(int rows, int cols, const T* x, const T* w,            \
                                                     const float* rstd, const T* dy, T* dx, float* dw) {    \
        rms_norm_backward_impl<T>(rows, cols, x, w, rstd, dy, dx, dw);                                      \
    }                                                                                                       \
    extern "C" __global__ void layer_norm_##S(int rows, int cols, float eps, int has_weight, int has_bias,  \
                                              const T* x, const T* w, const T* b, T* y, float* mean,        \
                                              float* rstd) {                                                \
        layer_norm_impl<T>(rows, cols, eps, has_weight, has_bias, x, w, b, y, mean, rstd);                  \
    }                                                                                                       \
    extern "C" __global__ void layer_norm_backward_##S(int rows, int cols, int has_weight, const T* x,      \
                                                       const T* w, const float* mean, const float* rstd,    \
                                                       const T* dy, T* dx, float* dw, float* db) {          \
        layer_norm_backward_impl<T>(rows, cols, has_weight, x, w, mean, rstd, dy, dx, dw, db);              \
    }
FOR_EACH_FLOAT(NORM)
