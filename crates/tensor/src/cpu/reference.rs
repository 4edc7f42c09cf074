//! The definition of right: every op as plain loops in f64 over row-major data (llm.c's
//! `*_cpu` functions). Slow on purpose and written for reading; the fast kernels and
//! the GPU kernels are tested against these.

use crate::ops::{AttnShape, BinaryOp, ConvShape, NormShape, ReduceOp, UnaryOp};

/// Row-major strides of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    crate::Shape::from(shape).contiguous_strides()
}

/// The multi-index of flat position `i` in `shape`.
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d];
        i /= shape[d];
    }
    idx
}

/// The flat position in a tensor of `shape` that a broadcast output index reads.
fn broadcast_index(out_idx: &[usize], shape: &[usize]) -> usize {
    let lead = out_idx.len() - shape.len();
    let st = strides(shape);
    shape
        .iter()
        .enumerate()
        .map(|(d, &n)| if n == 1 { 0 } else { out_idx[lead + d] * st[d] })
        .sum()
}

/// NumPy's broadcast shape (the caller passes compatible shapes).
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Vec<usize> {
    let r = a.len().max(b.len());
    let get = |s: &[usize], i: usize| {
        if i < r - s.len() {
            1
        } else {
            s[i - (r - s.len())]
        }
    };
    (0..r).map(|i| get(a, i).max(get(b, i))).collect()
}

pub fn unary(x: &[f64], op: UnaryOp, derivative: bool) -> Vec<f64> {
    x.iter().map(|&v| op.eval(derivative, v)).collect()
}

/// GLU: each row of x [rows, 2n] split into a, g; y [rows, n] = a * act(g).
pub fn glu(x: &[f64], n: usize, act: UnaryOp) -> Vec<f64> {
    x.chunks(2 * n.max(1))
        .flat_map(|r| (0..n).map(move |j| r[j] * act.eval(false, r[n + j])))
        .collect()
}

/// GLU's backward: dx [rows, 2n] = [dy act(g), dy a act'(g)].
pub fn glu_backward(x: &[f64], dy: &[f64], n: usize, act: UnaryOp) -> Vec<f64> {
    let mut dx = vec![0.0; x.len()];
    for ((d, r), dyr) in dx
        .chunks_mut(2 * n.max(1))
        .zip(x.chunks(2 * n.max(1)))
        .zip(dy.chunks(n.max(1)))
    {
        for j in 0..n {
            d[j] = dyr[j] * act.eval(false, r[n + j]);
            d[n + j] = dyr[j] * r[j] * act.eval(true, r[n + j]);
        }
    }
    dx
}

/// a op b with broadcasting; returns (values, shape).
pub fn binary(
    a: &[f64],
    sa: &[usize],
    b: &[f64],
    sb: &[usize],
    op: BinaryOp,
) -> (Vec<f64>, Vec<usize>) {
    let shape = broadcast_shape(sa, sb);
    let n = shape.iter().product();
    let out = (0..n)
        .map(|i| {
            let idx = unravel(i, &shape);
            op.eval(a[broadcast_index(&idx, sa)], b[broadcast_index(&idx, sb)])
        })
        .collect();
    (out, shape)
}

/// cond != 0 ? t : f, all three broadcast; returns (values, shape).
pub fn where_cond(
    c: &[f64],
    sc: &[usize],
    t: &[f64],
    st: &[usize],
    f: &[f64],
    sf: &[usize],
) -> (Vec<f64>, Vec<usize>) {
    let shape = broadcast_shape(&broadcast_shape(sc, st), sf);
    let n = shape.iter().product();
    let out = (0..n)
        .map(|i| {
            let idx = unravel(i, &shape);
            if c[broadcast_index(&idx, sc)] != 0.0 {
                t[broadcast_index(&idx, st)]
            } else {
                f[broadcast_index(&idx, sf)]
            }
        })
        .collect();
    (out, shape)
}

