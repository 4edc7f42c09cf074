//! Gather and place kernels: embedding rows, their scatter-add backward, concatenation
//! of contiguous parts, and nearest-neighbour upsampling.

use super::strided::TASK_ELEMS;
use crate::{Error, Float, Result};
use rayon::prelude::*;

/// The concatenation of contiguous `parts` (slice, slab): for each of `outer` blocks,
/// each part's next `slab` elements, in part order (a cat along an axis whose outer axes
/// multiply to `outer`). Written once, in parallel over blocks: the general path zeroes
/// the output on one thread first, and the U-Net's skip concatenations are its largest
/// activations (25 MiB at batch 64).
pub(crate) fn cat<T: Copy + Send + Sync>(parts: &[(&[T], usize)], outer: usize) -> Vec<T> {
    let row: usize = parts.iter().map(|p| p.1).sum();
    let len = outer * row;
    let mut out = Vec::with_capacity(len);
    if row > 0 {
        out.spare_capacity_mut()[..len]
            .par_chunks_mut(row)
            .with_min_len(TASK_ELEMS.div_ceil(row))
            .enumerate()
            .for_each(|(o, block)| {
                let mut at = 0;
                for &(src, slab) in parts {
                    let from = &src[o * slab..(o + 1) * slab];
                    for (d, &v) in block[at..at + slab].iter_mut().zip(from) {
                        d.write(v);
                    }
                    at += slab;
                }
            });
    }
    // SAFETY: the blocks cover all `len` elements and each writes all of its `row`: the
    // parts' slabs sum to `row` (a panic on a too-short part unwinds past this line).
    unsafe { out.set_len(len) };
    out
}

/// Rows of w [V, D] at `ids`; an id out of range is an error.
pub(crate) fn embedding<T: Float>(ids: &[u32], w: &[T], vocab: usize, d: usize) -> Result<Vec<T>> {
    if let Some(&bad) = ids.iter().find(|&&i| i as usize >= vocab) {
        return Err(Error::arg(
            "embedding",
            format!("id {bad} is out of range for a table of {vocab} rows"),
        ));
    }
    let mut out = vec![T::ZERO; ids.len() * d];
    if d > 0 {
        out.par_chunks_mut(d)
            .zip(ids.par_iter())
            .for_each(|(o, &i)| {
                o.copy_from_slice(&w[i as usize * d..(i as usize + 1) * d]);
            });
    }
    Ok(out)
}

/// dw [V, D]: each dy row added to its id's row, in id order, so repeated ids sum in a
/// fixed order (one thread: the scatter is cheap next to everything around it).
pub(crate) fn embedding_backward<T: Float>(
    ids: &[u32],
    dy: &[T],
    vocab: usize,
    d: usize,
) -> Result<Vec<T>> {
    if let Some(&bad) = ids.iter().find(|&&i| i as usize >= vocab) {
        return Err(Error::arg(
            "embedding",
            format!("id {bad} is out of range for a table of {vocab} rows"),
        ));
    }
    let mut dw = vec![T::ZERO; vocab * d];
    for (r, &i) in ids.iter().enumerate() {
        let (dst, src) = (
            &mut dw[i as usize * d..(i as usize + 1) * d],
            &dy[r * d..(r + 1) * d],
        );
        dst.iter_mut().zip(src).for_each(|(a, &b)| *a += b);
    }
    Ok(dw)
}

/// y [N, C, H f, W f] with y[.., oh, ow] = x[.., oh / f, ow / f].
pub(crate) fn upsample_nearest2d<T: Float>(
    x: &[T],
    planes: usize,
    h: usize,
    w: usize,
    f: usize,
) -> Vec<T> {
    let (ho, wo) = (h * f, w * f);
    let len = planes * ho * wo;
    // Written once, without a zero-fill first: every output row is a source row with
    // each element repeated f times.
    let mut y = Vec::with_capacity(len);
    if len > 0 {
        y.spare_capacity_mut()[..len]
            .par_chunks_mut(ho * wo)
            .zip(x.par_chunks(h * w))
            .with_min_len(TASK_ELEMS.div_ceil(ho * wo))
            .for_each(|(yp, xp)| {
                for (oh, row) in yp.chunks_mut(wo).enumerate() {
                    let src = &xp[(oh / f) * w..(oh / f + 1) * w];
                    for (block, &v) in row.chunks_exact_mut(f).zip(src) {
                        block.iter_mut().for_each(|e| {
                            e.write(v);
                        });
                    }
                }
            });
        // SAFETY: the planes of ho * wo cover y, and each row of wo = w f elements was
        // written as w blocks of f.
        unsafe { y.set_len(len) };
    }
    y
}
