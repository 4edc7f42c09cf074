//! Fused normalisation (group_norm, layer_norm): each group's statistics and its
//! normalised output in one visit while the group is in cache (two-pass mean/variance,
//! accumulated in f64), and the fused backward.

use crate::ops::NormShape;
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
                let scale = rs * w.map_or(1.0, |w| w[c0 + j].to_f64());
                let shift = b.map_or(0.0, |b| b[c0 + j].to_f64()) - mu * scale;
                let (scale, shift) = (T::from_f64(scale), T::from_f64(shift));
                let range = j * s.inner..(j + 1) * s.inner;
                for (yv, &xv) in yg[range.clone()].iter_mut().zip(&xg[range]) {
                    *yv = xv * scale + shift;
                }
            }
        });
    (y, mean, rstd)
}

/// (dx, dw, db) given x, dy and the saved statistics. With xhat = (x - mean) rstd and
/// g = dy w: dx = rstd (g - mean(g) - xhat mean(g xhat)); dw = sum dy xhat; db = sum dy,
/// the channel sums taken over rows in order.
pub(crate) fn norm_backward<T: Float>(
    x: &[T],
    dy: &[T],
    w: Option<&[T]>,
    mean: &[T],
    rstd: &[T],
    s: &NormShape,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (m, c) = (s.group_len(), s.channels());
    let mut dx = vec![T::ZERO; x.len()];
    // Per (row, channel) partial sums of dy*xhat and dy; one chunk of cpg per group.
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
                let (mut sum_g, mut sum_gx) = (0.0, 0.0);
                for j in 0..s.cpg {
                    let wj = w.map_or(1.0, |w| w[c0 + j].to_f64());
                    let (mut sdy, mut sdyx) = (0.0, 0.0);
                    for i in j * s.inner..(j + 1) * s.inner {
                        let (xh, d) = ((xg[i].to_f64() - mu) * rs, dyg[i].to_f64());
                        sdy += d;
                        sdyx += d * xh;
                    }
                    pwg[j] = sdyx;
                    pbg[j] = sdy;
                    sum_g += wj * sdy;
                    sum_gx += wj * sdyx;
                }
                let (a, bm) = (sum_g / m as f64, sum_gx / m as f64);
                for j in 0..s.cpg {
                    let wj = w.map_or(1.0, |w| w[c0 + j].to_f64());
                    for i in j * s.inner..(j + 1) * s.inner {
                        let xh = (xg[i].to_f64() - mu) * rs;
                        dxg[i] = T::from_f64(rs * (dyg[i].to_f64() * wj - a - xh * bm));
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
