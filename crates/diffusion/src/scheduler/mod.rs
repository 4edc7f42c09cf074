//! Schedulers: the reverse-process update rules, split from the model as in diffusers
//! (`Scheduler` = its `SchedulerMixin` with `timesteps`, `add_noise`, `step`), with the
//! inference timestep spacings they share and a sampling loop.
//!
//! Inference visits `timesteps()` from the noisiest down. The step after `timesteps[i]`
//! lands on `timesteps[i + 1]`, and after the last one on "step -1", the clean end
//! (abar = 1, or DDIM's `set_alpha_to_one = false` value). For diffusers' default
//! "leading" spacing this is exactly its `prev_t = t - T / N` whenever steps_offset < T / N
//! (always with steps_offset 0; with Stable Diffusion's steps_offset 1 whenever N <= T / 2);
//! diffusers applies `t - T / N` to "linspace" and "trailing" too, where it can miss the
//! next timestep (trailing 999, 666, 332 for N = 3 steps from 666 to 333; linspace 999, 500,
//! 0 from 999 to 666), so for those we follow the list instead.

pub mod ddim;
pub mod ddpm;

pub use ddim::{DdimConfig, DdimScheduler};
pub use ddpm::{DdpmConfig, DdpmScheduler};

use crate::{arg_error, q_sample, NoiseSchedule};
use kuosan_tensor::{DType, Device, Philox, Result, Shape, Tensor};

/// How N inference steps are placed among T training steps ("Common Diffusion Noise
/// Schedules and Sample Steps are Flawed", Lin et al. 2024, Table 2; diffusers'
/// `timestep_spacing`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TimestepSpacing {
    /// k * (T / N) + steps_offset for k = N-1 .. 0 (integer T / N): DDIM's original
    /// spacing and Stable Diffusion's, with steps_offset 1 (981, 961, .., 1 for N = 50).
    #[default]
    Leading,
    /// round(T - k T/N) - 1 for k = 0 .. N-1: always starts at T - 1 (999, 979, .., 19
    /// for N = 50). steps_offset is ignored, as in diffusers.
    Trailing,
    /// round(linspace(0, T - 1, N)), high to low (999, 979, .., 0 for N = 50).
    /// steps_offset is ignored, as in diffusers.
    Linspace,
}

/// The N = `num_inference_steps` timesteps to visit, from the noisiest down, as diffusers'
/// `set_timesteps` computes them (rounding half to even, as NumPy's `round`). Errors for
/// N = 0, N > T, or an offset that pushes a step past T - 1.
pub fn inference_timesteps(
    num_train_timesteps: usize,
    num_inference_steps: usize,
    spacing: TimestepSpacing,
    steps_offset: usize,
) -> Result<Vec<usize>> {
    let (t_max, n) = (num_train_timesteps, num_inference_steps);
    if n == 0 {
        return Err(arg_error(
            "inference_timesteps",
            "num_inference_steps must be at least 1",
        ));
    }
    if n > t_max {
        return Err(arg_error(
            "inference_timesteps",
            format!(
                "{n} inference steps cannot be placed among {t_max} training steps: use at most {t_max}"
            ),
        ));
    }
    let steps: Vec<usize> = match spacing {
        TimestepSpacing::Leading => {
            let ratio = t_max / n;
            (0..n).rev().map(|k| k * ratio + steps_offset).collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = t_max as f64 / n as f64;
            (0..n)
                .map(|k| (t_max as f64 - k as f64 * ratio).round_ties_even() as usize - 1)
                .collect()
        }
        TimestepSpacing::Linspace => {
            if n == 1 {
                vec![0]
            } else {
                let step = (t_max - 1) as f64 / (n - 1) as f64;
                (0..n)
                    .rev()
                    .map(|k| (k as f64 * step).round_ties_even() as usize)
                    .collect()
            }
        }
    };
    if steps[0] >= t_max {
        return Err(arg_error(
            "inference_timesteps",
            format!(
                "steps_offset {steps_offset} puts the first of {n} steps at timestep {}, past the \
                 last training step {}: lower the offset or the number of steps",
                steps[0],
                t_max - 1
            ),
        ));
    }
    Ok(steps)
}

/// The result of one reverse step.
#[derive(Clone, Debug)]
pub struct StepOutput {
    /// The sample at the next (less noisy) timestep, diffusers' `prev_sample`.
    pub prev_sample: Tensor,
    /// The model's estimate of the clean sample x0 (clipped if the scheduler clips), for
    /// previews.
    pub pred_original_sample: Tensor,
}

/// A reverse-process update rule over a fixed list of timesteps.
pub trait Scheduler {
    /// The noise schedule it was built on.
    fn schedule(&self) -> &NoiseSchedule;

