//! The sampler (p_sample_loop): from pure noise, the scheduler's steps with the U-Net's
//! prediction, under classifier-free guidance (Ho & Salimans 2022): eps = eps_uncond +
//! w (eps_text - eps_uncond), with the unconditional half given the negative prompt (or
//! the empty one).

use crate::config::ModelConfig;
use crate::models::Models;
use crate::scheduler::{DdimConfig, DdimScheduler, DdpmConfig, DdpmScheduler, Scheduler};
use crate::NoiseSchedule;
use kuosan_nn::{Error, Result};
use kuosan_tensor::{no_grad, DType, Philox, Tensor};

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
    /// Guidance scale w; 1 disables guidance (one pass per step).
    pub guidance: f64,
    /// DDIM's eta (0: deterministic).
    pub eta: f64,
    /// Images per prompt.
    pub n: usize,
    pub seed: u64,
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
    let guided = o.guidance != 1.0;
    let ctx = if guided {
        let negative = vec![o.negative.clone().unwrap_or_default(); b];
        models.encode(&negative)?.cat(&models.encode(&prompts)?)?
    } else {
        models.encode(&prompts)?
    };
    let (c, s) = (cfg.unet.in_channels, cfg.unet.sample_size);
    let mut rng = Philox::new(o.seed);
    let mut x = Tensor::randn([b, c, s, s], DType::F32, &device, &mut rng)?
        .affine(scheduler.init_noise_sigma(), 0.0)?;
    let steps = scheduler.timesteps().to_vec();
    for (i, &t) in steps.iter().enumerate() {
        let eps = if guided {
            let both = models.predict(&Tensor::cat(&[&x, &x], 0)?, &vec![t as f64; 2 * b], &ctx)?;
            crate::guidance::guide(&both, o.guidance)?
        } else {
            models.predict(&x, &vec![t as f64; b], &ctx)?
        };
        x = scheduler.step(&eps, t, &x, &mut rng)?;
        on_step(i + 1, steps.len());
    }
    Ok(x.affine(1.0, 0.0)?
        .maximum(&Tensor::full(-1.0, (), DType::F32, &device)?)?
        .minimum(&Tensor::full(1.0, (), DType::F32, &device)?)?)
}
