//! The training objective: forward noising q_sample, epsilon and v targets, and the MSE
//! loss with optional min-SNR-gamma weighting, all as tensor ops (autograd, any device).
//!
//! Timesteps are a host slice of step indices, one per sample (`t[b]` for sample b):
//! the trainer draws them on the host, they are checked there (a bad index is a clear
//! error, not a device fault), and each per-sample coefficient is computed in f64 and
//! uploaded once as a [B, 1, .., 1] tensor that broadcasts over the sample's other axes.

use crate::{arg_error, NoiseSchedule};
use kuosan_tensor::{DType, Device, Result, Tensor};

/// The gamma of min-SNR weighting that Hang et al. 2023 use by default.
pub const MIN_SNR_GAMMA: f64 = 5.0;

/// What the network predicts from x_t (diffusers' `prediction_type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Prediction {
    /// The noise eps that made x_t (Ho et al. 2020, eq. 11-12).
    #[default]
    Epsilon,
    /// The velocity v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022, §4 and
    /// appendix D; diffusers' "v_prediction").
    V,
}

impl Prediction {
    /// The prediction diffusers names `name` ("epsilon", "v_prediction").
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "epsilon" => Some(Prediction::Epsilon),
            "v_prediction" => Some(Prediction::V),
            _ => None,
        }
    }

    /// diffusers' name for it ("epsilon", "v_prediction").
    pub fn as_str(self) -> &'static str {
        match self {
            Prediction::Epsilon => "epsilon",
            Prediction::V => "v_prediction",
        }
    }

    /// The regression target for clean data `x0` noised with `noise` at steps `t`: eps,
    /// or v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0.
    pub fn target(
        self,
        x0: &Tensor,
        noise: &Tensor,
        t: &[usize],
        schedule: &NoiseSchedule,
    ) -> Result<Tensor> {
        same_shape("Prediction::target", x0, noise)?;
        match self {
            Prediction::Epsilon => {
                check_steps("Prediction::target", x0, t, schedule)?;
                Ok(noise.clone())
            }
            Prediction::V => {
                let (sa, s1a) = coefficients("Prediction::target", x0, t, schedule)?;
                noise.mul(&sa)?.sub(&x0.mul(&s1a)?)
            }
        }
    }

    /// The clean sample x0 implied by a model output at a step with abar_t = `alpha_prod`:
    /// eps: x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) (Ho et al. 2020 eq. 15, DDIM eq. 12's
    /// "predicted x0"); v: x0 = sqrt(abar) x_t - sqrt(1 - abar) v (Salimans & Ho 2022).
    pub fn pred_original_sample(
        self,
        model_output: &Tensor,
        sample: &Tensor,
        alpha_prod: f64,
    ) -> Result<Tensor> {
        same_shape("pred_original_sample", model_output, sample)?;
        let (sa, s1a) = (alpha_prod.sqrt(), (1.0 - alpha_prod).sqrt());
        match self {
            Prediction::Epsilon => lincomb(1.0 / sa, sample, -s1a / sa, model_output),
            Prediction::V => lincomb(sa, sample, -s1a, model_output),
        }
    }

    /// The noise eps implied by a model output at abar_t = `alpha_prod`: eps itself, or
    /// eps = sqrt(abar) v + sqrt(1 - abar) x_t for v.
    pub fn pred_epsilon(
        self,
        model_output: &Tensor,
        sample: &Tensor,
        alpha_prod: f64,
    ) -> Result<Tensor> {
        same_shape("pred_epsilon", model_output, sample)?;
        match self {
            Prediction::Epsilon => Ok(model_output.clone()),
            Prediction::V => lincomb(
                alpha_prod.sqrt(),
                model_output,
                (1.0 - alpha_prod).sqrt(),
                sample,
            ),
        }
    }
}