    /// The timesteps to visit, from the noisiest down (diffusers' `scheduler.timesteps`).
    fn timesteps(&self) -> &[usize];

    /// The standard deviation of the starting noise x_T (diffusers' `init_noise_sigma`).
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    /// The forward process, x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, with one step
    /// per sample (diffusers' `add_noise`; it is [`q_sample`]).
    fn add_noise(&self, original: &Tensor, noise: &Tensor, t: &[usize]) -> Result<Tensor> {
        q_sample(original, t, noise, self.schedule())
    }

    /// One reverse step from `sample` at timestep `t` (one of `timesteps()`) given the
    /// model's output there; stochastic steps draw their noise from `rng` on the
    /// sample's device (the same values on every device), deterministic ones leave `rng`
    /// untouched.
    fn step(
        &self,
        model_output: &Tensor,
        t: usize,
        sample: &Tensor,
        rng: &mut Philox,
    ) -> Result<Tensor>;
}

/// Pure noise to start sampling from: N(0, init_noise_sigma^2) of `shape`, drawn from
/// `rng` on `device`.
pub fn initial_noise(
    scheduler: &dyn Scheduler,
    shape: impl Into<Shape>,
    device: &Device,
    rng: &mut Philox,
) -> Result<Tensor> {
    let x = Tensor::randn(shape, DType::F32, device, rng)?;
    let sigma = scheduler.init_noise_sigma();
    if sigma == 1.0 {
        Ok(x)
    } else {
        x.affine(sigma, 0.0)
    }
}

/// The sampling loop (lucidrains' `p_sample_loop`, Ho et al. 2020 Algorithm 2 with any
/// scheduler): from `x_t` at the first timestep, call `model(x, t)` and step at every
/// timestep; returns the final sample. Gradients are not needed while sampling: call it
/// under `kuosan_tensor::no_grad()` when the model holds trainable parameters.
pub fn p_sample_loop(
    scheduler: &dyn Scheduler,
    x_t: Tensor,
    rng: &mut Philox,
    mut model: impl FnMut(&Tensor, usize) -> Result<Tensor>,
) -> Result<Tensor> {
    let mut x = x_t;
    for &t in scheduler.timesteps() {
        let out = model(&x, t)?;
        x = scheduler.step(&out, t, &x, rng)?;
    }
    Ok(x)
}

/// A standard normal like `sample`, drawn from `rng`, when the step adds noise.
pub(crate) fn step_noise(
    stochastic: bool,
    sample: &Tensor,
    rng: &mut Philox,
) -> Result<Option<Tensor>> {
    stochastic
        .then(|| Tensor::randn(sample.shape().clone(), sample.dtype(), sample.device(), rng))
        .transpose()
}

/// The position of `t` in `timesteps`, or an error naming the valid ones.
pub(crate) fn step_index(op: &'static str, timesteps: &[usize], t: usize) -> Result<usize> {
    timesteps.iter().position(|&s| s == t).ok_or_else(|| {
        let shown: Vec<String> = timesteps.iter().take(8).map(|s| s.to_string()).collect();
        arg_error(
            op,
            format!(
                "timestep {t} is not one of this scheduler's {} timesteps ({}{})",
                timesteps.len(),
                shown.join(", "),
                if timesteps.len() > 8 { ", .." } else { "" }
            ),
        )
    })
}

/// Checks the step's operands: model output and sample of one shape, and explicit noise
/// of that shape too.
pub(crate) fn check_step_args(
    op: &'static str,
    model_output: &Tensor,
    sample: &Tensor,
    noise: Option<&Tensor>,
) -> Result<()> {
    crate::loss::same_shape(op, model_output, sample)?;
    if let Some(z) = noise {
        crate::loss::same_shape(op, z, sample)?;
    }
    Ok(())
}

/// Clamps x0 to [-r, r] (diffusers' `clip_sample` with `clip_sample_range` r).
pub(crate) fn clip(x: Tensor, range: Option<f64>) -> Result<Tensor> {
    match range {
        None => Ok(x),
        Some(r) => {
            let lo = Tensor::full(-r, (), x.dtype(), x.device())?;
            let hi = Tensor::full(r, (), x.dtype(), x.device())?;
            x.maximum(&lo)?.minimum(&hi)
        }
    }
}

/// An error unless a clip range is positive and finite.
pub(crate) fn check_clip(op: &'static str, range: Option<f64>) -> Result<()> {
    match range {
        Some(r) if !(r > 0.0 && r.is_finite()) => Err(arg_error(
            op,
            format!("clip_sample range must be positive and finite, got {r}"),
        )),
        _ => Ok(()),
    }
}
