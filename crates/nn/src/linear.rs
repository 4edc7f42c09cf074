//! Linear (fully connected) layer: y = x W^T + b, as torch.nn.Linear.

use crate::{Init, Module, Path, Result};
use kuosan_tensor::Tensor;

/// weight [out, in], bias [out].
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// Parameters `weight` (and `bias`) under `path`, PyTorch's default init.
    pub fn new(path: &Path, in_dim: usize, out_dim: usize, bias: bool) -> Result<Linear> {
        let init = Init::torch_default(in_dim);
        let weight = path.var("weight", &[out_dim, in_dim], init)?;
        let bias = bias
            .then(|| path.var("bias", &[out_dim], init))
            .transpose()?;
        Ok(Linear { weight, bias })
    }
}

impl Module for Linear {
    /// x [.., in] -> [.., out].
    fn forward(&self, x: &Tensor) -> kuosan_tensor::Result<Tensor> {
        let y = x.matmul(&self.weight.t()?)?;
        match &self.bias {
            Some(b) => y.add(b),
            None => Ok(y),
        }
    }
}
