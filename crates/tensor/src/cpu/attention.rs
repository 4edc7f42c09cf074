//! Fused scaled dot-product attention on the CPU, queries in blocks of `QB` rows, so the
//! score matrix never exceeds QB x S. The backward recomputes the probabilities from the
//! saved logsumexp (FlashAttention-2, Dao 2023, alg. 2) instead of storing them.
//!
//! Operands are stored head-major ([B, H, rows, width]: a task per head) or, with
//! `AttnShape::seq_major`, sequence-major ([B, rows, H, width], a linear layer's output
//! split into heads, read and written in place: a task per batch entry, whose heads
//! interleave in its rows). The arithmetic is the same either way.

use super::matmul::{gemm_into, gemm_into_ld, Gemm};
use super::softmax::{exp_shifted_sum, max_row};
use super::wide::wide;
use crate::ops::AttnShape;
use rayon::prelude::*;

/// Query rows per block.
const QB: usize = 64;

/// Where each head's rows lie in a [B, H, rows, width] operand (see the module doc).
#[derive(Clone, Copy)]
struct Heads {
    heads: usize,
    rows: usize,
    width: usize,
    seq_major: bool,
}

impl Heads {
    fn new(s: &AttnShape, rows: usize, width: usize) -> Self {
        Heads {
            heads: s.h,
            rows,
            width,
            seq_major: s.seq_major,
        }
    }

    /// Offset of head `bh` = b H + h's first row in the whole operand.
    fn at(&self, bh: usize) -> usize {
        if !self.seq_major {
            return bh * self.rows * self.width;
        }
        let (b, h) = (bh / self.heads, bh % self.heads);
        b * self.heads * self.rows * self.width + h * self.width
    }

    /// Offset of head h's first row inside its task's piece (`piece`).
    fn within(&self, h: usize) -> usize {
        if self.seq_major {
            h * self.width
        } else {
            0
        }
    }

    /// Elements between consecutive rows of a head.
    fn stride(&self) -> usize {
        if self.seq_major {
            self.heads * self.width
        } else {
            self.width
        }
    }

    /// Heads per task piece: one, or a whole batch entry's when they interleave.
    fn per_piece(&self) -> usize {
        if self.seq_major {
            self.heads.max(1)
        } else {
            1
        }
    }

    /// Elements of one task piece.
    fn piece(&self) -> usize {
        self.per_piece() * self.rows * self.width
    }
}