/// Reduction over `dims`, keepdim layout.
pub fn reduce(x: &[f64], shape: &[usize], dims: &[usize], op: ReduceOp) -> Vec<f64> {
    let out_shape: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(d, &n)| if dims.contains(&d) { 1 } else { n })
        .collect();
    let init = match op {
        ReduceOp::Sum => 0.0,
        ReduceOp::Max => f64::NEG_INFINITY,
        ReduceOp::Min => f64::INFINITY,
    };
    let mut out = vec![init; out_shape.iter().product()];
    for (i, &v) in x.iter().enumerate() {
        let o = broadcast_index(&unravel(i, shape), &out_shape);
        out[o] = match op {
            ReduceOp::Sum => out[o] + v,
            ReduceOp::Max => out[o].max(v),
            ReduceOp::Min => out[o].min(v),
        };
    }
    out
}

/// [.., m, k] x [.., k, n] with broadcast batch axes; returns (values, shape).
pub fn matmul(a: &[f64], sa: &[usize], b: &[f64], sb: &[usize]) -> (Vec<f64>, Vec<usize>) {
    let (ra, rb) = (sa.len(), sb.len());
    let (m, k, n) = (sa[ra - 2], sa[ra - 1], sb[rb - 1]);
    let batch = broadcast_shape(&sa[..ra - 2], &sb[..rb - 2]);
    let nb: usize = batch.iter().product();
    let mut out = vec![0.0; nb * m * n];
    for bi in 0..nb {
        let idx = unravel(bi, &batch);
        let oa = broadcast_index(&idx, &sa[..ra - 2]) * m * k;
        let ob = broadcast_index(&idx, &sb[..rb - 2]) * k * n;
        for i in 0..m {
            for j in 0..n {
                out[(bi * m + i) * n + j] =
                    (0..k).map(|p| a[oa + i * k + p] * b[ob + p * n + j]).sum();
            }
        }
    }
    (out, [batch, vec![m, n]].concat())
}

/// The input pixel (ih, iw) that output (oh, ow) reads at kernel tap (i, j), if inside.
fn tap(s: &ConvShape, oh: usize, ow: usize, i: usize, j: usize) -> Option<(usize, usize)> {
    let ih = (oh * s.stride.0 + i).checked_sub(s.padding.0)?;
    let iw = (ow * s.stride.1 + j).checked_sub(s.padding.1)?;
    (ih < s.h && iw < s.w).then_some((ih, iw))
}

/// y[n, o, oh, ow] = b[o] + sum_{c, i, j} x[n, c, oh s + i - p, ow s + j - p] w[o, c, i, j].
pub fn conv2d(x: &[f64], w: &[f64], bias: Option<&[f64]>, s: &ConvShape) -> Vec<f64> {
    let (ho, wo) = (s.h_out(), s.w_out());
    let mut y = vec![0.0; s.n * s.c_out * ho * wo];
    for n in 0..s.n {
        for o in 0..s.c_out {
            for oh in 0..ho {
                for ow in 0..wo {
                    let mut acc = bias.map_or(0.0, |b| b[o]);
                    for c in 0..s.c_in {
                        for i in 0..s.kh {
                            for j in 0..s.kw {
                                if let Some((ih, iw)) = tap(s, oh, ow, i, j) {
                                    acc += x[((n * s.c_in + c) * s.h + ih) * s.w + iw]
                                        * w[((o * s.c_in + c) * s.kh + i) * s.kw + j];
                                }
                            }
                        }
                    }
                    y[((n * s.c_out + o) * ho + oh) * wo + ow] = acc;
                }
            }
        }
    }
    y
}

