//! GPU scaled dot-product attention, flash-style, and its backward (`kernels/attention.wgsl`).
//!
//! Forward: one workgroup per (batch x head, block of 16 queries, head-dim chunk of the
//! output) streams key/value tiles through workgroup memory with an online softmax
//! (FlashAttention-2, Dao 2023, alg. 1). Backward (alg. 2, recomputing P from the saved
//! logsumexp): delta = rowsum(dout * out), then dk and dv per block of keys and dq per
//! block of queries, in separate kernels so nothing is accumulated atomically.

use super::runtime::{grid, Kernel, WG};
use super::source::{files, specialise};
use super::storage::GpuStorage;
use crate::ops::AttnShape;
use crate::{DType, Error, Layout, Result};
use std::sync::Arc;

type Operand<'a> = (&'a GpuStorage, &'a Layout);

/// Threads per row and rows (queries, or keys in DKDV) per workgroup, as in the WGSL.
const T: usize = 8;
const ROWS: usize = 16;
const THREADS: u32 = (T * ROWS) as u32;
/// Widest head-dim chunk: 128 / T = 16 accumulator registers per thread and output.
const MAX_HC: usize = 128;

/// f32 words of workgroup memory the forward declares for chunk width `hc` (tile rows
/// are padded by one word against bank conflicts): query chunk [16, hc], key/value
/// chunk [32, hc], probabilities [16, 32], row maxima [16, 8].
fn forward_words(hc: usize) -> usize {
    (ROWS + 32) * (hc + 1) + ROWS * 33 + ROWS * T
}

/// The same for DKDV, the larger backward kernel: key, value, query and dout chunks
/// [16, hc] each, P^T and dS^T [16, 16], lse and delta [16].
fn backward_words(hc: usize) -> usize {
    4 * 16 * (hc + 1) + 2 * 16 * 17 + 2 * 16
}

/// The head-dim chunk width: max(D, DV) split into as few equal chunks as fit the
/// device's workgroup memory (`words(hc)` words of 4 bytes), each a multiple of T and at
/// most MAX_HC wide. D = 64 runs in one chunk of 64, D = 80 in one of 80 (not a padded
/// 128), D = 160 in two of 80 where one of 160 would not fit.
fn chunk_width(
    dev: &GpuStorage,
    s: &AttnShape,
    words: fn(usize) -> usize,
    op: &'static str,
) -> Result<usize> {
    let limit = dev.device.0.limits.max_compute_workgroup_storage_size as usize;
    let widest_fit = (1..=MAX_HC / T)
        .rev()
        .map(|n| n * T)
        .find(|&hc| 4 * words(hc) <= limit)
        .ok_or_else(|| {
            Error::device(
                op,
                format!(
                    "needs {} bytes of workgroup memory, the device allows {limit}",
                    4 * words(T)
                ),
            )
        })?;
    let widest = s.d.max(s.dv).max(1);
    let chunks = widest.div_ceil(widest_fit);
    Ok(widest.div_ceil(chunks).next_multiple_of(T))
}

/// The kernel `flag` (FORWARD, DELTA, DKDV, DQ) for chunk width `hc`; all but DELTA
/// share the TILED helpers.
fn kernel(dev: &GpuStorage, flag: &str, hc: usize) -> Result<Arc<Kernel>> {
    let ctx = &dev.device.0;
    let flags: &[&str] = if flag == "DELTA" {
        &[flag]
    } else {
        &[flag, "TILED"]
    };
    ctx.runtime
        .kernel(ctx, &format!("attention/{flag}/{hc}"), "main", || {
            specialise(files::ATTENTION, flags, &[("HC", &hc.to_string())])
        })
}

/// The tiled kernels' work: `bh * blocks * chunks` workgroups, one per (batch x head,
/// block of ROWS rows, head-dim chunk of the output).
struct Grid {
    blocks: usize,
    chunks: usize,
    jobs: usize,
}

impl Grid {
    fn new(s: &AttnShape, rows: usize, chunks: usize) -> Grid {
        let blocks = rows.div_ceil(ROWS);
        // At least one chunk, so lse and zero gradients are written even when DV = 0.
        let chunks = chunks.max(1);
        Grid {
            blocks,
            chunks,
            jobs: s.b * s.h * blocks * chunks,
        }
    }
}

/// The params every entry reads (see the WGSL header).
fn params(s: &AttnShape, hc: usize, g: &Grid, has_mask: bool) -> Vec<u32> {
    vec![
        g.jobs as u32,
        s.h as u32,
        s.l as u32,
        s.s as u32,
        s.d as u32,
        s.dv as u32,
        s.d.div_ceil(hc) as u32,
        s.dv.div_ceil(hc) as u32,
        s.causal as u32,
        has_mask as u32,
        (s.scale as f32).to_bits(),
        g.blocks as u32,
        g.chunks as u32,
    ]
}

fn run(
    x: &GpuStorage,
    k: &Kernel,
    bufs: &[&GpuStorage],
    p: &[u32],
    groups: [u32; 3],
) -> Result<()> {
    let ctx = &x.device.0;
    let bufs: Vec<_> = bufs.iter().map(|b| &*b.buf).collect();
    ctx.runtime.dispatch(ctx, k, &bufs, p, groups)
}