/// Scaled, masked scores of query rows `i0..i0+qb` against every key: [qb, S]. `q` and
/// `k` start at the head's first row, their rows `qs` and `ks` apart.
#[allow(clippy::too_many_arguments)]
fn scores<T: Gemm>(
    (q, qs): (&[T], usize),
    (k, ks): (&[T], usize),
    mask: Option<&[T]>,
    s: &AttnShape,
    i0: usize,
    qb: usize,
    out: &mut [T],
) {
    // k^T is [D, S]: element (c, j) at k[j * ks + c].
    gemm_into(
        out,
        &q[i0 * qs..],
        (qs, 1),
        k,
        (1, ks),
        (qb, s.s, s.d),
        false,
        false,
    );
    let scale = T::from_f64(s.scale);
    if !s.causal && mask.is_none() {
        wide(
            #[inline(always)]
            || out.iter_mut().for_each(|v| *v *= scale),
        );
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

/// (out [B, H, L, DV] stored as q is, lse [B, H, L]).
pub(crate) fn attention<T: Gemm>(
    q: &[T],
    k: &[T],
    v: &[T],
    mask: Option<&[T]>,
    s: &AttnShape,
) -> (Vec<T>, Vec<T>) {
    let bh = s.b * s.h;
    let oh = Heads::new(s, s.l, s.dv);
    let per = oh.per_piece();
    let mut o = vec![T::ZERO; bh * s.l * s.dv];
    let mut lse = vec![T::NEG_INFINITY; bh * s.l];
    // Each task writes its own rows of the outputs in place (no per-head vectors to
    // concatenate) and reuses one score block per rayon piece.
    let tasks: Vec<_> = pieces(&mut o, oh.piece(), bh / per)
        .into_iter()
        .zip(pieces(&mut lse, per * s.l, bh / per))
        .enumerate()
        .collect();
    tasks
        .into_par_iter()
        .with_min_len(heads_per_task(bh).div_ceil(per))
        .for_each_init(
            || vec![T::ZERO; QB * s.s],
            |p, (t, (o, lse))| {
                for j in 0..per {
                    let lse = &mut lse[j * s.l..][..s.l];
                    attention_head(q, k, v, mask, s, t * per + j, (o, lse), p);
                }
            },
        );
    (o, lse)
}

/// Elements spanned by `rows` rows of `width`, `stride` apart.
fn extent(rows: usize, stride: usize, width: usize) -> usize {
    if rows == 0 {
        0
    } else {
        (rows - 1) * stride + width
    }
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

/// One (batch, head) `bh`: writes its out rows (in its task's piece `o`) and lse [L]; `p`
/// is QB x S of scratch.
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
    let (qh, kh, vh, oh) = (
        Heads::new(s, s.l, s.d),
        Heads::new(s, s.s, s.d),
        Heads::new(s, s.s, s.dv),
        Heads::new(s, s.l, s.dv),
    );
    let (qp, kp, vp) = (&q[qh.at(bh)..], &k[kh.at(bh)..], &v[vh.at(bh)..]);
    let o = &mut o[oh.within(bh % s.h)..];
    let m = mask.map(|m| &m[(bh / s.h) * s.s..][..s.s]);
    for i0 in (0..s.l).step_by(QB) {
        let qb = QB.min(s.l - i0);
        let p = &mut p[..qb * s.s];
        scores((qp, qh.stride()), (kp, kh.stride()), m, s, i0, qb, p);
        // The rows' softmax in one AVX-512 region (max, exp, sum and scaling all
        // vectorise; each row's arithmetic is the same at any width).
        wide(
            #[inline(always)]
            || {
                for (r, row) in p.chunks_mut(s.s.max(1)).enumerate() {
                    let max = max_row(row);
                    if max == T::NEG_INFINITY {
                        // Every key hidden: a zero row, and lse = -inf marks it for
                        // backward.
                        row.fill(T::ZERO);
                        continue;
                    }
                    let sum = exp_shifted_sum(row, max);
                    let inv = T::ONE / sum;
                    row.iter_mut().for_each(|x| *x *= inv);
                    lse[i0 + r] = max + sum.ln();
                }
            },
        );
        let os = oh.stride();
        gemm_into_ld(
            &mut o[i0 * os..][..extent(qb, os, s.dv)],
            os,
            p,
            (s.s, 1),
            vp,
            (vh.stride(), 1),
            (qb, s.dv, s.s),
            false,
            false,
        );
    }
}

/// (dq, dk, dv), stored as q, k, v are. With P = exp(S - lse), Di = sum_c dO_ic O_ic:
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
    let (qh, kh, vh) = (
        Heads::new(s, s.l, s.d),
        Heads::new(s, s.s, s.d),
        Heads::new(s, s.s, s.dv),
    );
    let per = qh.per_piece();
    let (mut dq, mut dk, mut dv) = (
        vec![T::ZERO; bh * s.l * s.d],
        vec![T::ZERO; bh * s.s * s.d],
        vec![T::ZERO; bh * s.s * s.dv],
    );
    let tasks: Vec<_> = pieces(&mut dq, qh.piece(), bh / per)
        .into_iter()
        .zip(pieces(&mut dk, kh.piece(), bh / per))
        .zip(pieces(&mut dv, vh.piece(), bh / per))
        .enumerate()
        .collect();
    tasks
        .into_par_iter()
        .with_min_len(heads_per_task(bh).div_ceil(per))
        .for_each_init(
            || (vec![T::ZERO; QB * s.s], vec![T::ZERO; QB * s.s]),
            |(p, dp), (t, ((dq, dk), dv))| {
                for j in 0..per {
                    let grads = (&mut *dq, &mut *dk, &mut *dv);
                    let i = t * per + j;
                    attention_head_backward(q, k, v, mask, out, lse, dout, s, i, grads, (p, dp));
                }
            },
        );
    (dq, dk, dv)
}

/// One (batch, head) `bh` of the backward: writes its rows of dq, dk, dv (in its task's
/// pieces); `p` and `dp` are QB x S of scratch each.
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
    let (qh, kh, vh, oh) = (
        Heads::new(s, s.l, s.d),
        Heads::new(s, s.s, s.d),
        Heads::new(s, s.s, s.dv),
        Heads::new(s, s.l, s.dv),
    );
    let (qs, ks, vs, os) = (qh.stride(), kh.stride(), vh.stride(), oh.stride());
    let scale = T::from_f64(s.scale);
    let (qp, kp, vp) = (&q[qh.at(bh)..], &k[kh.at(bh)..], &v[vh.at(bh)..]);
    let (op, dop, lh) = (&out[oh.at(bh)..], &dout[oh.at(bh)..], &lse[bh * s.l..]);
    let h = bh % s.h;
    let dq = &mut dq[qh.within(h)..];
    let dk = &mut dk[kh.within(h)..][..extent(s.s, ks, s.d)];
    let dv = &mut dv[vh.within(h)..][..extent(s.s, vs, s.dv)];
    let m = mask.map(|m| &m[(bh / s.h) * s.s..][..s.s]);
    for i0 in (0..s.l).step_by(QB) {
        let qb = QB.min(s.l - i0);
        let (p, dp) = (&mut p[..qb * s.s], &mut dp[..qb * s.s]);
        scores((qp, qs), (kp, ks), m, s, i0, qb, p);
        let do_blk = &dop[i0 * os..];
        // dP = dO V^T: V^T is [DV, S], element (c, j) at v[j * vs + c].
        gemm_into(
            dp,
            do_blk,
            (os, 1),
            vp,
            (1, vs),
            (qb, s.s, s.dv),
            false,
            false,
        );
        // P and dS row by row, in one AVX-512 region (elementwise loops, and Di's sum
        // in its one order).
        wide(
            #[inline(always)]
            || {
                let rows = p.chunks_mut(s.s.max(1)).zip(dp.chunks_mut(s.s.max(1)));
                for (r, (row, dpr)) in rows.enumerate() {
                    let i = i0 + r;
                    let l = lh[i];
                    if l == T::NEG_INFINITY {
                        row.fill(T::ZERO);
                    } else {
                        row.iter_mut().for_each(|x| *x = (*x - l).exp_fast());
                    }
                    let di: T = (0..s.dv).map(|c| dop[i * os + c] * op[i * os + c]).sum();
                    // dP becomes scale * dS in place.
                    for (g, &pv) in dpr.iter_mut().zip(row.iter()) {
                        *g = pv * (*g - di) * scale;
                    }
                }
            },
        );
        // dV += P^T dO: P^T is [S, qb], element (j, r) at p[r * S + j].
        gemm_into_ld(
            dv,
            vs,
            p,
            (1, s.s),
            do_blk,
            (os, 1),
            (s.s, s.dv, qb),
            i0 > 0,
            false,
        );
        // dQ = (scale dS) K
        gemm_into_ld(
            &mut dq[i0 * qs..][..extent(qb, qs, s.d)],
            qs,
            dp,
            (s.s, 1),
            kp,
            (ks, 1),
            (qb, s.d, s.s),
            false,
            false,
        );
        // dK += (scale dS)^T Q
        gemm_into_ld(
            dk,
            ks,
            dp,
            (1, s.s),
            &qp[i0 * qs..],
            (qs, 1),
            (s.s, s.d, qb),
            i0 > 0,
            false,
        );
    }
}
