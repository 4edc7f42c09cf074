//! Softmax along an axis (fused max-subtract, exp, normalise over the last axis).

use crate::autograd::record;
use crate::backend::BackendStorage;
use crate::op::Op;
use crate::shape::Dim;
use crate::{Result, Tensor};

impl Tensor {
    /// softmax(x)_i = exp(x_i - max x) / sum_j exp(x_j - max x) along `dim`.
    pub fn softmax(&self, dim: impl Dim) -> Result<Tensor> {
        let d = dim.index(self.rank(), "softmax")?;
        let last = self.rank() - 1;
        if d != last {
            return self.transpose(d, last)?.softmax(last)?.transpose(d, last);
        }
        let x = self.contiguous()?;
        let s = x.storage().softmax_last(x.layout())?;
        Ok(Tensor::from_storage(
            s,
            x.shape(),
            record(&[&x], || Op::Softmax(x.clone())),
        ))
    }
}
