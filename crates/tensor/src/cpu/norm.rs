//! Fused normalisation (group_norm, layer_norm, group_norm + SiLU): each group's
//! statistics and its normalised output in one visit while the group is in cache
//! (two-pass mean/variance: blocks of 256 summed in the compute dtype, the blocks in
//! f64), and the fused backward. Per-element work is in the compute dtype; only the
//! group totals are f64.

use super::wide::wide;
use crate::ops::NormShape;
use crate::Float;
use rayon::prelude::*;

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
fn combine(acc: [f64; LANES]) -> f64 {
    // A fixed tree: the sum depends on the data's length only, never on thread count.
    let mut v = acc;
    let mut n = LANES;
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

#[inline(always)]
fn sigmoid<T: Float>(v: T) -> T {
    T::ONE / (T::ONE + (-v).exp_fast())
}

/// (y, mean, rstd) for x seen as [rows, groups, cpg, inner]; see `NormShape`.
pub(crate) fn norm<T: Float>(
    x: &[T],
    w: Option<&[T]>,
    b: Option<&[T]>,
    s: &NormShape,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (m, stats) = (s.group_len(), s.rows * s.groups);
    let mut y = vec![T::ZERO; x.len()];
    let mut mean = vec![T::ZERO; stats];
    let mut rstd = vec![T::ZERO; stats];
    if m == 0 {
        return (y, mean, rstd);
    }
    y.par_chunks_mut(m)
        .zip(x.par_chunks(m))
        .zip(mean.par_iter_mut().zip(rstd.par_iter_mut()))
        .enumerate()
        .for_each(|(gi, ((yg, xg), (mu_out, rs_out)))| {
            (*mu_out, *rs_out) = wide(|| norm_group(gi, xg, yg, (w, b), s));
        });
    (y, mean, rstd)
}

/// One group of the forward: normalises x into y and returns (mean, rstd).
#[inline(always)]
fn norm_group<T: Float>(
    gi: usize,
    xg: &[T],
    yg: &mut [T],
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
    for j in 0..s.cpg {
        // y = (x - mu) (rs w) + b: subtracting first keeps a tiny-variance group
        // exact (folding mu into the shift would cancel catastrophically).
        let scale = T::from_f64(rs * w.map_or(1.0, |w| w[c0 + j].to_f64()));
        let shift = b.map_or(T::ZERO, |b| b[c0 + j]);
        let range = j * s.inner..(j + 1) * s.inner;
        let (yr, xr) = (&mut yg[range.clone()], &xg[range]);
        if s.silu {
            for (yv, &xv) in yr.iter_mut().zip(xr) {
                let v = (xv - mu_t) * scale + shift;
                *yv = v * sigmoid(v);
            }
        } else {
            for (yv, &xv) in yr.iter_mut().zip(xr) {
                *yv = (xv - mu_t) * scale + shift;
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
    let mut dx = vec![T::ZERO; x.len()];
    // Per (row, channel) partial sums of d*xhat and d; one chunk of cpg per group.
    let mut pw = vec![0f64; s.rows * c];
    let mut pb = vec![0f64; s.rows * c];
    if m > 0 {
        dx.par_chunks_mut(m)
            .zip(x.par_chunks(m).zip(dy.par_chunks(m)))
            .zip(pw.par_chunks_mut(s.cpg).zip(pb.par_chunks_mut(s.cpg)))
            .enumerate()
            .for_each(|(gi, ((dxg, (xg, dyg)), (pwg, pbg)))| {
                wide(|| {
                    norm_backward_group(
                        gi,
                        (xg, dyg),
                        dxg,
                        (pwg, pbg),
                        (w, b),
                        (mean[gi], rstd[gi]),
                        s,
                    )
                })
            });
    }
    let channel_sum = |p: &[f64]| -> Vec<T> {
        (0..c)
            .into_par_iter()
            .map(|ch| T::from_f64((0..s.rows).map(|r| p[r * c + ch]).sum()))
            .collect()
    };
    (dx, channel_sum(&pw), channel_sum(&pb))
}

/// One group of the backward: writes its dx and its channels' partial sums of d xhat
/// (`pwg`) and d (`pbg`).
#[inline(always)]
fn norm_backward_group<T: Float>(
    gi: usize,
    (xg, dyg): (&[T], &[T]),
    dxg: &mut [T],
    (pwg, pbg): (&mut [f64], &mut [f64]),
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
    let (mut sum_g, mut sum_gx) = (0.0, 0.0);
    for j in 0..s.cpg {
        let (wv, bv) = (wj(j), bj(j));
        let range = j * s.inner..(j + 1) * s.inner;
        let (xr, dyr, dxr) = (&xg[range.clone()], &dyg[range.clone()], &mut dxg[range]);
        if s.silu {
            for ((d, &x), &dy) in dxr.iter_mut().zip(xr).zip(dyr) {
                let v = (x - mu) * rs * wv + bv;
                let sg = sigmoid(v);
                *d = dy * sg * (T::ONE + v * (T::ONE - sg));
            }
        } else {
            dxr.copy_from_slice(dyr);
        }
        let sd = lane_sum(dxr, |d| d);
        let sdx = lane_sum2(dxr, xr, |d, x| d * ((x - mu) * rs));
        pwg[j] = sdx;
        pbg[j] = sd;
        sum_g += wv.to_f64() * sd;
        sum_gx += wv.to_f64() * sdx;
    }
    let (a, bm) = (
        T::from_f64(sum_g / m as f64),
        T::from_f64(sum_gx / m as f64),
    );
    for j in 0..s.cpg {
        let wv = wj(j);
        let range = j * s.inner..(j + 1) * s.inner;
        for (d, &x) in dxg[range.clone()].iter_mut().zip(&xg[range]) {
            let xh = (x - mu) * rs;
            *d = rs * (*d * wv - a - xh * bm);
        }
    }
}
