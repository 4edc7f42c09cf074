//! Fused normalisation (group_norm, layer_norm, group_norm + SiLU): each group's
//! statistics and its normalised output in one visit while the group is in cache
//! (two-pass mean/variance with f64 sums), and the fused backward. Per-element work is
//! in the compute dtype; only the group sums are f64.

use crate::ops::NormShape;
use crate::Float;
use rayon::prelude::*;

/// Independent f64 accumulators per sum: a single running sum is one dependent add per
/// element (latency-bound, never vectorised); lanes make the loops vectorise. They are
/// combined in a fixed order, so a sum depends on the data's length only, never on the
/// thread count.
const LANES: usize = 8;

#[inline]
fn combine(acc: [f64; LANES]) -> f64 {
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
}

/// Sum of f(x) over `xs` in f64, lane-wise.
#[inline]
fn lane_sum<T: Float>(xs: &[T], f: impl Fn(T) -> f64) -> f64 {
    let mut acc = [0f64; LANES];
    let (chunks, rest) = xs.as_chunks::<LANES>();
    for c in chunks {
        for l in 0..LANES {
            acc[l] += f(c[l]);
        }
    }
    for (l, &x) in rest.iter().enumerate() {
        acc[l] += f(x);
    }
    combine(acc)
}

#[inline]
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
            let mu = lane_sum(xg, |v| v.to_f64()) / m as f64;
            let var = lane_sum(xg, |v| (v.to_f64() - mu).powi(2)) / m as f64;
            let rs = 1.0 / (var + s.eps).sqrt();
            *mu_out = T::from_f64(mu);
            *rs_out = T::from_f64(rs);
            let c0 = (gi % s.groups) * s.cpg;
            let mu_t = T::from_f64(mu);
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
        });
    (y, mean, rstd)
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
                let (mu, rs) = (mean[gi], rstd[gi]);
                let c0 = (gi % s.groups) * s.cpg;
                let wj = |j: usize| w.map_or(T::ONE, |w| w[c0 + j]);
                let bj = |j: usize| b.map_or(T::ZERO, |b| b[c0 + j]);
                // d: the gradient at the normaliser's output (through the fused SiLU),
                // kept in dx for the second pass.
                let (mut sum_g, mut sum_gx) = (0.0, 0.0);
                for j in 0..s.cpg {
                    let (wv, bv) = (wj(j), bj(j));
                    let d_at = |x: T, dy: T| {
                        let xh = (x - mu) * rs;
                        let d = if s.silu {
                            let v = xh * wv + bv;
                            let sg = sigmoid(v);
                            dy * sg * (T::ONE + v * (T::ONE - sg))
                        } else {
                            dy
                        };
                        (d, xh)
                    };
                    let range = j * s.inner..(j + 1) * s.inner;
                    let (xc, xr) = xg[range.clone()].as_chunks::<LANES>();
                    let (dyc, dyr) = dyg[range.clone()].as_chunks::<LANES>();
                    let (dxc, dxr) = dxg[range].as_chunks_mut::<LANES>();
                    let (mut sd, mut sdx) = ([0f64; LANES], [0f64; LANES]);
                    for ((x8, dy8), dx8) in xc.iter().zip(dyc).zip(dxc) {
                        for l in 0..LANES {
                            let (d, xh) = d_at(x8[l], dy8[l]);
                            dx8[l] = d;
                            sd[l] += d.to_f64();
                            sdx[l] += (d * xh).to_f64();
                        }
                    }
                    for (l, ((&x, &dy), dx)) in xr.iter().zip(dyr).zip(dxr).enumerate() {
                        let (d, xh) = d_at(x, dy);
                        *dx = d;
                        sd[l] += d.to_f64();
                        sdx[l] += (d * xh).to_f64();
                    }
                    let (sd, sdx) = (combine(sd), combine(sdx));
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
                    for i in j * s.inner..(j + 1) * s.inner {
                        let xh = (xg[i] - mu) * rs;
                        dxg[i] = rs * (dxg[i] * wv - a - xh * bm);
                    }
                }
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
