//! 2-D convolution layer, as torch.nn.Conv2d (groups = 1).

use crate::{Init, Module, Path, Result};
use kuosan_tensor::Tensor;

/// weight [out, in, k, k], bias [out].
#[derive(Clone, Debug)]
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub stride: usize,
    pub padding: usize,
}

impl Conv2d {
    /// A k x k convolution under `path`, PyTorch's default init.
    pub fn new(
        path: &Path,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Conv2d> {
        let init = Init::torch_default(c_in * k * k);
        let weight = path.var("weight", &[c_out, c_in, k, k], init)?;
        let bias = Some(path.var("bias", &[c_out], init)?);
        Ok(Conv2d {
            weight,
            bias,
            stride,
            padding,
        })
    }
}

impl Module for Conv2d {
    /// x [N, in, H, W] -> [N, out, HO, WO].
    fn forward(&self, x: &Tensor) -> kuosan_tensor::Result<Tensor> {
        x.conv2d(&self.weight, self.bias.as_ref(), self.stride, self.padding)
    }
}
