//! DDIM sampling (Song et al. 2021) with any number of steps and any eta, as diffusers'
//! `DDIMScheduler.step`.
//!
//! From x_t with abar_t, to the next timestep's abar_prev (eq. 12):
//! x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps_hat + sigma z,
//! sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev) (eq. 16).
//! eta = 0 is the deterministic DDIM; eta = 1 is DDPM's ancestral step over the same
//! timesteps (when x0_hat is not clipped). x0_hat and eps_hat come from the model output (eq. 12's "predicted x0",
//! or the v relations of Salimans & Ho 2022); when x0_hat is clipped, eps_hat is not
//! recomputed unless `use_clipped_model_output` (diffusers' option, off by default).

use super::{check_clip, check_step_args, clip, step_index, step_noise, Scheduler, StepOutput};
use super::{inference_timesteps, TimestepSpacing};
use crate::loss::lincomb;
use crate::{arg_error, NoiseSchedule, Prediction};
use kuosan_tensor::{Philox, Result, Tensor};

/// DDIM settings. The defaults are diffusers' `DDIMScheduler` defaults with Stable
/// Diffusion's pairing of `steps_offset = 1` and `set_alpha_to_one = false` (timesteps
/// 981, 961, .., 1 for 50 steps, the last landing on abar_0), which diffusers recommends
/// for that offset, and its default `clip_sample` (on, range 1: right for pixel data in
/// [-1, 1]; turn it off for latents).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DdimConfig {
    pub num_inference_steps: usize,
    /// The stochasticity, 0 (deterministic) ..= 1 (DDPM-like), eq. 16.
    pub eta: f64,
    pub prediction: Prediction,
    /// Clamp x0_hat to [-r, r] (diffusers' `clip_sample`, `clip_sample_range`).
    pub clip_sample: Option<f64>,
    /// What the last step lands on: abar = 1 (clean) when true, abar_0 when false.
    pub set_alpha_to_one: bool,
    pub spacing: TimestepSpacing,
    /// Added to leading timesteps.
    pub steps_offset: usize,
    /// After clipping x0_hat, recompute eps_hat from it (diffusers'
    /// `use_clipped_model_output`, default off). Off, a clipped x0_hat and the model's
    /// eps disagree, and the step's "direction to x_t" carries what clipping removed:
    /// harmless near the data, but under classifier-free guidance (an extrapolated eps)
    /// the early steps overshoot and the sample loses the prompt. kuosan's sampler
    /// turns it on.
    pub use_clipped_model_output: bool,
}

impl Default for DdimConfig {
    fn default() -> Self {
        DdimConfig {
            num_inference_steps: 50,
            eta: 0.0,
            prediction: Prediction::Epsilon,
            clip_sample: Some(1.0),
            set_alpha_to_one: false,
            spacing: TimestepSpacing::Leading,
            steps_offset: 1,
            use_clipped_model_output: false,
        }
    }
}

/// The DDIM sampler.
#[derive(Clone, Debug)]
pub struct DdimScheduler {
    schedule: NoiseSchedule,
    config: DdimConfig,
    timesteps: Vec<usize>,
    /// abar after the last step (diffusers' `final_alpha_cumprod`).
    final_alpha_cumprod: f64,
}

impl DdimScheduler {
    /// A sampler over `schedule` with `config`'s timesteps and eta.
    pub fn new(schedule: NoiseSchedule, config: DdimConfig) -> Result<Self> {
        check_clip("DdimScheduler::new", config.clip_sample)?;
        if !(0.0..=1.0).contains(&config.eta) {
            return Err(arg_error(
                "DdimScheduler::new",
                format!(
                    "eta must lie in [0, 1] (0: deterministic DDIM, 1: DDPM-like), got {}",
                    config.eta
                ),
            ));
        }
        let timesteps = inference_timesteps(
            schedule.num_train_timesteps(),
            config.num_inference_steps,
            config.spacing,
            config.steps_offset,
        )?;
        let final_alpha_cumprod = if config.set_alpha_to_one {
            1.0
        } else {
            schedule.alphas_cumprod()[0]
        };
        Ok(DdimScheduler {
            schedule,
            config,
            timesteps,
            final_alpha_cumprod,
        })
    }

    pub fn config(&self) -> &DdimConfig {
        &self.config
    }

    /// abar at `t` and at the step after it (`final_alpha_cumprod` after the last).
    fn alpha_prods(&self, t: usize) -> Result<(f64, f64)> {
        let i = step_index("DdimScheduler::step", &self.timesteps, t)?;
        let abar = self.schedule.alphas_cumprod();
        let prev = self
            .timesteps
            .get(i + 1)
            .map_or(self.final_alpha_cumprod, |&p| abar[p]);
        Ok((abar[t], prev))
    }

    /// Whether steps add noise (eta > 0; diffusers then draws noise at every step).
    pub fn is_stochastic(&self) -> bool {
        self.config.eta > 0.0
    }

    /// sigma_t(eta) of the step at `t` (eq. 16).
    pub fn sigma(&self, t: usize) -> Result<f64> {
        let (a_t, a_prev) = self.alpha_prods(t)?;
        let variance = (1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev);
        Ok(self.config.eta * variance.max(0.0).sqrt())
    }

    /// One step with explicit noise: `noise` (standard normal, the sample's shape) is
    /// required when eta > 0 and ignored otherwise (diffusers' `variance_noise`).
    pub fn step_with_noise(
        &self,
        model_output: &Tensor,
        t: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        check_step_args("DdimScheduler::step", model_output, sample, noise)?;
        let (a_t, a_prev) = self.alpha_prods(t)?;
        let p = self.config.prediction;
        let x0 = p.pred_original_sample(model_output, sample, a_t)?;
        let eps = p.pred_epsilon(model_output, sample, a_t)?;
        let x0 = clip(x0, self.config.clip_sample)?;
        // eps consistent with the clipped x0 (DDIM eq. 9 solved for eps).
        let eps = if self.config.use_clipped_model_output && self.config.clip_sample.is_some() {
            lincomb(
                1.0 / (1.0 - a_t).sqrt(),
                sample,
                -(a_t / (1.0 - a_t)).sqrt(),
                &x0,
            )?
        } else {
            eps
        };

        let sigma = self.sigma(t)?;
        // "direction pointing to x_t" of eq. 12; max(0) guards rounding when eta = 1.
        let dir = (1.0 - a_prev - sigma * sigma).max(0.0).sqrt();
        let mut prev = lincomb(a_prev.sqrt(), &x0, dir, &eps)?;
        if self.is_stochastic() {
            let z = noise.ok_or_else(|| {
                arg_error(
                    "DdimScheduler::step",
                    format!(
                        "eta = {} adds noise: pass a standard normal tensor",
                        self.config.eta
                    ),
                )
            })?;
            prev = prev.add(&z.affine(sigma, 0.0)?)?;
        }
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        })
    }
}

impl Scheduler for DdimScheduler {
    fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    fn step(
        &self,
        model_output: &Tensor,
        t: usize,
        sample: &Tensor,
        rng: &mut Philox,
    ) -> Result<Tensor> {
        check_step_args("DdimScheduler::step", model_output, sample, None)?;
        self.alpha_prods(t)?;
        let noise = step_noise(self.is_stochastic(), sample, rng)?;
        Ok(self
            .step_with_noise(model_output, t, sample, noise.as_ref())?
            .prev_sample)
    }
}
