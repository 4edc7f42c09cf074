//! Reductions over axes. The reduced axes are moved last, so each output element
//! reduces one row; a row is summed in 8 fixed lanes (vectorisable, and the order never
//! depends on threads), and rows longer than `BLOCK` split into fixed blocks that run in
//! parallel and combine in order.

use super::elementwise::map;
use super::strided::{Plan, TASK_ELEMS};
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
    // A sum over leading axes of a contiguous tensor (a bias gradient: [B, L, C] -> [C])
    // reads the rows in place instead of transposing the whole tensor first.
    let leading = dims.iter().enumerate().all(|(i, &d)| i == d);
    if let (ReduceOp::Sum, true, Some(r), true) =
        (op, leading, l.contiguous_range(), row < 2 * BLOCK)
    {
        return sum_leading(&x[r], row, rows);
    }
    // A sum over the axes around a block of kept ones ([B, C, H, W] -> [C]: a conv bias
    // gradient) reads each output's rows in place too, where a lane's elements stay in
    // one lane (the inner extent a multiple of 8) and the row is not split in blocks.
    if let (ReduceOp::Sum, Some((outer, inner)), Some(r), true) = (
        op,
        middle_kept(l.dims(), &kept),
        l.contiguous_range(),
        row < 2 * BLOCK,
    ) {
        if inner.is_multiple_of(8) {
            return sum_middle(&x[r], (outer, rows, inner));
        }
    }
    // Rows shorter than a lane group (an upsampling's gradient: 2 x 2 blocks of
    // [N, C, H, 2, W, 2] summed over axes 3 and 5) are summed where they lie, without
    // the transposed copy.
    if let (ReduceOp::Sum, true) = (op, row < 8) {
        return sum_short_rows(x, l, &kept, dims);
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

/// Columns of the output a task of [`sum_leading`] handles.
const COLUMNS: usize = 256;

/// out[c] = sum over r of x[r k + c] for x [n, k], each column summed in exactly
/// [`sum_row`]'s order (lane r mod 8 for the first 8 floor(n / 8) rows, the rest in
/// order, the lanes combined pairwise), so it equals the transpose-then-`sum_row` path
/// bit for bit while the loads stay contiguous and vectorise across columns.
fn sum_leading<T: Float>(x: &[T], n: usize, k: usize) -> Vec<T> {
    if k == 1 {
        // A whole-tensor sum: the one column is the row itself.
        return vec![sum_row(x)];
    }
    let mut out = vec![T::ZERO; k];
    let full = n / 8 * 8;
    out.par_chunks_mut(COLUMNS).enumerate().for_each(|(t, o)| {
        let (c0, w) = (t * COLUMNS, o.len());
        let mut acc = vec![T::ZERO; 8 * w];
        for r in 0..full {
            let lane = &mut acc[(r % 8) * w..][..w];
            for (a, &v) in lane.iter_mut().zip(&x[r * k + c0..][..w]) {
                *a += v;
            }
        }
        for (j, y) in o.iter_mut().enumerate() {
            let a = |l: usize| acc[l * w + j];
            let tail: T = (full..n).map(|r| x[r * k + c0 + j]).sum();
            *y = combine8(std::array::from_fn(a)) + tail;
        }
    });
    out
}

/// (outer, inner) extents when the kept axes are one contiguous run with reduced axes
/// on both sides of it (x seen as [outer, kept, inner]).
fn middle_kept(dims: &[usize], kept: &[usize]) -> Option<(usize, usize)> {
    let (&first, &last) = (kept.first()?, kept.last()?);
    if last - first + 1 != kept.len() || first == 0 || last + 1 == dims.len() {
        return None;
    }
    Some((
        dims[..first].iter().product(),
        dims[last + 1..].iter().product(),
    ))
}

/// Outputs a task of [`sum_middle`] sums side by side.
const MIDDLE_OUTPUTS: usize = 4;

/// out[k] = sum over (a, r) of x[(a K + k) R + r] for x [A, K, R], R a multiple of 8:
/// element (a, r) of output k's row sits at a R + r, in lane r mod 8, so adding each
/// contiguous run of R in order gives [`sum_row`]'s sum of the transposed row bit for
/// bit. `MIDDLE_OUTPUTS` outputs are summed together, their runs read in step: each
/// output's 8 lanes are one chain of dependent vector adds (latency-bound at 2 elements a
/// cycle alone), and independent chains side by side hide the latency; each output's
/// adds are the same, in the same order.
fn sum_middle<T: Float>(x: &[T], (a_len, k_len, r_len): (usize, usize, usize)) -> Vec<T> {
    let mut out = vec![T::ZERO; k_len];
    out.par_chunks_mut(MIDDLE_OUTPUTS)
        .enumerate()
        .for_each(|(t, o)| {
            let k0 = t * MIDDLE_OUTPUTS;
            let mut acc = [[T::ZERO; 8]; MIDDLE_OUTPUTS];
            let acc = &mut acc[..o.len()];
            for a in 0..a_len {
                let rows = &x[(a * k_len + k0) * r_len..][..o.len() * r_len];
                for ci in 0..r_len / 8 {
                    for (j, lanes) in acc.iter_mut().enumerate() {
                        let c = &rows[j * r_len + ci * 8..][..8];
                        for l in 0..8 {
                            lanes[l] += c[l];
                        }
                    }
                }
            }
            for (y, &lanes) in o.iter_mut().zip(acc.iter()) {
                *y = finish8(lanes, &[]);
            }
        });
    out
}

/// Sums of rows of fewer than 8 elements, each gathered in the transposed row's order
/// (the reduced axes' row-major order) and summed by [`finish8`] as [`sum_row`] would,
/// so the bits are the transposed path's.
fn sum_short_rows<T: Float>(x: &[T], l: &Layout, kept: &[usize], dims: &[usize]) -> Vec<T> {
    let (ld, ls) = (l.dims(), l.strides());
    let outer = Layout::new(
        kept.iter().map(|&d| ld[d]).collect::<Vec<_>>(),
        kept.iter().map(|&d| ls[d]).collect(),
        l.offset(),
    );
    // Offsets of a row's elements from its first, in the reduced axes' row-major order.
    let mut offs = vec![0usize];
    for &d in dims {
        offs = offs
            .iter()
            .flat_map(|&o| (0..ld[d]).map(move |i| o + i * ls[d]))
            .collect();
    }
    let plan = Plan::new([&outer]);
    // SAFETY: the closure writes every element of each row it is handed.
    unsafe {
        plan.collect_rows(|out, [base]| {
            let mut row = [T::ZERO; 8];
            for (i, y) in out.iter_mut().enumerate() {
                let at = base + i * plan.inner[0];
                for (r, &o) in row.iter_mut().zip(&offs) {
                    *r = x[at + o];
                }
                y.write(finish8([T::ZERO; 8], &row[..offs.len()]));
            }
        })
    }
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
    finish8(acc, chunks.remainder())
}

/// The lanes combined, plus the elements left over after the last full 8, in order.
#[inline]
fn finish8<T: Float>(acc: [T; 8], tail: &[T]) -> T {
    let tail: T = tail.iter().copied().sum();
    combine8(acc) + tail
}

/// The 8 lanes of [`sum_row`] combined pairwise, in the one fixed order.
#[inline]
fn combine8<T: Float>(a: [T; 8]) -> T {
    ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))
}