/// How the loss is formed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossConfig {
    pub prediction: Prediction,
    /// Min-SNR-gamma weighting (Hang et al. 2023) with this gamma: the weight on the x0
    /// error is capped at gamma.
    pub min_snr_gamma: Option<f64>,
    /// A floor under the weight on the x0 error (Salimans & Ho 2022's "truncated SNR",
    /// max(SNR, 1), with floor 1): the noisiest steps, where the prompt decides the
    /// layout, keep teaching. With neither (None, None): plain MSE.
    pub snr_floor: Option<f64>,
    /// Extra weight on the pixels at the clean picture's edges ([`edge_weights`]): a
    /// pixel where x0 changes sharply within its 3 x 3 neighbourhood counts up to
    /// 1 + `edge_weight` times as much as a flat one. A shape is decided by the few
    /// pixels along its outline (a square's corners, which a circle leaves dark), which
    /// a plain per-pixel mean weighs like any pixel of background. None or 0: off.
    pub edge_weight: Option<f64>,
}

impl LossConfig {
    /// The per-pixel weights this loss puts on clean pictures `x0` [B, C, H, W]:
    /// [`edge_weights`] when `edge_weight` is on, else None (all pixels alike).
    pub fn pixel_weights(&self, x0: &Tensor) -> Result<Option<Tensor>> {
        self.edge_weight
            .filter(|&a| a != 0.0)
            .map(|a| edge_weights(x0, a))
            .transpose()
    }
}

impl Default for LossConfig {
    /// Epsilon prediction, plain MSE (Ho et al. 2020's L_simple, eq. 14).
    fn default() -> Self {
        LossConfig {
            prediction: Prediction::Epsilon,
            min_snr_gamma: None,
            snr_floor: None,
            edge_weight: None,
        }
    }
}

/// The forward process in closed form, x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps
/// (Ho et al. 2020, eq. 4 reparametrised as in Algorithm 1), with `t[b]` the step of
/// sample b (axis 0 of `x0`); `noise` has x0's shape.
pub fn q_sample(
    x0: &Tensor,
    t: &[usize],
    noise: &Tensor,
    schedule: &NoiseSchedule,
) -> Result<Tensor> {
    same_shape("q_sample", x0, noise)?;
    let (sa, s1a) = coefficients("q_sample", x0, t, schedule)?;
    x0.mul(&sa)?.add(&noise.mul(&s1a)?)
}

/// Min-SNR-gamma loss weights (Hang et al. 2023, "Efficient diffusion training via
/// Min-SNR weighting strategy"), one per step in `t`:
/// min(SNR_t, gamma) / SNR_t for epsilon prediction, min(SNR_t, gamma) / (SNR_t + 1) for
/// v prediction, with SNR_t = abar_t / (1 - abar_t). Both make the effective weight on
/// the x0 error min(SNR_t, gamma), so high-SNR (nearly clean) steps stop dominating.
pub fn min_snr_weights(
    t: &[usize],
    schedule: &NoiseSchedule,
    prediction: Prediction,
    gamma: f64,
) -> Result<Vec<f64>> {
    snr_clamp_weights(t, schedule, prediction, 0.0, gamma)
}

/// Loss weights that make the effective weight on the x0 error
/// min(max(SNR_t, floor), gamma): min-SNR-gamma's cap on the nearly clean steps (Hang et
/// al. 2023) and Salimans & Ho 2022's floor (their "truncated SNR" weighting is
/// max(SNR, 1)) under the noisiest ones. The eps and v losses weigh the x0 error by SNR
/// and SNR + 1 themselves, so the weight is the clamp over those. floor 0, gamma
/// infinite: all weights 1.
pub fn snr_clamp_weights(
    t: &[usize],
    schedule: &NoiseSchedule,
    prediction: Prediction,
    floor: f64,
    gamma: f64,
) -> Result<Vec<f64>> {
    if gamma.is_nan() || gamma <= 0.0 {
        return Err(arg_error(
            "snr weights",
            format!("min_snr_gamma must be positive, got {gamma}"),
        ));
    }
    if !(floor >= 0.0 && floor.is_finite() && floor <= gamma) {
        return Err(arg_error(
            "snr weights",
            format!("snr_floor must be finite, >= 0 and <= min_snr_gamma ({gamma}), got {floor}"),
        ));
    }
    t.iter()
        .map(|&t| {
            let snr = schedule.snr(t)?;
            let w = snr.max(floor).min(gamma);
            Ok(match prediction {
                Prediction::Epsilon => w / snr,
                Prediction::V => w / (snr + 1.0),
            })
        })
        .collect()
}

