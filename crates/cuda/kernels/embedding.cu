// embedding.cu: row gather and its gradient (scatter-add).
//
// ids: (n) u32; table: (vocab, dim); out: (n, dim). An id ≥ vocab writes
// zeros and records 1 + its position in bad[0] (initialised to 0xffffffff;
// atomicMin, so the first bad position is reported); the launcher turns it into an error.
template <typename T>
__device__ void embedding_impl(u64 n, int dim, int vocab, const u32* ids, const T* table, T* out, u32* bad) {
    const u64 total = n * (u64)dim;
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
        const u64 position = i / dim;
        const int feature = (int)(i % dim);
        const u32 id = ids[position];
        if (id < (u32)vocab) {
            out[i] = table[(u64)id * dim + feature];
        } else {
            out[i] = from_f32<T>(0.0f);
            if (feature == 0) atomicMin(bad, (u32)min(position + 1, 0xfffffffeull));
        }
    }
}

// dy: (n, dim); dtable: (vocab, dim) f32, accumulated. Bad ids are skipped
// (the forward already refused them).
template <typename T>
__device__ void embedding_backward_impl(u64 n, int dim, int vocab, const u32* ids, const T* dy, float* dtable) {
    const u64 total = n * (u64)dim;
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
        const u32 id = ids[i / dim];
        if (id < (u32)vocab) atomicAdd(&dtable[(u64)id * dim + i % dim], to_f32(dy[i]));
    }
}

#define EMBEDDING(T, S)                                                                                    \
    extern "C" __global__ void embedding_##S(u64 n, int dim, int vocab, const u32* ids, const T* table,   \
                                             T* out, u32* bad) {                                           \
        embedding_impl<T>(n, dim, vocab, ids, table, out, bad);                                            \
    }                                                                                                      \
    extern "C" __global__ void embedding_backward_##S(u64 n, int dim, int vocab, const u32* ids,          \
                                                      const T* dy, float* dtable) {                        \
        embedding_backward_impl<T>(n, dim, vocab, ids, dy, dtable);                                        \
    }
FOR_EACH_FLOAT(EMBEDDING)
