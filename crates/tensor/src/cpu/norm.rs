//! Fused normalisation (group_norm, layer_norm, group_norm + SiLU): each group's
//! statistics and its normalised output in one visit while the group is in cache
//! (two-pass mean/variance: blocks of 256 summed in the compute dtype, the blocks in
//! f64), and the fused backward. Per-element work is in the compute dtype; only the
//! group totals are f64.

use super::strided::TASK_ELEMS;
use super::wide::wide;
use crate::ops::NormShape;
use crate::Float;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Independent accumulators per sum, in the compute dtype: a single running sum is one
/// dependent add per element (latency-bound, never vectorised); 32 lanes make the loops
/// vectorise into two (f32) or four (f64) independent chains of vector adds.
const LANES: usize = 32;
/// Rows of LANES summed in the compute dtype before their lanes go into the f64 totals:
/// f32's rounding then stays within ~1e-6 of a block's own magnitude, and the f64 adds
/// (8 lanes a vector, one chain per vector) come once per 256 elements. (f64 sums
/// throughout, 8 lanes, were latency-bound: ~1 cycle per element over the two
/// statistics passes, as much as the normalisation itself.)
const BLOCK: usize = 8;

#[inline(always)]
fn combine<const N: usize>(acc: [f64; N]) -> f64 {
    // A fixed tree: the sum depends on the data's length only, never on thread count.
    let mut v = acc;
    let mut n = N;
    while n > 1 {
        n /= 2;
        for l in 0..n {
            v[l] += v[l + n];
        }
    }
    v[0]
}

/// Sum of f(a, b) over the pairs of `a` and `b`, lane-wise in blocks (see BLOCK), in f64.
#[inline(always)]
fn lane_sum2<T: Float>(a: &[T], b: &[T], f: impl Fn(T, T) -> T) -> f64 {
    let mut total = [0f64; LANES];
    let (ac, ar) = a.as_chunks::<LANES>();
    let (bc, br) = b.as_chunks::<LANES>();
    for (ablock, bblock) in ac.chunks(BLOCK).zip(bc.chunks(BLOCK)) {
        let mut acc = [T::ZERO; LANES];
        for (a32, b32) in ablock.iter().zip(bblock) {
            for l in 0..LANES {
                acc[l] += f(a32[l], b32[l]);
            }
        }
        for l in 0..LANES {
            total[l] += acc[l].to_f64();
        }
    }
    for (l, (&x, &y)) in ar.iter().zip(br).enumerate() {
        total[l] += f(x, y).to_f64();
    }
    combine(total)
}

/// Sum of f(x) over `xs`, lane-wise in blocks (see BLOCK), in f64.
#[inline(always)]
fn lane_sum<T: Float>(xs: &[T], f: impl Fn(T) -> T) -> f64 {
    let mut total = [0f64; LANES];
    let (chunks, rest) = xs.as_chunks::<LANES>();
    for block in chunks.chunks(BLOCK) {
        let mut acc = [T::ZERO; LANES];
        for c in block {
            for l in 0..LANES {
                acc[l] += f(c[l]);
            }
        }
        for l in 0..LANES {
            total[l] += acc[l].to_f64();
        }
    }
    for (l, &x) in rest.iter().enumerate() {
        total[l] += f(x).to_f64();
    }
    combine(total)
}

/// (y, mean, rstd) for x seen as [rows, groups, cpg, inner]; see `NormShape`.
pub(crate) fn norm<T: Float>(
    x: &[T],
    w: Option<&[T]>,
    b: Option<&[T]>,
    s: &NormShape,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (m, stats) = (s.group_len(), s.rows * s.groups);
    let mut mean = vec![T::ZERO; stats];
    let mut rstd = vec![T::ZERO; stats];
    if m == 0 {
        return (vec![T::ZERO; x.len()], mean, rstd);
    }
    assert_eq!(x.len(), stats * m, "norm: x does not tile into its groups");
    // y starts uninitialised: zeroing it first would be one more pass over memory.
    let mut y = Vec::with_capacity(x.len());
    y.spare_capacity_mut()[..x.len()]
        .par_chunks_mut(m)
        .zip(x.par_chunks(m))
        .zip(mean.par_iter_mut().zip(rstd.par_iter_mut()))
        .enumerate()
        .with_min_len(groups_per_task(m))
        .for_each(|(gi, ((yg, xg), (mu_out, rs_out)))| {
            (*mu_out, *rs_out) = wide(
                #[inline(always)]
                || norm_group(gi, xg, yg, (w, b), s),
            );
        });
    // SAFETY: x.len() is a multiple of m (the groups tile x), so the chunks cover all of
    // y, and norm_group writes every element of its chunk.
    unsafe { y.set_len(x.len()) };
    (y, mean, rstd)
}

