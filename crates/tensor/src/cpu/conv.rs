//! conv2d on the CPU as im2col + GEMM (Chellapilla et al. 2006): each image's patches
//! become a [Cin*KH*KW, HO*WO] matrix, so the convolution is one GEMM with the weight
//! seen as [Cout, Cin*KH*KW]. The backward passes are the two transposed GEMMs, and
//! col2im (the adjoint of im2col) scatters the input gradient back.

use super::matmul::{gemm_into, Gemm};
use crate::ops::ConvShape;
use crate::Float;
use rayon::prelude::*;

/// Patch rows (Cin*KH*KW) and patch columns (HO*WO) of the im2col matrix.
fn col_dims(s: &ConvShape) -> (usize, usize) {
    (s.c_in * s.kh * s.kw, s.h_out() * s.w_out())
}

/// A 1x1, stride-1, unpadded conv needs no im2col: the image already is the matrix.
fn is_pointwise(s: &ConvShape) -> bool {
    s.kh == 1 && s.kw == 1 && s.stride == (1, 1) && s.padding == (0, 0)
}

/// Fills col [Cin*KH*KW, HO*WO] from one image x [Cin, H, W]; padding reads as zero.
fn im2col<T: Float>(x: &[T], s: &ConvShape, col: &mut [T]) {
    let (ho, wo) = (s.h_out(), s.w_out());
    let ((sh, sw), (ph, pw)) = (s.stride, s.padding);
    for c in 0..s.c_in {
        let plane = &x[c * s.h * s.w..(c + 1) * s.h * s.w];
        for i in 0..s.kh {
            for j in 0..s.kw {
                let row = &mut col[((c * s.kh + i) * s.kw + j) * ho * wo..][..ho * wo];
                for oh in 0..ho {
                    let dst = &mut row[oh * wo..(oh + 1) * wo];
                    let ih = (oh * sh + i) as isize - ph as isize;
                    if ih < 0 || ih >= s.h as isize {
                        dst.fill(T::ZERO);
                        continue;
                    }
                    let src = &plane[ih as usize * s.w..(ih as usize + 1) * s.w];
                    for (ow, d) in dst.iter_mut().enumerate() {
                        let iw = (ow * sw + j) as isize - pw as isize;
                        *d = if iw >= 0 && iw < s.w as isize {
                            src[iw as usize]
                        } else {
                            T::ZERO
                        };
                    }
                }
            }
        }
    }
}

/// The adjoint of im2col: adds col [Cin*KH*KW, HO*WO] back into dx [Cin, H, W].
fn col2im<T: Float>(col: &[T], s: &ConvShape, dx: &mut [T]) {
    let (ho, wo) = (s.h_out(), s.w_out());
    let ((sh, sw), (ph, pw)) = (s.stride, s.padding);
    for c in 0..s.c_in {
        let plane = &mut dx[c * s.h * s.w..(c + 1) * s.h * s.w];
        for i in 0..s.kh {
            for j in 0..s.kw {
                let row = &col[((c * s.kh + i) * s.kw + j) * ho * wo..][..ho * wo];
                for oh in 0..ho {
                    let ih = (oh * sh + i) as isize - ph as isize;
                    if ih < 0 || ih >= s.h as isize {
                        continue;
                    }
                    let dst = &mut plane[ih as usize * s.w..(ih as usize + 1) * s.w];
                    for (ow, &g) in row[oh * wo..(oh + 1) * wo].iter().enumerate() {
                        let iw = (ow * sw + j) as isize - pw as isize;
                        if iw >= 0 && iw < s.w as isize {
                            dst[iw as usize] += g;
                        }
                    }
                }
            }
        }
    }
}

/// Runs `f(image index, output chunk)` over images: in parallel over images when there
/// are several (each GEMM then runs on one thread), else one image at a time with a
/// parallel GEMM. The GEMM's result does not depend on that choice.
fn per_image<T: Send>(out: &mut [T], per: usize, f: impl Fn(usize, &mut [T], bool) + Sync) {
    if per == 0 {
        return;
    }
    if out.len() / per >= 2 {
        out.par_chunks_mut(per)
            .enumerate()
            .for_each(|(i, o)| f(i, o, false));
    } else {
        out.chunks_mut(per)
            .enumerate()
            .for_each(|(i, o)| f(i, o, true));
    }
}

