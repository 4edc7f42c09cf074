//! Gated linear units on the CPU: y = a * act(g) over the halves of each row of x
//! [rows, 2N], and the backward into one dx [rows, 2N], in blocks of whole rows per task.
//! The activation is the op's own closure (`UnaryOp::visit`), so each kernel is
//! monomorphised for it and its loops vectorise.

use super::strided::TASK_ELEMS;
use super::wide::wide;
use crate::ops::{MapFn, MapFnPair, UnaryOp};
use crate::Float;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Rows per rayon task: about TASK_ELEMS outputs.
fn rows_per_task(n: usize) -> usize {
    (TASK_ELEMS / n.max(1)).max(1)
}

/// y [rows, n] = x[.., :n] * act(x[.., n..]) for x [rows, 2n].
pub(crate) fn glu<T: Float>(x: &[T], n: usize, act: UnaryOp) -> Vec<T> {
    act.visit(false, Forward { x, n })
}

struct Forward<'a, T> {
    x: &'a [T],
    n: usize,
}

impl<T: Float> MapFn<T> for Forward<'_, T> {
    type Out = Vec<T>;
    fn call<F: Fn(T) -> T + Sync + Send + Copy>(self, f: F) -> Vec<T> {
        let (x, n) = (self.x, self.n);
        let len = x.len() / 2;
        let mut y = Vec::with_capacity(len);
        if n == 0 {
            return y;
        }
        let rows = rows_per_task(n);
        y.spare_capacity_mut()[..len]
            .par_chunks_mut(rows * n)
            .zip(x.par_chunks(rows * 2 * n))
            .for_each(|(yb, xb)| {
                wide(
                    #[inline(always)]
                    || {
                        for (yr, xr) in yb.chunks_mut(n).zip(xb.chunks(2 * n)) {
                            let (a, g) = xr.split_at(n);
                            for ((y, &a), &g) in yr.iter_mut().zip(a).zip(g) {
                                y.write(a * f(g));
                            }
                        }
                    },
                )
            });
        // SAFETY: the chunks of `rows * n` cover y's `len` = rows_total * n elements (x has
        // 2n per row), and each row's loop wrote all n of its elements.
        unsafe { y.set_len(len) };
        y
    }
}

/// dx [rows, 2n] = [dy * act(g), (dy * a) * act'(g)] for x [rows, 2n], dy [rows, n]:
/// the products in the order of the composition mul(a, act(g)) and its rules, so the
/// fused backward gives that composition's bits.
pub(crate) fn glu_backward<T: Float>(x: &[T], dy: &[T], n: usize, act: UnaryOp) -> Vec<T> {
    act.visit_pair(Backward { x, dy, n })
}

struct Backward<'a, T> {
    x: &'a [T],
    dy: &'a [T],
    n: usize,
}

impl<T: Float> MapFnPair<T> for Backward<'_, T> {
    type Out = Vec<T>;
    fn call<F, D>(self, f: F, df: D) -> Vec<T>
    where
        F: Fn(T) -> T + Sync + Send + Copy,
        D: Fn(T) -> T + Sync + Send + Copy,
    {
        let Backward { x, dy, n } = self;
        let mut dx: Vec<T> = Vec::with_capacity(x.len());
        if n == 0 {
            return dx;
        }
        let rows = rows_per_task(n);
        dx.spare_capacity_mut()[..x.len()]
            .par_chunks_mut(rows * 2 * n)
            .zip(x.par_chunks(rows * 2 * n).zip(dy.par_chunks(rows * n)))
            .for_each(|(db, (xb, dyb))| {
                wide(
                    #[inline(always)]
                    || {
                        let rows = db.chunks_mut(2 * n).zip(xb.chunks(2 * n));
                        for ((dr, xr), dyr) in rows.zip(dyb.chunks(n)) {
                            backward_row(dr, xr, dyr, f, df);
                        }
                    },
                )
            });
        // SAFETY: the chunks of `rows * 2n` cover dx (x's length), and each row's loops
        // wrote both of its halves.
        unsafe { dx.set_len(x.len()) };
        dx
    }
}

/// One row: da = dy act(g) into the first half, dg = (dy a) act'(g) into the second.
#[inline(always)]
fn backward_row<T: Float>(
    dr: &mut [MaybeUninit<T>],
    xr: &[T],
    dyr: &[T],
    f: impl Fn(T) -> T,
    df: impl Fn(T) -> T,
) {
    let n = dyr.len();
    let (a, g) = xr.split_at(n);
    let (da, dg) = dr.split_at_mut(n);
    for ((d, &g), &dy) in da.iter_mut().zip(g).zip(dyr) {
        d.write(dy * f(g));
    }
    for (((d, &a), &g), &dy) in dg.iter_mut().zip(a).zip(g).zip(dyr) {
        d.write(dy * a * df(g));
    }
}
