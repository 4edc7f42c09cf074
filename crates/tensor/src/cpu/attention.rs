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
    if !s.causal && mask.is_none() {
        out.iter_mut().for_each(|v| *v *= scale);
        return;
    }
    // Keys after the query (causal) and masked keys read -inf; each rule is its own loop
    // so that the scaling vectorises.
    for (r, row) in out.chunks_mut(s.s).enumerate() {
        let seen = if s.causal { (i0 + r + 1).min(s.s) } else { s.s };
        let (visible, after) = row.split_at_mut(seen);
        visible.iter_mut().for_each(|v| *v *= scale);
        after.fill(T::NEG_INFINITY);
        if let Some(m) = mask {
            for (v, &keep) in visible.iter_mut().zip(m) {
                if keep == T::ZERO {
                    *v = T::NEG_INFINITY;
                }
            }
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
    let bh = s.b * s.h;
    let mut o = vec![T::ZERO; bh * s.l * s.dv];
    let mut lse = vec![T::NEG_INFINITY; bh * s.l];
    // Each head writes its own rows of the outputs in place (no per-head vectors to
    // concatenate) and reuses one score block per rayon piece.
    let heads: Vec<_> = pieces(&mut o, s.l * s.dv, bh)
        .into_iter()
        .zip(pieces(&mut lse, s.l, bh))
        .enumerate()
        .collect();
    heads
        .into_par_iter()
        .with_min_len(heads_per_task(bh))
        .for_each_init(
            || vec![T::ZERO; QB * s.s],
            |p, (i, (o, lse))| attention_head(q, k, v, mask, s, i, (o, lse), p),
        );
    (o, lse)
}

/// `v` cut into `count` consecutive pieces of `len` (any of them may be 0).
fn pieces<T>(mut v: &mut [T], len: usize, count: usize) -> Vec<&mut [T]> {
    (0..count)
        .map(|_| {
            let (piece, rest) = std::mem::take(&mut v).split_at_mut(len);
            v = rest;
            piece
        })
        .collect()
}

/// Heads a rayon piece takes: enough that its scratch is allocated a few times per call,
/// not once per head (fixed by the shape; the split never changes the arithmetic).
fn heads_per_task(heads: usize) -> usize {
    heads.div_ceil(16).max(1)
}

/// One (batch, head): writes its out [L, DV] and lse [L]; `p` is QB x S of scratch.
#[allow(clippy::too_many_arguments)]
fn attention_head<T: Gemm>(
    q: &[T],
    k: &[T],
    v: &[T],
    mask: Option<&[T]>,
    s: &AttnShape,
    bh: usize,
    (o, lse): (&mut [T], &mut [T]),
    p: &mut [T],
) {
    let (qh, kh, vh) = (
        &q[bh * s.l * s.d..],
        &k[bh * s.s * s.d..],
        &v[bh * s.s * s.dv..],
    );
    let m = mask.map(|m| &m[(bh / s.h) * s.s..][..s.s]);
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
    let bh = s.b * s.h;
    let (mut dq, mut dk, mut dv) = (
        vec![T::ZERO; bh * s.l * s.d],
        vec![T::ZERO; bh * s.s * s.d],
        vec![T::ZERO; bh * s.s * s.dv],
    );
    let heads: Vec<_> = pieces(&mut dq, s.l * s.d, bh)
        .into_iter()
        .zip(pieces(&mut dk, s.s * s.d, bh))
        .zip(pieces(&mut dv, s.s * s.dv, bh))
        .enumerate()
        .collect();
    heads
        .into_par_iter()
        .with_min_len(heads_per_task(bh))
        .for_each_init(
            || (vec![T::ZERO; QB * s.s], vec![T::ZERO; QB * s.s]),
            |(p, dp), (i, ((dq, dk), dv))| {
                let grads = (dq, dk, dv);
                attention_head_backward(q, k, v, mask, out, lse, dout, s, i, grads, (p, dp));
            },
        );
    (dq, dk, dv)
}

/// One (batch, head) of the backward: writes its dq [L, D], dk [S, D], dv [S, DV];
/// `p` and `dp` are QB x S of scratch each.
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
    (dq, dk, dv): (&mut [T], &mut [T], &mut [T]),
    (p, dp): (&mut [T], &mut [T]),
) {
    let (ql, kl, vl) = (s.l * s.d, s.s * s.d, s.s * s.dv);
    let scale = T::from_f64(s.scale);
    let (qh, kh, vh) = (&q[bh * ql..], &k[bh * kl..], &v[bh * vl..]);
    let (oh, doh, lh) = (
        &out[bh * s.l * s.dv..],
        &dout[bh * s.l * s.dv..],
        &lse[bh * s.l..],
    );
    let m = mask.map(|m| &m[(bh / s.h) * s.s..][..s.s]);
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
            dv,
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
            dk,
            dp,
            (1, s.s),
            &qh[i0 * s.d..],
            (s.d, 1),
            (s.s, s.d, qb),
            i0 > 0,
            false,
        );
    }
}
