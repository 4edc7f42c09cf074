//! conv2d on the CPU as im2col + GEMM (Chellapilla et al. 2006): each image's patches
//! form a [Cin*KH*KW, HO*WO] matrix, so the convolution is one GEMM with the weight
//! seen as [Cout, Cin*KH*KW]; the forward packs the GEMM's panels straight from the
//! image (an implicit GEMM) instead of writing the matrix out. The backward passes are the two transposed GEMMs, and
//! col2im (the adjoint of im2col) scatters the input gradient back.

use super::conv_direct;
use super::gemm::Patches;
use super::matmul::{gemm_into, Gemm};
#[cfg(target_arch = "x86_64")]
use super::winograd;
use crate::ops::ConvShape;
use crate::Float;
use rayon::prelude::*;
use std::mem::MaybeUninit;

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
                    let (lo, hi) = valid_cols(s, wo, j);
                    dst[..lo].fill(T::ZERO);
                    dst[hi..].fill(T::ZERO);
                    if sw == 1 && hi > lo {
                        // Stride 1: the valid outputs read one contiguous run of the row
                        // (none at all when the kernel is wider than the padded row
                        // allows, and then lo + j may be below pw).
                        let start = lo + j - pw;
                        dst[lo..hi].copy_from_slice(&src[start..start + (hi - lo)]);
                    } else {
                        for (ow, d) in dst.iter_mut().enumerate().take(hi).skip(lo) {
                            *d = src[ow * sw + j - pw];
                        }
                    }
                }
            }
        }
    }
}

/// The output columns [lo, hi) whose input column ow * stride + j - pad lies inside the
/// row (the rest read padding).
fn valid_cols(s: &ConvShape, wo: usize, j: usize) -> (usize, usize) {
    let (sw, pw) = (s.stride.1, s.padding.1);
    // ow * sw + j >= pw  <=>  ow >= ceil((pw - j) / sw)
    let lo = pw.saturating_sub(j).div_ceil(sw).min(wo);
    // ow * sw + j < w + pw  <=>  ow < ceil((w + pw - j) / sw)
    let hi = (s.w + pw).saturating_sub(j).div_ceil(sw).clamp(lo, wo);
    (lo, hi)
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
                    let (lo, hi) = valid_cols(s, wo, j);
                    let src = &row[oh * wo..(oh + 1) * wo];
                    for (ow, &g) in src.iter().enumerate().take(hi).skip(lo) {
                        dst[ow * sw + j - pw] += g;
                    }
                }
            }
        }
    }
}

/// Runs `f(image index, output chunk)` over images: in parallel over images when there
/// are several (each GEMM then runs on one thread), else one image at a time with a
/// parallel GEMM. The GEMM's result does not depend on that choice.
/// `scratch` elements of working memory are handed to `f` and reused across the images
/// a rayon job runs (a fresh buffer per image costs page faults).
fn per_image<U: Send, T: Float>(
    out: &mut [U],
    per: usize,
    scratch: usize,
    f: impl Fn(usize, &mut [U], &mut [T], bool) + Sync,
) {
    if per == 0 {
        return;
    }
    let images = out.len() / per;
    if images >= 2 {
        // At least a thread's share of images per piece, so at most one scratch buffer
        // per thread: rayon calls the init once for every piece it splits off, and each
        // call zeroes a fresh buffer.
        let share = images.div_ceil(rayon::current_num_threads().max(1));
        out.par_chunks_mut(per)
            .enumerate()
            .with_min_len(share)
            .for_each_init(|| vec![T::ZERO; scratch], |buf, (i, o)| f(i, o, buf, false));
    } else {
        let mut buf = vec![T::ZERO; scratch];
        out.chunks_mut(per)
            .enumerate()
            .for_each(|(i, o)| f(i, o, &mut buf, true));
    }
}

