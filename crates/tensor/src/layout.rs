//! Shapes, strides and offsets: how a tensor's logical elements sit in its buffer.

use crate::{Result, TensorError};

/// Shape, strides (in elements) and offset (in elements) of a tensor view.
///
/// Element `(i0, i1, …)` lives at `offset + Σ ik·strides[k]` in the buffer.
/// A stride of 0 repeats one element along that axis (broadcasting).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    shape: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
}

/// Row-major (C order) strides of `shape`.
pub(crate) fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut acc = 1usize;
    for (stride, &dim) in strides.iter_mut().zip(shape).rev() {
        *stride = acc;
        acc = acc.saturating_mul(dim);
    }
    strides
}

/// Number of elements of `shape`, or `None` when it overflows `usize`.
pub(crate) fn checked_elem_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Resolves a possibly negative axis (−1 is the last) against `rank`.
pub(crate) fn resolve_axis(op: &'static str, axis: isize, shape: &[usize]) -> Result<usize> {
    let rank = shape.len() as isize;
    let resolved = if axis < 0 { axis + rank } else { axis };
    if resolved < 0 || resolved >= rank {
        return Err(TensorError::AxisOutOfRange {
            op,
            axis,
            shape: shape.to_vec(),
        });
    }
    Ok(resolved as usize)
}

/// NumPy broadcasting of two shapes: dimensions are aligned from the right and
/// each pair must be equal or contain a 1.
pub fn broadcast_shapes(op: &'static str, lhs: &[usize], rhs: &[usize]) -> Result<Vec<usize>> {
    let rank = lhs.len().max(rhs.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let l = if i < rank - lhs.len() {
            1
        } else {
            lhs[i - (rank - lhs.len())]
        };
        let r = if i < rank - rhs.len() {
            1
        } else {
            rhs[i - (rank - rhs.len())]
        };
        out[i] = match (l, r) {
            (a, b) if a == b => a,
            (1, b) => b,
            (a, 1) => a,
            _ => {
                return Err(TensorError::shapes(
                    op,
                    lhs,
                    rhs,
                    format!("dimension {i} of the broadcast result: {l} vs {r}"),
                ));
            }
        };
    }
    Ok(out)
}

impl Layout {
    /// A row-major layout of `shape` starting at `offset`.
    pub fn contiguous(shape: &[usize]) -> Self {
        Self {
            strides: contiguous_strides(shape),
            shape: shape.to_vec(),
            offset: 0,
        }
    }