/// The diffusion loss of a model output against its target: the per-sample mean squared
/// error, weighted per sample by the SNR clamp when `config` asks, averaged over the
/// batch; a rank-0 tensor that backpropagates into `model_output`. Without weighting
/// it is the plain MSE, L_simple (Ho et al. 2020, eq. 14).
pub fn diffusion_loss(
    model_output: &Tensor,
    x0: &Tensor,
    noise: &Tensor,
    t: &[usize],
    schedule: &NoiseSchedule,
    config: &LossConfig,
) -> Result<Tensor> {
    same_shape("diffusion_loss", model_output, x0)?;
    let m = config.pixel_weights(x0)?;
    diffusion_loss_weighted(model_output, x0, noise, t, schedule, config, m.as_ref())
}

/// [`diffusion_loss`] with the per-pixel weights `config.pixel_weights(x0)` gave
/// computed ahead: the trainer does so before the forward, so that reading x0 back from
/// a GPU does not stall the step in its middle.
pub fn diffusion_loss_weighted(
    model_output: &Tensor,
    x0: &Tensor,
    noise: &Tensor,
    t: &[usize],
    schedule: &NoiseSchedule,
    config: &LossConfig,
    pixel_weights: Option<&Tensor>,
) -> Result<Tensor> {
    same_shape("diffusion_loss", model_output, x0)?;
    if t.is_empty() {
        return Err(arg_error(
            "diffusion_loss",
            "the batch is empty: the mean of no samples is undefined",
        ));
    }
    let target = config.prediction.target(x0, noise, t, schedule)?;
    let mut sq = model_output.sub(&target)?.sqr()?;
    if let Some(m) = pixel_weights {
        sq = sq.mul(m)?;
    }
    match (config.snr_floor, config.min_snr_gamma) {
        (None, None) => sq.mean_all(),
        (floor, gamma) => {
            let (floor, gamma) = (floor.unwrap_or(0.0), gamma.unwrap_or(f64::INFINITY));
            let w = snr_clamp_weights(t, schedule, config.prediction, floor, gamma)?;
            let rest: Vec<usize> = (1..sq.rank()).collect();
            let per_sample = sq.mean(&rest, false)?; // [B]
            let w = host_tensor(w, &[t.len()], sq.dtype(), sq.device())?;
            per_sample.mul(&w)?.mean_all()
        }
    }
}

/// Per-pixel loss weights that favour the edges of clean pictures `x0` [B, C, H, W]:
/// m = 1 + alpha * g with g the morphological gradient (the largest |x0(p) - x0(q)| over
/// the channels and the 3 x 3 neighbours q of pixel p, over 2, the range of [-1, 1]
/// data; so g is in [0, 1]), scaled per picture to mean 1 so that the loss keeps its
/// size and only its spread over the pixels changes. Returns [B, 1, H, W] in x0's dtype
/// and device, computed on the host (x0 is data: no gradient flows into it).
pub fn edge_weights(x0: &Tensor, alpha: f64) -> Result<Tensor> {
    if !(alpha >= 0.0 && alpha.is_finite()) {
        return Err(arg_error(
            "edge_weights",
            format!("edge_weight must be a finite number >= 0, got {alpha}"),
        ));
    }
    let &[b, c, h, w] = x0.dims() else {
        return Err(arg_error(
            "edge_weights",
            format!(
                "x0 has shape {}: edge weights need pictures [B, C, H, W]",
                x0.shape()
            ),
        ));
    };
    let v = x0.to_vec_f64()?;
    let mut m = vec![0.0f64; b * h * w];
    for (bi, mb) in m.chunks_mut(h * w).enumerate() {
        for y in 0..h {
            for x in 0..w {
                let mut g = 0.0f64;
                for ci in 0..c {
                    let plane = &v[(bi * c + ci) * h * w..][..h * w];
                    let p = plane[y * w + x];
                    for ny in y.saturating_sub(1)..(y + 2).min(h) {
                        for nx in x.saturating_sub(1)..(x + 2).min(w) {
                            g = g.max((p - plane[ny * w + nx]).abs());
                        }
                    }
                }
                mb[y * w + x] = 1.0 + alpha * (g / 2.0).min(1.0);
            }
        }
        let mean = mb.iter().sum::<f64>() / (h * w) as f64;
        mb.iter_mut().for_each(|e| *e /= mean);
    }
    host_tensor(m, &[b, 1, h, w], x0.dtype(), x0.device())
}