/// (out [B, H, L, DV], lse [B, H, L]).
pub(crate) fn attention(
    q: Operand,
    k: Operand,
    v: Operand,
    mask: Option<Operand>,
    s: &AttnShape,
) -> Result<(GpuStorage, GpuStorage)> {
    let (q, k, v) = (q.0.dense(q.1)?, k.0.dense(k.1)?, v.0.dense(v.1)?);
    let mask = mask.map(|(m, l)| m.dense(l)).transpose()?;
    let bh = s.b * s.h;
    let out = GpuStorage::alloc(&q.device, bh * s.l * s.dv, DType::F32, "attention")?;
    let lse = GpuStorage::alloc(&q.device, bh * s.l, DType::F32, "attention")?;
    if bh * s.l == 0 {
        return Ok((out, lse));
    }
    let hc = chunk_width(&q, s, forward_words, "attention")?;
    let g = Grid::new(s, s.l, s.dv.div_ceil(hc));
    let p = params(s, hc, &g, mask.is_some());
    // Without a mask q takes its binding; the kernel never reads it.
    let m = mask.as_deref().unwrap_or(&q);
    let kern = kernel(&q, "FORWARD", hc)?;
    let groups = grid(&q.device.0, g.jobs * THREADS as usize, THREADS);
    run(&q, &kern, &[&*q, &*k, &*v, m, &out, &lse], &p, groups)?;
    Ok((out, lse))
}

/// (dq, dk, dv).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_backward(
    q: Operand,
    k: Operand,
    v: Operand,
    mask: Option<Operand>,
    out: Operand,
    lse: &GpuStorage,
    dout: Operand,
    s: &AttnShape,
) -> Result<(GpuStorage, GpuStorage, GpuStorage)> {
    const OP: &str = "attention_backward";
    let (q, k, v) = (q.0.dense(q.1)?, k.0.dense(k.1)?, v.0.dense(v.1)?);
    let (out, dout) = (out.0.dense(out.1)?, dout.0.dense(dout.1)?);
    let mask = mask.map(|(m, l)| m.dense(l)).transpose()?;
    let dev = &q.device;
    let bh = s.b * s.h;
    let dq = GpuStorage::alloc(dev, bh * s.l * s.d, DType::F32, OP)?;
    let dk = GpuStorage::alloc(dev, bh * s.s * s.d, DType::F32, OP)?;
    let dv = GpuStorage::alloc(dev, bh * s.s * s.dv, DType::F32, OP)?;
    if bh == 0 {
        return Ok((dq, dk, dv));
    }
    // DKDV binds nine buffers and its params: more than WebGPU's minimum of eight.
    let max_buffers = dev.0.limits.max_storage_buffers_per_shader_stage;
    if max_buffers < 10 {
        return Err(Error::device(
            OP,
            format!("needs 10 storage buffers per shader stage, the device allows {max_buffers}"),
        ));
    }
    let hc = chunk_width(&q, s, backward_words, OP)?;
    let m = mask.as_deref().unwrap_or(&q);
    let has_mask = mask.is_some();
    let ctx = &dev.0;

    // delta [B, H, L] = rowsum(dout * out): FA-2 alg. 2, line 4.
    let delta = GpuStorage::alloc(dev, bh * s.l, DType::F32, OP)?;
    if s.l > 0 {
        let g = Grid::new(s, s.l, 1);
        let mut p = params(s, hc, &g, has_mask);
        p[0] = (bh * s.l) as u32;
        let kern = kernel(&q, "DELTA", hc)?;
        run(
            &q,
            &kern,
            &[&*out, &*dout, &delta],
            &p,
            grid(ctx, bh * s.l, WG),
        )?;
    }
    // dk, dv: one workgroup per (head, block of keys, chunk of max(D, DV)). Zero when
    // L = 0, so it runs whenever there are keys.
    if s.s > 0 {
        let g = Grid::new(s, s.s, s.d.max(s.dv).div_ceil(hc));
        let p = params(s, hc, &g, has_mask);
        let kern = kernel(&q, "DKDV", hc)?;
        let bufs = [&*q, &*k, &*v, m, &*dout, lse, &delta, &dk, &dv];
        let groups = grid(ctx, g.jobs * THREADS as usize, THREADS);
        run(&q, &kern, &bufs, &p, groups)?;
    }
    // dq: one workgroup per (head, block of queries, chunk of D).
    if s.l > 0 {
        let g = Grid::new(s, s.l, s.d.div_ceil(hc));
        let p = params(s, hc, &g, has_mask);
        let kern = kernel(&q, "DQ", hc)?;
        let bufs = [&*q, &*k, &*v, m, &*dout, lse, &delta, &dq];
        let groups = grid(ctx, g.jobs * THREADS as usize, THREADS);
        run(&q, &kern, &bufs, &p, groups)?;
    }
    Ok((dq, dk, dv))
}
