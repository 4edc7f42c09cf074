//! The fused AdamW update (Loshchilov & Hutter 2019, "Decoupled weight decay"), one
//! pass over parameter, gradient and both moments, in place, as torch.optim.AdamW.

use crate::backend::BackendStorage;
use crate::{Error, Result, Tensor};
use std::sync::Arc;

/// The hyper-parameters of one AdamW step; `step` counts from 1 (bias correction).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub step: u64,
}

impl AdamWStep {
    /// (lr / (1 - beta1^t), sqrt(1 - beta2^t)): torch's step size and bias-correction
    /// divisor of sqrt(v).
    pub fn corrections(&self) -> (f64, f64) {
        let t = self.step.max(1) as i32;
        (
            self.lr / (1.0 - self.beta1.powi(t)),
            (1.0 - self.beta2.powi(t)).sqrt(),
        )
    }
}

/// One AdamW step in place: m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
/// p = p (1 - lr wd) - lr/(1 - b1^t) m / (sqrt(v) / sqrt(1 - b2^t) + eps).
/// `param`, `m` and `v` must be distinct contiguous tensors of the gradient's shape,
/// dtype and device.
pub fn adamw_step(
    param: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    h: &AdamWStep,
) -> Result<()> {
    let op = "adamw_step";
    for (name, t) in [("grad", grad), ("m", m), ("v", v)] {
        if t.shape() != param.shape() || t.dtype() != param.dtype() || t.device() != param.device()
        {
            return Err(Error::shape(
                op,
                format!(
                    "{name} is {} {} on {}, the parameter {} {} on {}",
                    t.shape(),
                    t.dtype(),
                    t.device(),
                    param.shape(),
                    param.dtype(),
                    param.device()
                ),
            ));
        }
    }
    for (name, t) in [("parameter", param), ("m", m), ("v", v)] {
        if !t.is_contiguous() || t.layout().offset() != 0 {
            return Err(Error::arg(
                op,
                format!("the {name} must be a whole contiguous tensor, not a view"),
            ));
        }
    }
    let (ps, ms, vs) = (param.storage_arc(), m.storage_arc(), v.storage_arc());
    if Arc::ptr_eq(ps, ms) || Arc::ptr_eq(ps, vs) || Arc::ptr_eq(ms, vs) {
        return Err(Error::arg(op, "parameter, m and v must not share storage"));
    }
    let grad = if Arc::ptr_eq(grad.storage_arc(), ps)
        || Arc::ptr_eq(grad.storage_arc(), ms)
        || Arc::ptr_eq(grad.storage_arc(), vs)
    {
        grad.copy()?
    } else {
        grad.clone()
    };
    let g = grad.storage();
    let mut p = ps.write().unwrap_or_else(|e| e.into_inner());
    let mut mm = ms.write().unwrap_or_else(|e| e.into_inner());
    let mut vv = vs.write().unwrap_or_else(|e| e.into_inner());
    crate::Storage::adamw_step(&mut p, &mut mm, &mut vv, (&g, grad.layout()), h)
}
