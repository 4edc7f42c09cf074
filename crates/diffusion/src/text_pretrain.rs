//! Caption pretraining of the text encoder: before the first diffusion step, the encoder
//! learns to say what a caption's picture looks like. A small decoder maps the pooled
//! embedding [B, D] to a 16 x 16 version of the picture, trained by MSE against the real
//! one (mean-pooled). Its best answer is the mean picture of the caption (where, what
//! colour, how big, what shape), so the pooled embedding must tell apart every word that
//! changes the picture, in either language, and captions of the same picture in English
//! and Chinese (or "7" / "seven" / "七") come to mean the same.
//!
//! Why: trained from scratch only through the U-Net, the encoder learns slowly, and the
//! U-Net learns to use a word only once the encoder tells it apart: the two wait on each
//! other (README: what was tried; the place words stayed at cosine 0.98-0.999 after 30
//! minutes). A text-to-picture regression gives the encoder a direct, low-variance
//! signal, the role CLIP's contrastive pretraining plays for Stable Diffusion's encoder
//! (Radford et al. 2021; Rombach et al. 2022), here on the run's own captions and in
//! seconds. The decoder is thrown away, as CLIP's image tower is.
//!
//! Optionally (`spatial`) a second decoder reads the token states [B, L, D], not the
//! pooled one: one learned query per 2 x 2 block of the picture cross-attends to the
//! tokens and predicts its block. That is the U-Net's own way of reading the text
//! (cross-attention from a place to the words), so it asks the word states, which the
//! pooled objective never trains directly, to say what is where: which shape is the
//! upper one of "a red square above a blue circle".

use crate::data::{Dataset, Loader};
use crate::models::Models;
use crate::unet::Attention;
use kuosan_nn::{
    clip_grad_norm, cross_entropy, AdamW, AdamWConfig, Conv2d, Error, Init, Linear, LrSchedule,
    Module, Result, VarStore,
};
use kuosan_tensor::{DType, Device, Tensor};
use std::sync::Arc;
use std::time::Instant;

/// Side of the pictures the decoder draws: 16 where the images divide into it (shapes
/// of 5 px half-size stay recognisable), else the images' own side.
pub fn target_side(size: usize) -> usize {
    if size >= 16 && size.is_multiple_of(16) {
        16
    } else {
        size
    }
}

/// x [B, C, S, S] -> [B, C, side, side]: the mean of each (S / side)^2 block.
pub fn block_mean(x: &Tensor, side: usize) -> kuosan_tensor::Result<Tensor> {
    let &[b, c, s, s2] = x.dims() else {
        return Err(kuosan_tensor::Error::Shape {
            op: "block_mean",
            msg: format!("expects images [B, C, S, S], got {}", x.shape()),
        });
    };
    if s != s2 || side == 0 || !s.is_multiple_of(side) {
        return Err(kuosan_tensor::Error::Shape {
            op: "block_mean",
            msg: format!("cannot pool {} to {side}x{side}", x.shape()),
        });
    }
    let f = s / side;
    x.reshape([b, c, side, f, side, f])?.mean(&[3, 5], false)
}

/// pooled [B, D] -> Linear D -> hidden, SiLU, Linear -> [B, C, side, side].
pub struct CaptionDecoder {
    /// Its own parameters (not the run's): built from a seed, dropped after use.
    pub vars: VarStore,
    fc1: Linear,
    fc2: Linear,
    channels: usize,
    side: usize,
}

/// Width of the decoder's hidden layer.
const HIDDEN: usize = 256;

impl CaptionDecoder {
    /// A fresh decoder on `device`, initialised from `seed`.
    pub fn new(
        device: &Device,
        seed: u64,
        dim: usize,
        channels: usize,
        side: usize,
    ) -> Result<Self> {
        let vars = VarStore::new(device.clone(), DType::F32, seed);
        let root = vars.root();
        Ok(CaptionDecoder {
            fc1: Linear::new(&root.pp("fc1"), dim, HIDDEN, true)?,
            fc2: Linear::new(&root.pp("fc2"), HIDDEN, channels * side * side, true)?,
            channels,
            side,
            vars,
        })
    }

    /// pooled [B, D] -> pictures [B, C, side, side] (in the images' [-1, 1] scale).
    pub fn forward(&self, pooled: &Tensor) -> kuosan_tensor::Result<Tensor> {
        let b = pooled.dims()[0];
        let h = self.fc1.forward(pooled)?.silu()?;
        self.fc2
            .forward(&h)?
            .reshape([b, self.channels, self.side, self.side])
    }
}

/// Token states [B, L, D] -> [B, C, side, side]: a learned query per 2 x 2 block (plus
/// its own residual) cross-attends to the tokens (4 heads), then Linear D -> hidden,
/// SiLU, Linear -> the block's C x 2 x 2 pixels.
pub struct SpatialDecoder {
    pub vars: VarStore,
    queries: Tensor,
    attn: Attention,
    fc1: Linear,
    fc2: Linear,
    channels: usize,
    side: usize,
}

