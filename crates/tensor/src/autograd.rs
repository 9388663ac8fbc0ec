//! Reverse-mode automatic differentiation.
//!
//! A tensor made with [`Tensor::with_grad`] is a *leaf*: every op that takes
//! it (directly or through other recorded results) records a graph node on
//! its output holding the op's inputs and its backward function. Ops on
//! tensors that carry no node record nothing, so inference pays one branch
//! per op. [`Tensor::backward`] walks the graph from a scalar in reverse
//! topological order and returns the gradient of every leaf it reached
//! ([`Gradients`]).
//!
//! Backward functions are written beside their forward ops (same file) in
//! terms of other tensor ops, run with recording switched off ([`no_grad`]).
//!
//! ```
//! use kaiyuan_tensor::Tensor;
//! # fn main() -> kaiyuan_tensor::Result<()> {
//! let w = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[3])?.with_grad();
//! let x = Tensor::from_vec(vec![4.0f64, 5.0, 6.0], &[3])?;
//! let loss = w.mul(&x)?.sum(0, false)?;          // Σ wᵢ·xᵢ
//! let grads = loss.backward()?;
//! assert_eq!(grads.get(&w).unwrap().to_vec::<f64>()?, vec![4.0, 5.0, 6.0]);
//! assert!(grads.get(&x).is_none());               // x is not a leaf
//! # Ok(()) }
//! ```

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Result, Tensor, TensorError};

/// Gradient of an op's inputs given the gradient of its output: one entry
/// per input (in the order recorded), `None` where an input gets none.
pub(crate) type BackwardFn =
    dyn Fn(&Tensor, &[Tensor]) -> Result<Vec<Option<Tensor>>> + Send + Sync;

/// A node of the gradient graph, shared by every clone of the tensor it
/// belongs to.
pub(crate) struct Node {
    id: u64,
    /// The op that made the tensor (for error messages); "leaf" for leaves.
    op: &'static str,
    /// The op's inputs, tracked or not (backward functions read their values).
    inputs: Vec<Tensor>,
    /// `None` for a leaf.
    backward: Option<Box<BackwardFn>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("op", &self.op)
            .field("inputs", &self.inputs.len())
            .finish()
    }
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

thread_local! {
    static PAUSED: Cell<usize> = const { Cell::new(0) };
}

/// Runs `f` without recording gradients on this thread (nested calls are
/// fine). Optimiser updates and evaluation inside a training loop use this.
///
/// ```
/// use kaiyuan_tensor::{Tensor, no_grad};
/// let w = Tensor::from_vec(vec![1.0f32], &[1]).unwrap().with_grad();
/// let y = no_grad(|| w.affine(2.0, 0.0)).unwrap();
/// assert!(!y.requires_grad());
/// ```
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    struct Resume;
    impl Drop for Resume {
        fn drop(&mut self) {
            PAUSED.with(|p| p.set(p.get() - 1));
        }
    }
    PAUSED.with(|p| p.set(p.get() + 1));
    let _resume = Resume;
    f()
}

fn recording() -> bool {
    PAUSED.with(|p| p.get() == 0)
}

/// Whether an op with these inputs must record a node.
pub(crate) fn tracking(inputs: &[&Tensor]) -> bool {
    inputs.iter().any(|t| t.node.is_some()) && recording()
}

impl Tensor {
    /// The same values (sharing the buffer) as a new leaf of the gradient
    /// graph: ops on it are recorded, and [`Tensor::backward`] returns its
    /// gradient. Each call makes a distinct leaf.
    pub fn with_grad(&self) -> Tensor {
        let mut out = self.detach();
        out.node = Some(Arc::new(Node {
            id: next_id(),
            op: "leaf",
            inputs: Vec::new(),
            backward: None,
        }));
        out
    }

    /// The same values without any graph node: ops on the result record nothing.
    pub fn detach(&self) -> Tensor {
        let mut out = self.clone();
        out.node = None;
        out
    }

    /// Whether ops on this tensor are recorded (it is a leaf made by
    /// [`Tensor::with_grad`] or was computed from one).
    pub fn requires_grad(&self) -> bool {
        self.node.is_some()
    }

    /// Records `op` on `self`, the output computed from `inputs`, when one of
    /// them is tracked; `make` builds the backward function only then.
    pub(crate) fn record<F>(
        self,
        op: &'static str,
        inputs: &[&Tensor],
        make: impl FnOnce() -> F,
    ) -> Tensor
    where
        F: Fn(&Tensor, &[Tensor]) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
    {
        if !tracking(inputs) {
            return self;
        }
        let mut out = self;
        out.node = Some(Arc::new(Node {
            id: next_id(),
            op,
            inputs: inputs.iter().map(|t| (*t).clone()).collect(),
            backward: Some(Box::new(make())),
        }));
        out
    }

