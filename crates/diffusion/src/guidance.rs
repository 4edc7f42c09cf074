//! Classifier-free guidance (Ho & Salimans 2022): combine the model's unconditional and
//! text-conditioned outputs as out_uncond + w (out_text - out_uncond), with helpers for
//! running both in one doubled batch.
//!
//! The combination is linear, so it applies to epsilon and v outputs alike. The doubled
//! batch is ordered [uncond; text], as diffusers' pipelines (`noise_pred.chunk(2)`); with
//! a negative prompt, its encoding takes the unconditional half.
//!
//! [`Guidance`] adds what diffusers' `ClassifierFreeGuidance` guider offers beside the
//! scale: `guidance_rescale` (Lin et al. 2023, sec. 3.4) and a `start` / `stop` window
//! of the denoising steps outside which the text-conditioned output is used alone
//! (guidance in a limited interval, Kynkaanniemi et al. 2024).

use crate::arg_error;
use kuosan_tensor::{Result, Tensor};

/// out_uncond + w (out_text - out_uncond): Ho & Salimans 2022's
/// (1 + w') eps(z, c) - w' eps(z) with w = 1 + w'. w = 1 returns `out_text` itself and w = 0 `out_uncond` (exactly,
/// not up to rounding); w > 1 extrapolates away from the unconditional output.
pub fn classifier_free_guidance(
    out_uncond: &Tensor,
    out_text: &Tensor,
    scale: f64,
) -> Result<Tensor> {
    crate::loss::same_shape("classifier_free_guidance", out_uncond, out_text)?;
    if !scale.is_finite() {
        return Err(arg_error(
            "classifier_free_guidance",
            format!("the guidance scale must be finite, got {scale}"),
        ));
    }
    if scale == 1.0 {
        return Ok(out_text.clone());
    }
    if scale == 0.0 {
        return Ok(out_uncond.clone());
    }
    out_uncond.add(&out_text.sub(out_uncond)?.affine(scale, 0.0)?)
}

/// Lin et al. 2023 ("Common Diffusion Noise Schedules and Sample Steps are Flawed"),
/// eq. 15-16: the guided output rescaled, per sample, to the standard deviation of the
/// text-conditioned one, then mixed with the unscaled guided output by `phi` (0: as is,
/// 1: fully rescaled). A large scale inflates the guided output's spread, which shows as
/// over-saturated pictures; diffusers' `rescale_noise_cfg`.
/// guided, out_text: [B, ..]
pub fn rescale_guidance(guided: &Tensor, out_text: &Tensor, phi: f64) -> Result<Tensor> {
    crate::loss::same_shape("rescale_guidance", guided, out_text)?;
    check_rescale("rescale_guidance", phi)?;
    if phi == 0.0 {
        return Ok(guided.clone());
    }
    let axes: Vec<usize> = (1..guided.rank()).collect();
    // Population standard deviations ([B, 1, ..]): diffusers' torch.std is Bessel-corrected,
    // which cancels in the ratio.
    let std = |x: &Tensor| -> Result<Tensor> {
        let centred = x.sub(&x.mean(&axes, true)?)?;
        centred.sqr()?.mean(&axes, true)?.sqrt()
    };
    // A constant guided sample (std 0) has no spread to rescale: its ratio is 1, where
    // diffusers' division would give inf and NaN.
    let (s_text, s_guided) = (std(out_text)?, std(guided)?);
    let zero = Tensor::full(0.0, (), guided.dtype(), guided.device())?;
    let one = Tensor::full(1.0, (), guided.dtype(), guided.device())?;
    let spread = s_guided.gt(&zero)?;
    let ratio = spread.where_cond(&s_text.div(&spread.where_cond(&s_guided, &one)?)?, &one)?;
    // phi (guided ratio) + (1 - phi) guided = guided (phi ratio + 1 - phi): one pass over
    // the full-size output, the factor per sample [B, 1, ..].
    guided.mul(&ratio.affine(phi, 1.0 - phi)?)
}

