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

use crate::data::{Dataset, Loader};
use crate::models::Models;
use kuosan_nn::{
    clip_grad_norm, AdamW, AdamWConfig, Error, Linear, LrSchedule, Module, Result, VarStore,
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

/// How the pretraining runs (`TrainConfig`'s `text_pretrain_*` keys).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PretrainConfig {
    pub steps: u64,
    pub batch: usize,
    pub lr: f64,
}

/// What the pretraining reached: its loss at the first and the last step, and the
/// trained decoder (which the trainer drops; tests and probes ask it what a caption
/// looks like).
pub struct PretrainReport {
    pub first_loss: f64,
    pub last_loss: f64,
    pub elapsed_s: f64,
    pub decoder: CaptionDecoder,
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
    let params = [models.text_vars.vars(), decoder.vars.vars()].concat();
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
        let (_, pooled) = models.encode_pooled(&batch.captions)?;
        let loss = decoder.forward(&pooled)?.sub(&target)?.sqr()?.mean_all()?;
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
    })
}
