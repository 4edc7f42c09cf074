//! Fused normalisation (group_norm, layer_norm, group_norm + SiLU): each group's
//! statistics and its normalised output in one visit while the group is in cache
//! (two-pass mean/variance, accumulated in f64), and the fused backward.

use crate::ops::{NormShape, UnaryOp};
use crate::Float;
use rayon::prelude::*;

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
            let mu = xg.iter().map(|v| v.to_f64()).sum::<f64>() / m as f64;
            let var = xg.iter().map(|v| (v.to_f64() - mu).powi(2)).sum::<f64>() / m as f64;
            let rs = 1.0 / (var + s.eps).sqrt();
            *mu_out = T::from_f64(mu);
            *rs_out = T::from_f64(rs);
            let c0 = (gi % s.groups) * s.cpg;
            for j in 0..s.cpg {
                // y = (x - mu) (rs w) + b: subtracting first keeps a tiny-variance group
                // exact (folding mu into the shift would cancel catastrophically).
                let scale = T::from_f64(rs * w.map_or(1.0, |w| w[c0 + j].to_f64()));
                let (mu_t, shift) = (
                    T::from_f64(mu),
                    T::from_f64(b.map_or(0.0, |b| b[c0 + j].to_f64())),
                );
                let range = j * s.inner..(j + 1) * s.inner;
                for (yv, &xv) in yg[range.clone()].iter_mut().zip(&xg[range]) {
                    let v = (xv - mu_t) * scale + shift;
                    *yv = if s.silu {
                        UnaryOp::Silu.eval(false, v)
                    } else {
                        v
                    };
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
                let (mu, rs) = (mean[gi].to_f64(), rstd[gi].to_f64());
                let c0 = (gi % s.groups) * s.cpg;
                let wj = |j: usize| w.map_or(1.0, |w| w[c0 + j].to_f64());
                let bj = |j: usize| b.map_or(0.0, |b| b[c0 + j].to_f64());
                // The gradient at the normaliser's output, through the fused SiLU.
                let d = |i: usize, j: usize, xh: f64| {
                    let g = dyg[i].to_f64();
                    if s.silu {
                        g * UnaryOp::Silu.eval(true, xh * wj(j) + bj(j))
                    } else {
                        g
                    }
                };
                let (mut sum_g, mut sum_gx) = (0.0, 0.0);
                for j in 0..s.cpg {
                    let (mut sd, mut sdx) = (0.0, 0.0);
                    for (i, xv) in xg.iter().enumerate().skip(j * s.inner).take(s.inner) {
                        let xh = (xv.to_f64() - mu) * rs;
                        let di = d(i, j, xh);
                        sd += di;
                        sdx += di * xh;
                    }
                    pwg[j] = sdx;
                    pbg[j] = sd;
                    sum_g += wj(j) * sd;
                    sum_gx += wj(j) * sdx;
                }
                let (a, bm) = (sum_g / m as f64, sum_gx / m as f64);
                for j in 0..s.cpg {
                    for i in j * s.inner..(j + 1) * s.inner {
                        let xh = (xg[i].to_f64() - mu) * rs;
                        dxg[i] = T::from_f64(rs * (d(i, j, xh) * wj(j) - a - xh * bm));
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
