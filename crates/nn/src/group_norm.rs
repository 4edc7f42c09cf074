//! Group normalisation layer (Wu & He 2018), as torch.nn.GroupNorm, with an optional
//! fused SiLU (the pair that opens every ResNet block).

use crate::{Init, Module, Path, Result};
use kuosan_tensor::Tensor;

/// weight and bias [C].
#[derive(Clone, Debug)]
pub struct GroupNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub groups: usize,
    pub eps: f64,
}

impl GroupNorm {
    pub fn new(path: &Path, groups: usize, channels: usize, eps: f64) -> Result<GroupNorm> {
        Ok(GroupNorm {
            weight: path.var("weight", &[channels], Init::Const(1.0))?,
            bias: path.var("bias", &[channels], Init::Const(0.0))?,
            groups,
            eps,
        })
    }

    /// silu(group_norm(x)) in one kernel.
    pub fn forward_silu(&self, x: &Tensor) -> kuosan_tensor::Result<Tensor> {
        x.group_norm_silu(self.groups, Some(&self.weight), Some(&self.bias), self.eps)
    }
}

impl Module for GroupNorm {
    /// x [N, C, *] -> same.
    fn forward(&self, x: &Tensor) -> kuosan_tensor::Result<Tensor> {
        x.group_norm(self.groups, Some(&self.weight), Some(&self.bias), self.eps)
    }
}
