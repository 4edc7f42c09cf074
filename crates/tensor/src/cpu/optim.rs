//! The fused AdamW update on the CPU: one pass over parameter, moments and gradient.

use crate::ops::AdamWStep;
use crate::Float;
use rayon::prelude::*;

/// In place, elementwise, in torch.optim.AdamW's order of operations.
pub(crate) fn adamw<T: Float>(p: &mut [T], m: &mut [T], v: &mut [T], g: &[T], h: &AdamWStep) {
    let (step_size, bc2_sqrt) = h.corrections();
    let c = |x: f64| T::from_f64(x);
    let (b1, b2, eps, decay) = (
        c(h.beta1),
        c(h.beta2),
        c(h.eps),
        c(1.0 - h.lr * h.weight_decay),
    );
    let (one_b1, one_b2, step, bc2) = (
        c(1.0 - h.beta1),
        c(1.0 - h.beta2),
        c(step_size),
        c(bc2_sqrt),
    );
    const CHUNK: usize = 1 << 14;
    p.par_chunks_mut(CHUNK)
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)))
        .for_each(|((p, m), (v, g))| {
            for i in 0..p.len() {
                m[i] = b1 * m[i] + one_b1 * g[i];
                v[i] = b2 * v[i] + one_b2 * g[i] * g[i];
                let denom = v[i].sqrt() / bc2 + eps;
                p[i] = p[i] * decay - step * m[i] / denom;
            }
        });
}
