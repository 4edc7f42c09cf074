//! Classifier-free guidance (Ho & Salimans 2022): combine the model's unconditional and
//! text-conditioned outputs as out_uncond + w (out_text - out_uncond), with helpers for
//! running both in one doubled batch.
//!
//! The combination is linear, so it applies to epsilon and v outputs alike. The doubled
//! batch is ordered [uncond; text], as diffusers' pipelines (`noise_pred.chunk(2)`); with
//! a negative prompt, its encoding takes the unconditional half.

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
