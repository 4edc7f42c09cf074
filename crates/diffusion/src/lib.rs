//! kuosan's diffusion model: DDPM noise schedules and schedulers (diffusers' split of
//! schedulers from models, one file each), the text-conditioned U-Net, datasets, the
//! trainer and the sampler.
//!
//! ```
//! use kuosan_diffusion::{BetaSchedule, NoiseSchedule};
//! let s = NoiseSchedule::new(BetaSchedule::linear(), 1000)?;
//! assert!((s.alphas_cumprod()[999] - 4.036e-5).abs() < 1e-8);
//! # Ok::<(), kuosan_tensor::Error>(())
//! ```

pub mod config;
pub mod data;
pub mod eval;
pub mod guidance;
pub mod image;
pub mod loss;
pub mod models;
pub mod plot;
pub mod run;
pub mod sample;
pub mod schedule;
pub mod scheduler;
pub mod text_pretrain;
pub mod timesteps;
pub mod train;
pub mod unet;

pub use guidance::{
    classifier_free_guidance, double_batch, guide, rescale_guidance, split_batch, Guidance,
};
pub use loss::{
    diffusion_loss, diffusion_loss_weighted, edge_weights, min_snr_weights, p_losses, q_sample,
    snr_clamp_weights, LossConfig, Prediction, MIN_SNR_GAMMA,
};
pub use schedule::{BetaSchedule, NoiseSchedule};
pub use scheduler::{
    inference_timesteps, initial_noise, p_sample_loop, DdimConfig, DdimScheduler, DdpmConfig,
    DdpmScheduler, Scheduler, StepOutput, TimestepSpacing,
};

use kuosan_tensor::Error;

/// A bad argument, as the tensor library reports one (`op: msg`).
pub(crate) fn arg_error(op: &'static str, msg: impl Into<String>) -> Error {
    Error::Arg {
        op,
        msg: msg.into(),
    }
}
