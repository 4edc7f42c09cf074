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

    /// silu(group_norm(x) (1 + scale) + shift) for x [N, C, *] and scale, shift [N, C]
    /// (AdaGN, Dhariwal & Nichol 2021, sec. 3), in one kernel: the modulation folds into
    /// a per-sample affine, w (1 + scale) and b (1 + scale) + shift, and N samples of C
    /// channels in G groups normalise exactly as one sample of N C channels in N G groups,
    /// whose per-channel affine is that per-sample one. Four passes over x (norm, scale,
    /// shift, SiLU) and six in the backward become one and one.
    pub fn forward_modulated_silu(
        &self,
        x: &Tensor,
        scale: &Tensor,
        shift: &Tensor,
    ) -> kuosan_tensor::Result<Tensor> {
        let dims = x.dims().to_vec();
        if dims.len() < 2 {
            // The norm's own error names the op and the shape it expects.
            return x.group_norm_silu(self.groups, None, None, self.eps);
        }
        let (n, c) = (dims[0], dims[1]);
        let gain = scale.add_scalar(1.0)?;
        // [N, C] each, then flattened to the N C channels of one sample.
        let w = self.weight.unsqueeze(0)?.mul(&gain)?;
        let b = self.bias.unsqueeze(0)?.mul(&gain)?.add(shift)?;
        let one = [vec![1, n * c], dims[2..].to_vec()].concat();
        let y = x.reshape(one)?.group_norm_silu(
            n * self.groups,
            Some(&w.reshape([n * c])?),
            Some(&b.reshape([n * c])?),
            self.eps,
        )?;
        y.reshape(dims)
    }
}

impl Module for GroupNorm {
    /// x [N, C, *] -> same.
    fn forward(&self, x: &Tensor) -> kuosan_tensor::Result<Tensor> {
        x.group_norm(self.groups, Some(&self.weight), Some(&self.bias), self.eps)
    }
}