/// A new [images * per] output, `f(image index, output chunk, scratch, parallel)` run
/// over it as by `per_image`, each chunk zeroed just before its `f`: by the thread that
/// then writes it, while it sits in that thread's cache. (`vec![0; n]` of recycled memory
/// is one thread's memset of the whole output before any work starts: ~9% of a
/// convolution's time.)
fn new_per_image<T: Float>(
    images: usize,
    per: usize,
    scratch: usize,
    f: impl Fn(usize, &mut [T], &mut [T], bool) + Sync,
) -> Vec<T> {
    // SAFETY: the closure initializes its whole chunk before anything else.
    unsafe {
        new_per_image_uninit(images, per, scratch, |n, chunk, buf, parallel| {
            chunk.fill(MaybeUninit::new(T::ZERO));
            // SAFETY: every element of the chunk was just written; MaybeUninit<T> has
            // T's layout.
            let chunk = &mut *(chunk as *mut [MaybeUninit<T>] as *mut [T]);
            f(n, chunk, buf, parallel)
        })
    }
}

/// [`new_per_image`] for a kernel that writes every element of its chunk: the chunks
/// start uninitialised and are never zeroed.
///
/// # Safety
/// `f` must write every element of each chunk it is handed.
unsafe fn new_per_image_uninit<T: Float>(
    images: usize,
    per: usize,
    scratch: usize,
    f: impl Fn(usize, &mut [MaybeUninit<T>], &mut [T], bool) + Sync,
) -> Vec<T> {
    let len = images * per;
    let mut out = Vec::with_capacity(len);
    per_image(&mut out.spare_capacity_mut()[..len], per, scratch, f);
    // SAFETY: per_image hands every one of the `images` chunks of `per` elements to `f`,
    // which the caller promises writes all of it (a panic there unwinds past this line).
    unsafe { out.set_len(len) };
    out
}

/// One image's im2col matrix for the GEMM to pack from directly.
fn patches<'a, T>(xn: &'a [T], s: &ConvShape) -> Patches<'a, T> {
    Patches {
        x: xn,
        c_in: s.c_in,
        h: s.h,
        w: s.w,
        kh: s.kh,
        kw: s.kw,
        stride: s.stride,
        padding: s.padding,
        ho: s.h_out(),
        wo: s.w_out(),
    }
}

/// The kernels that skip im2col, for the dtypes and CPUs that have them: Winograd for 3x3
/// stride-1 convolutions (see `winograd`), the direct kernel for other stride-1 ones (see
/// `conv_direct`).
pub(crate) trait Direct: Sized {
    /// conv2d by Winograd or the direct kernel, or None where neither applies.
    fn direct(x: &[Self], w: &[Self], bias: Option<&[Self]>, s: &ConvShape) -> Option<Vec<Self>>;
    /// The weight gradient of `images` into `dw` by Winograd; false where it
    /// does not apply (dw untouched).
    fn direct_weight_grad(
        x: &[Self],
        dy: &[Self],
        images: std::ops::Range<usize>,
        s: &ConvShape,
        dw: &mut [Self],
    ) -> bool;
}

impl Direct for f64 {
    fn direct(_: &[f64], _: &[f64], _: Option<&[f64]>, _: &ConvShape) -> Option<Vec<f64>> {
        None
    }
    fn direct_weight_grad(
        _: &[f64],
        _: &[f64],
        _: std::ops::Range<usize>,
        _: &ConvShape,
        _: &mut [f64],
    ) -> bool {
        false
    }
}