/// Groups a rayon task takes: a LayerNorm row is one group of a few dozen elements, too
/// little work for a task of its own.
fn groups_per_task(m: usize) -> usize {
    (TASK_ELEMS / 4 / m.max(1)).max(1)
}

/// One group of the forward: normalises x into y (every element written) and returns
/// (mean, rstd).
#[inline(always)]
fn norm_group<T: Float>(
    gi: usize,
    xg: &[T],
    yg: &mut [MaybeUninit<T>],
    (w, b): (Option<&[T]>, Option<&[T]>),
    s: &NormShape,
) -> (T, T) {
    let m = xg.len();
    let mu = lane_sum(xg, |v| v) / m as f64;
    // Two-pass variance about the rounded mean, corrected for its rounding:
    // E[(x - c)^2] - (mu - c)^2 is the variance for any shift c.
    let mu_t = T::from_f64(mu);
    let shift = mu - mu_t.to_f64();
    let var = (lane_sum(xg, |v| (v - mu_t) * (v - mu_t)) / m as f64 - shift * shift).max(0.0);
    let rs = 1.0 / (var + s.eps).sqrt();
    let c0 = (gi % s.groups) * s.cpg;
    // y = (x - mu) (rs w) + b: subtracting first keeps a tiny-variance group exact
    // (folding mu into the shift would cancel catastrophically).
    let scale = |j: usize| T::from_f64(rs * w.map_or(1.0, |w| w[c0 + j].to_f64()));
    let shift = |j: usize| b.map_or(T::ZERO, |b| b[c0 + j]);
    if s.inner == 1 {
        // LayerNorm's [rows, 1, D, 1]: one element per channel, so loops over the
        // channels (a loop per channel would run one element at a time), each with the
        // affine's presence decided outside it so that it vectorises: y holds the
        // scale, then (x - mu) scale + shift, then its SiLU.
        let (wr, br) = (w.map(|w| &w[c0..c0 + m]), b.map(|b| &b[c0..c0 + m]));
        match wr {
            Some(wr) => yg.iter_mut().zip(wr).for_each(|(y, &wv)| {
                y.write(T::from_f64(rs * wv.to_f64()));
            }),
            None => yg.iter_mut().for_each(|y| {
                y.write(T::from_f64(rs));
            }),
        }
        // SAFETY: the loop above wrote every element of yg.
        let yg = unsafe { assume_init(yg) };
        match br {
            Some(br) => {
                for ((y, &xv), &bv) in yg.iter_mut().zip(xg).zip(br) {
                    *y = (xv - mu_t) * *y + bv;
                }
            }
            None => {
                for (y, &xv) in yg.iter_mut().zip(xg) {
                    *y = (xv - mu_t) * *y + T::ZERO;
                }
            }
        }
        if s.silu {
            yg.iter_mut().for_each(|y| *y = y.silu_fast());
        }
        return (T::from_f64(mu), T::from_f64(rs));
    }
    for j in 0..s.cpg {
        let (scale, shift) = (scale(j), shift(j));
        let range = j * s.inner..(j + 1) * s.inner;
        let (yr, xr) = (&mut yg[range.clone()], &xg[range]);
        if s.silu {
            for (yv, &xv) in yr.iter_mut().zip(xr) {
                let v = (xv - mu_t) * scale + shift;
                yv.write(v.silu_fast());
            }
        } else {
            for (yv, &xv) in yr.iter_mut().zip(xr) {
                yv.write((xv - mu_t) * scale + shift);
            }
        }
    }
    (T::from_f64(mu), T::from_f64(rs))
}

