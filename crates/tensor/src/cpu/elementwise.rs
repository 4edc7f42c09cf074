//! Elementwise kernels over strided operands: unary maps, binary ops with broadcasting,
//! where, and strided copies. Rows with unit strides get loops the compiler vectorises.

use super::strided::Plan;
use super::wide::wide;
use crate::ops::{BinaryOp, MapFn, MapFn2, UnaryOp};
use crate::{Float, Layout};

/// y = f(x) for a strided x; returns a contiguous vector.
pub(crate) fn map<T: Copy + Send + Sync, U: Copy + Send + Sync>(
    x: &[T],
    l: &Layout,
    f: impl Fn(T) -> U + Sync + Copy,
) -> Vec<U> {
    let plan = Plan::new([l]);
    let s = plan.inner[0];
    // SAFETY: both branches write every element of the row.
    unsafe {
        plan.collect_rows(|row, [o]| {
            wide(
                #[inline(always)]
                || {
                    if s == 1 {
                        let n = row.len();
                        for (y, &v) in row.iter_mut().zip(&x[o..o + n]) {
                            y.write(f(v));
                        }
                    } else {
                        for (j, y) in row.iter_mut().enumerate() {
                            y.write(f(x[o + j * s]));
                        }
                    }
                },
            )
        })
    }
}

/// z = f(x, y) for two strided operands of one shape (broadcast views included).
pub(crate) fn zip<T: Copy + Send + Sync>(
    x: &[T],
    lx: &Layout,
    y: &[T],
    ly: &Layout,
    f: impl Fn(T, T) -> T + Sync + Copy,
) -> Vec<T> {
    let plan = Plan::new([lx, ly]);
    let [sx, sy] = plan.inner;
    // SAFETY: every branch writes every element of the row.
    unsafe {
        plan.collect_rows(|row, [ox, oy]| {
            let n = row.len();
            wide(
                #[inline(always)]
                || match (sx, sy) {
                    (1, 1) => {
                        for ((z, &a), &b) in row.iter_mut().zip(&x[ox..ox + n]).zip(&y[oy..oy + n])
                        {
                            z.write(f(a, b));
                        }
                    }
                    (1, 0) => {
                        let b = y[oy];
                        for (z, &a) in row.iter_mut().zip(&x[ox..ox + n]) {
                            z.write(f(a, b));
                        }
                    }
                    (0, 1) => {
                        let a = x[ox];
                        for (z, &b) in row.iter_mut().zip(&y[oy..oy + n]) {
                            z.write(f(a, b));
                        }
                    }
                    _ => {
                        for (j, z) in row.iter_mut().enumerate() {
                            z.write(f(x[ox + j * sx], y[oy + j * sy]));
                        }
                    }
                },
            )
        })
    }
}

/// out = cond != 0 ? t : f, all strided and of one shape, cond already in T.
pub(crate) fn select<T: Float>(
    c: &[T],
    lc: &Layout,
    t: &[T],
    lt: &Layout,
    f: &[T],
    lf: &Layout,
) -> Vec<T> {
    let plan = Plan::new([lc, lt, lf]);
    let mut out = vec![T::ZERO; lc.elem_count()];
    let [sc, st, sf] = plan.inner;
    plan.for_each_row(&mut out, |row, [oc, ot, of]| {
        for (j, z) in row.iter_mut().enumerate() {
            *z = if c[oc + j * sc] != T::ZERO {
                t[ot + j * st]
            } else {
                f[of + j * sf]
            };
        }
    });
    out
}

/// Writes the strided `src` into the strided destination `dst` (same shape). Runs on
/// one thread: destinations may be any view, and this serves concat and assignment,
/// not hot loops.
pub(crate) fn copy_into<T: Copy>(dst: &mut [T], ld: &Layout, src: &[T], ls: &Layout) {
    let plan = Plan::new([ld, ls]);
    let [sd, ss] = plan.inner;
    let mut walk = plan.rows_from(0);
    for _ in 0..plan.rows() {
        let [od, os] = walk.next_row();
        if sd == 1 && ss == 1 {
            dst[od..od + plan.len].copy_from_slice(&src[os..os + plan.len]);
        } else {
            for j in 0..plan.len {
                dst[od + j * sd] = src[os + j * ss];
            }
        }
    }
}

/// Applies a unary op (or its derivative) to a strided operand.
pub(crate) struct Unary<'a, T> {
    pub x: &'a [T],
    pub l: &'a Layout,
}
impl<T: Float> MapFn<T> for Unary<'_, T> {
    type Out = Vec<T>;
    fn call<F: Fn(T) -> T + Sync + Send + Copy>(self, f: F) -> Vec<T> {
        map(self.x, self.l, f)
    }
}

pub(crate) fn unary<T: Float>(x: &[T], l: &Layout, op: UnaryOp, derivative: bool) -> Vec<T> {
    op.visit(derivative, Unary { x, l })
}

/// Applies a binary op to two strided operands.
struct Binary<'a, T> {
    x: (&'a [T], &'a Layout),
    y: (&'a [T], &'a Layout),
}
impl<T: Float> MapFn2<T> for Binary<'_, T> {
    type Out = Vec<T>;
    fn call<F: Fn(T, T) -> T + Sync + Send + Copy>(self, f: F) -> Vec<T> {
        zip(self.x.0, self.x.1, self.y.0, self.y.1, f)
    }
}

pub(crate) fn binary<T: Float>(x: &[T], lx: &Layout, y: &[T], ly: &Layout, op: BinaryOp) -> Vec<T> {
    op.visit(Binary {
        x: (x, lx),
        y: (y, ly),
    })
}
