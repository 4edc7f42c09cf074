//! Fused scaled dot-product attention on the CPU, one (batch, head) per task and queries
//! in blocks of `QB` rows, so the score matrix never exceeds QB x S. The backward
//! recomputes the probabilities from the saved logsumexp (FlashAttention-2, Dao 2023,
//! alg. 2) instead of storing them.

use super::matmul::{gemm_into, Gemm};
use super::softmax::exp_shifted_sum;
use super::wide::wide;
use crate::ops::AttnShape;
use rayon::prelude::*;

/// Query rows per block.
const QB: usize = 64;

/// Scaled, masked scores of query rows `i0..i0+qb` against every key: [qb, S].
fn scores<T: Gemm>(
    q: &[T],
    k: &[T],
    mask: Option<&[T]>,
    s: &AttnShape,
    i0: usize,
    qb: usize,
    out: &mut [T],
) {
    // k^T is [D, S]: element (c, j) at k[j * D + c].
    gemm_into(
        out,
        &q[i0 * s.d..],
        (s.d, 1),
        k,
        (1, s.d),
        (qb, s.s, s.d),
        false,
        false,
    );
    let scale = T::from_f64(s.scale);
    for (r, row) in out.chunks_mut(s.s).enumerate() {
        let i = i0 + r;
        for (j, v) in row.iter_mut().enumerate() {
            let hidden = (s.causal && j > i) || mask.is_some_and(|m| m[j] == T::ZERO);
            *v = if hidden { T::NEG_INFINITY } else { *v * scale };
        }
    }
}

/// (out [B, H, L, DV], lse [B, H, L]).
pub(crate) fn attention<T: Gemm>(
    q: &[T],
    k: &[T],
    v: &[T],
    mask: Option<&[T]>,
    s: &AttnShape,
) -> (Vec<T>, Vec<T>) {
    let heads: Vec<(Vec<T>, Vec<T>)> = (0..s.b * s.h)
        .into_par_iter()
        .map(|bh| attention_head(q, k, v, mask, s, bh))
        .collect();
    let (o, l): (Vec<_>, Vec<_>) = heads.into_iter().unzip();
    (o.concat(), l.concat())
}

/// One (batch, head): its out [L, DV] and lse [L].
fn attention_head<T: Gemm>(
    q: &[T],
    k: &[T],
    v: &[T],
    mask: Option<&[T]>,
    s: &AttnShape,
    bh: usize,
) -> (Vec<T>, Vec<T>) {
    let mut o = vec![T::ZERO; s.l * s.dv];
    let mut lse = vec![T::NEG_INFINITY; s.l];
    let (qh, kh, vh) = (
        &q[bh * s.l * s.d..],
        &k[bh * s.s * s.d..],
        &v[bh * s.s * s.dv..],
    );
    let m = mask.map(|m| &m[(bh / s.h) * s.s..][..s.s]);
    let mut p = vec![T::ZERO; QB * s.s];
    for i0 in (0..s.l).step_by(QB) {
        let qb = QB.min(s.l - i0);
        let p = &mut p[..qb * s.s];
        scores(qh, kh, m, s, i0, qb, p);
        for r in 0..qb {
            let row = &mut p[r * s.s..(r + 1) * s.s];
            let max = row.iter().fold(T::NEG_INFINITY, |a, &b| a.max(b));
            if max == T::NEG_INFINITY {
                // Every key hidden: a zero row, and lse = -inf marks it for backward.
                row.fill(T::ZERO);
                continue;
            }
            let sum = wide(
                #[inline(always)]
                || exp_shifted_sum(row, max),
            );
            let inv = T::ONE / sum;
            row.iter_mut().for_each(|x| *x *= inv);
            lse[i0 + r] = max + sum.ln();
        }
        gemm_into(
            &mut o[i0 * s.dv..(i0 + qb) * s.dv],
            p,
            (s.s, 1),
            vh,
            (s.dv, 1),
            (qb, s.dv, s.s),
            false,
            false,
        );
    }
    (o, lse)
}