/// (dx, dw, db) given (x, dy), the affine (w, b) and the saved (mean, rstd). With
/// xhat = (x - mean) rstd, d = dy (times silu'(xhat w + b) when fused) and g = d w:
/// dx = rstd (g - mean(g) - xhat mean(g xhat)); dw = sum d xhat; db = sum d, the channel
/// sums taken over rows in order.
pub(crate) fn norm_backward<T: Float>(
    (x, dy): (&[T], &[T]),
    (w, b): (Option<&[T]>, Option<&[T]>),
    (mean, rstd): (&[T], &[T]),
    s: &NormShape,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (m, c) = (s.group_len(), s.channels());
    assert_eq!(
        x.len(),
        s.rows * s.groups * m,
        "norm: x does not tile into its groups"
    );
    assert_eq!(dy.len(), x.len(), "norm: dy and x differ in length");
    // dx starts uninitialised (each group writes all of its chunk; see below).
    let mut dx = Vec::with_capacity(x.len());
    // Per (row, channel) partial sums of d*xhat and d; one chunk of cpg per group, each
    // written by its group, so not zero-filled first (for a LayerNorm they are twice the
    // input's size in f64, and the fill cost a quarter of the backward). With no
    // elements in a group (m == 0) nothing writes them: zeros.
    let p_len = s.rows * c;
    let (mut pw, mut pb) = if m > 0 {
        (Vec::with_capacity(p_len), Vec::with_capacity(p_len))
    } else {
        (vec![0f64; p_len], vec![0f64; p_len])
    };
    if m > 0 {
        dx.spare_capacity_mut()[..x.len()]
            .par_chunks_mut(m)
            .zip(x.par_chunks(m).zip(dy.par_chunks(m)))
            .zip(
                pw.spare_capacity_mut()[..p_len]
                    .par_chunks_mut(s.cpg)
                    .zip(pb.spare_capacity_mut()[..p_len].par_chunks_mut(s.cpg)),
            )
            .enumerate()
            .with_min_len(groups_per_task(m))
            .for_each(|(gi, ((dxg, (xg, dyg)), (pwg, pbg)))| {
                wide(
                    #[inline(always)]
                    || {
                        norm_backward_group(
                            gi,
                            (xg, dyg),
                            dxg,
                            (pwg, pbg),
                            (w, b),
                            (mean[gi], rstd[gi]),
                            s,
                        )
                    },
                )
            });
        // SAFETY: the chunks of m cover dx (asserted above), the chunks of cpg cover pw
        // and pb (one per group: rows * groups * cpg = p_len), and norm_backward_group
        // writes every element of its chunks.
        unsafe {
            dx.set_len(x.len());
            pw.set_len(p_len);
            pb.set_len(p_len);
        }
    }
    // Each channel's partials summed over rows in order, as `Iterator::sum` would (from
    // its own starting value), with the rows read whole: a strided walk down each
    // channel's column cost more than the rest of a LayerNorm backward.
    let channel_sum = |p: &[f64]| -> Vec<T> {
        let mut acc = vec![std::iter::empty::<f64>().sum::<f64>(); c];
        for row in p.chunks_exact(c) {
            acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
        }
        acc.into_iter().map(T::from_f64).collect()
    };
    (dx, channel_sum(&pw), channel_sum(&pb))
}

