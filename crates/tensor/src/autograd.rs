//! Reverse-mode autograd: the grad-mode switch (`no_grad`), recording, and `backward`,
//! which walks the recorded graph from a scalar and applies each op's rule from the
//! gradient table in `op.rs`.

use crate::op::Op;
use crate::{Error, Result, Tensor, TensorId};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops on this thread record the graph.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Restores the previous grad mode when dropped.
#[must_use = "grad recording is off only while the guard lives"]
pub struct NoGradGuard {
    prev: bool,
}

/// Turns graph recording off on this thread until the guard drops (inference, optimizer
/// updates, EMA), as `torch.no_grad()`.
pub fn no_grad() -> NoGradGuard {
    let prev = GRAD_ENABLED.with(|g| g.replace(false));
    NoGradGuard { prev }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.prev));
    }
}

/// The op to record for an output of `inputs`, when grad mode is on and any input
/// needs a gradient; `make` runs only then.
pub(crate) fn record(inputs: &[&Tensor], make: impl FnOnce() -> Op) -> Option<Op> {
    (is_grad_enabled() && inputs.iter().any(|t| t.requires_grad())).then(make)
}

impl Tensor {
    /// Back-propagates from this scalar: every leaf made with `with_grad()` that it
    /// depends on gets d(self)/d(leaf) added to its `grad()`. Intermediate gradients are
    /// freed as soon as they are used. The graph itself is kept (call again to
    /// accumulate twice).
    pub fn backward(&self) -> Result<()> {
        if self.elem_count() != 1 {
            return Err(Error::Grad(format!(
                "can start only from a tensor with one element; this one has shape {} (reduce it with sum or mean)",
                self.shape()
            )));
        }
        if !self.requires_grad() {
            return Err(Error::Grad(
                "the tensor does not depend on anything that requires grad (make parameters with .with_grad(), \
                 and do not build the loss under no_grad)"
                    .into(),
            ));
        }
        let _guard = no_grad();
        let order = topo_order(self);
        let mut grads: HashMap<TensorId, Tensor> = HashMap::new();
        grads.insert(self.id(), self.ones_like()?);
        for node in order.iter().rev() {
            let Some(g) = grads.remove(&node.id()) else {
                continue;
            };
            match node.op() {
                None => node.accumulate_grad(g)?,
                Some(op) => {
                    for (input, gi) in op.backward(node, &g)? {
                        if !input.requires_grad() {
                            continue;
                        }
                        let acc = match grads.remove(&input.id()) {
                            Some(prev) => prev.add(&gi)?,
                            None => gi,
                        };
                        grads.insert(input.id(), acc);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Tensors that need a gradient, reachable from `root`, each after all its inputs
/// (iterative post-order DFS: a U-Net graph is deep enough to overflow a recursive one).
fn topo_order(root: &Tensor) -> Vec<Tensor> {
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![(root.clone(), false)];
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            order.push(t);
            continue;
        }
        if !seen.insert(t.id()) {
            continue;
        }
        stack.push((t.clone(), true));
        if let Some(op) = t.op() {
            for input in op.inputs() {
                if input.requires_grad() && !seen.contains(&input.id()) {
                    stack.push((input.clone(), false));
                }
            }
        }
    }
    order
}
