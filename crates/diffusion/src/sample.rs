//! The sampler (p_sample_loop): from pure noise, the scheduler's steps with the U-Net's
//! prediction, under classifier-free guidance (Ho & Salimans 2022): eps = eps_uncond +
//! w (eps_text - eps_uncond), with the unconditional half given the negative prompt (or
//! the empty one).
//!
//! Editing starts from a picture instead: img2img (SDEdit, Meng et al. 2022) noises it
//! to the step `strength` of the way to pure noise and denoises from there, as
//! diffusers' img2img pipeline; inpainting (RePaint, Lugmayr et al. 2022, without its
//! resampling jumps) after every step puts back the kept pixels, noised to the step just
//! reached, so only the masked area is made from the prompt.

use crate::config::ModelConfig;
use crate::guidance::Guidance;
use crate::image::{read_png, Image};
use crate::models::Models;
use crate::scheduler::{DdimConfig, DdimScheduler, DdpmConfig, DdpmScheduler, Scheduler};
use crate::NoiseSchedule;
use kuosan_nn::{Error, Result};
use kuosan_tensor::{no_grad, DType, Device, Philox, Tensor};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SamplerKind {
    Ddpm,
    Ddim,
}

/// What to sample.
#[derive(Clone, Debug)]
pub struct SampleOptions {
    pub prompts: Vec<String>,
    pub negative: Option<String>,
    pub sampler: SamplerKind,
    /// Inference steps (DDIM); DDPM uses every training step unless fewer are asked.
    pub steps: usize,
    /// Guidance scale w (1 disables guidance: one pass per step), rescale and window.
    pub guidance: Guidance,
    /// DDIM's eta (0: deterministic).
    pub eta: f64,
    /// Images per prompt.
    pub n: usize,
    pub seed: u64,
    /// Start from a picture (img2img, inpainting) instead of pure noise.
    pub init: Option<InitImage>,
}

/// The picture an edit starts from.
#[derive(Clone, Debug)]
pub struct InitImage {
    /// [C, H, W] in [-1, 1], the model's channels and size.
    pub image: Tensor,
    /// How far towards pure noise the picture is taken, in (0, 1]: diffusers'
    /// `strength`, the fraction of the inference steps that run (1: all of them, the
    /// picture only shows through a mask's kept area).
    pub strength: f64,
    /// [1, H, W], 1 where the prompt paints and 0 where the picture is kept.
    pub mask: Option<Tensor>,
}

impl InitImage {
    /// Reads the picture (and mask) of an edit from PNG files: both must be the model's
    /// `size` x `size`; the picture is converted to the model's channels, the mask to
    /// gray and made binary as diffusers' mask processor does (white >= 128 paints,
    /// black keeps). `strength` defaults to 1 with a mask (inpaint the whole masked
    /// area from noise) and 0.6 without (img2img).
    pub fn from_files(
        image: &Path,
        mask: Option<&Path>,
        strength: Option<f64>,
        channels: usize,
        size: usize,
    ) -> Result<InitImage> {
        let read = |p: &Path, what: &str, channels: usize| -> Result<Image> {
            let img = read_png(p).map_err(|e| Error::Arg(e.to_string()))?;
            if (img.width, img.height) != (size, size) {
                return Err(Error::file(
                    p,
                    format!(
                        "the {what} is {}x{}, this model makes {size}x{size} pictures (resize it first)",
                        img.width, img.height
                    ),
                ));
            }
            img.to_channels(channels)
                .map_err(|e| Error::file(p, e.to_string()))
        };
        let cpu = Device::Cpu;
        let picture = read(image, "init image", channels)?
            .to_tensor(&cpu)
            .map_err(|e| Error::Arg(e.to_string()))?;
        let mask = match mask {
            None => None,
            Some(p) => {
                let m = read(p, "mask", 1)?;
                let v: Vec<f32> = m.data.iter().map(|&v| f32::from(v >= 128)).collect();
                if v.iter().all(|&x| x == 0.0) {
                    return Err(Error::file(
                        p,
                        "the mask is all black, so nothing would be painted (white marks the area to fill)",
                    ));
                }
                Some(Tensor::from_vec(v, [1, size, size], &cpu)?)
            }
        };
        let init = InitImage {
            image: picture,
            strength: strength.unwrap_or(if mask.is_some() { 1.0 } else { 0.6 }),
            mask,
        };
        init.check(channels, size)?;
        Ok(init)
    }

    /// Checks the picture and mask against the model's channels and side.
    pub fn check(&self, channels: usize, size: usize) -> Result<()> {
        if self.image.dims() != [channels, size, size] {
            return Err(Error::Arg(format!(
                "the init image is {}, the model makes [{channels}, {size}, {size}]",
                self.image.shape()
            )));
        }
        if let Some(m) = &self.mask {
            if m.dims() != [1, size, size] {
                return Err(Error::Arg(format!(
                    "the mask is {}, the model makes {size}x{size} pictures: [1, {size}, {size}]",
                    m.shape()
                )));
            }
        }
        if !(self.strength > 0.0 && self.strength <= 1.0) {
            return Err(Error::Arg(format!(
                "strength must lie in (0, 1] (the fraction of the steps to run), got {}",
                self.strength
            )));
        }
        Ok(())
    }
}

