//! GPU group/layer normalisation (`kernels/norm.wgsl`): one fused workgroup per group,
//! or, for groups longer than `SPLIT`, chunk statistics merged in order and a separate
//! normalising pass, so a large group is spread over many workgroups.

use super::reduce::reduce;
use super::runtime::{grid, WG};
use super::source::{files, specialise};
use super::storage::GpuStorage;
use crate::ops::{NormShape, ReduceOp};
use crate::{DType, Layout, Result};

/// Groups longer than this are split into chunks of `CHUNK` elements.
const SPLIT: usize = 16 * 1024;
const CHUNK: usize = 4096;

fn params(s: &NormShape, has_w: bool, has_b: bool) -> Vec<u32> {
    let m = s.group_len();
    let chunk = if m > SPLIT { CHUNK } else { m.max(1) };
    vec![
        (s.rows * s.groups) as u32,
        s.groups as u32,
        s.cpg as u32,
        s.inner as u32,
        (s.eps as f32).to_bits(),
        has_w as u32,
        has_b as u32,
        chunk as u32,
        m.div_ceil(chunk).max(1) as u32,
        s.silu as u32,
    ]
}

fn kernel(x: &GpuStorage, flags: &[&str]) -> Result<std::sync::Arc<super::runtime::Kernel>> {
    let ctx = &x.device.0;
    ctx.runtime
        .kernel(ctx, &format!("norm/{}", flags.join("+")), "main", || {
            specialise(files::NORM, flags, &[])
        })
}

/// (y, mean, rstd) of the normalisation of a contiguous x.
pub(crate) fn norm(
    x: &GpuStorage,
    l: &Layout,
    w: Option<&GpuStorage>,
    b: Option<&GpuStorage>,
    s: &NormShape,
) -> Result<(GpuStorage, GpuStorage, GpuStorage)> {
    let x = x.dense(l)?;
    let (jobs, m) = (s.rows * s.groups, s.group_len());
    let dev = &x.device;
    let y = GpuStorage::alloc(dev, jobs * m, DType::F32, "norm")?;
    let mean = GpuStorage::alloc(dev, jobs, DType::F32, "norm")?;
    let rstd = GpuStorage::alloc(dev, jobs, DType::F32, "norm")?;
    if jobs == 0 || m == 0 {
        return Ok((y, mean, rstd));
    }
    let p = params(s, w.is_some(), b.is_some());
    // Absent parameters bind x in their place; the kernel never reads them.
    let (wb, bb) = (w.unwrap_or(&x), b.unwrap_or(&x));
    let ctx = &dev.0;
    if m <= SPLIT {
        let k = kernel(&x, &["FUSED"])?;
        let bufs = [&*x.buf, &wb.buf, &bb.buf, &y.buf, &mean.buf, &rstd.buf];
        ctx.runtime
            .dispatch(ctx, &k, &bufs, &p, grid(ctx, jobs * WG as usize, WG))?;
    } else {
        let chunks = p[8] as usize;
        let part = GpuStorage::alloc(dev, 2 * jobs * chunks, DType::F32, "norm")?;
        let k = kernel(&x, &["PARTIAL"])?;
        ctx.runtime.dispatch(
            ctx,
            &k,
            &[&x.buf, &part.buf],
            &p,
            grid(ctx, jobs * chunks * WG as usize, WG),
        )?;
        let k = kernel(&x, &["COMBINE"])?;
        ctx.runtime.dispatch(
            ctx,
            &k,
            &[&part.buf, &mean.buf, &rstd.buf],
            &p,
            grid(ctx, jobs, WG),
        )?;
        let k = kernel(&x, &["APPLY"])?;
        let bufs = [&*x.buf, &wb.buf, &bb.buf, &mean.buf, &rstd.buf, &y.buf];
        ctx.runtime
            .dispatch(ctx, &k, &bufs, &p, grid(ctx, jobs * m, WG))?;
    }
    Ok((y, mean, rstd))
}

/// (dx, dw, db): dx per group in one workgroup (split into chunks over many for groups
/// longer than `SPLIT`); dw and db as sums of d * xhat and d
/// (d: the gradient at the normaliser's output) over rows and the inner axis, by the
/// tree reduction.
pub(crate) fn norm_backward(
    x: &GpuStorage,
    l: &Layout,
    dy: (&GpuStorage, &Layout),
    (w, b): (Option<&GpuStorage>, Option<&GpuStorage>),
    (mean, rstd): (&GpuStorage, &GpuStorage),
    s: &NormShape,
) -> Result<(GpuStorage, GpuStorage, GpuStorage)> {
    let x = x.dense(l)?;
    let g = dy.0.dense(dy.1)?;
    let (jobs, m) = (s.rows * s.groups, s.group_len());
    let dev = &x.device;
    let dx = GpuStorage::alloc(dev, jobs * m, DType::F32, "norm_backward")?;
    let gxh = GpuStorage::alloc(dev, jobs * m, DType::F32, "norm_backward")?;
    let gd = GpuStorage::alloc(dev, jobs * m, DType::F32, "norm_backward")?;
    if jobs > 0 && m > 0 {
        let p = params(s, w.is_some(), b.is_some());
        let (wb, bb) = (w.unwrap_or(&x), b.unwrap_or(&x));
        let shared = [&*x.buf, &g.buf, &wb.buf, &bb.buf, &mean.buf, &rstd.buf];
        let ctx = &dev.0;
        if m <= SPLIT {
            let k = kernel(&x, &["BWD", "BWD_FUSED"])?;
            let bufs = [&shared[..], &[&dx.buf, &gxh.buf, &gd.buf]].concat();
            ctx.runtime
                .dispatch(ctx, &k, &bufs, &p, grid(ctx, jobs * WG as usize, WG))?;
        } else {
            // A large group over many workgroups: chunk sums, then one thread per element.
            let chunks = p[8] as usize;
            let part = GpuStorage::alloc(dev, 2 * jobs * chunks, DType::F32, "norm_backward")?;
            let k = kernel(&x, &["BWD", "BWD_PARTIAL"])?;
            let bufs = [&shared[..], &[&part.buf]].concat();
            let units = jobs * chunks * WG as usize;
            ctx.runtime
                .dispatch(ctx, &k, &bufs, &p, grid(ctx, units, WG))?;
            let k = kernel(&x, &["BWD", "BWD_APPLY"])?;
            let bufs = [&shared[..], &[&part.buf, &dx.buf, &gxh.buf, &gd.buf]].concat();
            ctx.runtime
                .dispatch(ctx, &k, &bufs, &p, grid(ctx, jobs * m, WG))?;
        }
    }
    // Channel sums: x is [rows, channels, inner] in memory.
    let per_channel = Layout::contiguous([s.rows, s.channels(), s.inner]);
    let dw = reduce(&gxh, &per_channel, ReduceOp::Sum, &[0, 2])?;
    let db = reduce(&gd, &per_channel, ReduceOp::Sum, &[0, 2])?;
    Ok((dx, dw, db))
}
