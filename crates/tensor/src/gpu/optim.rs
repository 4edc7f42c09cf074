//! The fused AdamW update on the GPU (`kernels/adamw.wgsl`).

use super::runtime::{grid, WG};
use super::source::files;
use super::storage::GpuStorage;
use crate::ops::AdamWStep;
use crate::{Layout, Result};

/// In place on param, m, v (whole contiguous buffers) from the strided gradient.
pub(crate) fn adamw(
    p: &GpuStorage,
    m: &GpuStorage,
    v: &GpuStorage,
    g: (&GpuStorage, &Layout),
    h: &AdamWStep,
) -> Result<()> {
    let g = g.0.dense(g.1)?;
    let n = p.len;
    if n == 0 {
        return Ok(());
    }
    let (step_size, bc2) = h.corrections();
    let f = |x: f64| (x as f32).to_bits();
    let params = [
        n as u32,
        f(h.beta1),
        f(h.beta2),
        f(h.eps),
        f(1.0 - h.lr * h.weight_decay),
        f(1.0 - h.beta1),
        f(1.0 - h.beta2),
        f(step_size),
        f(bc2),
    ];
    let ctx = &p.device.0;
    let k = ctx
        .runtime
        .kernel(ctx, "adamw", "main", || files::ADAMW.to_string())?;
    ctx.runtime.dispatch(
        ctx,
        &k,
        &[&p.buf, &m.buf, &v.buf, &g.buf],
        &params,
        grid(ctx, n, WG),
    )
}
