// loss.cu: cross-entropy of logits against class ids, forward and backward,
// as PyTorch's F.cross_entropy with ignore_index = −100 and mean reduction.
//
// logits: (rows, vocab); targets: (rows) i32, −100 = ignored.

#define IGNORE_INDEX (-100)

// Per row: lse[row] = log Σ exp(logits); loss[row] = lse − logits[target]
// (0 for an ignored row). A target outside [0, vocab) that is not −100
// records 1 + its row in bad[0] (initialised to 0xffffffff; atomicMin).
template <typename T>
__device__ void cross_entropy_rows_impl(int rows, int vocab, const T* logits, const int* targets, float* loss,
                                        float* lse, u32* bad) {
    const int row = blockIdx.x;
    if (row >= rows) return;
    const T* in = logits + (u64)row * vocab;
    const float2 max_sum = row_max_sumexp(in, vocab);
    if (threadIdx.x == 0) {
        const float log_sum_exp = max_sum.x + logf(max_sum.y);
        const int target = targets[row];
        lse[row] = log_sum_exp;
        if (target == IGNORE_INDEX) {
            loss[row] = 0.0f;
        } else if (target < 0 || target >= vocab) {
            loss[row] = 0.0f;
            atomicMin(bad, (u32)row + 1u);
        } else {
            loss[row] = log_sum_exp - to_f32(in[target]);
        }
    }
}

// One block: out[0] = Σ loss / kept rows (NaN when every row is ignored, as
// PyTorch), out[1] = kept rows (as f32).
__device__ void cross_entropy_mean_impl(int rows, const float* loss, const int* targets, float* out) {
    float sum = 0.0f, kept = 0.0f;
    for (int row = threadIdx.x; row < rows; row += blockDim.x) {
        if (targets[row] != IGNORE_INDEX) {
            sum += loss[row];
            kept += 1.0f;
        }
    }
    sum = block_sum(sum);
    kept = block_sum(kept);
    if (threadIdx.x == 0) {
        out[0] = sum / kept;
        out[1] = kept;
    }
}

// dlogits = (upstream / kept) · (softmax(logits) − onehot(target)); zero rows
// for ignored targets. `mean` is cross_entropy_mean's out (kept in mean[1]).
template <typename T>
__device__ void cross_entropy_backward_impl(int rows, int vocab, const T* logits, const int* targets,
                                            const float* lse, const float* mean, const float* upstream,
                                            T* dlogits) {
    const int row = blockIdx.x;
    if (row >= rows) return;
    const u64 base = (u64)row * vocab;
    const int target = targets[row];
    const bool kept = target != IGNORE_INDEX && target >= 0 && target < vocab;
    const float scale = upstream[0] / mean[1];
    const float log_sum_exp = lse[row];
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
        float g = 0.0f;
        if (kept) g = scale * (expf(to_f32(logits[base + j]) - log_sum_exp) - (j == target ? 1.0f : 0.0f));
        dlogits[base + j] = from_f32<T>(g);
    }
}

extern "C" __global__ void cross_entropy_mean(int rows, const float* loss, const int* targets, float* out) {
    cross_entropy_mean_impl(rows, loss, targets, out);
}

#define LOSS(T, S)                                                                                         \
    extern "C" __global__ void cross_entropy_rows_##S(int rows, int vocab, const T* logits, const int* targets, \
                                                      float* loss, float* lse, u32* bad) {                 \
        cross_entropy_rows_impl<T>(rows, vocab, logits, targets, loss, lse, bad);                          \
    }                                                                                                      \
    extern "C" __global__ void cross_entropy_backward_##S(int rows, int vocab, const T* logits,           \
                                                          const int* targets, const float* lse,            \
                                                          const float* mean, const float* upstream,        \
                                                          T* dlogits) {                                    \
        cross_entropy_backward_impl<T>(rows, vocab, logits, targets, lse, mean, upstream, dlogits);        \
    }
FOR_EACH_FLOAT(LOSS)
