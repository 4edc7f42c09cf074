//! GPU embedding lookup and its scatter-add backward, and nearest upsampling
//! (`kernels/index.wgsl`).

use super::runtime::{grid, WG};
use super::source::{files, specialise};
use super::storage::GpuStorage;
use crate::{DType, Layout, Result};

fn run(
    flag: &str,
    inputs: &[&GpuStorage],
    out: &GpuStorage,
    p: &[u32],
    threads: usize,
) -> Result<()> {
    if threads == 0 {
        return Ok(());
    }
    let ctx = &out.device.0;
    let k = ctx
        .runtime
        .kernel(ctx, &format!("index/{flag}"), "main", || {
            specialise(files::INDEX, &[flag], &[])
        })?;
    let mut bufs: Vec<_> = inputs.iter().map(|s| &*s.buf).collect();
    bufs.push(&out.buf);
    ctx.runtime
        .dispatch(ctx, &k, &bufs, p, grid(ctx, threads, WG))
}

/// Rows of w [vocab, d] at the u32 ids.
pub(crate) fn embedding(
    ids: &GpuStorage,
    il: &Layout,
    w: &GpuStorage,
    wl: &Layout,
) -> Result<GpuStorage> {
    let (ids, w) = (ids.dense(il)?, w.dense(wl)?);
    let (n, vocab, d) = (il.elem_count(), wl.dims()[0], wl.dims()[1]);
    let y = GpuStorage::alloc(&w.device, n * d, DType::F32, "embedding")?;
    run(
        "EMBEDDING",
        &[&ids, &w],
        &y,
        &[n as u32, d as u32, vocab as u32],
        n * d,
    )?;
    Ok(y)
}

/// dw [vocab, d]: dy rows summed at their ids.
pub(crate) fn embedding_backward(
    ids: &GpuStorage,
    il: &Layout,
    dy: &GpuStorage,
    dl: &Layout,
    vocab: usize,
) -> Result<GpuStorage> {
    let (ids, dy) = (ids.dense(il)?, dy.dense(dl)?);
    let (n, d) = (il.elem_count(), dl.dims().last().copied().unwrap_or(1));
    let dw = GpuStorage::alloc(&dy.device, vocab * d, DType::F32, "embedding_backward")?;
    run(
        "EMBEDDING_BACKWARD",
        &[&ids, &dy],
        &dw,
        &[n as u32, d as u32, vocab as u32],
        vocab * d,
    )?;
    Ok(dw)
}

/// [N, C, H, W] -> [N, C, H f, W f].
pub(crate) fn upsample_nearest2d(x: &GpuStorage, l: &Layout, f: usize) -> Result<GpuStorage> {
    let x = x.dense(l)?;
    let &[n, c, h, w] = l.dims() else {
        unreachable!("checked by the tensor layer")
    };
    let out = n * c * h * f * w * f;
    let y = GpuStorage::alloc(&x.device, out, DType::F32, "upsample_nearest2d")?;
    run(
        "UPSAMPLE",
        &[&x],
        &y,
        &[out as u32, h as u32, w as u32, f as u32],
        out,
    )?;
    Ok(y)
}
