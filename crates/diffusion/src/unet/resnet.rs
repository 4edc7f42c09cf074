//! ResnetBlock2D (diffusers; the residual block of Ho et al. 2020's U-Net): GroupNorm,
//! SiLU, 3x3 conv, plus a projection of the time embedding, GroupNorm, SiLU, 3x3 conv,
//! and a 1x1 conv shortcut when the channel count changes.

use kuosan_nn::{Conv2d, GroupNorm, Linear, Module, Path, Result as NnResult};
use kuosan_tensor::{Result, Tensor};

pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
}

impl ResnetBlock2D {
    pub fn new(
        p: &Path,
        c_in: usize,
        c_out: usize,
        temb: usize,
        groups: usize,
        eps: f64,
    ) -> NnResult<Self> {
        Ok(ResnetBlock2D {
            norm1: GroupNorm::new(&p.pp("norm1"), groups, c_in, eps)?,
            conv1: Conv2d::new(&p.pp("conv1"), c_in, c_out, 3, 1, 1)?,
            time_emb_proj: Linear::new(&p.pp("time_emb_proj"), temb, c_out, true)?,
            norm2: GroupNorm::new(&p.pp("norm2"), groups, c_out, eps)?,
            conv2: Conv2d::new(&p.pp("conv2"), c_out, c_out, 3, 1, 1)?,
            conv_shortcut: (c_in != c_out)
                .then(|| Conv2d::new(&p.pp("conv_shortcut"), c_in, c_out, 1, 1, 0))
                .transpose()?,
        })
    }

    /// x [B, Cin, H, W], temb [B, T] -> [B, Cout, H, W].
    pub fn forward(&self, x: &Tensor, temb: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        // The time embedding, SiLU then projected, added per channel: [B, Cout, 1, 1].
        let t = self.time_emb_proj.forward(&temb.silu()?)?;
        let h = h.add(&t.unsqueeze(2)?.unsqueeze(3)?)?;
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        let skip = match &self.conv_shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        skip.add(&h)
    }
}