/// (dq, dk, dv). With P = exp(S - lse), Di = sum_c dO_ic O_ic:
/// dV = P^T dO, dP = dO V^T, dS = P (dP - D), dQ = scale dS K, dK = scale dS^T Q.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_backward<T: Gemm>(
    q: &[T],
    k: &[T],
    v: &[T],
    mask: Option<&[T]>,
    out: &[T],
    lse: &[T],
    dout: &[T],
    s: &AttnShape,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let heads: Vec<_> = (0..s.b * s.h)
        .into_par_iter()
        .map(|bh| attention_head_backward(q, k, v, mask, out, lse, dout, s, bh))
        .collect();
    let mut grads = (Vec::new(), Vec::new(), Vec::new());
    for (dq, dk, dv) in heads {
        grads.0.extend(dq);
        grads.1.extend(dk);
        grads.2.extend(dv);
    }
    grads
}

/// One (batch, head) of the backward: its dq [L, D], dk [S, D], dv [S, DV].
#[allow(clippy::too_many_arguments)]
fn attention_head_backward<T: Gemm>(
    q: &[T],
    k: &[T],
    v: &[T],
    mask: Option<&[T]>,
    out: &[T],
    lse: &[T],
    dout: &[T],
    s: &AttnShape,
    bh: usize,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (ql, kl, vl) = (s.l * s.d, s.s * s.d, s.s * s.dv);
    let (mut dq, mut dk, mut dv) = (vec![T::ZERO; ql], vec![T::ZERO; kl], vec![T::ZERO; vl]);
    let scale = T::from_f64(s.scale);
    let (qh, kh, vh) = (&q[bh * ql..], &k[bh * kl..], &v[bh * vl..]);
    let (oh, doh, lh) = (
        &out[bh * s.l * s.dv..],
        &dout[bh * s.l * s.dv..],
        &lse[bh * s.l..],
    );
    let m = mask.map(|m| &m[(bh / s.h) * s.s..][..s.s]);
    let mut p = vec![T::ZERO; QB * s.s];
    let mut dp = vec![T::ZERO; QB * s.s];
    for i0 in (0..s.l).step_by(QB) {
        let qb = QB.min(s.l - i0);
        let (p, dp) = (&mut p[..qb * s.s], &mut dp[..qb * s.s]);
        scores(qh, kh, m, s, i0, qb, p);
        let do_blk = &doh[i0 * s.dv..(i0 + qb) * s.dv];
        // dP = dO V^T: V^T is [DV, S], element (c, j) at v[j * DV + c].
        gemm_into(
            dp,
            do_blk,
            (s.dv, 1),
            vh,
            (1, s.dv),
            (qb, s.s, s.dv),
            false,
            false,
        );
        for r in 0..qb {
            let i = i0 + r;
            let l = lh[i];
            let row = &mut p[r * s.s..(r + 1) * s.s];
            if l == T::NEG_INFINITY {
                row.fill(T::ZERO);
            } else {
                wide(
                    #[inline(always)]
                    || row.iter_mut().for_each(|x| *x = (*x - l).exp_fast()),
                );
            }
            let di: T = (0..s.dv)
                .map(|c| doh[i * s.dv + c] * oh[i * s.dv + c])
                .sum();
            // dP becomes scale * dS in place.
            for (g, &pv) in dp[r * s.s..(r + 1) * s.s].iter_mut().zip(row.iter()) {
                *g = pv * (*g - di) * scale;
            }
        }
        // dV += P^T dO: P^T is [S, qb], element (j, r) at p[r * S + j].
        gemm_into(
            &mut dv,
            p,
            (1, s.s),
            do_blk,
            (s.dv, 1),
            (s.s, s.dv, qb),
            i0 > 0,
            false,
        );
        // dQ = (scale dS) K
        gemm_into(
            &mut dq[i0 * s.d..(i0 + qb) * s.d],
            dp,
            (s.s, 1),
            kh,
            (s.d, 1),
            (qb, s.d, s.s),
            false,
            false,
        );
        // dK += (scale dS)^T Q
        gemm_into(
            &mut dk,
            dp,
            (1, s.s),
            &qh[i0 * s.d..],
            (s.d, 1),
            (s.s, s.d, qb),
            i0 > 0,
            false,
        );
    }
    (dq, dk, dv)
}