/// [prompts x n, C, H, W] images in [-1, 1]; `on_step(i, total)` after each step.
pub fn sample(
    models: &Models,
    cfg: &ModelConfig,
    o: &SampleOptions,
    mut on_step: impl FnMut(usize, usize),
) -> Result<Tensor> {
    let _guard = no_grad();
    let device = models.unet_vars.device();
    let schedule =
        NoiseSchedule::new(cfg.beta_schedule, cfg.num_train_timesteps).map_err(Error::Tensor)?;
    let scheduler: Box<dyn Scheduler> = match o.sampler {
        SamplerKind::Ddpm => Box::new(
            DdpmScheduler::new(
                schedule,
                DdpmConfig {
                    prediction: cfg.prediction,
                    num_inference_steps: Some(o.steps),
                    ..DdpmConfig::default()
                },
            )
            .map_err(Error::Tensor)?,
        ),
        SamplerKind::Ddim => Box::new(
            DdimScheduler::new(
                schedule,
                DdimConfig {
                    prediction: cfg.prediction,
                    num_inference_steps: o.steps,
                    eta: o.eta,
                    use_clipped_model_output: true,
                    ..DdimConfig::default()
                },
            )
            .map_err(Error::Tensor)?,
        ),
    };
    let prompts: Vec<String> = o
        .prompts
        .iter()
        .flat_map(|p| std::iter::repeat_n(p.clone(), o.n))
        .collect();
    let b = prompts.len();
    o.guidance.check().map_err(Error::Tensor)?;
    let text = models.encode(&prompts)?;
    let (c, s) = (cfg.image_channels(), cfg.unet.sample_size);
    let mut rng = Philox::new(o.seed);
    let all_steps = scheduler.timesteps().to_vec();
    // img2img runs the last strength x N steps (diffusers' `get_timesteps`).
    let start = match &o.init {
        Some(init) => {
            init.check(c, s)?;
            let run = ((all_steps.len() as f64 * init.strength) as usize).clamp(1, all_steps.len());
            all_steps.len() - run
        }
        None => 0,
    };
    let steps = &all_steps[start..];
    // [uncond; text] for the guided steps, encoded only if a step is guided.
    let both_ctx = if o.guidance.any_active(steps.len()) {
        let negative = vec![o.negative.clone().unwrap_or_default(); b];
        Some(models.encode(&negative)?.cat(&text)?)
    } else {
        None
    };
    // The picture repeated over the batch: [B, C, H, W].
    let init = o
        .init
        .as_ref()
        .map(|i| -> Result<(Tensor, Option<Tensor>)> {
            let img = i
                .image
                .to_device(&device)?
                .unsqueeze(0)?
                .broadcast_as([b, c, s, s])?;
            let mask = i
                .mask
                .as_ref()
                .map(|m| m.to_device(&device)?.unsqueeze(0))
                .transpose()?;
            Ok((img.contiguous()?, mask))
        })
        .transpose()?;
    let noise = Tensor::randn([b, c, s, s], DType::F32, &device, &mut rng)?;
    let mut x = match &init {
        Some((img, _)) => scheduler.add_noise(img, &noise, &vec![steps[0]; b])?,
        None => noise.affine(scheduler.init_noise_sigma(), 0.0)?,
    };
    for (i, &t) in steps.iter().enumerate() {
        let eps = match &both_ctx {
            Some(ctx) if o.guidance.active_at(i, steps.len()) => {
                let both =
                    models.predict(&Tensor::cat(&[&x, &x], 0)?, &vec![t as f64; 2 * b], ctx)?;
                o.guidance.apply(&both)?
            }
            _ => models.predict(&x, &vec![t as f64; b], &text)?,
        };
        x = scheduler.step(&eps, t, &x, &mut rng)?;
        if let Some((img, Some(mask))) = &init {
            // The kept pixels at the step just reached: noised to the next timestep, or
            // the picture itself after the last step.
            let known = match steps.get(i + 1) {
                Some(&next) => {
                    let z = Tensor::randn([b, c, s, s], DType::F32, &device, &mut rng)?;
                    scheduler.add_noise(img, &z, &vec![next; b])?
                }
                None => img.clone(),
            };
            x = known.add(&x.sub(&known)?.mul(mask)?)?;
        }
        on_step(i + 1, steps.len());
    }
    Ok(x.affine(1.0, 0.0)?
        .maximum(&Tensor::full(-1.0, (), DType::F32, &device)?)?
        .minimum(&Tensor::full(1.0, (), DType::F32, &device)?)?)
}
