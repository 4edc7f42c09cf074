//! The classifier-free guidance flags `sample` and `eval` share: scale, rescale and the
//! window of guided steps (diffusers' `ClassifierFreeGuidance` guider's settings).

use clap::Args;
use kuosan_diffusion::Guidance;

#[derive(Args)]
pub struct GuidanceArgs {
    /// Classifier-free guidance scale (1 disables it).
    #[arg(long, default_value_t = 4.0)]
    guidance: f64,
    /// diffusers' guidance_rescale (Lin et al. 2023): pull the guided output's spread
    /// back towards the text-conditioned one's, 0 (off) to 1.
    #[arg(long, default_value_t = 0.0)]
    guidance_rescale: f64,
    /// The fraction of the steps after which guidance starts (0: from the first, the
    /// noisiest); the steps before it run the prompt's pass alone.
    #[arg(long, default_value_t = 0.0)]
    guidance_start: f64,
    /// The fraction of the steps after which guidance stops (1: to the last); the steps
    /// after it run the prompt's pass alone.
    #[arg(long, default_value_t = 1.0)]
    guidance_stop: f64,
}

impl GuidanceArgs {
    /// The settings, checked: a clear error names the flag out of range.
    pub fn to_guidance(&self) -> Result<Guidance, String> {
        let g = Guidance {
            scale: self.guidance,
            rescale: self.guidance_rescale,
            start: self.guidance_start,
            stop: self.guidance_stop,
        };
        g.check().map_err(|e| {
            format!("{e} (flags --guidance, --guidance-rescale, --guidance-start, --guidance-stop)")
        })?;
        Ok(g)
    }
}
