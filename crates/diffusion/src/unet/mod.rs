//! The noise predictor: diffusers' UNet2DConditionModel (Ronneberger et al. 2015's
//! U-Net as Ho et al. 2020 and Rombach et al. 2022 use it), with the same architecture,
//! config keys and parameter names, so a checkpoint moves between kuosan and diffusers.

mod blocks;
mod config;
mod embeddings;
mod resnet;
mod transformer;

pub use config::UNetConfig;
pub use embeddings::timestep_features;
pub(crate) use transformer::Attention;

use blocks::{Cond, DownBlock, MidBlock, UpBlock};
use embeddings::TimestepEmbedding;
use kuosan_nn::{Conv2d, GroupNorm, Module, Path, Result as NnResult};
use kuosan_tensor::{Error, Result, Tensor};

pub struct UNet2DConditionModel {
    pub config: UNetConfig,
    time_embedding: TimestepEmbedding,
    /// Pooled text [B, D] -> [B, time_embed_dim], added to the time embedding.
    class_embedding: Option<TimestepEmbedding>,
    conv_in: Conv2d,
    down_blocks: Vec<DownBlock>,
    mid_block: MidBlock,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl UNet2DConditionModel {
    /// The parameters under `path`, named as diffusers names them.
    pub fn new(path: &Path, config: &UNetConfig) -> NnResult<Self> {
        let c = config;
        c.validate().map_err(kuosan_nn::Error::Arg)?;
        let ch = &c.block_out_channels;
        let n = ch.len();
        let time_embedding =
            TimestepEmbedding::new(&path.pp("time_embedding"), ch[0], c.time_embed_dim())?;
        let class_embedding = c
            .pooled_text_dim
            .map(|d| TimestepEmbedding::new(&path.pp("class_embedding"), d, c.time_embed_dim()))
            .transpose()?;
        let conv_in = Conv2d::new(&path.pp("conv_in"), c.in_channels, ch[0], 3, 1, 1)?;
        let mut down_blocks = Vec::with_capacity(n);
        for i in 0..n {
            let c_in = if i == 0 { ch[0] } else { ch[i - 1] };
            let attn = (c.down_block_types[i] == "CrossAttnDownBlock2D").then(|| c.attn(i));
            down_blocks.push(DownBlock::new(
                &path.pp("down_blocks").pp(i),
                c,
                c_in,
                ch[i],
                attn,
                i == n - 1,
            )?);
        }
        let mid_block = MidBlock::new(&path.pp("mid_block"), c, ch[n - 1])?;
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(n);
        let mut out = rev[0];
        for i in 0..n {
            let prev = out;
            out = rev[i];
            let c_in = rev[(i + 1).min(n - 1)];
            // diffusers reverses only_cross_attention for the up path, as the channels.
            let attn = (c.up_block_types[i] == "CrossAttnUpBlock2D").then(|| c.attn(n - 1 - i));
            up_blocks.push(UpBlock::new(
                &path.pp("up_blocks").pp(i),
                c,
                (c_in, out, prev),
                attn,
                i == n - 1,
            )?);
        }
        let conv_norm_out = GroupNorm::new(
            &path.pp("conv_norm_out"),
            c.norm_num_groups,
            ch[0],
            c.norm_eps,
        )?;
        let conv_out = Conv2d::new(&path.pp("conv_out"), ch[0], c.out_channels, 3, 1, 1)?;
        Ok(UNet2DConditionModel {
            config: c.clone(),
            time_embedding,
            class_embedding,
            conv_in,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
        })
    }

    /// eps_theta(x_t, t, context): sample [B, C, H, W], timesteps (one per sample),
    /// context [B, S, cross_attention_dim], optional context mask [B, S] -> [B, C, H, W].
    pub fn forward(
        &self,
        sample: &Tensor,
        timesteps: &[f64],
        context: &Tensor,
        context_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.forward_pooled(sample, timesteps, context, context_mask, None)
    }

    /// [`forward`](Self::forward) with the pooled text [B, pooled_text_dim] that a model
    /// configured with `pooled_text_dim` needs (diffusers' `class_labels`).
    pub fn forward_pooled(
        &self,
        sample: &Tensor,
        timesteps: &[f64],
        context: &Tensor,
        context_mask: Option<&Tensor>,
        pooled: Option<&Tensor>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let b = sample.dims()[0];
        if timesteps.len() != b {
            return Err(Error::Shape {
                op: "unet",
                msg: format!("{} timesteps for a batch of {b}", timesteps.len()),
            });
        }
        let feats = timestep_features(
            timesteps,
            c.block_out_channels[0],
            c.flip_sin_to_cos,
            c.freq_shift,
            sample.device(),
        )?;
        let mut temb = self.time_embedding.forward(&feats)?;
        match (&self.class_embedding, pooled) {
            (Some(mlp), Some(p)) => temb = temb.add(&mlp.forward(p)?)?,
            (None, None) => {}
            (Some(_), None) => {
                return Err(Error::Arg {
                    op: "unet",
                    msg: "this U-Net adds pooled text to the time embedding \
                          (class_embed_type \"projection\"): pass it to forward_pooled"
                        .into(),
                })
            }
            (None, Some(_)) => {
                return Err(Error::Arg {
                    op: "unet",
                    msg: "pooled text given to a U-Net without class_embed_type \"projection\""
                        .into(),
                })
            }
        }
        let cond = Cond {
            temb: &temb,
            context,
            mask: context_mask,
        };
        let mut h = self.conv_in.forward(sample)?;
        let mut skips = vec![h.clone()];
        for block in &self.down_blocks {
            h = block.forward(&h, &cond, &mut skips)?;
        }
        h = self.mid_block.forward(&h, &cond)?;
        for block in &self.up_blocks {
            h = block.forward(&h, &cond, &mut skips)?;
        }
        self.conv_out.forward(&self.conv_norm_out.forward_silu(&h)?)
    }
}
