//! The U-Net's levels, as diffusers builds them: down blocks (resnets, optional
//! attention, a stride-2 conv), the middle block (resnet, attention, resnet), and up
//! blocks (resnets over the skip concatenation, optional attention, nearest x2 + conv).

use super::resnet::ResnetBlock2D;
use super::transformer::{Attn, Transformer2D};
use super::UNetConfig;
use kuosan_nn::{Conv2d, Module, Path, Result as NnResult};
use kuosan_tensor::{Result, Tensor};

/// What every block's forward needs besides the feature map.
pub struct Cond<'a> {
    pub temb: &'a Tensor,
    pub context: &'a Tensor,
    pub mask: Option<&'a Tensor>,
}

/// (Cross-attention) down block: layers_per_block resnets (each followed by a
/// transformer when `attention`), then a stride-2 conv unless it is the last level.
pub struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2D>,
    downsample: Option<Conv2d>,
}

impl DownBlock {
    pub fn new(
        p: &Path,
        c: &UNetConfig,
        c_in: usize,
        c_out: usize,
        attention: Option<Attn>,
        last: bool,
    ) -> NnResult<Self> {
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for j in 0..c.layers_per_block {
            let cin = if j == 0 { c_in } else { c_out };
            resnets.push(ResnetBlock2D::new(&p.pp("resnets").pp(j), cin, c_out, c)?);
            if let Some(a) = attention {
                attentions.push(transformer(&p.pp("attentions").pp(j), c, c_out, a)?);
            }
        }
        let downsample = (!last)
            .then(|| {
                Conv2d::new(
                    &p.pp("downsamplers").pp(0).pp("conv"),
                    c_out,
                    c_out,
                    3,
                    2,
                    1,
                )
            })
            .transpose()?;
        Ok(DownBlock {
            resnets,
            attentions,
            downsample,
        })
    }

    /// Returns the output and pushes each skip tensor (after every resnet/attention
    /// pair and after the downsampler) onto `skips`.
    pub fn forward(&self, x: &Tensor, cond: &Cond, skips: &mut Vec<Tensor>) -> Result<Tensor> {
        let mut h = x.clone();
        for (j, r) in self.resnets.iter().enumerate() {
            h = r.forward(&h, cond.temb)?;
            if let Some(a) = self.attentions.get(j) {
                h = a.forward(&h, cond.context, cond.mask)?;
            }
            skips.push(h.clone());
        }
        if let Some(d) = &self.downsample {
            h = d.forward(&h)?;
            skips.push(h.clone());
        }
        Ok(h)
    }
}

fn transformer(p: &Path, c: &UNetConfig, channels: usize, a: Attn) -> NnResult<Transformer2D> {
    Transformer2D::new(
        p,
        channels,
        c.attention_head_dim,
        c.cross_attention_dim,
        c.transformer_layers_per_block,
        c.norm_num_groups,
        a,
    )
}

/// UNetMidBlock2DCrossAttn: resnet, transformer, resnet at the lowest resolution.
pub struct MidBlock {
    resnets: [ResnetBlock2D; 2],
    attention: Transformer2D,
}

impl MidBlock {
    pub fn new(p: &Path, c: &UNetConfig, ch: usize) -> NnResult<Self> {
        let r = |j: usize| ResnetBlock2D::new(&p.pp("resnets").pp(j), ch, ch, c);
        Ok(MidBlock {
            resnets: [r(0)?, r(1)?],
            // diffusers' UNetMidBlock2DCrossAttn keeps self-attention whatever
            // only_cross_attention says.
            attention: transformer(&p.pp("attentions").pp(0), c, ch, Attn::SelfAndCross)?,
        })
    }

    pub fn forward(&self, x: &Tensor, cond: &Cond) -> Result<Tensor> {
        let h = self.resnets[0].forward(x, cond.temb)?;
        let h = self.attention.forward(&h, cond.context, cond.mask)?;
        self.resnets[1].forward(&h, cond.temb)
    }
}

/// (Cross-attention) up block: layers_per_block + 1 resnets, each on the concatenation of
/// the running features and one skip (channels prev/skip as diffusers computes them),
/// then nearest x2 upsampling and a conv unless it is the last level.
pub struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2D>,
    upsample: Option<Conv2d>,
}

impl UpBlock {
    /// `c_in`: the channels of the level below's skips; `prev`: the incoming feature
    /// channels.
    pub fn new(
        p: &Path,
        c: &UNetConfig,
        (c_in, c_out, prev): (usize, usize, usize),
        attention: Option<Attn>,
        last: bool,
    ) -> NnResult<Self> {
        let n = c.layers_per_block + 1;
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for j in 0..n {
            let skip = if j == n - 1 { c_in } else { c_out };
            let cin = if j == 0 { prev } else { c_out };
            resnets.push(ResnetBlock2D::new(
                &p.pp("resnets").pp(j),
                cin + skip,
                c_out,
                c,
            )?);
            if let Some(a) = attention {
                attentions.push(transformer(&p.pp("attentions").pp(j), c, c_out, a)?);
            }
        }
        let upsample = (!last)
            .then(|| Conv2d::new(&p.pp("upsamplers").pp(0).pp("conv"), c_out, c_out, 3, 1, 1))
            .transpose()?;
        Ok(UpBlock {
            resnets,
            attentions,
            upsample,
        })
    }

    /// Consumes one skip per resnet from the end of `skips`.
    pub fn forward(&self, x: &Tensor, cond: &Cond, skips: &mut Vec<Tensor>) -> Result<Tensor> {
        let mut h = x.clone();
        for (j, r) in self.resnets.iter().enumerate() {
            let skip = skips
                .pop()
                .expect("one skip per up resnet, by construction");
            h = r.forward(&Tensor::cat(&[&h, &skip], 1)?, cond.temb)?;
            if let Some(a) = self.attentions.get(j) {
                h = a.forward(&h, cond.context, cond.mask)?;
            }
        }
        if let Some(u) = &self.upsample {
            h = u.forward(&h.upsample_nearest2d(2)?)?;
        }
        Ok(h)
    }
}