/// Visits every (x index, w index, y index) product of the convolution.
fn conv_taps(s: &ConvShape, mut f: impl FnMut(usize, usize, usize)) {
    let (ho, wo) = (s.h_out(), s.w_out());
    for n in 0..s.n {
        for o in 0..s.c_out {
            for oh in 0..ho {
                for ow in 0..wo {
                    for c in 0..s.c_in {
                        for i in 0..s.kh {
                            for j in 0..s.kw {
                                if let Some((ih, iw)) = tap(s, oh, ow, i, j) {
                                    f(
                                        ((n * s.c_in + c) * s.h + ih) * s.w + iw,
                                        ((o * s.c_in + c) * s.kh + i) * s.kw + j,
                                        ((n * s.c_out + o) * ho + oh) * wo + ow,
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// dx[xi] = sum over taps reading xi of dy[yi] w[wi].
pub fn conv2d_backward_input(dy: &[f64], w: &[f64], s: &ConvShape) -> Vec<f64> {
    let mut dx = vec![0.0; s.n * s.c_in * s.h * s.w];
    conv_taps(s, |xi, wi, yi| dx[xi] += dy[yi] * w[wi]);
    dx
}

/// dw[wi] = sum over taps using wi of dy[yi] x[xi].
pub fn conv2d_backward_weight(x: &[f64], dy: &[f64], s: &ConvShape) -> Vec<f64> {
    let mut dw = vec![0.0; s.c_out * s.c_in * s.kh * s.kw];
    conv_taps(s, |xi, wi, yi| dw[wi] += dy[yi] * x[xi]);
    dw
}

/// Index of element (group gi, channel j, inner i) in x, and its channel.
fn norm_index(s: &NormShape, gi: usize, j: usize, i: usize) -> (usize, usize) {
    (
        gi * s.group_len() + j * s.inner + i,
        (gi % s.groups) * s.cpg + j,
    )
}

/// (y, mean, rstd) of group/layer normalisation, biased variance.
pub fn norm(
    x: &[f64],
    w: Option<&[f64]>,
    b: Option<&[f64]>,
    s: &NormShape,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut y = vec![0.0; x.len()];
    let (mut means, mut rstds) = (vec![], vec![]);
    let m = s.group_len() as f64;
    for gi in 0..s.rows * s.groups {
        let vals: Vec<f64> = (0..s.cpg)
            .flat_map(|j| (0..s.inner).map(move |i| (j, i)))
            .map(|(j, i)| x[norm_index(s, gi, j, i).0])
            .collect();
        let mean = vals.iter().sum::<f64>() / m;
        let var = vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / m;
        let rstd = 1.0 / (var + s.eps).sqrt();
        for j in 0..s.cpg {
            for i in 0..s.inner {
                let (e, c) = norm_index(s, gi, j, i);
                let v = (x[e] - mean) * rstd * w.map_or(1.0, |w| w[c]) + b.map_or(0.0, |b| b[c]);
                y[e] = if s.silu { v / (1.0 + (-v).exp()) } else { v };
            }
        }
        means.push(mean);
        rstds.push(rstd);
    }
    (y, means, rstds)
}

/// (dx, dw, db) of `norm` by the chain rule through mean and variance:
/// dx_e = rstd (g_e - mean_group(g) - xhat_e mean_group(g xhat)), g = d w, where d is dy,
/// or dy silu'(xhat w + b) for the fused SiLU.
pub fn norm_backward(
    x: &[f64],
    dy: &[f64],
    w: Option<&[f64]>,
    b: Option<&[f64]>,
    s: &NormShape,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let plain = NormShape { silu: false, ..*s };
    let (_, means, rstds) = norm(x, None, None, &plain);
    let mut dx = vec![0.0; x.len()];
    let (mut dw, mut db) = (vec![0.0; s.channels()], vec![0.0; s.channels()]);
    let m = s.group_len() as f64;
    for gi in 0..s.rows * s.groups {
        let (mean, rstd) = (means[gi], rstds[gi]);
        let elems: Vec<(usize, usize)> = (0..s.cpg)
            .flat_map(|j| (0..s.inner).map(move |i| (j, i)))
            .map(|(j, i)| norm_index(s, gi, j, i))
            .collect();
        let xhat = |e: usize| (x[e] - mean) * rstd;
        let d = |e: usize, c: usize| {
            if !s.silu {
                return dy[e];
            }
            let v = xhat(e) * w.map_or(1.0, |w| w[c]) + b.map_or(0.0, |b| b[c]);
            let sig = 1.0 / (1.0 + (-v).exp());
            dy[e] * sig * (1.0 + v * (1.0 - sig))
        };
        let g = |e: usize, c: usize| d(e, c) * w.map_or(1.0, |w| w[c]);
        let mean_g = elems.iter().map(|&(e, c)| g(e, c)).sum::<f64>() / m;
        let mean_gx = elems.iter().map(|&(e, c)| g(e, c) * xhat(e)).sum::<f64>() / m;
        for &(e, c) in &elems {
            dx[e] = rstd * (g(e, c) - mean_g - xhat(e) * mean_gx);
            dw[c] += d(e, c) * xhat(e);
            db[c] += d(e, c);
        }
    }
    (dx, dw, db)
}

/// Softmax over rows of length `d`.
pub fn softmax_last(x: &[f64], d: usize) -> Vec<f64> {
    x.chunks(d)
        .flat_map(|row| {
            let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = row.iter().map(|v| (v - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            e.into_iter().map(move |v| v / sum)
        })
        .collect()
}

/// The attention probabilities P [B, H, L, S] (masked entries 0; a fully masked row
/// all 0).
fn attention_probs(q: &[f64], k: &[f64], mask: Option<&[f64]>, s: &AttnShape) -> Vec<f64> {
    let mut p = vec![0.0; s.b * s.h * s.l * s.s];
    for bh in 0..s.b * s.h {
        for i in 0..s.l {
            let visible = |j: usize| {
                !(s.causal && j > i) && mask.is_none_or(|m| m[(bh / s.h) * s.s + j] != 0.0)
            };
            let logits: Vec<f64> = (0..s.s)
                .map(|j| {
                    (0..s.d)
                        .map(|c| q[(bh * s.l + i) * s.d + c] * k[(bh * s.s + j) * s.d + c])
                        .sum::<f64>()
                        * s.scale
                })
                .collect();
            let max = (0..s.s)
                .filter(|&j| visible(j))
                .map(|j| logits[j])
                .fold(f64::NEG_INFINITY, f64::max);
            if max == f64::NEG_INFINITY {
                continue;
            }
            let sum: f64 = (0..s.s)
                .filter(|&j| visible(j))
                .map(|j| (logits[j] - max).exp())
                .sum();
            for j in (0..s.s).filter(|&j| visible(j)) {
                p[(bh * s.l + i) * s.s + j] = (logits[j] - max).exp() / sum;
            }
        }
    }
    p
}

/// out [B, H, L, DV] = softmax(scale q k^T, masked) v.
pub fn attention(q: &[f64], k: &[f64], v: &[f64], mask: Option<&[f64]>, s: &AttnShape) -> Vec<f64> {
    let p = attention_probs(q, k, mask, s);
    let mut out = vec![0.0; s.b * s.h * s.l * s.dv];
    for bh in 0..s.b * s.h {
        for i in 0..s.l {
            for c in 0..s.dv {
                out[(bh * s.l + i) * s.dv + c] = (0..s.s)
                    .map(|j| p[(bh * s.l + i) * s.s + j] * v[(bh * s.s + j) * s.dv + c])
                    .sum();
            }
        }
    }
    out
}

/// (dq, dk, dv) through the materialised P: dV = P^T dO, dP = dO V^T,
/// dS = P (dP - rowsum(P dP)), dQ = scale dS K, dK = scale dS^T Q.
pub fn attention_backward(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    mask: Option<&[f64]>,
    dout: &[f64],
    s: &AttnShape,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let p = attention_probs(q, k, mask, s);
    let (mut dq, mut dk, mut dv) = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
    for bh in 0..s.b * s.h {
        for i in 0..s.l {
            let pr = |j: usize| p[(bh * s.l + i) * s.s + j];
            let dp: Vec<f64> = (0..s.s)
                .map(|j| {
                    (0..s.dv)
                        .map(|c| dout[(bh * s.l + i) * s.dv + c] * v[(bh * s.s + j) * s.dv + c])
                        .sum()
                })
                .collect();
            let row_dot: f64 = (0..s.s).map(|j| pr(j) * dp[j]).sum();
            for j in 0..s.s {
                let ds = pr(j) * (dp[j] - row_dot) * s.scale;
                for c in 0..s.dv {
                    dv[(bh * s.s + j) * s.dv + c] += pr(j) * dout[(bh * s.l + i) * s.dv + c];
                }
                for c in 0..s.d {
                    dq[(bh * s.l + i) * s.d + c] += ds * k[(bh * s.s + j) * s.d + c];
                    dk[(bh * s.s + j) * s.d + c] += ds * q[(bh * s.l + i) * s.d + c];
                }
            }
        }
    }
    (dq, dk, dv)
}

/// Rows of w [V, D] at ids.
pub fn embedding(ids: &[u32], w: &[f64], d: usize) -> Vec<f64> {
    ids.iter()
        .flat_map(|&i| w[i as usize * d..(i as usize + 1) * d].iter().copied())
        .collect()
}

/// dy rows summed into a zero [vocab, D] at ids.
pub fn embedding_backward(ids: &[u32], dy: &[f64], vocab: usize, d: usize) -> Vec<f64> {
    let mut dw = vec![0.0; vocab * d];
    for (r, &i) in ids.iter().enumerate() {
        for c in 0..d {
            dw[i as usize * d + c] += dy[r * d + c];
        }
    }
    dw
}

/// Concatenation of row-major tensors along `dim`; returns (values, shape).
pub fn cat(parts: &[(&[f64], &[usize])], dim: usize) -> (Vec<f64>, Vec<usize>) {
    let mut shape = parts[0].1.to_vec();
    shape[dim] = parts.iter().map(|p| p.1[dim]).sum();
    let n = shape.iter().product();
    let out = (0..n)
        .map(|i| {
            let mut idx = unravel(i, &shape);
            let mut part = 0;
            while idx[dim] >= parts[part].1[dim] {
                idx[dim] -= parts[part].1[dim];
                part += 1;
            }
            let st = strides(parts[part].1);
            parts[part].0[idx.iter().zip(&st).map(|(a, b)| a * b).sum::<usize>()]
        })
        .collect();
    (out, shape)
}

/// y[n, c, oh, ow] = x[n, c, oh / f, ow / f].
pub fn upsample_nearest2d(x: &[f64], shape: [usize; 4], f: usize) -> Vec<f64> {
    let [n, c, h, w] = shape;
    let mut y = vec![0.0; n * c * h * f * w * f];
    for p in 0..n * c {
        for oh in 0..h * f {
            for ow in 0..w * f {
                y[(p * h * f + oh) * w * f + ow] = x[(p * h + oh / f) * w + ow / f];
            }
        }
    }
    y
}

/// One AdamW step (torch.optim.AdamW): returns the new (param, m, v).
pub fn adamw(
    p: &[f64],
    g: &[f64],
    m: &[f64],
    v: &[f64],
    h: &crate::ops::AdamWStep,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let t = h.step as i32;
    let (bc1, bc2) = (1.0 - h.beta1.powi(t), 1.0 - h.beta2.powi(t));
    let mut out = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..p.len() {
        let mi = h.beta1 * m[i] + (1.0 - h.beta1) * g[i];
        let vi = h.beta2 * v[i] + (1.0 - h.beta2) * g[i] * g[i];
        let decayed = p[i] * (1.0 - h.lr * h.weight_decay);
        out.0
            .push(decayed - h.lr * (mi / bc1) / ((vi / bc2).sqrt() + h.eps));
        out.1.push(mi);
        out.2.push(vi);
    }
    out
}
