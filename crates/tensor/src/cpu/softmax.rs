//! Softmax over the last axis, one row per task: max, exp and sum, then scale.

use super::reduce::sum_row;
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
        .for_each(|(yr, xr)| {
            wide(
                #[inline(always)]
                || softmax_row(xr, yr),
            )
        });
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

/// Sets each x to exp(x - shift) and returns their sum. The sum is a separate pass in
/// [`sum_row`]'s fixed lanes: one running sum inside the exp loop would be a chain of
/// dependent adds that keeps the loop from vectorising, and the fixed order makes the
/// result depend on the length only (not on the thread count or vector width).
#[inline(always)]
pub(crate) fn exp_shifted_sum<T: Float>(xs: &mut [T], shift: T) -> T {
    xs.iter_mut().for_each(|x| *x = (*x - shift).exp_fast());
    sum_row(xs)
}
