//! Noise schedules: the betas of the forward process and the products derived from them.
//!
//! The forward process of DDPM (Ho et al. 2020) adds Gaussian noise in T steps,
//! q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I) (eq. 2), so that in closed form
//! q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) with alpha_t = 1 - beta_t and
//! abar_t = prod_{s <= t} alpha_s (eq. 4). Steps are indexed 0..T as in diffusers (its
//! index t is the paper's t + 1).
//!
//! The beta schedules are diffusers' (`DDPMScheduler`/`DDIMScheduler` `beta_schedule`):
//! same formulas, same clipping. diffusers stores them as float32 tensors; we keep f64
//! host vectors, so values agree with diffusers' to float32 rounding (relative ~1e-7 for
//! the betas, ~1e-6 for abar late in the schedule).

use crate::arg_error;
use kuosan_tensor::Result;

/// How the betas are laid out over the T training steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BetaSchedule {
    /// diffusers' "linear": T betas evenly spaced from `beta_start` to `beta_end`
    /// (`torch.linspace`); Ho et al. 2020 §4 use 1e-4 .. 0.02 with T = 1000.
    Linear { beta_start: f64, beta_end: f64 },
    /// diffusers' "scaled_linear": sqrt(beta) evenly spaced, then squared (latent
    /// diffusion / Stable Diffusion, with 0.00085 .. 0.012).
    ScaledLinear { beta_start: f64, beta_end: f64 },
    /// diffusers' "squaredcos_cap_v2": the cosine schedule of improved DDPM (Nichol &
    /// Dhariwal 2021, eq. 17), abar(t) = f(t) / f(0), f(t) = cos^2(((t/T + s) / (1 + s)) pi/2)
    /// with s = 0.008, discretised as beta_i = 1 - abar((i+1)/T) / abar(i/T) and clipped at
    /// 0.999 to avoid the singularity at t = T (their §3.2; diffusers' `max_beta`).
    SquaredCosCapV2,
}

impl BetaSchedule {
    /// The cosine schedule's offset s (Nichol & Dhariwal 2021, eq. 17).
    pub const COSINE_S: f64 = 0.008;
    /// The cosine schedule's cap on beta (diffusers' `max_beta`).
    pub const MAX_BETA: f64 = 0.999;

    /// DDPM's linear schedule, 1e-4 .. 0.02 (diffusers' `DDPMScheduler` default).
    pub const fn linear() -> Self {
        BetaSchedule::Linear {
            beta_start: 1e-4,
            beta_end: 0.02,
        }
    }

    /// Stable Diffusion's scaled-linear schedule, 0.00085 .. 0.012.
    pub const fn scaled_linear() -> Self {
        BetaSchedule::ScaledLinear {
            beta_start: 0.00085,
            beta_end: 0.012,
        }
    }

    /// The cosine schedule (`squaredcos_cap_v2`).
    pub const fn cosine() -> Self {
        BetaSchedule::SquaredCosCapV2
    }

    /// diffusers' name for the schedule (`beta_schedule` in scheduler_config.json).
    pub fn name(&self) -> &'static str {
        match self {
            BetaSchedule::Linear { .. } => "linear",
            BetaSchedule::ScaledLinear { .. } => "scaled_linear",
            BetaSchedule::SquaredCosCapV2 => "squaredcos_cap_v2",
        }
    }

    /// (beta_start, beta_end) as diffusers stores them (its defaults for the cosine
    /// schedule, which ignores them).
    pub fn range(&self) -> (f64, f64) {
        match *self {
            BetaSchedule::Linear {
                beta_start,
                beta_end,
            }
            | BetaSchedule::ScaledLinear {
                beta_start,
                beta_end,
            } => (beta_start, beta_end),
            BetaSchedule::SquaredCosCapV2 => (1e-4, 0.02),
        }
    }

    /// The schedule diffusers names `name` with the given range; None for other names.
    pub fn parse(name: &str, beta_start: f64, beta_end: f64) -> Option<Self> {
        match name {
            "linear" => Some(BetaSchedule::Linear {
                beta_start,
                beta_end,
            }),
            "scaled_linear" => Some(BetaSchedule::ScaledLinear {
                beta_start,
                beta_end,
            }),
            "squaredcos_cap_v2" => Some(BetaSchedule::SquaredCosCapV2),
            _ => None,
        }
    }

    /// The `n` betas of this schedule, in f64.
    pub fn betas(&self, n: usize) -> Result<Vec<f64>> {
        if n == 0 {
            return Err(arg_error(
                "BetaSchedule::betas",
                "the number of training timesteps must be at least 1",
            ));
        }
        Ok(match *self {
            BetaSchedule::Linear {
                beta_start,
                beta_end,
            } => linspace(beta_start, beta_end, n),
            BetaSchedule::ScaledLinear {
                beta_start,
                beta_end,
            } => {
                if beta_start < 0.0 || beta_end < 0.0 {
                    return Err(arg_error(
                        "BetaSchedule::betas",
                        format!(
                            "scaled_linear takes square roots of beta_start {beta_start} and \
                             beta_end {beta_end}: both must be >= 0"
                        ),
                    ));
                }
                linspace(beta_start.sqrt(), beta_end.sqrt(), n)
                    .into_iter()
                    .map(|b| b * b)
                    .collect()
            }
            BetaSchedule::SquaredCosCapV2 => {
                // Nichol & Dhariwal 2021 eq. 17 (diffusers' betas_for_alpha_bar).
                let f = |t: f64| {
                    ((t + Self::COSINE_S) / (1.0 + Self::COSINE_S) * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .powi(2)
                };
                (0..n)
                    .map(|i| {
                        let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                        (1.0 - f(t2) / f(t1)).min(Self::MAX_BETA)
                    })
                    .collect()
            }
        })
    }
}

