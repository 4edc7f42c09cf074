//! GPU reductions and softmax: workgroup tree reductions (`kernels/reduce.wgsl`,
//! `kernels/softmax.wgsl`), deterministic because nothing is accumulated atomically.

use super::runtime::{grid, WG};
use super::source::files;
use super::storage::GpuStorage;
use crate::layout::Coalesced;
use crate::ops::ReduceOp;
use crate::{DType, Error, Layout, Result};

/// Rows longer than this are reduced in chunks of `CHUNK`, then over the partials.
const SPLIT: usize = 16 * 1024;
const CHUNK: usize = 4096;

/// Reduces `x` over the sorted axes `dims`; output contiguous in keepdim order.
pub(crate) fn reduce(
    x: &GpuStorage,
    l: &Layout,
    op: ReduceOp,
    dims: &[usize],
) -> Result<GpuStorage> {
    let rank = l.dims().len();
    let kept: Vec<usize> = (0..rank).filter(|d| !dims.contains(d)).collect();
    let perm: Vec<usize> = kept.iter().chain(dims).copied().collect();
    let pl = l.permute(&perm)?;
    let row: usize = dims.iter().map(|&d| l.dims()[d]).product();
    let rows: usize = kept.iter().map(|&d| l.dims()[d]).product();
    if row == 0 || rows == 0 {
        return GpuStorage::full(&x.device, 0.0, rows, DType::F32);
    }
    reduce_rows(x, &pl, rows, row, op)
}

/// Reduces the row-major view `l` as `rows` rows of `row` elements.
fn reduce_rows(
    x: &GpuStorage,
    l: &Layout,
    rows: usize,
    row: usize,
    op: ReduceOp,
) -> Result<GpuStorage> {
    let chunk = if row > SPLIT { CHUNK } else { row };
    let chunks = row.div_ceil(chunk);
    let c = Coalesced::new([l]);
    if c.dims.len() > 8 {
        return Err(Error::shape(
            op.name(),
            "the GPU walks at most 8 strided axes; make the tensor contiguous first",
        ));
    }
    let code = match op {
        ReduceOp::Sum => 0,
        ReduceOp::Max => 1,
        ReduceOp::Min => 2,
    };
    let mut p = vec![
        rows as u32,
        row as u32,
        chunk as u32,
        chunks as u32,
        code,
        c.dims.len() as u32,
    ];
    p.extend((0..8).map(|d| c.dims.get(d).copied().unwrap_or(1) as u32));
    p.push(c.offsets[0] as u32);
    p.extend((0..8).map(|d| c.strides.get(d).map_or(0, |s| s[0]) as u32));
    let out = GpuStorage::alloc(&x.device, rows * chunks, DType::F32, op.name())?;
    let ctx = &x.device.0;
    let k = ctx
        .runtime
        .kernel(ctx, "reduce", "main", || files::REDUCE.to_string())?;
    ctx.runtime.dispatch(
        ctx,
        &k,
        &[&x.buf, &out.buf],
        &p,
        grid(ctx, rows * chunks * WG as usize, WG),
    )?;
    if chunks == 1 {
        return Ok(out);
    }
    // The partials, [rows, chunks], reduced in chunk order.
    reduce_rows(&out, &Layout::contiguous([rows, chunks]), rows, chunks, op)
}

/// Softmax over the last axis of a contiguous x whose rows have length `d`.
pub(crate) fn softmax_last(x: &GpuStorage, l: &Layout, d: usize) -> Result<GpuStorage> {
    let n = l.elem_count();
    let y = GpuStorage::alloc(&x.device, n, DType::F32, "softmax")?;
    if n == 0 {
        return Ok(y);
    }
    let rows = n / d;
    let x = x.dense(l)?;
    let ctx = &x.device.0;
    let k = ctx
        .runtime
        .kernel(ctx, "softmax", "main", || files::SOFTMAX.to_string())?;
    ctx.runtime.dispatch(
        ctx,
        &k,
        &[&x.buf, &y.buf],
        &[rows as u32, d as u32],
        grid(ctx, rows * WG as usize, WG),
    )?;
    Ok(y)
}
