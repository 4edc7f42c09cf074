//! Softmax over the last axis, one row per task: max, exp and sum, then scale.

use super::wide::wide;
use crate::Float;
use rayon::prelude::*;

pub(crate) fn softmax_last<T: Float>(x: &[T], d: usize) -> Vec<T> {
    let mut y = vec![T::ZERO; x.len()];
    if d == 0 {
        return y;
    }
    y.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .for_each(|(yr, xr)| wide(|| softmax_row(xr, yr)));
    y
}

/// y = exp(x - max) / sum; subtracting the max keeps exp from overflowing.
#[inline(always)]
pub(crate) fn softmax_row<T: Float>(x: &[T], y: &mut [T]) {
    let max = x.iter().fold(T::NEG_INFINITY, |m, &v| m.max(v));
    y.copy_from_slice(x);
    let inv = T::ONE / exp_shifted_sum(y, max);
    y.iter_mut().for_each(|v| *v *= inv);
}

/// Independent partial sums in [`exp_shifted_sum`].
const LANES: usize = 8;

/// Sets each x to exp(x - shift) and returns their sum. The sum runs in `LANES`
/// independent lanes combined in a fixed order: one running sum would be a chain of
/// dependent adds that keeps the exp loop from vectorising, and the fixed order makes
/// the result depend on the length only (not on the thread count or vector width).
#[inline(always)]
pub(crate) fn exp_shifted_sum<T: Float>(xs: &mut [T], shift: T) -> T {
    xs.iter_mut().for_each(|x| *x = (*x - shift).exp_fast());
    let mut acc = [T::ZERO; LANES];
    let (chunks, rest) = xs.as_chunks::<LANES>();
    for c in chunks {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    for (l, &x) in rest.iter().enumerate() {
        acc[l] += x;
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
}