/// Width of the spatial decoder's hidden layer.
const SPATIAL_HIDDEN: usize = 128;

impl SpatialDecoder {
    pub fn new(
        device: &Device,
        seed: u64,
        dim: usize,
        channels: usize,
        side: usize,
    ) -> Result<Self> {
        let vars = VarStore::new(device.clone(), DType::F32, seed);
        let root = vars.root();
        let cells = side.div_ceil(2);
        let heads = if dim.is_multiple_of(4) { 4 } else { 1 };
        Ok(SpatialDecoder {
            queries: root.var(
                "queries",
                &[1, cells * cells, dim],
                Init::Normal { std: 1.0 },
            )?,
            attn: Attention::new(&root.pp("attn"), dim, dim, heads, dim / heads)?,
            fc1: Linear::new(&root.pp("fc1"), dim, SPATIAL_HIDDEN, true)?,
            fc2: Linear::new(&root.pp("fc2"), SPATIAL_HIDDEN, channels * 4, true)?,
            channels,
            side,
            vars,
        })
    }

    /// context [B, L, D], key mask [B, L] -> pictures [B, C, side, side].
    pub fn forward(&self, context: &Tensor, mask: &Tensor) -> kuosan_tensor::Result<Tensor> {
        let (b, d) = (context.dims()[0], context.dims()[2]);
        let cells = self.side.div_ceil(2);
        let q = self
            .queries
            .broadcast_as([b, cells * cells, d])?
            .contiguous()?;
        let h = q.add(&self.attn.forward(&q, Some(context), Some(mask))?)?;
        // [B, cells^2, C * 4] -> [B, cy, cx, C, 2, 2] -> [B, C, cy, 2, cx, 2]
        let px = self.fc2.forward(&self.fc1.forward(&h)?.silu()?)?;
        let pic = px
            .reshape([b, cells, cells, self.channels, 2, 2])?
            .permute(&[0, 3, 1, 4, 2, 5])?
            .reshape([b, self.channels, 2 * cells, 2 * cells])?;
        if 2 * cells == self.side {
            Ok(pic)
        } else {
            pic.narrow(2, 0, self.side)?.narrow(3, 0, self.side)
        }
    }
}

/// The contrastive image tower, on the decoder's block-mean pictures [B, C, side, side]:
/// conv 3x3 (C -> 32), three stride-2 convs (32 -> 64 -> 64 -> 64), SiLU after each,
/// flatten (which keeps where things are; a global pool would not), Linear -> [B, D];
/// and CLIP's learned temperature.
pub struct ImageEncoder {
    pub vars: VarStore,
    convs: Vec<Conv2d>,
    proj: Linear,
    logit_scale: Tensor,
}

impl ImageEncoder {
    pub fn new(
        device: &Device,
        seed: u64,
        channels: usize,
        side: usize,
        dim: usize,
    ) -> Result<Self> {
        let vars = VarStore::new(device.clone(), DType::F32, seed);
        let root = vars.root();
        let chans = [channels, 32, 64, 64, 64];
        let mut side = side;
        let mut convs = Vec::new();
        for i in 0..4 {
            let stride = if i == 0 { 1 } else { 2 };
            convs.push(Conv2d::new(
                &root.pp(format!("conv{i}")),
                chans[i],
                chans[i + 1],
                3,
                stride,
                1,
            )?);
            side = (side + 2 - 3) / stride + 1;
        }
        let proj = Linear::new(&root.pp("proj"), 64 * side * side, dim, true)?;
        // CLIP's initial temperature 0.07.
        let logit_scale = root.var("logit_scale", &[1], Init::Const((1.0f64 / 0.07).ln()))?;
        Ok(ImageEncoder {
            vars,
            convs,
            proj,
            logit_scale,
        })
    }

    /// x [B, C, side, side] -> [B, D].
    pub fn forward(&self, x: &Tensor) -> kuosan_tensor::Result<Tensor> {
        let mut h = x.clone();
        for c in &self.convs {
            h = c.forward(&h)?.silu()?;
        }
        self.proj.forward(&h.flatten_from(1)?)
    }

    /// CLIP's symmetric InfoNCE loss (Radford et al. 2021, Figure 3) of text and image
    /// embeddings [B, D] whose row i belong together.
    pub fn clip_loss(&self, text: &Tensor, image: &Tensor) -> kuosan_tensor::Result<Tensor> {
        let unit = |x: &Tensor| -> kuosan_tensor::Result<Tensor> {
            x.div(&x.sqr()?.sum(&[1], true)?.add_scalar(1e-12)?.sqrt()?)
        };
        let b = text.dims()[0];
        let logits = unit(text)?
            .matmul(&unit(image)?.t()?)?
            .mul(&self.logit_scale.exp()?)?;
        let labels: Vec<usize> = (0..b).collect();
        let ce = |l: &Tensor| {
            cross_entropy(l, &labels).map_err(|e| kuosan_tensor::Error::Arg {
                op: "clip_loss",
                msg: e.to_string(),
            })
        };
        ce(&logits)?
            .add(&ce(&logits.t()?.contiguous()?)?)?
            .mul_scalar(0.5)
    }
}