/// y [N, Cout, HO, WO] = conv(x [N, Cin, H, W], w [Cout, Cin, KH, KW]) + bias.
pub(crate) fn conv2d<T: Gemm>(x: &[T], w: &[T], bias: Option<&[T]>, s: &ConvShape) -> Vec<T> {
    let (k, p) = col_dims(s);
    let in_len = s.c_in * s.h * s.w;
    let mut y = vec![T::ZERO; s.n * s.c_out * p];
    per_image(&mut y, s.c_out * p, |n, yn, parallel| {
        let xn = &x[n * in_len..(n + 1) * in_len];
        let col_buf;
        let col: &[T] = if is_pointwise(s) {
            xn
        } else {
            let mut c = vec![T::ZERO; k * p];
            im2col(xn, s, &mut c);
            col_buf = c;
            &col_buf
        };
        gemm_into(yn, w, (k, 1), col, (p, 1), (s.c_out, p, k), false, parallel);
        if let Some(b) = bias {
            for (row, &bv) in yn.chunks_mut(p).zip(b) {
                row.iter_mut().for_each(|v| *v += bv);
            }
        }
    });
    y
}

/// dx [N, Cin, H, W] from dy [N, Cout, HO, WO]: per image, dcol = w^T dy, then col2im.
pub(crate) fn conv2d_backward_input<T: Gemm>(dy: &[T], w: &[T], s: &ConvShape) -> Vec<T> {
    let (k, p) = col_dims(s);
    let in_len = s.c_in * s.h * s.w;
    let mut dx = vec![T::ZERO; s.n * in_len];
    per_image(&mut dx, in_len, |n, dxn, parallel| {
        let dyn_ = &dy[n * s.c_out * p..(n + 1) * s.c_out * p];
        // w^T is [K, Cout]: element (i, o) at w[o * K + i].
        if is_pointwise(s) {
            gemm_into(
                dxn,
                w,
                (1, k),
                dyn_,
                (p, 1),
                (k, p, s.c_out),
                false,
                parallel,
            );
        } else {
            let mut dcol = vec![T::ZERO; k * p];
            gemm_into(
                &mut dcol,
                w,
                (1, k),
                dyn_,
                (p, 1),
                (k, p, s.c_out),
                false,
                parallel,
            );
            col2im(&dcol, s, dxn);
        }
    });
    dx
}

/// Images per partial sum of the weight gradient. Fixed, so the summation order (and
/// the bits) never depend on the thread count.
const WEIGHT_GRAD_GROUP: usize = 4;

/// dw [Cout, Cin, KH, KW] = sum over images of dy_n [Cout, P] col_n^T [P, K]. Groups of
/// `WEIGHT_GRAD_GROUP` images accumulate their own partial sums in parallel (one thread
/// per group), then the partials are added in group order.
pub(crate) fn conv2d_backward_weight<T: Gemm>(x: &[T], dy: &[T], s: &ConvShape) -> Vec<T> {
    let (k, p) = col_dims(s);
    let in_len = s.c_in * s.h * s.w;
    let groups: Vec<Vec<T>> = (0..s.n.div_ceil(WEIGHT_GRAD_GROUP))
        .into_par_iter()
        .map(|g| {
            let mut dw = vec![T::ZERO; s.c_out * k];
            let mut col = if is_pointwise(s) {
                Vec::new()
            } else {
                vec![T::ZERO; k * p]
            };
            let images = g * WEIGHT_GRAD_GROUP..((g + 1) * WEIGHT_GRAD_GROUP).min(s.n);
            // One group only (a small batch): let the GEMM use every thread instead.
            let parallel = s.n <= WEIGHT_GRAD_GROUP;
            for n in images.clone() {
                let xn = &x[n * in_len..(n + 1) * in_len];
                let c: &[T] = if is_pointwise(s) {
                    xn
                } else {
                    im2col(xn, s, &mut col);
                    &col
                };
                let dyn_ = &dy[n * s.c_out * p..(n + 1) * s.c_out * p];
                // col^T is [P, K]: element (q, i) at col[i * P + q].
                gemm_into(
                    &mut dw,
                    dyn_,
                    (p, 1),
                    c,
                    (1, p),
                    (s.c_out, k, p),
                    n > images.start,
                    parallel,
                );
            }
            dw
        })
        .collect();
    let mut parts = groups.into_iter();
    let mut dw = parts.next().unwrap_or_else(|| vec![T::ZERO; s.c_out * k]);
    for part in parts {
        dw.iter_mut().zip(part).for_each(|(a, b)| *a += b);
    }
    dw
}
