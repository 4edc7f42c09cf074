//! Gated linear units as one fused op (Dauphin et al. 2017; the GELU-gated GEGLU of
//! Shazeer 2020, eq. 6, that diffusers' feed-forward uses): the last axis is split into
//! halves a and g, y = a * act(g). One pass forward and one backward, where the
//! composition narrow, act, mul (and in backward two zero-padded narrows and their sum)
//! made eight passes over memory.

use crate::autograd::record;
use crate::backend::BackendStorage;
use crate::op::Op;
use crate::ops::UnaryOp;
use crate::{Error, Result, Tensor};

impl Tensor {
    /// x [.., 2N] -> a * act(g) [.., N], with a = x[.., :N] and g = x[.., N:] (PyTorch's
    /// `a, g = x.chunk(2, -1)`); `act` is any unary op: `Sigmoid` is `F.glu`, `GeluErf`
    /// diffusers' GEGLU, `Silu` SwiGLU.
    pub fn glu(&self, act: UnaryOp) -> Result<Tensor> {
        let last = self.dims().last().copied().unwrap_or(0);
        if self.rank() == 0 || last % 2 != 0 {
            return Err(Error::shape(
                "glu",
                format!(
                    "splits the last axis into two halves, so it must have an even size; got {}",
                    self.shape()
                ),
            ));
        }
        let x = self.contiguous()?;
        let s = x.storage().glu(x.layout(), act)?;
        let mut dims = x.dims().to_vec();
        *dims.last_mut().expect("rank >= 1") /= 2;
        Ok(Tensor::from_storage(
            s,
            dims,
            record(&[&x], || Op::Glu(x.clone(), act)),
        ))
    }

    /// GEGLU: [`Tensor::glu`] gated by the exact (erf) GELU, as diffusers' `GEGLU`.
    pub fn geglu(&self) -> Result<Tensor> {
        self.glu(UnaryOp::GeluErf)
    }
}

/// dx [.., 2N] = [dy * act(g), dy * a * act'(g)] for the contiguous x of `glu` and
/// dy [.., N] (untracked; the backward rule calls it).
pub(crate) fn glu_backward(x: &Tensor, dy: &Tensor, act: UnaryOp) -> Result<Tensor> {
    let dy = dy.contiguous()?;
    let g = crate::tensor::read_storages(&[x, &dy]);
    let s = g
        .get(0)
        .glu_backward(x.layout(), (g.get(1), dy.layout()), act)?;
    Ok(Tensor::from_storage(s, x.shape(), None))
}