/// How the pretraining runs (`TrainConfig`'s `text_pretrain_*` keys).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PretrainConfig {
    pub steps: u64,
    pub batch: usize,
    pub lr: f64,
    /// Weight of CLIP's contrastive loss beside the decoder's MSE (0: the MSE alone).
    pub contrastive: f64,
    /// Weight of the spatial decoder's MSE, from the token states (0: none).
    pub spatial: f64,
}

impl PretrainConfig {
    /// No pretraining (the text encoder learns only with the U-Net).
    pub const NONE: PretrainConfig = PretrainConfig {
        steps: 0,
        batch: 128,
        lr: 2e-3,
        contrastive: 0.0,
        spatial: 0.0,
    };
}

/// What the pretraining reached: its loss at the first and the last step, and the
/// trained decoder and image tower (which the trainer drops; tests and probes ask them
/// what a caption looks like, and which picture it matches).
pub struct PretrainReport {
    pub first_loss: f64,
    pub last_loss: f64,
    pub elapsed_s: f64,
    pub decoder: CaptionDecoder,
    pub tower: Option<ImageEncoder>,
    pub spatial: Option<SpatialDecoder>,
}

/// Seed of the decoder's init and of the data order, apart from the diffusion steps'.
const PRETRAIN_SEED: u64 = 0x5445_5854_5052_4531; // "TEXTPRE1"

/// Trains `models.text` (only the text encoder; the U-Net is untouched) for `p.steps`
/// steps of `p.batch` captions. Deterministic in `seed`: a run that resumes after it
/// finds the result in its checkpoint, so it never runs twice.
/// `on_step(step, steps, loss)` after each step.
pub fn pretrain_text(
    models: &Models,
    dataset: Arc<dyn Dataset>,
    p: &PretrainConfig,
    seed: u64,
    mut on_step: impl FnMut(u64, u64, f64),
) -> Result<PretrainReport> {
    let device: Device = models.text_vars.device();
    let (c, size) = (dataset.channels(), dataset.size());
    let side = target_side(size);
    let dim = models.text.config.hidden_size;
    let decoder = CaptionDecoder::new(&device, seed ^ PRETRAIN_SEED, dim, c, side)?;
    let mut params = [models.text_vars.vars(), decoder.vars.vars()].concat();
    let tower = if p.contrastive > 0.0 {
        let t = ImageEncoder::new(&device, seed ^ PRETRAIN_SEED ^ 1, c, side, dim)?;
        params.extend(t.vars.vars());
        Some(t)
    } else {
        None
    };
    let spatial = if p.spatial > 0.0 {
        let s = SpatialDecoder::new(&device, seed ^ PRETRAIN_SEED ^ 2, dim, c, side)?;
        params.extend(s.vars.vars());
        Some(s)
    } else {
        None
    };
    let mut opt = AdamW::new(params, AdamWConfig::default())?;
    let lr_at = LrSchedule {
        base: p.lr,
        warmup: (p.steps / 20).max(1),
        total: p.steps,
        min_ratio: 0.1,
    };
    let data_err = |e: crate::data::DataError| Error::Arg(e.to_string());
    let mut loader = Loader::new(dataset, seed ^ PRETRAIN_SEED, p.batch).map_err(data_err)?;
    let started = Instant::now();
    let (mut first_loss, mut last_loss) = (f64::NAN, f64::NAN);
    for step in 1..=p.steps {
        let batch = loader.next_batch(&device).map_err(data_err)?;
        let target = block_mean(&batch.images, side)?;
        let (context, pooled, mask) = models.encode_pooled(&batch.captions)?;
        let mut loss = decoder.forward(&pooled)?.sub(&target)?.sqr()?.mean_all()?;
        if let Some(t) = &tower {
            let clip = t.clip_loss(&pooled, &t.forward(&target)?)?;
            loss = loss.add(&clip.mul_scalar(p.contrastive)?)?;
        }
        if let Some(s) = &spatial {
            let mse = s
                .forward(&context, &mask)?
                .sub(&target)?
                .sqr()?
                .mean_all()?;
            loss = loss.add(&mse.mul_scalar(p.spatial)?)?;
        }
        loss.backward()?;
        clip_grad_norm(opt.params(), 1.0)?;
        opt.step(lr_at.at(step))?;
        let l = loss.to_scalar::<f32>()? as f64;
        if !l.is_finite() {
            return Err(Error::Arg(format!(
                "text pretraining: the loss became {l} at step {step}; lower train.text_pretrain_lr"
            )));
        }
        if step == 1 {
            first_loss = l;
        }
        last_loss = l;
        on_step(step, p.steps, l);
    }
    Ok(PretrainReport {
        first_loss,
        last_loss,
        elapsed_s: started.elapsed().as_secs_f64(),
        decoder,
        tower,
        spatial,
    })
}