/// The rescale factor must lie in [0, 1].
fn check_rescale(op: &'static str, phi: f64) -> Result<()> {
    if (0.0..=1.0).contains(&phi) {
        Ok(())
    } else {
        Err(arg_error(
            op,
            format!("guidance_rescale must lie in [0, 1], got {phi}"),
        ))
    }
}

/// How the sampler combines the two outputs at each step: the scale w, the rescale
/// factor, and the window of denoising steps [start, stop), as fractions of the steps
/// run, in which guidance applies (diffusers' guider: step i is guided when
/// floor(start N) <= i < floor(stop N)). Outside the window, or with w = 1, a step runs
/// the text-conditioned pass alone: half the work.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Guidance {
    pub scale: f64,
    pub rescale: f64,
    pub start: f64,
    pub stop: f64,
}

impl Guidance {
    /// Plain classifier-free guidance at `scale` for every step.
    pub fn scale(scale: f64) -> Guidance {
        Guidance {
            scale,
            rescale: 0.0,
            start: 0.0,
            stop: 1.0,
        }
    }

    /// Checks the settings, naming the one that is out of range.
    pub fn check(&self) -> Result<()> {
        let bad = |what: String| Err(arg_error("guidance", what));
        if !self.scale.is_finite() {
            return bad(format!(
                "the guidance scale must be finite, got {}",
                self.scale
            ));
        }
        check_rescale("guidance", self.rescale)?;
        if !(0.0 <= self.start && self.start < self.stop && self.stop <= 1.0) {
            return bad(format!(
                "the guidance window needs 0 <= start < stop <= 1 (fractions of the steps), got start {} and stop {}",
                self.start, self.stop
            ));
        }
        Ok(())
    }

    /// Whether step `i` (0: the noisiest) of `steps` runs both passes.
    pub fn active_at(&self, i: usize, steps: usize) -> bool {
        let (lo, hi) = (
            (self.start * steps as f64) as usize,
            (self.stop * steps as f64) as usize,
        );
        self.scale != 1.0 && lo <= i && i < hi
    }

    /// Whether any of `steps` steps runs both passes (the unconditional prompt is then
    /// encoded).
    pub fn any_active(&self, steps: usize) -> bool {
        (0..steps).any(|i| self.active_at(i, steps))
    }

    /// The guided output of a doubled batch [uncond; text]: [`guide`], then
    /// [`rescale_guidance`] against the text half.
    pub fn apply(&self, doubled_output: &Tensor) -> Result<Tensor> {
        let (uncond, text) = split_batch(doubled_output)?;
        let guided = classifier_free_guidance(&uncond, &text, self.scale)?;
        rescale_guidance(&guided, &text, self.rescale)
    }
}

/// `x` twice along axis 0, [x; x]: the model input for one pass over both halves.
pub fn double_batch(x: &Tensor) -> Result<Tensor> {
    if x.rank() == 0 {
        return Err(arg_error(
            "double_batch",
            "a batch needs an axis 0; got a scalar",
        ));
    }
    Tensor::cat(&[x, x], 0)
}

/// Splits a doubled batch [2B, ..] into its (uncond, text) halves [B, ..] (views).
pub fn split_batch(doubled: &Tensor) -> Result<(Tensor, Tensor)> {
    let n = doubled.dims().first().copied().unwrap_or(0);
    if doubled.rank() == 0 || n % 2 != 0 || n == 0 {
        return Err(arg_error(
            "split_batch",
            format!(
                "expects a doubled batch [uncond; text] with an even, nonzero axis 0, got shape {}",
                doubled.shape()
            ),
        ));
    }
    Ok((
        doubled.narrow(0, 0, n / 2)?,
        doubled.narrow(0, n / 2, n / 2)?,
    ))
}

/// Guidance on a doubled batch's output: split it, then [`classifier_free_guidance`].
pub fn guide(doubled_output: &Tensor, scale: f64) -> Result<Tensor> {
    let (uncond, text) = split_batch(doubled_output)?;
    classifier_free_guidance(&uncond, &text, scale)
}