/// One group of the backward: writes all of its dx and its channels' partial sums of
/// d xhat (`pwg`) and d (`pbg`).
#[inline(always)]
fn norm_backward_group<T: Float>(
    gi: usize,
    (xg, dyg): (&[T], &[T]),
    dxg: &mut [MaybeUninit<T>],
    (pwg, pbg): (&mut [MaybeUninit<f64>], &mut [MaybeUninit<f64>]),
    (w, b): (Option<&[T]>, Option<&[T]>),
    (mu, rs): (T, T),
    s: &NormShape,
) {
    let m = xg.len();
    let c0 = (gi % s.groups) * s.cpg;
    let wj = |j: usize| w.map_or(T::ONE, |w| w[c0 + j]);
    let bj = |j: usize| b.map_or(T::ZERO, |b| b[c0 + j]);
    // d: the gradient at the normaliser's output (through the fused SiLU), kept in dx
    // for the last pass. Each pass is its own simple loop so that each vectorises (one
    // loop doing the exp and both sums did not).
    let d_of = |x: T, dy: T, wv: T, bv: T| {
        if s.silu {
            let v = (x - mu) * rs * wv + bv;
            let sg = v.sigmoid_fast();
            dy * sg * (T::ONE + v * (T::ONE - sg))
        } else {
            dy
        }
    };
    let (sum_g, sum_gx) = if s.inner == 1 {
        // LayerNorm's [rows, 1, D, 1]: one element per channel, so a channel's partial
        // sums are its element's terms, and each pass is one loop over the channels (a
        // loop per channel would run one element at a time).
        if s.silu {
            for (j, ((d, &x), &dy)) in dxg.iter_mut().zip(xg).zip(dyg).enumerate() {
                d.write(d_of(x, dy, wj(j), bj(j)));
            }
        } else {
            dxg.iter_mut().zip(dyg).for_each(|(d, &dy)| {
                d.write(dy);
            });
        }
        // SAFETY: either loop wrote every element of dxg.
        let dxg: &[T] = unsafe { assume_init(dxg) };
        for (((pw, pb), &d), &x) in pwg.iter_mut().zip(pbg.iter_mut()).zip(dxg).zip(xg) {
            pb.write(d.to_f64());
            pw.write((d * ((x - mu) * rs)).to_f64());
        }
        // SAFETY: the loop wrote every element of both (they are as long as dxg).
        let (pwg, pbg): (&[f64], &[f64]) = unsafe { (assume_init(pwg), assume_init(pbg)) };
        match w {
            Some(w) => {
                let w64 = |j: usize| w[c0 + j].to_f64();
                (weighted_sum(pbg, w64), weighted_sum(pwg, w64))
            }
            None => (weighted_sum(pbg, |_| 1.0), weighted_sum(pwg, |_| 1.0)),
        }
    } else {
        let (mut sum_g, mut sum_gx) = (0.0, 0.0);
        for j in 0..s.cpg {
            let (wv, bv) = (wj(j), bj(j));
            let range = j * s.inner..(j + 1) * s.inner;
            let (xr, dyr, dxr) = (&xg[range.clone()], &dyg[range.clone()], &mut dxg[range]);
            if s.silu {
                for ((d, &x), &dy) in dxr.iter_mut().zip(xr).zip(dyr) {
                    d.write(d_of(x, dy, wv, bv));
                }
            } else {
                for (d, &dy) in dxr.iter_mut().zip(dyr) {
                    d.write(dy);
                }
            }
            // SAFETY: either branch wrote every element of dxr.
            let dxr = unsafe { assume_init(dxr) };
            let sd = lane_sum(dxr, |d| d);
            let sdx = lane_sum2(dxr, xr, |d, x| d * ((x - mu) * rs));
            pwg[j].write(sdx);
            pbg[j].write(sd);
            sum_g += wv.to_f64() * sd;
            sum_gx += wv.to_f64() * sdx;
        }
        (sum_g, sum_gx)
    };
    let (a, bm) = (
        T::from_f64(sum_g / m as f64),
        T::from_f64(sum_gx / m as f64),
    );
    // SAFETY: either branch above wrote all cpg * inner = m elements of dxg.
    let dxg = unsafe { assume_init(dxg) };
    let dx_of = |d: T, x: T, wv: T| rs * (d * wv - a - (x - mu) * rs * bm);
    if s.inner == 1 {
        match w {
            Some(w) => {
                for ((d, &x), &wv) in dxg.iter_mut().zip(xg).zip(&w[c0..c0 + m]) {
                    *d = dx_of(*d, x, wv);
                }
            }
            None => dxg
                .iter_mut()
                .zip(xg)
                .for_each(|(d, &x)| *d = dx_of(*d, x, T::ONE)),
        }
        return;
    }
    for j in 0..s.cpg {
        let wv = wj(j);
        let range = j * s.inner..(j + 1) * s.inner;
        for (d, &x) in dxg[range.clone()].iter_mut().zip(&xg[range]) {
            *d = dx_of(*d, x, wv);
        }
    }
}

/// The slice as initialised (`<[MaybeUninit<T>]>::assume_init_mut`, stable only from
/// Rust 1.93, above the crate's 1.89).
///
/// # Safety
/// Every element of `s` has been written.
unsafe fn assume_init<T>(s: &mut [MaybeUninit<T>]) -> &mut [T] {
    // SAFETY: MaybeUninit<T> has T's layout, and the caller vouches that each element
    // holds a T.
    unsafe { &mut *(s as *mut [MaybeUninit<T>] as *mut [T]) }
}

/// Sum over j of w(j) p[j] in f64, in 8 lanes (one running sum would be one dependent
/// add per element) combined by a fixed tree.
#[inline(always)]
fn weighted_sum(p: &[f64], w: impl Fn(usize) -> f64) -> f64 {
    let mut acc = [0f64; 8];
    let (chunks, rest) = p.as_chunks::<8>();
    for (c, chunk) in chunks.iter().enumerate() {
        for l in 0..8 {
            acc[l] += w(c * 8 + l) * chunk[l];
        }
    }
    for (l, &v) in rest.iter().enumerate() {
        acc[l] += w(chunks.len() * 8 + l) * v;
    }
    combine(acc)
}
