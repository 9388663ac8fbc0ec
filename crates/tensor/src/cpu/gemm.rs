//! Placeholder f32 GEMM (replaced by the blocked kernel).

/// C = A·B (+ C). See the blocked version for the contract.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    b_rs: usize,
    b_cs: usize,
    c: &mut [f32],
    c_rs: usize,
    accumulate: bool,
) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f32;
            for p in 0..k {
                acc += a[i * a_rs + p * a_cs] * b[p * b_rs + j * b_cs];
            }
            let dst = &mut c[i * c_rs + j];
            *dst = if accumulate { *dst + acc } else { acc };
        }
    }
}
