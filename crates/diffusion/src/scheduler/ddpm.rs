//! DDPM ancestral sampling (Ho et al. 2020, Algorithm 2), as diffusers' `DDPMScheduler.step`
//! with `variance_type = "fixed_small"`.
//!
//! From x_t, the model output gives x0_hat (eq. 15, or the v relation), optionally
//! clipped; the next sample is drawn from the posterior q(x_prev | x_t, x0 = x0_hat)
//! (eq. 6-7): mean c0 x0_hat + ct x_t with c0 = sqrt(abar_prev) beta'_t / (1 - abar_t),
//! ct = sqrt(alpha'_t) (1 - abar_prev) / (1 - abar_t), variance
//! beta~ = (1 - abar_prev) / (1 - abar_t) beta'_t clamped below at 1e-20 ("fixed_small"),
//! where alpha'_t = abar_t / abar_prev and beta'_t = 1 - alpha'_t are the effective
//! alpha and beta of a step that skips from t to prev (alpha_t and beta_t when every step
//! is visited). No noise is added at t = 0 (diffusers' `if t > 0`).

use super::{check_clip, check_step_args, clip, step_index, step_noise, Scheduler, StepOutput};
use super::{inference_timesteps, TimestepSpacing};
use crate::loss::lincomb;
use crate::{NoiseSchedule, Prediction};
use kuosan_tensor::{Philox, Result, Tensor};

/// DDPM settings. The defaults are diffusers' `DDPMScheduler` defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DdpmConfig {
    pub prediction: Prediction,
    /// Clamp x0_hat to [-r, r] (diffusers' `clip_sample` and `clip_sample_range`); default
    /// `Some(1.0)`, right for pixel data in [-1, 1].
    pub clip_sample: Option<f64>,
    /// How many steps to visit; `None` (the default) visits every training step, as
    /// Ho et al. 2020.
    pub num_inference_steps: Option<usize>,
    /// Where the steps go when there are fewer than T (default leading).
    pub spacing: TimestepSpacing,
    /// Added to leading timesteps (default 0).
    pub steps_offset: usize,
}

impl Default for DdpmConfig {
    fn default() -> Self {
        DdpmConfig {
            prediction: Prediction::Epsilon,
            clip_sample: Some(1.0),
            num_inference_steps: None,
            spacing: TimestepSpacing::Leading,
            steps_offset: 0,
        }
    }
}

/// The DDPM ancestral sampler.
#[derive(Clone, Debug)]
pub struct DdpmScheduler {
    schedule: NoiseSchedule,
    config: DdpmConfig,
    timesteps: Vec<usize>,
}

impl DdpmScheduler {
    /// A sampler over `schedule` (its timesteps follow `config.num_inference_steps`).
    pub fn new(schedule: NoiseSchedule, config: DdpmConfig) -> Result<Self> {
        check_clip("DdpmScheduler::new", config.clip_sample)?;
        let t = schedule.num_train_timesteps();
        let timesteps = inference_timesteps(
            t,
            config.num_inference_steps.unwrap_or(t),
            config.spacing,
            config.steps_offset,
        )?;
        Ok(DdpmScheduler {
            schedule,
            config,
            timesteps,
        })
    }

    pub fn config(&self) -> &DdpmConfig {
        &self.config
    }

    /// abar at `t` and at the step after it (1 after the last).
    fn alpha_prods(&self, t: usize) -> Result<(f64, f64)> {
        let i = step_index("DdpmScheduler::step", &self.timesteps, t)?;
        let abar = self.schedule.alphas_cumprod();
        let prev = self.timesteps.get(i + 1).map_or(1.0, |&p| abar[p]);
        Ok((abar[t], prev))
    }

    /// Whether the step at `t` adds noise (diffusers: every step but t = 0).
    pub fn is_stochastic(&self, t: usize) -> bool {
        t > 0
    }

    /// The variance of the noise the step at `t` adds ("fixed_small": the posterior
    /// variance beta~, eq. 7, clamped below at 1e-20 as diffusers does).
    pub fn variance(&self, t: usize) -> Result<f64> {
        let (a_t, a_prev) = self.alpha_prods(t)?;
        let beta_t = 1.0 - a_t / a_prev;
        Ok(((1.0 - a_prev) / (1.0 - a_t) * beta_t).max(1e-20))
    }

    /// One step with explicit noise: `noise` (standard normal, the sample's shape) is
    /// required at t > 0 and ignored at t = 0.
    pub fn step_with_noise(
        &self,
        model_output: &Tensor,
        t: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        check_step_args("DdpmScheduler::step", model_output, sample, noise)?;
        let (a_t, a_prev) = self.alpha_prods(t)?;
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        let (cur_alpha, cur_beta) = (a_t / a_prev, 1.0 - a_t / a_prev);

        // x0_hat (eq. 15 for epsilon; Salimans & Ho 2022 for v), then clipping.
        let x0 = self
            .config
            .prediction
            .pred_original_sample(model_output, sample, a_t)?;
        let x0 = clip(x0, self.config.clip_sample)?;

        // The posterior mean, eq. 7.
        let c0 = a_prev.sqrt() * cur_beta / b_t;
        let ct = cur_alpha.sqrt() * b_prev / b_t;
        let mut prev = lincomb(c0, &x0, ct, sample)?;

        if self.is_stochastic(t) {
            let z = noise.ok_or_else(|| {
                crate::arg_error(
                    "DdpmScheduler::step",
                    format!("the step at t = {t} adds noise: pass a standard normal tensor"),
                )
            })?;
            prev = prev.add(&z.affine(self.variance(t)?.sqrt(), 0.0)?)?;
        }
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        })
    }
}

impl Scheduler for DdpmScheduler {
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
        // Check before drawing, so a bad call leaves the stream where it was.
        check_step_args("DdpmScheduler::step", model_output, sample, None)?;
        self.alpha_prods(t)?;
        let noise = step_noise(self.is_stochastic(t), sample, rng)?;
        Ok(self
            .step_with_noise(model_output, t, sample, noise.as_ref())?
            .prev_sample)
    }
}
