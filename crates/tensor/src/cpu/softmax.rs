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
    let max = max_row(x);
    y.copy_from_slice(x);
    let inv = T::ONE / exp_shifted_sum(y, max);
    y.iter_mut().for_each(|v| *v *= inv);
}

/// Lanes of [`max_row`].
const MAX_LANES: usize = 16;

/// The largest element of `xs` (-inf when empty; NaNs skipped, as by `max`), in
/// `MAX_LANES` running maxima: one running max is a chain of dependent compares (~4
/// cycles an element), lanes vectorise. The
/// maximum's value does not depend on the order; only a zero maximum's sign may, and
/// exp(x - max) and max + ln(sum) give the same bits for either zero.
#[inline(always)]
pub(crate) fn max_row<T: Float>(xs: &[T]) -> T {
    let mut acc = [T::NEG_INFINITY; MAX_LANES];
    let (chunks, rest) = xs.as_chunks::<MAX_LANES>();
    for c in chunks {
        for l in 0..MAX_LANES {
            acc[l] = acc[l].max(c[l]);
        }
    }
    for (a, &v) in acc.iter_mut().zip(rest) {
        *a = a.max(v);
    }
    acc.into_iter().fold(T::NEG_INFINITY, |m, v| m.max(v))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The lane-wise maximum is the sequential fold's, for lengths around the lane count,
    /// with -inf and NaN among the values (NaN skipped, as `max` does) and for an empty
    /// or all -inf row.
    #[test]
    fn max_row_is_the_sequential_maximum() {
        for len in [0, 1, 2, 15, 16, 17, 31, 33, 64, 100] {
            for salt in 0..3usize {
                let mut x: Vec<f32> = (0..len)
                    .map(|i| (((i * 37 + salt * 11) % 23) as f32 - 11.0) * 0.5)
                    .collect();
                if salt == 1 && len > 2 {
                    x[len / 2] = f32::NAN;
                    x[0] = f32::NEG_INFINITY;
                }
                if salt == 2 {
                    x.iter_mut().for_each(|v| *v = f32::NEG_INFINITY);
                }
                let want = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                assert_eq!(
                    max_row(&x).to_bits(),
                    want.to_bits(),
                    "len {len}, salt {salt}"
                );
            }
        }
    }
}
