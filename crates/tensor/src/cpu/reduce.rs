//! Reductions over axes. The reduced axes are moved last, so each output element
//! reduces one row; a row is summed in 8 fixed lanes (vectorisable, and the order never
//! depends on threads), and rows longer than `BLOCK` split into fixed blocks that run in
//! parallel and combine in order.

use super::elementwise::map;
use super::strided::TASK_ELEMS;
use crate::ops::ReduceOp;
use crate::{Float, Layout};
use rayon::prelude::*;
use std::borrow::Cow;

/// Row length above which a single row is split across tasks.
const BLOCK: usize = 1 << 16;

/// Reduces the strided `x` over the sorted axes `dims`; output in row-major keepdim order.
pub(crate) fn reduce<T: Float>(x: &[T], l: &Layout, op: ReduceOp, dims: &[usize]) -> Vec<T> {
    let rank = l.dims().len();
    let kept: Vec<usize> = (0..rank).filter(|d| !dims.contains(d)).collect();
    let perm: Vec<usize> = kept.iter().chain(dims).copied().collect();
    let pl = l.permute(&perm).expect("a permutation of the axes");
    let row: usize = dims.iter().map(|&d| l.dims()[d]).product();
    let rows: usize = kept.iter().map(|&d| l.dims()[d]).product();
    if row == 0 {
        // Only sums reach here (the tensor layer rejects max/min of nothing).
        return vec![T::ZERO; rows];
    }
    let data: Cow<[T]> = match pl.contiguous_range() {
        Some(r) => Cow::Borrowed(&x[r]),
        None => Cow::Owned(map(x, &pl, |v| v)),
    };
    let f = row_fn::<T>(op);
    if row >= 2 * BLOCK {
        return data
            .chunks(row)
            .map(|r| {
                let parts: Vec<T> = r.par_chunks(BLOCK).map(f).collect();
                f(&parts)
            })
            .collect();
    }
    let rows_per_task = (TASK_ELEMS / row).max(1);
    let mut out = vec![T::ZERO; rows];
    out.par_chunks_mut(rows_per_task)
        .zip(data.par_chunks(rows_per_task * row))
        .for_each(|(o, d)| {
            for (y, r) in o.iter_mut().zip(d.chunks(row)) {
                *y = f(r);
            }
        });
    out
}

fn row_fn<T: Float>(op: ReduceOp) -> fn(&[T]) -> T {
    match op {
        ReduceOp::Sum => sum_row,
        ReduceOp::Max => |r| fold_row(r, |acc, v| if v > acc || v.is_nan() { v } else { acc }),
        ReduceOp::Min => |r| fold_row(r, |acc, v| if v < acc || v.is_nan() { v } else { acc }),
    }
}

/// Sum in 8 lanes combined pairwise: a fixed order, and about sqrt(8) less rounding
/// error than one running sum.
pub(crate) fn sum_row<T: Float>(x: &[T]) -> T {
    let mut acc = [T::ZERO; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for k in 0..8 {
            acc[k] += c[k];
        }
    }
    let tail: T = chunks.remainder().iter().copied().sum();
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail
}

/// max/min fold over a non-empty row; `pick` propagates NaN.
fn fold_row<T: Float>(x: &[T], pick: impl Fn(T, T) -> T) -> T {
    x[1..].iter().fold(x[0], |acc, &v| pick(acc, v))
}
