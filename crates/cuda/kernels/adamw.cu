// adamw.cu: fused AdamW over f32 master weights, as torch.optim.AdamW (and
// the trainer's CPU step, operation for operation):
//   p ← p·decay;  m ← m + (g − m)(1 − β₁);  v ← β₂v + (1 − β₂)g²;
//   p ← p − step_size · m / (√v / bias2_sqrt + eps)
// with step_size = lr / (1 − β₁ᵗ), bias2_sqrt = √(1 − β₂ᵗ),
// decay = 1 − lr·weight_decay (1 for parameters that take no decay).
//
// p, m, v: (n) f32; g: (n) in the gradient dtype. When write_copy is set,
// copy: (n) receives p rounded to the gradient dtype (the bf16/f16 weights
// of mixed-precision training).
template <typename G>
__device__ void adamw_impl(u64 n, float* p, const G* g, float* m, float* v, float step_size, float beta1,
                           float beta2, float eps, float bias2_sqrt, float decay, int write_copy, G* copy) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        const float grad = to_f32(g[i]);
        float param = p[i] * decay;
        float mi = m[i];
        mi += (grad - mi) * (1.0f - beta1);
        const float vi = v[i] * beta2 + (1.0f - beta2) * grad * grad;
        const float denom = sqrtf(vi) / bias2_sqrt + eps;
        param -= step_size * (mi / denom);
        p[i] = param;
        m[i] = mi;
        v[i] = vi;
        if (write_copy) copy[i] = from_f32<G>(param);
    }
}

#define ADAMW(G, S)                                                                                        \
    extern "C" __global__ void adamw_##S(u64 n, float* p, const G* g, float* m, float* v, float step_size, \
                                         float beta1, float beta2, float eps, float bias2_sqrt, float decay, \
                                         int write_copy, G* copy) {                                        \
        adamw_impl<G>(n, p, g, m, v, step_size, beta1, beta2, eps, bias2_sqrt, decay, write_copy, copy);   \
    }
FOR_EACH_FLOAT(ADAMW)