/// One training loss evaluation in the shape of lucidrains' `p_losses`: noise `x0` to
/// steps `t` with `noise` (q_sample), run `model(x_t, t)`, and return [`diffusion_loss`].
pub fn p_losses(
    model: impl FnOnce(&Tensor, &[usize]) -> Result<Tensor>,
    x0: &Tensor,
    t: &[usize],
    noise: &Tensor,
    schedule: &NoiseSchedule,
    config: &LossConfig,
) -> Result<Tensor> {
    let x_t = q_sample(x0, t, noise, schedule)?;
    let out = model(&x_t, t)?;
    diffusion_loss(&out, x0, noise, t, schedule, config)
}

/// An error unless `t` holds one valid training step per sample of `like` (axis 0).
fn check_steps(
    op: &'static str,
    like: &Tensor,
    t: &[usize],
    schedule: &NoiseSchedule,
) -> Result<()> {
    if like.rank() == 0 || like.dims()[0] != t.len() {
        return Err(arg_error(
            op,
            format!(
                "{} timesteps for a batch of shape {}: give one timestep per sample (axis 0)",
                t.len(),
                like.shape()
            ),
        ));
    }
    for &ti in t {
        schedule.check_timestep(op, ti)?;
    }
    Ok(())
}

/// Per-sample sqrt(abar_t) and sqrt(1 - abar_t) as [B, 1, .., 1] tensors in `like`'s
/// dtype and device, after checking that `t` has one valid step per sample.
fn coefficients(
    op: &'static str,
    like: &Tensor,
    t: &[usize],
    schedule: &NoiseSchedule,
) -> Result<(Tensor, Tensor)> {
    check_steps(op, like, t, schedule)?;
    let batch = t.len();
    let abar = schedule.alphas_cumprod();
    let mut shape = vec![1; like.rank()];
    shape[0] = batch;
    let sa = t.iter().map(|&i| abar[i].sqrt()).collect();
    let s1a = t.iter().map(|&i| (1.0 - abar[i]).sqrt()).collect();
    Ok((
        host_tensor(sa, &shape, like.dtype(), like.device())?,
        host_tensor(s1a, &shape, like.dtype(), like.device())?,
    ))
}

/// f64 host values as a tensor of `dtype` on `device` (rounded once, on the host).
pub(crate) fn host_tensor(
    values: Vec<f64>,
    shape: &[usize],
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    Tensor::from_vec(values, shape, &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)
}

/// a x + b y for tensors of one shape.
pub(crate) fn lincomb(a: f64, x: &Tensor, b: f64, y: &Tensor) -> Result<Tensor> {
    x.affine(a, 0.0)?.add(&y.affine(b, 0.0)?)
}

/// An error unless `a` and `b` have the same shape (broadcasting between a prediction and
/// its target would silently compute the wrong thing).
pub(crate) fn same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() == b.shape() {
        Ok(())
    } else {
        Err(arg_error(
            op,
            format!(
                "shapes {} and {} differ: they must be equal",
                a.shape(),
                b.shape()
            ),
        ))
    }
}