    /// A layout with explicit strides and offset. The caller guarantees that
    /// every element it addresses lies inside the buffer (see [`Layout::max_offset`]).
    pub(crate) fn new(shape: Vec<usize>, strides: Vec<usize>, offset: usize) -> Self {
        debug_assert_eq!(shape.len(), strides.len());
        Self {
            shape,
            strides,
            offset,
        }
    }

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The strides, in elements.
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    /// Offset of the first element, in elements.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of logical elements.
    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }

    /// One past the largest buffer index this layout reads (0 when empty).
    pub fn max_offset(&self) -> usize {
        if self.shape.contains(&0) {
            return self.offset;
        }
        self.offset
            + self
                .shape
                .iter()
                .zip(&self.strides)
                .map(|(&d, &s)| (d - 1) * s)
                .sum::<usize>()
            + 1
    }

    /// Whether the elements are dense and in row-major order (offset may be non-zero).
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1usize;
        for (&dim, &stride) in self.shape.iter().zip(&self.strides).rev() {
            if dim != 1 && stride != expected {
                return false;
            }
            expected *= dim;
        }
        true
    }

    /// Whether the elements fill `offset..offset + elem_count()` of the
    /// buffer exactly once, in any axis order (a transposed or permuted view
    /// of a contiguous tensor): then the span can be converted in memory
    /// order and read back with the same strides. Empty layouts are not.
    pub(crate) fn is_dense(&self) -> bool {
        let mut axes: Vec<(usize, usize)> = self
            .shape
            .iter()
            .zip(&self.strides)
            .filter(|&(&d, _)| d != 1)
            .map(|(&d, &s)| (s, d))
            .collect();
        if self.shape.contains(&0) {
            return false;
        }
        axes.sort_unstable();
        let mut expected = 1usize;
        for (stride, dim) in axes {
            if stride != expected {
                return false;
            }
            expected *= dim;
        }
        true
    }

    /// Swaps two axes (a view; no data moves).
    pub(crate) fn transposed(&self, a: usize, b: usize) -> Self {
        let mut out = self.clone();
        out.shape.swap(a, b);
        out.strides.swap(a, b);
        out
    }

    /// Reorders the axes: axis `k` of the result is axis `order[k]` of `self`.
    pub(crate) fn permuted(&self, order: &[usize]) -> Self {
        Self {
            shape: order.iter().map(|&i| self.shape[i]).collect(),
            strides: order.iter().map(|&i| self.strides[i]).collect(),
            offset: self.offset,
        }
    }

    /// Restricts `axis` to `start..start + len` (bounds already checked).
    pub(crate) fn narrowed(&self, axis: usize, start: usize, len: usize) -> Self {
        let mut out = self.clone();
        out.offset += start * self.strides[axis];
        out.shape[axis] = len;
        out
    }

    /// A view of this layout broadcast to `target` (a valid broadcast target):
    /// new leading axes and expanded size-1 axes get stride 0.
    pub(crate) fn broadcast_to(&self, target: &[usize]) -> Self {
        let extra = target.len() - self.rank();
        let mut strides = vec![0; target.len()];
        for (i, stride) in strides.iter_mut().enumerate().skip(extra) {
            let dim = self.shape[i - extra];
            *stride = if dim == 1 && target[i] != 1 {
                0
            } else {
                self.strides[i - extra]
            };
        }
        Self {
            shape: target.to_vec(),
            strides,
            offset: self.offset,
        }
    }

    /// Merges adjacent axes that are laid out as one, dropping size-1 axes.
    /// The result addresses the same elements in the same order, with the
    /// fewest axes (at least one).
    pub(crate) fn coalesced(&self) -> (Vec<usize>, Vec<usize>) {
        let mut dims: Vec<usize> = Vec::with_capacity(self.rank());
        let mut strides: Vec<usize> = Vec::with_capacity(self.rank());
        for (&d, &s) in self.shape.iter().zip(&self.strides) {
            if d == 1 {
                continue;
            }
            match (dims.last_mut(), strides.last_mut()) {
                (Some(last_d), Some(last_s)) if *last_s == s * d => {
                    *last_d *= d;
                    *last_s = s;
                }
                _ => {
                    dims.push(d);
                    strides.push(s);
                }
            }
        }
        if dims.is_empty() {
            dims.push(1);
            strides.push(1);
        }
        (dims, strides)
    }
}

/// Walks the buffer offsets of the rows (innermost axis) of a strided layout
/// in row-major order, starting from any row. `dims`/`strides` are the outer
/// axes only.
pub(crate) struct RowOffsets<'a> {
    dims: &'a [usize],
    strides: &'a [usize],
    index: Vec<usize>,
    current: usize,
}

impl<'a> RowOffsets<'a> {
    /// Starts at row number `row` (row-major over `dims`) of a layout whose
    /// first element is at `base`.
    pub(crate) fn starting_at(
        dims: &'a [usize],
        strides: &'a [usize],
        base: usize,
        mut row: usize,
    ) -> Self {
        let mut index = vec![0; dims.len()];
        let mut current = base;
        for k in (0..dims.len()).rev() {
            index[k] = row % dims[k];
            row /= dims[k];
            current += index[k] * strides[k];
        }
        Self {
            dims,
            strides,
            index,
            current,
        }
    }

    /// The offset of the current row; then advances to the next one.
    pub(crate) fn next_offset(&mut self) -> usize {
        let out = self.current;
        for k in (0..self.dims.len()).rev() {
            self.index[k] += 1;
            self.current += self.strides[k];
            if self.index[k] < self.dims[k] {
                return out;
            }
            self.current -= self.strides[k] * self.dims[k];
            self.index[k] = 0;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_layouts_are_permutations_of_a_contiguous_span() {
        let c = Layout::contiguous(&[2, 3, 4]);
        assert!(c.is_dense() && c.is_contiguous());
        let t = c.transposed(1, 2);
        assert!(t.is_dense() && !t.is_contiguous());
        assert!(c.permuted(&[2, 0, 1]).is_dense());
        // Offsets do not matter; gaps, repeats and emptiness do.
        assert!(c.narrowed(0, 1, 1).is_dense());
        assert!(!c.narrowed(2, 0, 3).is_dense());
        assert!(!c.narrowed(1, 1, 2).transposed(0, 1).is_dense());
        assert!(!Layout::contiguous(&[3]).broadcast_to(&[2, 3]).is_dense());
        assert!(!Layout::contiguous(&[0, 3]).is_dense());
        assert!(Layout::contiguous(&[1, 1]).is_dense());
    }
}
