//! Layer normalisation over the last axis (Ba et al. 2016), as torch.nn.LayerNorm.

use crate::{Init, Module, Path, Result};
use kuosan_tensor::Tensor;

/// weight and bias [D].
#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(path: &Path, dim: usize, eps: f64) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: path.var("weight", &[dim], Init::Const(1.0))?,
            bias: path.var("bias", &[dim], Init::Const(0.0))?,
            eps,
        })
    }
}

impl Module for LayerNorm {
    /// x [.., D] -> same.
    fn forward(&self, x: &Tensor) -> kuosan_tensor::Result<Tensor> {
        x.layer_norm(Some(&self.weight), Some(&self.bias), self.eps)
    }
}
