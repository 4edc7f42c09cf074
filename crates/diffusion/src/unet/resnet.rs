//! ResnetBlock2D (diffusers; the residual block of Ho et al. 2020's U-Net): GroupNorm,
//! SiLU, 3x3 conv, plus a projection of the time embedding, GroupNorm, SiLU, 3x3 conv,
//! and a 1x1 conv shortcut when the channel count changes. The time embedding is added
//! per channel before the second norm (`resnet_time_scale_shift` "default"), or scales
//! and shifts the normalised features (AdaGN, "scale_shift"; Dhariwal & Nichol 2021,
//! sec. 3: lower FID than addition in their ablation, Table 1).

use super::UNetConfig;
use kuosan_nn::{Conv2d, GroupNorm, Linear, Module, Path, Result as NnResult};
use kuosan_tensor::{Result, Tensor};

pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    /// temb -> [B, Cout] (default) or [B, 2 Cout] (scale, then shift).
    time_emb_proj: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    scale_shift: bool,
}

impl ResnetBlock2D {
    /// c_in -> c_out channels, with `c`'s time embedding width, norm groups and
    /// `resnet_time_scale_shift`.
    pub fn new(p: &Path, c_in: usize, c_out: usize, c: &UNetConfig) -> NnResult<Self> {
        let (groups, eps) = (c.norm_num_groups, c.norm_eps);
        let temb_out = if c.scale_shift { 2 * c_out } else { c_out };
        Ok(ResnetBlock2D {
            norm1: GroupNorm::new(&p.pp("norm1"), groups, c_in, eps)?,
            conv1: Conv2d::new(&p.pp("conv1"), c_in, c_out, 3, 1, 1)?,
            time_emb_proj: Linear::new(&p.pp("time_emb_proj"), c.time_embed_dim(), temb_out, true)?,
            norm2: GroupNorm::new(&p.pp("norm2"), groups, c_out, eps)?,
            conv2: Conv2d::new(&p.pp("conv2"), c_out, c_out, 3, 1, 1)?,
            conv_shortcut: (c_in != c_out)
                .then(|| Conv2d::new(&p.pp("conv_shortcut"), c_in, c_out, 1, 1, 0))
                .transpose()?,
            scale_shift: c.scale_shift,
        })
    }

    /// x [B, Cin, H, W], temb [B, T] -> [B, Cout, H, W].
    pub fn forward(&self, x: &Tensor, temb: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        // The time embedding, SiLU then projected: [B, Cout] or [B, 2 Cout].
        let t = self.time_emb_proj.forward(&temb.silu()?)?;
        let h = if self.scale_shift {
            // silu(norm2(h) (1 + scale) + shift), scale and shift the halves of t.
            let c = t.dims()[1] / 2;
            let (scale, shift) = (t.narrow(1, 0, c)?, t.narrow(1, c, c)?);
            self.norm2.forward_modulated_silu(&h, &scale, &shift)?
        } else {
            self.norm2
                .forward_silu(&h.add(&t.unsqueeze(2)?.unsqueeze(3)?)?)?
        };
        let h = self.conv2.forward(&h)?;
        let skip = match &self.conv_shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        skip.add(&h)
    }
}
