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
    let shape = AttnShape {
        b,
        h,
        l,
        s,
        d,
        dv,
        causal,
        scale,
    };
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
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
    Ok(Tensor::from_storage(out, [b, h, l, dv], rec))
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
    let dout = dout.contiguous()?;
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
    Ok((
        Tensor::from_storage(dq, q.shape(), None),
        Tensor::from_storage(dk, k.shape(), None),
        Tensor::from_storage(dv, v.shape(), None),
    ))
}
