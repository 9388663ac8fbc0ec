//! Dense f64 linear algebra for GPTQ: Cholesky factors and the upper factor
//! of an inverse. Matrices are row-major `n × n` slices.

use rayon::prelude::*;

/// Rows per rayon task in the row-parallel loops (fixed, so results do not
/// depend on the thread count: every element is computed by one task in a
/// fixed order).
const ROWS_PER_TASK: usize = 16;

/// Sizes below this run on one thread.
const PARALLEL_FROM: usize = 256;

/// A pivot that was not positive: its index and value before the square root.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NotPositive {
    /// Row of the failing pivot.
    pub pivot: usize,
    /// `a_jj − Σ l_jk²`.
    pub value: f64,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    // Eight independent partial sums (vectorisable), combined in a fixed order.
    let mut acc = [0.0f64; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut tail = 0.0;
    for i in chunks * 8..a.len() {
        tail += a[i] * b[i];
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail
}

/// Overwrites the lower triangle of the symmetric positive-definite `a`
/// with L, `a = L·Lᵀ`, and zeroes the upper triangle.
///
/// ```
/// let mut a = vec![4.0, 2.0, 2.0, 3.0];
/// kaiyuan_quant::linalg::cholesky_lower(&mut a, 2).unwrap();
/// assert_eq!(a, vec![2.0, 0.0, 1.0, 2f64.sqrt()]);
/// ```
pub fn cholesky_lower(a: &mut [f64], n: usize) -> Result<(), NotPositive> {
    debug_assert_eq!(a.len(), n * n);
    for j in 0..n {
        let (done, rest) = a.split_at_mut(j * n);
        let row_j = &mut rest[..n];
        // Row j, columns < j, were finished when rows < j were processed.
        let s = row_j[j] - dot(&row_j[..j], &row_j[..j]);
        if s.is_nan() || s <= 0.0 {
            return Err(NotPositive { pivot: j, value: s });
        }
        let d = s.sqrt();
        row_j[j] = d;
        for v in &mut row_j[j + 1..] {
            *v = 0.0;
        }
        let pivot_row: Vec<f64> = row_j[..j].to_vec();
        let _ = done;
        // Column j of the rows below.
        let below = &mut rest[n..];
        let update = |row: &mut [f64]| {
            row[j] = (row[j] - dot(&row[..j], &pivot_row)) / d;
        };
        if n - j > PARALLEL_FROM {
            below
                .par_chunks_mut(n * ROWS_PER_TASK)
                .for_each(|rows| rows.chunks_mut(n).for_each(update));
        } else {
            below.chunks_mut(n).for_each(update);
        }
    }
    Ok(())
}

/// The inverse of a lower-triangular `l` (n × n, row-major), lower triangular.
pub fn invert_lower(l: &[f64], n: usize) -> Vec<f64> {
    // Column j of X = L⁻¹ solves L·x = e_j by forward substitution; columns
    // are independent. Each is built contiguously and transposed at the end.
    let solve = |j: usize| -> Vec<f64> {
        let mut x = vec![0.0f64; n];
        x[j] = 1.0 / l[j * n + j];
        for i in j + 1..n {
            let row = &l[i * n..i * n + i];
            x[i] = -dot(&row[j..i], &x[j..i]) / l[i * n + i];
        }
        x
    };
    let columns: Vec<Vec<f64>> = if n > PARALLEL_FROM {
        (0..n).into_par_iter().map(solve).collect()
    } else {
        (0..n).map(solve).collect()
    };
    let mut out = vec![0.0f64; n * n];
    for (j, col) in columns.iter().enumerate() {
        for i in j..n {
            out[i * n + j] = col[i];
        }
    }
    out
}

/// The upper-triangular U with `Uᵀ·U = H⁻¹` for a symmetric positive-definite
/// `h` (what GPTQ's reference computes as `cholesky(cholesky_inverse(
/// cholesky(H)), upper=True)`), by one factorisation: with J the reversal
/// permutation and `J·H·J = M·Mᵀ`, `U = J·M⁻¹·J`.
///
/// ```
/// // H = [[4, 2], [2, 3]]: H⁻¹ = [[3, −2], [−2, 4]] / 8.
/// let u = kaiyuan_quant::linalg::inverse_upper_factor(&[4.0, 2.0, 2.0, 3.0], 2).unwrap();
/// let hinv = [u[0] * u[0], u[0] * u[1], u[0] * u[1], u[1] * u[1] + u[3] * u[3]];
/// for (x, want) in hinv.iter().zip([3.0 / 8.0, -2.0 / 8.0, -2.0 / 8.0, 4.0 / 8.0]) {
///     assert!((x - want).abs() < 1e-12);
/// }
/// assert_eq!(u[2], 0.0);
/// ```
pub fn inverse_upper_factor(h: &[f64], n: usize) -> Result<Vec<f64>, NotPositive> {
    let mut reversed = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            reversed[i * n + j] = h[(n - 1 - i) * n + (n - 1 - j)];
        }
    }
    cholesky_lower(&mut reversed, n).map_err(|e| NotPositive {
        pivot: n - 1 - e.pivot,
        value: e.value,
    })?;
    let m_inv = invert_lower(&reversed, n);
    let mut u = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            u[i * n + j] = m_inv[(n - 1 - i) * n + (n - 1 - j)];
        }
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spd(n: usize, seed: u64) -> Vec<f64> {
        let mut state = seed;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) - 0.5
        };
        let x: Vec<f64> = (0..n * (n + 3)).map(|_| next()).collect();
        let rows = n + 3;
        let mut h = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                h[i * n + j] = (0..rows).map(|r| x[r * n + i] * x[r * n + j]).sum::<f64>();
            }
        }
        h
    }

    #[test]
    fn upper_factor_gives_the_inverse() {
        for n in [1, 2, 7, 300] {
            let h = spd(n, n as u64);
            let u = inverse_upper_factor(&h, n).unwrap();
            // H · (Uᵀ U) = I.
            let mut worst = 0.0f64;
            for i in 0..n {
                for j in 0..n {
                    let mut hinv_col = vec![0.0; n];
                    for (k, v) in hinv_col.iter_mut().enumerate() {
                        *v = (0..n).map(|m| u[m * n + k] * u[m * n + j]).sum();
                    }
                    let x: f64 = (0..n).map(|k| h[i * n + k] * hinv_col[k]).sum();
                    let want = if i == j { 1.0 } else { 0.0 };
                    worst = worst.max((x - want).abs());
                }
                if n > 50 && i > 3 {
                    break;
                }
            }
            assert!(worst < 1e-8, "n = {n}: worst {worst}");
            for i in 0..n {
                for j in 0..i {
                    assert_eq!(u[i * n + j], 0.0);
                }
            }
        }
    }

    #[test]
    fn indefinite_matrices_name_the_pivot() {
        let err = cholesky_lower(&mut [1.0, 2.0, 2.0, 1.0], 2).unwrap_err();
        assert_eq!(err.pivot, 1);
        assert!(err.value < 0.0);
    }
}