/// `n` values evenly spaced from `start` to `end` inclusive (`torch.linspace`; `[start]`
/// when n = 1).
fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f64;
    (0..n).map(|i| start + i as f64 * step).collect()
}

/// The betas of a forward process and what follows from them, as f64 host vectors
/// indexed by the training step t in 0..T. Build one with [`NoiseSchedule::new`] or
/// [`NoiseSchedule::from_betas`]; the vectors are read through accessors so they stay
/// consistent with each other.
#[derive(Clone, Debug, PartialEq)]
pub struct NoiseSchedule {
    betas: Vec<f64>,
    alphas: Vec<f64>,
    alphas_cumprod: Vec<f64>,
}

impl Default for NoiseSchedule {
    /// DDPM's linear schedule over T = 1000 steps.
    fn default() -> Self {
        NoiseSchedule::new(BetaSchedule::linear(), 1000).expect("the default schedule is valid")
    }
}

impl NoiseSchedule {
    /// The schedule `beta_schedule` over `num_train_timesteps` steps.
    pub fn new(beta_schedule: BetaSchedule, num_train_timesteps: usize) -> Result<Self> {
        NoiseSchedule::from_betas(beta_schedule.betas(num_train_timesteps)?)
    }

    /// A schedule from explicit betas (diffusers' `trained_betas`). Each must lie in
    /// (0, 1): beta = 0 would make two steps identical, beta = 1 leaves no signal, and
    /// both break the divisions of the samplers.
    pub fn from_betas(betas: Vec<f64>) -> Result<Self> {
        if betas.is_empty() {
            return Err(arg_error(
                "NoiseSchedule::from_betas",
                "a schedule needs at least one beta",
            ));
        }
        if let Some((i, b)) = betas
            .iter()
            .enumerate()
            .find(|(_, &b)| !(b > 0.0 && b < 1.0))
        {
            return Err(arg_error(
                "NoiseSchedule::from_betas",
                format!("beta[{i}] = {b}: every beta must lie strictly between 0 and 1"),
            ));
        }
        let alphas: Vec<f64> = betas.iter().map(|b| 1.0 - b).collect();
        // abar_t = prod_{s <= t} alpha_s (Ho et al. 2020, notation above eq. 4).
        let alphas_cumprod = alphas
            .iter()
            .scan(1.0, |p, a| {
                *p *= a;
                Some(*p)
            })
            .collect();
        Ok(NoiseSchedule {
            betas,
            alphas,
            alphas_cumprod,
        })
    }

    /// T, the number of training steps.
    pub fn num_train_timesteps(&self) -> usize {
        self.betas.len()
    }

    /// beta_t for t in 0..T.
    pub fn betas(&self) -> &[f64] {
        &self.betas
    }

    /// alpha_t = 1 - beta_t.
    pub fn alphas(&self) -> &[f64] {
        &self.alphas
    }

    /// abar_t = alpha_0 ... alpha_t.
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// sqrt(abar_t): the signal coefficient of q(x_t | x_0) (eq. 4).
    pub fn sqrt_alphas_cumprod(&self) -> Vec<f64> {
        self.alphas_cumprod.iter().map(|a| a.sqrt()).collect()
    }

    /// sqrt(1 - abar_t): the noise coefficient of q(x_t | x_0) (eq. 4).
    pub fn sqrt_one_minus_alphas_cumprod(&self) -> Vec<f64> {
        self.alphas_cumprod
            .iter()
            .map(|a| (1.0 - a).sqrt())
            .collect()
    }

    /// The variance of q(x_{t-1} | x_t, x_0), beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t
    /// (Ho et al. 2020 eq. 7; abar_{-1} = 1, so it is 0 at t = 0).
    pub fn posterior_variance(&self) -> Vec<f64> {
        (0..self.betas.len())
            .map(|t| {
                let prev = if t == 0 {
                    1.0
                } else {
                    self.alphas_cumprod[t - 1]
                };
                (1.0 - prev) / (1.0 - self.alphas_cumprod[t]) * self.betas[t]
            })
            .collect()
    }

    /// An error unless t is a training step (0..T); `op` names the caller.
    pub fn check_timestep(&self, op: &'static str, t: usize) -> Result<()> {
        if t < self.betas.len() {
            Ok(())
        } else {
            Err(arg_error(
                op,
                format!(
                    "timestep {t} is out of range: the schedule has {} training steps (0..{})",
                    self.betas.len(),
                    self.betas.len()
                ),
            ))
        }
    }

    /// abar_t, checked.
    pub fn alpha_bar(&self, t: usize) -> Result<f64> {
        self.check_timestep("NoiseSchedule::alpha_bar", t)?;
        Ok(self.alphas_cumprod[t])
    }

    /// The signal-to-noise ratio of x_t, SNR(t) = abar_t / (1 - abar_t) (Kingma et al.
    /// 2021, "Variational diffusion models": alpha^2 / sigma^2 with alpha^2 = abar_t and
    /// sigma^2 = 1 - abar_t).
    pub fn snr(&self, t: usize) -> Result<f64> {
        self.check_timestep("NoiseSchedule::snr", t)?;
        let a = self.alphas_cumprod[t];
        Ok(a / (1.0 - a))
    }
}