/// max/min fold over a non-empty row; `pick` propagates NaN.
fn fold_row<T: Float>(x: &[T], pick: impl Fn(T, T) -> T) -> T {
    x[1..].iter().fold(x[0], |acc, &v| pick(acc, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-place sum over leading axes equals transposing and summing rows, bit for
    /// bit, at lane tails, column-block tails and size-1 axes.
    #[test]
    fn leading_sum_matches_the_transposed_path() {
        for &(n, k) in &[
            (1, 1),
            (7, 3),
            (8, 257),
            (9, 256),
            (64, 64),
            (333, 513),
            (16, 1),
        ] {
            let x: Vec<f32> = (0..n * k)
                .map(|i| ((i * 7919 + 13) % 1009) as f32 / 97.0 - 5.0)
                .collect();
            let got = sum_leading(&x, n, k);
            let want: Vec<f32> = (0..k)
                .map(|c| sum_row(&(0..n).map(|r| x[r * k + c]).collect::<Vec<_>>()))
                .collect();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "[{n}, {k}]");
            // Through `reduce`, over the leading axes of a 3-d view.
            let l = Layout::contiguous([n, 1, k]);
            assert_eq!(bits(&reduce(&x, &l, ReduceOp::Sum, &[0, 1])), bits(&want));
        }
    }

    /// The in-place sum around kept middle axes ([B, C, H, W] -> [C]) equals the
    /// transposed path bit for bit, and shapes it does not take still reduce right.
    #[test]
    fn middle_sum_matches_the_transposed_path() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for dims in [
            vec![3, 5, 8],
            vec![1, 1, 16],
            vec![7, 2, 3, 8],
            vec![2, 3, 4, 2, 8],
            vec![5, 3, 7],
            // Two tasks of MIDDLE_OUTPUTS outputs and a partial third.
            vec![4, 9, 24],
        ] {
            let n: usize = dims.iter().product();
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 7919 + 13) % 1009) as f32 / 97.0 - 5.0)
                .collect();
            let l = Layout::contiguous(dims.clone());
            let reduced: Vec<usize> = (0..dims.len()).filter(|&d| d != 1).collect();
            let got = reduce(&x, &l, ReduceOp::Sum, &reduced);
            // The generic path: move the kept axis first, copy, sum each row.
            let mut perm = vec![1];
            perm.extend(&reduced);
            let rows = map(&x, &l.permute(&perm).unwrap(), |v| v);
            let want: Vec<f32> = rows.chunks(n / dims[1]).map(sum_row).collect();
            assert_eq!(bits(&got), bits(&want), "{dims:?}");
        }
        // Kept axes 1 and 2 of [2, 3, 4, 8].
        let x: Vec<f32> = (0..192).map(|i| (i % 17) as f32 - 8.0).collect();
        let got = reduce(
            &x,
            &Layout::contiguous([2, 3, 4, 8]),
            ReduceOp::Sum,
            &[0, 3],
        );
        let want: Vec<f32> = (0..12)
            .map(|k| {
                let x = &x;
                (0..2)
                    .flat_map(|a| (0..8).map(move |r| x[(a * 12 + k) * 8 + r]))
                    .sum()
            })
            .collect();
        assert_eq!(got, want);
    }

    /// Rows of fewer than 8 elements summed in place (an upsampling's 2 x 2 blocks, a
    /// permuted input, signed zeros) equal the transposed path bit for bit.
    #[test]
    fn short_rows_match_the_transposed_path() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let cases: [(Vec<usize>, Vec<usize>, Vec<usize>); 5] = [
            (vec![2, 3, 5, 2, 7, 2], vec![0, 1, 2, 3, 4, 5], vec![3, 5]),
            (vec![3, 7], vec![1, 0], vec![1]),
            (vec![4, 1, 3], vec![0, 1, 2], vec![1, 2]),
            (vec![2, 3, 4], vec![2, 0, 1], vec![0, 2]),
            (vec![7], vec![0], vec![0]),
        ];
        for (dims, perm, reduced) in cases {
            let n: usize = dims.iter().product();
            let x: Vec<f32> = (0..n)
                .map(|i| match i % 5 {
                    0 => -0.0,
                    _ => ((i * 7919 + 13) % 1009) as f32 / 97.0 - 5.0,
                })
                .collect();
            let l = Layout::contiguous(dims.clone()).permute(&perm).unwrap();
            let got = reduce(&x, &l, ReduceOp::Sum, &reduced);
            let rank = dims.len();
            let kept: Vec<usize> = (0..rank).filter(|d| !reduced.contains(d)).collect();
            let order: Vec<usize> = kept.iter().chain(&reduced).copied().collect();
            let row: usize = reduced.iter().map(|&d| l.dims()[d]).product();
            let rows = map(&x, &l.permute(&order).unwrap(), |v| v);
            let want: Vec<f32> = rows.chunks(row).map(sum_row).collect();
            assert_eq!(bits(&got), bits(&want), "{dims:?} {perm:?} {reduced:?}");
        }
    }
}
