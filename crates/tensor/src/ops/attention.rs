//! Scaled dot-product attention as one fused op (Vaswani et al. 2017, eq. 1:
//! softmax(Q K^T / sqrt(d)) V) with causal and key-padding masks, and its fused backward
//! (FlashAttention-2's recomputation from the saved logsumexp, Dao 2023, alg. 2).

use crate::autograd::record;
use crate::backend::BackendStorage;
use crate::op::Op;
use crate::ops::binary::same_dtype_device;
use crate::{Error, Result, Tensor};

/// q: [b, h, l, d], k: [b, h, s, d], v: [b, h, s, dv], out: [b, h, l, dv].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnShape {
    pub b: usize,
    pub h: usize,
    pub l: usize,
    pub s: usize,
    pub d: usize,
    pub dv: usize,
    /// Query i sees keys j <= i (top-left aligned, as PyTorch's is_causal).
    pub causal: bool,
    pub scale: f64,
    /// q, k, v, out (and their gradients) are stored sequence-major, [B, L, H, D] in
    /// memory (a linear layer's output split into heads, read in place), instead of
    /// [B, H, L, D]. CPU only; the GPU kernels take head-major operands.
    pub seq_major: bool,
}

/// Whether t [B, H, L, D] is the transpose(1, 2) view of a contiguous [B, L, H, D]: how a
/// linear layer's output split into heads (reshape, transpose) is laid out.
fn is_seq_major(t: &Tensor) -> bool {
    let &[_, h, l, d] = t.dims() else {
        return false;
    };
    t.layout().strides() == [l * h * d, d, h * d, 1]
}

/// t [B, H, L, D] stored sequence-major: itself when it is, else a (tracked) copy.
fn seq_major(t: &Tensor) -> Result<Tensor> {
    if is_seq_major(t) {
        Ok(t.clone())
    } else {
        t.transpose(1, 2)?.contiguous()?.transpose(1, 2)
    }
}

/// A [B, H, rows, width] tensor over `storage`, viewed in the order `s.seq_major` names.
fn heads_tensor(
    storage: crate::Storage,
    (b, h, rows, width): (usize, usize, usize, usize),
    s: &AttnShape,
    op: Option<Op>,
) -> Tensor {
    if s.seq_major {
        let strides = vec![rows * h * width, width, h * width, 1];
        let layout = crate::Layout::new([b, h, rows, width], strides, 0);
        Tensor::from_storage_layout(storage, layout, op)
    } else {
        Tensor::from_storage(storage, [b, h, rows, width], op)
    }
}

/// Attention for q [B, H, L, D], k [B, H, S, D], v [B, H, S, DV] -> [B, H, L, DV].
///
/// `key_mask` [B, S]: nonzero = this key may be attended to (the Hugging Face
/// `attention_mask` convention), zero = padding. `causal`: query i attends keys j <= i.
/// `scale` defaults to 1/sqrt(D). A query row with every key masked gets zeros (PyTorch
/// gives NaN there; zeros keep padded positions harmless) and no gradient.
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    key_mask: Option<&Tensor>,
    causal: bool,
    scale: Option<f64>,
) -> Result<Tensor> {
    same_dtype_device("attention", &[q, k, v])?;
    let (&[b, h, l, d], &[b2, h2, s, d2], &[b3, h3, s3, dv]) = (q.dims(), k.dims(), v.dims())
    else {
        return Err(Error::shape(
            "attention",
            format!(
                "expects q [B, H, L, D], k [B, H, S, D], v [B, H, S, DV]; got {}, {}, {}",
                q.shape(),
                k.shape(),
                v.shape()
            ),
        ));
    };
    if (b, h, d) != (b2, h2, d2) || (b, h, s) != (b3, h3, s3) {
        return Err(Error::shape(
            "attention",
            format!(
                "q {}, k {} and v {} disagree on batch, heads, key length or head size",
                q.shape(),
                k.shape(),
                v.shape()
            ),
        ));
    }
    let mask = match key_mask {
        Some(m) if m.dims() != [b, s] => {
            return Err(Error::shape(
                "attention",
                format!("key mask has shape {}, expected [{b}, {s}]", m.shape()),
            ))
        }
        Some(m) if m.device() != q.device() => {
            return Err(Error::device(
                "attention",
                format!("key mask is on {}, q on {}", m.device(), q.device()),
            ))
        }
        Some(m) => Some(m.to_dtype(q.dtype())?.contiguous()?.detach()),
        None => None,
    };
    let scale = scale.unwrap_or(1.0 / (d as f64).sqrt());
    // The CPU reads heads split from a linear layer's output in place, and writes its
    // output the same way, so that merging the heads back (transpose, reshape) is free:
    // the four copies around each attention and four more in its backward were ~3% of a
    // U-Net training step.
    let seq = q.device().is_cpu() && [q, k, v].into_iter().all(is_seq_major);
    let shape = AttnShape {
        b,
        h,
        l,
        s,
        d,
        dv,
        causal,
        scale,
        seq_major: seq,
    };
    let (q, k, v) = if seq {
        (q.clone(), k.clone(), v.clone())
    } else {
        (q.contiguous()?, k.contiguous()?, v.contiguous()?)
    };
    let (out, lse) = {
        let mut ts = vec![&q, &k, &v];
        ts.extend(mask.as_ref());
        let g = crate::tensor::read_storages(&ts);
        let m = mask.as_ref().map(|m| (g.get(3), m.layout()));
        g.get(0).attention(
            q.layout(),
            (g.get(1), k.layout()),
            (g.get(2), v.layout()),
            m,
            &shape,
        )?
    };
    let lse = Tensor::from_storage(lse, [b, h, l], None);
    let rec = record(&[&q, &k, &v], || Op::Attention {
        q: q.clone(),
        k: k.clone(),
        v: v.clone(),
        mask: mask.clone(),
        lse,
        shape,
    });
    Ok(heads_tensor(out, (b, h, l, dv), &shape, rec))
}

/// (dq, dk, dv) from dL/dout (untracked; the backward rule calls it).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_backward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    out: &Tensor,
    lse: &Tensor,
    dout: &Tensor,
    shape: &AttnShape,
) -> Result<(Tensor, Tensor, Tensor)> {
    let dout = if shape.seq_major {
        seq_major(dout)?
    } else {
        dout.contiguous()?
    };
    let mut ts = vec![q, k, v, out, lse, &dout];
    ts.extend(mask);
    let (dq, dk, dv) = {
        let g = crate::tensor::read_storages(&ts);
        let m = mask.map(|m| (g.get(6), m.layout()));
        g.get(0).attention_backward(
            q.layout(),
            (g.get(1), k.layout()),
            (g.get(2), v.layout()),
            m,
            (g.get(3), out.layout()),
            g.get(4),
            (g.get(5), dout.layout()),
            shape,
        )?
    };
    let dims = |t: &Tensor| (t.dims()[0], t.dims()[1], t.dims()[2], t.dims()[3]);
    Ok((
        heads_tensor(dq, dims(q), shape, None),
        heads_tensor(dk, dims(k), shape, None),
        heads_tensor(dv, dims(v), shape, None),
    ))
}