impl Direct for f32 {
    fn direct(x: &[f32], w: &[f32], bias: Option<&[f32]>, s: &ConvShape) -> Option<Vec<f32>> {
        // One image would run on one thread: leave it to the parallel GEMM. The choice
        // depends on the shape only, never on the thread count (determinism).
        if s.n < 2 {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        if winograd::applies(s) {
            return Some(winograd_conv(x, w, bias, s));
        }
        if conv_direct::applies(s) {
            Some(direct_conv(x, w, bias, s))
        } else {
            None
        }
    }
    fn direct_weight_grad(
        x: &[f32],
        dy: &[f32],
        images: std::ops::Range<usize>,
        s: &ConvShape,
        dw: &mut [f32],
    ) -> bool {
        // A single group runs on one thread: leave a small batch to the parallel GEMM
        // (by shape alone, never by thread count: determinism).
        if s.n <= WEIGHT_GRAD_GROUP {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        if winograd::applies(s) {
            winograd::weight_grad_group(x, dy, images, s, dw);
            return true;
        }
        let _ = (x, dy, images, dw);
        false
    }
}

/// y [N, Cout, HO, WO] by `conv_image(xn, yn, scratch)` for each image, with `scratch`
/// elements of working memory.
fn by_image(
    x: &[f32],
    s: &ConvShape,
    scratch: usize,
    conv_image: impl Fn(&[f32], &mut [f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    let in_len = s.c_in * s.h * s.w;
    let per = s.c_out * s.h_out() * s.w_out();
    new_per_image(s.n, per, scratch, |n, yn, buf, _| {
        conv_image(&x[n * in_len..(n + 1) * in_len], yn, buf)
    })
}

/// conv2d by the direct kernel (see `conv_direct`).
fn direct_conv(x: &[f32], w: &[f32], bias: Option<&[f32]>, s: &ConvShape) -> Vec<f32> {
    let p = conv_direct::Prepared::new(w, s);
    by_image(x, s, p.scratch(s), |xn, yn, buf| {
        conv_direct::conv_image(&p, xn, bias, s, yn, buf)
    })
}

/// conv2d by Winograd F(4x4, 3x3) or F(2x2, 3x3) (see `winograd`), into an output that
/// is never zeroed: its tiles store every pixel.
#[cfg(target_arch = "x86_64")]
fn winograd_conv(x: &[f32], w: &[f32], bias: Option<&[f32]>, s: &ConvShape) -> Vec<f32> {
    let p = winograd::Prepared::new(w, s);
    let in_len = s.c_in * s.h * s.w;
    let per = s.c_out * s.h_out() * s.w_out();
    // SAFETY: `conv_image` writes all of yn (its output tiles cover [Cout, HO, WO]).
    unsafe {
        new_per_image_uninit(s.n, per, p.scratch(s), |n, yn, buf, _| {
            winograd::conv_image(&p, &x[n * in_len..(n + 1) * in_len], bias, s, yn, buf)
        })
    }
}

/// y [N, Cout, HO, WO] = conv(x [N, Cin, H, W], w [Cout, Cin, KH, KW]) + bias: Winograd or
/// the direct kernel where one applies, else per image a GEMM whose panels are packed straight from
/// the image (the im2col matrix is never written out).
pub(crate) fn conv2d<T: Gemm + Direct>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    s: &ConvShape,
) -> Vec<T> {
    if let Some(y) = T::direct(x, w, bias, s) {
        return y;
    }
    let (k, p) = col_dims(s);
    let in_len = s.c_in * s.h * s.w;
    new_per_image(s.n, s.c_out * p, 0, |n, yn, _, parallel| {
        let xn = &x[n * in_len..(n + 1) * in_len];
        if is_pointwise(s) {
            gemm_into(yn, w, (k, 1), xn, (p, 1), (s.c_out, p, k), false, parallel);
        } else {
            T::gemm_patches(yn, (w, k, 1), patches(xn, s), s.c_out, parallel);
        }
        if let Some(b) = bias {
            for (row, &bv) in yn.chunks_mut(p).zip(b) {
                row.iter_mut().for_each(|v| *v += bv);
            }
        }
    })
}

/// dx [N, Cin, H, W] from dy [N, Cout, HO, WO]. A stride-1 conv's input gradient is
/// itself a stride-1 conv: of dy with the weight flipped in space and transposed in
/// channels, padded by k - 1 - p (the "full" correlation), which runs as a forward conv
/// with its efficient im2col + GEMM. Other strides: per image, dcol = w^T dy, then col2im.
pub(crate) fn conv2d_backward_input<T: Gemm + Direct>(dy: &[T], w: &[T], s: &ConvShape) -> Vec<T> {
    if s.stride == (1, 1) && s.padding.0 < s.kh && s.padding.1 < s.kw && !is_pointwise(s) {
        let t = ConvShape {
            n: s.n,
            c_in: s.c_out,
            h: s.h_out(),
            w: s.w_out(),
            c_out: s.c_in,
            kh: s.kh,
            kw: s.kw,
            stride: (1, 1),
            padding: (s.kh - 1 - s.padding.0, s.kw - 1 - s.padding.1),
        };
        // w' [Cin, Cout, KH, KW] with w'[c, o, i, j] = w[o, c, KH-1-i, KW-1-j].
        let mut flipped = vec![T::ZERO; w.len()];
        for o in 0..s.c_out {
            for c in 0..s.c_in {
                for i in 0..s.kh {
                    for j in 0..s.kw {
                        flipped[((c * s.c_out + o) * s.kh + i) * s.kw + j] =
                            w[((o * s.c_in + c) * s.kh + (s.kh - 1 - i)) * s.kw + (s.kw - 1 - j)];
                    }
                }
            }
        }
        return conv2d(dy, &flipped, None, &t);
    }
    let (k, p) = col_dims(s);
    let in_len = s.c_in * s.h * s.w;
    let scratch = if is_pointwise(s) { 0 } else { k * p };
    new_per_image(s.n, in_len, scratch, |n, dxn, dcol, parallel| {
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
            gemm_into(
                dcol,
                w,
                (1, k),
                dyn_,
                (p, 1),
                (k, p, s.c_out),
                false,
                parallel,
            );
            col2im(dcol, s, dxn);
        }
    })
}

/// Images per partial sum of the weight gradient. Fixed, so the summation order (and
/// the bits) never depend on the thread count.
const WEIGHT_GRAD_GROUP: usize = 4;

/// dw [Cout, Cin, KH, KW] = sum over images of dy_n [Cout, P] col_n^T [P, K]. Groups of
/// `WEIGHT_GRAD_GROUP` images accumulate their own partial sums in parallel (one thread
/// per group), then the partials are added in group order.
pub(crate) fn conv2d_backward_weight<T: Gemm + Direct>(x: &[T], dy: &[T], s: &ConvShape) -> Vec<T> {
    let (k, p) = col_dims(s);
    let in_len = s.c_in * s.h * s.w;
    let groups: Vec<Vec<T>> = (0..s.n.div_ceil(WEIGHT_GRAD_GROUP))
        .into_par_iter()
        .map(|g| {
            let mut dw = vec![T::ZERO; s.c_out * k];
            let images = g * WEIGHT_GRAD_GROUP..((g + 1) * WEIGHT_GRAD_GROUP).min(s.n);
            if T::direct_weight_grad(x, dy, images.clone(), s, &mut dw) {
                return dw;
            }
            let mut col = if is_pointwise(s) {
                Vec::new()
            } else {
                vec![T::ZERO; k * p]
            };
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Element-wise |v|: the terms' magnitudes that bound Winograd's rounding.
    fn abs(v: &[f32]) -> Vec<f32> {
        v.iter().map(|x| x.abs()).collect()
    }

    /// Deterministic test values of both signs, no two neighbours alike.
    fn data(len: usize, salt: usize) -> Vec<f32> {
        let (mul, m, scale) = [(37, 101, 25.0), (53, 97, 30.0)][salt];
        (0..len)
            .map(|i| ((i * mul % m) as f32 - (m / 2) as f32) / scale)
            .collect()
    }

    /// The implicit GEMM equals im2col + GEMM bit for bit (the same products and sums
    /// in the same order), across K blocks (Cin·9 > kc), output rows cut by B panels,
    /// strides, uneven padding and non-square kernels.
    #[test]
    fn implicit_im2col_matches_explicit() {
        let cases = [
            // (c_in, h, w, c_out, kh, kw, stride, padding)
            (3, 7, 5, 4, 3, 3, (1, 1), (1, 1)),
            (50, 9, 11, 7, 3, 3, (1, 1), (1, 1)),
            (2, 13, 17, 65, 3, 3, (2, 2), (1, 1)),
            (4, 6, 20, 3, 1, 3, (1, 2), (0, 2)),
            (1, 1, 1, 1, 3, 3, (1, 1), (1, 1)),
            (5, 32, 32, 6, 3, 3, (1, 1), (1, 1)),
            // Taps whose whole output row reads padding (w 1, kw 5, pw 2).
            (1, 3, 1, 2, 1, 5, (1, 1), (0, 2)),
        ];
        for (c_in, h, w, c_out, kh, kw, stride, padding) in cases {
            let s = ConvShape {
                n: 1,
                c_in,
                h,
                w,
                c_out,
                kh,
                kw,
                stride,
                padding,
            };
            let (k, p) = col_dims(&s);
            let x = data(c_in * h * w, 0);
            let wt = data(c_out * k, 1);
            let mut col = vec![0f32; k * p];
            im2col(&x, &s, &mut col);
            let mut want = vec![0f32; c_out * p];
            gemm_into(
                &mut want,
                &wt,
                (k, 1),
                &col,
                (p, 1),
                (c_out, p, k),
                false,
                true,
            );
            for parallel in [false, true] {
                let mut got = vec![0f32; c_out * p];
                f32::gemm_patches(&mut got, (&wt, k, 1), patches(&x, &s), c_out, parallel);
                assert_eq!(got, want, "{s:?}");
            }
        }
    }

    /// The direct and Winograd kernels agree with the GEMM path (to rounding: the direct
    /// sums run over all taps in one chain, the GEMM's in K blocks, Winograd's over
    /// transformed tiles) at channel-block and row- or tile-tails, odd sizes, kernels and
    /// paddings, chunks of tile rows, and with a bias.
    #[test]
    fn direct_and_winograd_match_gemm() {
        let cases = [
            // (n, c_in, h, w, c_out, kh, kw, padding)
            (2, 3, 32, 32, 32, 3, 3, (1, 1)),
            (2, 50, 9, 11, 33, 3, 3, (1, 1)),
            (3, 4, 6, 13, 3, 1, 3, (0, 2)),
            (2, 2, 7, 5, 17, 5, 5, (2, 2)),
            (2, 5, 8, 8, 64, 3, 1, (1, 0)),
            (2, 1, 1, 1, 1, 3, 3, (1, 1)),
            // Winograd: odd outputs (partial tiles), several chunks, Cout % 8 != 0.
            (2, 64, 32, 32, 64, 3, 3, (1, 1)),
            (2, 17, 9, 7, 3, 3, 3, (0, 0)),
            (3, 9, 15, 33, 19, 3, 3, (2, 1)),
            (2, 130, 5, 70, 9, 3, 3, (1, 2)),
            // Winograd with two and four tile rows per vector, groups past the last row.
            (2, 9, 16, 16, 20, 3, 3, (1, 1)),
            (2, 6, 7, 15, 8, 3, 3, (1, 1)),
            (2, 8, 8, 8, 16, 3, 3, (1, 1)),
            (3, 5, 13, 10, 9, 3, 3, (1, 0)),
            (2, 4, 3, 7, 5, 3, 3, (2, 1)),
            // F(4x4): 16 tiles a row exactly, and 8 a row with partial tiles at the
            // right and bottom (the cases above at 32x32, 16x16, 7x15 and 5x70 are
            // F(4x4) too; 8x8 and 15x33 are F(2x2)).
            (1, 4, 9, 64, 5, 3, 3, (1, 1)),
            (2, 5, 30, 31, 7, 3, 3, (1, 1)),
        ];
        for (n, c_in, h, w, c_out, kh, kw, padding) in cases {
            let s = ConvShape {
                n,
                c_in,
                h,
                w,
                c_out,
                kh,
                kw,
                stride: (1, 1),
                padding,
            };
            if !conv_direct::applies(&s) {
                eprintln!("no AVX-512 here: the direct kernel is not used, nothing to compare");
                return;
            }
            let x = data(n * c_in * h * w, 0);
            let wt = data(c_out * c_in * kh * kw, 1);
            let bias: Vec<f32> = (0..c_out).map(|i| i as f32 * 0.25 - 1.0).collect();
            let mut kernels = vec![("direct", direct_conv(&x, &wt, Some(&bias), &s))];
            #[cfg(target_arch = "x86_64")]
            if winograd::applies(&s) {
                kernels.push(("winograd", winograd_conv(&x, &wt, Some(&bias), &s)));
            }
            // The GEMM path, image by image.
            let (k, p) = col_dims(&s);
            let one = ConvShape { n: 1, ..s };
            let (x_abs, w_abs) = (abs(&x), abs(&wt));
            for i in 0..n {
                let mut want = vec![0f32; c_out * p];
                let mut mag = vec![0f32; c_out * p];
                let xi = &x[i * c_in * h * w..][..c_in * h * w];
                f32::gemm_patches(&mut want, (&wt, k, 1), patches(xi, &one), c_out, false);
                let xi_abs = &x_abs[i * c_in * h * w..][..c_in * h * w];
                f32::gemm_patches(
                    &mut mag,
                    (&w_abs, k, 1),
                    patches(xi_abs, &one),
                    c_out,
                    false,
                );
                for (name, got) in &kernels {
                    for (j, (&d, &g)) in got[i * c_out * p..][..c_out * p]
                        .iter()
                        .zip(&want)
                        .enumerate()
                    {
                        // The direct kernel keeps the plain bound. Winograd's rounding
                        // grows with the terms' magnitude (sum of |w x|), not with the
                        // sum's: F(4x4)'s transforms reach 8 and 1/24, and its error
                        // measured up to 6e-6 of the magnitude. A wrong or missing term
                        // (|w x| ~ 1 here) is far outside either bound.
                        let g = g + bias[j / p];
                        let by_terms = if *name == "winograd" {
                            2e-5 * mag[j]
                        } else {
                            0.0
                        };
                        assert!(
                            (d - g).abs() <= 1e-4 * (1.0 + g.abs()) + by_terms,
                            "{name} {s:?}: {d} vs {g} at {j} (terms' magnitude {})",
                            mag[j]
                        );
                    }
                }
            }
        }
    }

    /// The Winograd weight gradient agrees with the GEMM path (to rounding), over groups
    /// of images, at channel-block tails, paddings, odd sizes and narrow images (two or
    /// four tile rows per vector), by F(4x4) (16x16, 32x32, 40x70) and F(2x2) (the rest).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn winograd_weight_grad_matches_gemm() {
        for (n, c_in, h, w, c_out, padding) in [
            (9, 3, 8, 8, 32, (1, 1)),
            (9, 5, 7, 11, 17, (1, 1)),
            (10, 2, 6, 5, 3, (0, 0)),
            (9, 4, 16, 16, 64, (2, 1)),
            (9, 33, 32, 32, 40, (1, 1)),
            (10, 9, 13, 15, 20, (1, 1)),
            (9, 16, 8, 8, 3, (1, 1)),
            (9, 7, 5, 7, 17, (2, 1)),
            (9, 3, 40, 70, 16, (1, 2)),
        ] {
            let s = ConvShape {
                n,
                c_in,
                h,
                w,
                c_out,
                kh: 3,
                kw: 3,
                stride: (1, 1),
                padding,
            };
            if !winograd::applies(&s) {
                eprintln!("no AVX-512 here: the Winograd kernel is not used, nothing to compare");
                return;
            }
            let x = data(n * c_in * h * w, 0);
            let dy = data(n * c_out * s.h_out() * s.w_out(), 1);
            let (k, p) = col_dims(&s);
            let mut got = vec![0f32; c_out * k];
            winograd::weight_grad_group(&x, &dy, 0..n, &s, &mut got);
            let mut want = vec![0f32; c_out * k];
            let mut mag = vec![0f32; c_out * k];
            let mut col = vec![0f32; k * p];
            let in_len = c_in * h * w;
            let (x_abs, dy_abs) = (abs(&x), abs(&dy));
            // dst += dy_i im2col(x_i) over the images: the gradient, and with |.| the
            // terms' magnitude.
            let accumulate = |dst: &mut [f32], x: &[f32], dy: &[f32], col: &mut [f32]| {
                for i in 0..n {
                    im2col(&x[i * in_len..][..in_len], &s, col);
                    let dyi = &dy[i * c_out * p..][..c_out * p];
                    gemm_into(dst, dyi, (p, 1), col, (1, p), (c_out, k, p), i > 0, false);
                }
            };
            accumulate(&mut want, &x, &dy, &mut col);
            accumulate(&mut mag, &x_abs, &dy_abs, &mut col);
            // Rounding bounded by the terms' magnitude, as in the forward test (measured
            // up to 1.1e-6 of it, F(4x4) at 32x32).
            for (j, (&d, &g)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (d - g).abs() <= 1e-4 * (1.0 + g.abs()) + 1e-5 * mag[j],
                    "{s:?}: {d} vs {g} at {j} (terms' magnitude {})",
                    mag[j]
                );
            }
        }
    }
}