    /// Gradients of this one-element tensor (a loss) with respect to every
    /// leaf it was computed from.
    pub fn backward(&self) -> Result<Gradients> {
        if self.elem_count() != 1 {
            return Err(TensorError::invalid(
                "backward",
                format!(
                    "the output must have one element (a loss), got shape {:?}; use backward_with",
                    self.shape()
                ),
            ));
        }
        let seed = Tensor::full(1.0, self.shape(), self.dtype())?.to_device(self.device())?;
        self.backward_with(&seed)
    }

    /// Gradients of `Σ self ⊙ grad` with respect to every leaf: `grad` is the
    /// gradient of some scalar with respect to `self` (same shape and dtype).
    pub fn backward_with(&self, grad: &Tensor) -> Result<Gradients> {
        const OP: &str = "backward";
        let root = self.node.as_ref().ok_or_else(|| {
            TensorError::invalid(
                OP,
                "the tensor does not require gradients (no leaf made with with_grad reaches it)",
            )
        })?;
        if grad.shape() != self.shape() || grad.dtype() != self.dtype() {
            return Err(TensorError::shapes(
                OP,
                self.shape(),
                grad.shape(),
                format!(
                    "the seed gradient must match the output ({} vs {})",
                    self.dtype(),
                    grad.dtype()
                ),
            ));
        }
        // Post-order DFS without recursion: a node follows all its inputs.
        let mut order: Vec<&Arc<Node>> = Vec::new();
        let mut seen: HashMap<u64, ()> = HashMap::new();
        let mut stack: Vec<(&Arc<Node>, bool)> = vec![(root, false)];
        while let Some((node, expanded)) = stack.pop() {
            if expanded {
                order.push(node);
                continue;
            }
            if seen.insert(node.id, ()).is_some() {
                continue;
            }
            stack.push((node, true));
            for input in &node.inputs {
                if let Some(child) = &input.node
                    && !seen.contains_key(&child.id)
                {
                    stack.push((child, false));
                }
            }
        }
        let mut pending: HashMap<u64, Tensor> = HashMap::new();
        pending.insert(root.id, grad.detach());
        let mut leaves = HashMap::new();
        no_grad(|| -> Result<()> {
            for node in order.iter().rev() {
                let Some(g) = pending.remove(&node.id) else {
                    continue;
                };
                let Some(backward) = &node.backward else {
                    leaves.insert(node.id, g);
                    continue;
                };
                let input_grads = backward(&g, &node.inputs)?;
                for (input, ig) in node.inputs.iter().zip(input_grads) {
                    let (Some(child), Some(ig)) = (&input.node, ig) else {
                        continue;
                    };
                    if ig.shape() != input.shape() {
                        return Err(TensorError::shapes(
                            OP,
                            input.shape(),
                            ig.shape(),
                            format!(
                                "the backward of `{}` gave a gradient of the wrong shape",
                                node.op
                            ),
                        ));
                    }
                    let ig = if ig.dtype() == input.dtype() {
                        ig
                    } else {
                        ig.cast(input.dtype())?
                    };
                    let total = match pending.remove(&child.id) {
                        Some(prev) => prev.add(&ig)?,
                        None => ig,
                    };
                    pending.insert(child.id, total);
                }
            }
            Ok(())
        })?;
        Ok(Gradients { by_leaf: leaves })
    }

    /// Sums a gradient of a broadcast result back to `shape`, the shape of
    /// the input that was broadcast.
    pub(crate) fn sum_to_shape(&self, shape: &[usize]) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let mut g = self.clone();
        while g.rank() > shape.len() {
            g = g.sum(0, false)?;
        }
        for (axis, &len) in shape.iter().enumerate() {
            if len == 1 && g.shape()[axis] != 1 {
                g = g.sum(axis as isize, true)?;
            }
        }
        if g.shape() != shape {
            return Err(TensorError::shapes(
                "sum_to_shape",
                self.shape(),
                shape,
                "the gradient does not broadcast to the input",
            ));
        }
        Ok(g)
    }
}

/// Gradients of a loss with respect to the leaves it was computed from,
/// returned by [`Tensor::backward`]. Each has its leaf's shape and dtype.
#[derive(Debug, Default)]
pub struct Gradients {
    by_leaf: HashMap<u64, Tensor>,
}

impl Gradients {
    /// The gradient of `leaf` (a tensor made by [`Tensor::with_grad`], or a
    /// clone of one); `None` when the loss does not depend on it.
    pub fn get(&self, leaf: &Tensor) -> Option<&Tensor> {
        leaf.node.as_ref().and_then(|n| self.by_leaf.get(&n.id))
    }

    /// Removes and returns the gradient of `leaf`.
    pub fn remove(&mut self, leaf: &Tensor) -> Option<Tensor> {
        leaf.node.as_ref().and_then(|n| self.by_leaf.remove(&n.id))
    }

    /// Number of leaves with a gradient.
    pub fn len(&self) -> usize {
        self.by_leaf.len()
    }

    /// Whether no leaf got a gradient.
    pub fn is_empty(&self) -> bool {
        self.by_leaf.is_empty()
    }
}
