//! Softmax over the last axis, one fused pass per row: max, exp and sum, then scale.

use crate::Float;
use rayon::prelude::*;

pub(crate) fn softmax_last<T: Float>(x: &[T], d: usize) -> Vec<T> {
    let mut y = vec![T::ZERO; x.len()];
    if d == 0 {
        return y;
    }
    y.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .for_each(|(yr, xr)| softmax_row(xr, yr));
    y
}

/// y = exp(x - max) / sum; subtracting the max keeps exp from overflowing.
pub(crate) fn softmax_row<T: Float>(x: &[T], y: &mut [T]) {
    let max = x.iter().fold(T::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = T::ZERO;
    for (yv, &xv) in y.iter_mut().zip(x) {
        *yv = (xv - max).exp_fast();
        sum += *yv;
    }
    let inv = T::ONE / sum;
    y.iter_mut().for_each(|v| *v *= inv);
}
