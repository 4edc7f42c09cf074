//! Noise schedules, q_sample and the training targets, min-SNR weights, guidance, and the
//! DDPM and DDIM samplers, against closed forms, diffusers' numbers and hand computation;
//! then the samplers run from pure noise on Gaussian data, where the optimal denoiser is
//! known exactly, and must reproduce the data distribution.
//!
//! # The Gaussian oracle
//!
//! Take data x0 ~ N(mu, s^2) in each dimension, and x_t = sqrt(a) x0 + sqrt(1 - a) eps with
//! a = abar_t and eps ~ N(0, 1) independent of x0. Then (x0, eps, x_t) are jointly
//! Gaussian, with Var(x_t) = a s^2 + 1 - a =: v_t, Cov(eps, x_t) = sqrt(1 - a) and
//! Cov(x0, x_t) = sqrt(a) s^2. The model minimising E|model(x_t) - eps|^2 is the
//! conditional mean, which for jointly Gaussian variables is linear:
//!
//!   eps*(x_t) = E[eps | x_t] = sqrt(1 - a) (x_t - sqrt(a) mu) / v_t,
//!   x0*(x_t)  = E[x0 | x_t]  = mu + sqrt(a) s^2 (x_t - sqrt(a) mu) / v_t,
//!   v*(x_t)   = E[v | x_t]   = sqrt(a) eps*(x_t) - sqrt(1 - a) x0*(x_t)
//!
//! (v = sqrt(a) eps - sqrt(1 - a) x0 is linear in (eps, x0), so its conditional mean is the
//! same combination of theirs). Driven by this oracle, every sampler step is an affine
//! map x_prev = A x_t + B + sigma z, so the output is exactly Gaussian, and its mean and
//! variance follow from the start N(0, 1) by m <- A m + B, v <- A^2 v + sigma^2. That
//! recursion (`chain_moments`, in f64, written from the papers' equations) gives the
//! moments each sampler must produce; the empirical moments of 20000 samples per
//! channel must match them to within 5 standard errors. The chains themselves converge
//! to N(mu, s^2) as the step count grows (checked separately, `chains_converge_to_the_data`),
//! but not exactly for few steps: deterministic DDIM shrinks the variance unless s = 1
//! (Cauchy-Schwarz on its step), and DDPM's fixed-small variance drops the spread of
//! x0 given x_t (Bao et al. 2022, "Analytic-DPM"), so "matches mu and s^2" is asserted at
//! the exact moments of the discrete chain, with its distance from (mu, s^2) printed.

use crate::harness::{assert_close, gpu};
use kuosan_diffusion::*;
use kuosan_tensor::{DType, Device, Philox, Tensor};

// ---- helpers ----------------------------------------------------------------------

fn linear() -> NoiseSchedule {
    NoiseSchedule::new(BetaSchedule::linear(), 1000).unwrap()
}

fn cosine() -> NoiseSchedule {
    NoiseSchedule::new(BetaSchedule::cosine(), 1000).unwrap()
}

fn f32s(t: &Tensor) -> Vec<f64> {
    t.to_vec_f64().unwrap()
}

fn tensor(values: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(values.to_vec(), shape, &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
}

/// `n` standard normals (f64 of f32 values) from a seed.
fn normals(n: usize, seed: u64) -> Vec<f64> {
    Philox::new(seed)
        .normal_f32(n)
        .into_iter()
        .map(f64::from)
        .collect()
}

/// The message of an expected error.
#[track_caller]
fn err_text<T: std::fmt::Debug>(r: kuosan_tensor::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

#[track_caller]
fn assert_err_contains<T: std::fmt::Debug>(r: kuosan_tensor::Result<T>, needle: &str) {
    let e = err_text(r);
    assert!(
        e.contains(needle),
        "error {e:?} does not mention {needle:?}"
    );
}

// ---- schedules ----------------------------------------------------------------------

#[test]
fn linear_schedule_closed_form_and_diffusers_numbers() {
    let s = linear();
    assert_eq!(s.num_train_timesteps(), 1000);
    let b = s.betas();
    for i in [0, 1, 500, 998, 999] {
        let want = 1e-4 + (0.02 - 1e-4) * i as f64 / 999.0;
        assert!((b[i] - want).abs() < 1e-15, "beta[{i}] {} vs {want}", b[i]);
    }
    // abar_t = exp(sum ln(1 - beta)), computed another way.
    let mut log = 0.0;
    for (t, &beta) in b.iter().enumerate() {
        log += (1.0 - beta).ln();
        let rel = (s.alphas_cumprod()[t] / log.exp() - 1.0).abs();
        assert!(rel < 1e-12, "abar[{t}] off by {rel:e}");
        assert_eq!(s.alphas()[t], 1.0 - beta);
    }
    // DDPM's linear schedule ends at abar_999 = 4.036e-5 (sqrt 0.006353), the value
    // diffusers' DDPMScheduler holds (to its float32 rounding).
    let last = s.alphas_cumprod()[999];
    assert!((last - 4.0358e-5).abs() < 1e-9, "abar[999] = {last:e}");
    assert!((s.sqrt_alphas_cumprod()[999] - 0.006_352_8).abs() < 1e-7);
    assert!((s.alphas_cumprod()[0] - 0.9999).abs() < 1e-15);
    // Helpers and SNR.
    for t in [0, 10, 500, 999] {
        let a = s.alphas_cumprod()[t];
        assert_eq!(s.alpha_bar(t).unwrap(), a);
        assert_eq!(s.sqrt_alphas_cumprod()[t], a.sqrt());
        assert_eq!(s.sqrt_one_minus_alphas_cumprod()[t], (1.0 - a).sqrt());
        assert!((s.snr(t).unwrap() - a / (1.0 - a)).abs() <= 1e-12 * a / (1.0 - a));
    }
    assert!((0..999).all(|t| s.snr(t).unwrap() > s.snr(t + 1).unwrap()));
    // Posterior variance, Ho et al. eq. 7: 0 at t = 0, below beta_t after.
    let pv = s.posterior_variance();
    assert_eq!(pv[0], 0.0);
    for t in [1, 100, 999] {
        let a = s.alphas_cumprod();
        let want = (1.0 - a[t - 1]) / (1.0 - a[t]) * b[t];
        assert!((pv[t] - want).abs() < 1e-18 && pv[t] < b[t]);
    }
    assert_eq!(NoiseSchedule::default(), s);
}

#[test]
fn scaled_linear_schedule_matches_stable_diffusion() {
    let s = NoiseSchedule::new(BetaSchedule::scaled_linear(), 1000).unwrap();
    let b = s.betas();
    assert!((b[0] - 0.00085).abs() < 1e-15 && (b[999] - 0.012).abs() < 1e-15);
    // sqrt(beta) is evenly spaced.
    let d = b[1].sqrt() - b[0].sqrt();
    for i in 1..1000 {
        assert!((b[i].sqrt() - b[i - 1].sqrt() - d).abs() < 1e-14);
    }
    // Stable Diffusion's terminal values (Lin et al. 2024, "Common diffusion noise
    // schedules and sample steps are flawed"): sqrt(abar_T) = 0.068265,
    // SNR(T) = 0.004682.
    assert!(
        (s.sqrt_alphas_cumprod()[999] - 0.068265).abs() < 2e-6,
        "{}",
        s.sqrt_alphas_cumprod()[999]
    );
    assert!((s.snr(999).unwrap() - 0.004682).abs() < 1e-6);
}

#[test]
fn cosine_schedule_endpoints_and_telescoping() {
    let s = cosine();
    let f = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
            .cos()
            .powi(2)
    };
    let (b, a) = (s.betas(), s.alphas_cumprod());
    assert!((b[0] - (1.0 - f(0.001) / f(0.0))).abs() < 1e-15);
    // Only the last beta reaches the 0.999 cap (diffusers' max_beta).
    assert_eq!(b[999], 0.999);
    assert!(b[998] < 0.999 && b[998] > 0.7);
    // Unclipped, the product telescopes: abar_t = f((t + 1) / T) / f(0) (eq. 17).
    for t in [0, 1, 250, 500, 900, 998] {
        let want = f((t + 1) as f64 / 1000.0) / f(0.0);
        assert!(
            (a[t] / want - 1.0).abs() < 1e-10,
            "abar[{t}] {} vs {want}",
            a[t]
        );
    }
    assert!((a[999] / (a[998] * 0.001) - 1.0).abs() < 1e-12);
    assert!(a[999] < 3e-9 && a[0] > 0.99995);
}

#[test]
fn schedule_bad_arguments_are_errors() {
    assert_err_contains(NoiseSchedule::new(BetaSchedule::linear(), 0), "at least 1");
    for bad in [0.0, 1.0, -0.1, f64::NAN, 1.5] {
        assert_err_contains(NoiseSchedule::from_betas(vec![0.1, bad]), "beta[1]");
    }
    assert!(NoiseSchedule::from_betas(vec![]).is_err());
    assert_err_contains(
        NoiseSchedule::new(
            BetaSchedule::Linear {
                beta_start: 0.0,
                beta_end: 0.02,
            },
            10,
        ),
        "strictly between 0 and 1",
    );
    assert!(NoiseSchedule::new(
        BetaSchedule::ScaledLinear {
            beta_start: -1.0,
            beta_end: 0.01
        },
        10
    )
    .is_err());
    let s = linear();
    assert_err_contains(s.snr(1000), "timestep 1000 is out of range");
    assert!(s.alpha_bar(usize::MAX).is_err());
    // One step is fine (torch.linspace with one point gives the start).
    let one = NoiseSchedule::new(BetaSchedule::linear(), 1).unwrap();
    assert_eq!(one.betas(), &[1e-4]);
}

// ---- timesteps ----------------------------------------------------------------------

#[test]
fn inference_timesteps_match_diffusers() {
    use TimestepSpacing::*;
    let ts = |n, sp, off| inference_timesteps(1000, n, sp, off).unwrap();
    // Stable Diffusion: leading, steps_offset 1, 50 steps: 981, 961, ..., 1.
    let sd = ts(50, Leading, 1);
    assert_eq!(sd.len(), 50);
    assert_eq!(sd[..3], [981, 961, 941]);
    assert_eq!(*sd.last().unwrap(), 1);
    assert_eq!(
        ts(10, Leading, 0),
        [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    );
    assert_eq!(ts(3, Leading, 1), [667, 334, 1]);
    assert_eq!(ts(1000, Leading, 0), (0..1000).rev().collect::<Vec<_>>());
    let tr = ts(50, Trailing, 1);
    assert_eq!((tr[0], tr[1], tr[49]), (999, 979, 19));
    assert_eq!(ts(3, Trailing, 0), [999, 666, 332]);
    assert_eq!(ts(5, Linspace, 0), [999, 749, 500, 250, 0]);
    // NumPy rounds half to even: linspace(0, 5, 3) = 0, 2.5, 5 -> 0, 2, 5.
    assert_eq!(inference_timesteps(6, 3, Linspace, 0).unwrap(), [5, 2, 0]);
    assert_eq!(ts(1, Linspace, 0), [0]);
    assert_eq!(ts(1, Trailing, 0), [999]);

    assert_err_contains(inference_timesteps(1000, 0, Leading, 0), "at least 1");
    assert_err_contains(inference_timesteps(1000, 1001, Leading, 0), "at most 1000");
    assert_err_contains(
        inference_timesteps(1000, 1000, Leading, 1),
        "steps_offset 1",
    );

    let ddpm = DdpmScheduler::new(linear(), DdpmConfig::default()).unwrap();
    assert_eq!(ddpm.timesteps(), (0..1000).rev().collect::<Vec<_>>());
    let ddim = DdimScheduler::new(linear(), DdimConfig::default()).unwrap();
    assert_eq!(ddim.timesteps(), sd);
}

// ---- q_sample, targets, losses ------------------------------------------------------

#[test]
fn q_sample_targets_and_min_snr_weights_by_hand() {
    let s = linear();
    let shape = [3, 2, 1, 2];
    let n = 12;
    let x0v: Vec<f64> = (0..n).map(|i| (i as f64 - 5.0) / 4.0).collect();
    let ev = normals(n, 3);
    let (x0, eps) = (tensor(&x0v, &shape), tensor(&ev, &shape));
    let t = [0usize, 500, 999];
    let xt = q_sample(&x0, &t, &eps, &s).unwrap();
    let v = Prediction::V.target(&x0, &eps, &t, &s).unwrap();
    let e = Prediction::Epsilon.target(&x0, &eps, &t, &s).unwrap();
    let (mut want_xt, mut want_v) = (vec![], vec![]);
    for i in 0..n {
        let a = s.alphas_cumprod()[t[i / 4]];
        // x0 and eps as the f32 tensors hold them.
        let (x, z) = (x0v[i] as f32 as f64, ev[i]);
        want_xt.push(a.sqrt() * x + (1.0 - a).sqrt() * z);
        want_v.push(a.sqrt() * z - (1.0 - a).sqrt() * x);
    }
    assert_close("q_sample", &f32s(&xt), &want_xt, 1e-6, 1e-6);
    assert_close("v target", &f32s(&v), &want_v, 1e-6, 1e-6);
    assert_eq!(f32s(&e), f32s(&eps));
    let ddpm = DdpmScheduler::new(s.clone(), DdpmConfig::default()).unwrap();
    assert_eq!(f32s(&ddpm.add_noise(&x0, &eps, &t).unwrap()), f32s(&xt));

    // Back from x_t and the model output to x0 and eps, both parametrisations.
    for (k, &ti) in t.iter().enumerate() {
        let a = s.alphas_cumprod()[ti];
        let row = |x: &Tensor| x.narrow(0, k, 1).unwrap();
        for (p, out) in [(Prediction::Epsilon, &eps), (Prediction::V, &v)] {
            let x0_hat = p.pred_original_sample(&row(out), &row(&xt), a).unwrap();
            let eps_hat = p.pred_epsilon(&row(out), &row(&xt), a).unwrap();
            // Dividing by sqrt(abar) = 0.0064 at t = 999 magnifies f32 rounding.
            let tol = if p == Prediction::Epsilon && ti == 999 {
                2e-4
            } else {
                2e-6
            };
            assert_close("x0 from output", &f32s(&x0_hat), &f32s(&row(&x0)), tol, tol);
            assert_close(
                "eps from output",
                &f32s(&eps_hat),
                &f32s(&row(&eps)),
                2e-6,
                2e-6,
            );
        }
    }

    // The clamp min(max(snr, 1), 5) on the x0 weight, over / (snr) for eps and / (snr + 1)
    // for v, at steps below, inside and above [1, 5].
    let tc = [3usize, 250, 600, 990];
    let snrc: Vec<f64> = tc.iter().map(|&ti| s.snr(ti).unwrap()).collect();
    assert!(snrc.iter().any(|&x| x > 5.0) && snrc.iter().any(|&x| x < 1.0));
    assert!(snrc.iter().any(|&x| (1.0..=5.0).contains(&x)), "{snrc:?}");
    for (prediction, div) in [(Prediction::Epsilon, 0.0), (Prediction::V, 1.0)] {
        let w = snr_clamp_weights(&tc, &s, prediction, 1.0, 5.0).unwrap();
        for (k, &x) in snrc.iter().enumerate() {
            let want = x.clamp(1.0, 5.0) / (x + div);
            assert!(
                (w[k] - want).abs() < 1e-15,
                "{prediction:?} t {}: {} vs {want}",
                tc[k],
                w[k]
            );
        }
    }
    // No floor is min-SNR, bit for bit; a floor above the cap is refused.
    assert_eq!(
        snr_clamp_weights(&tc, &s, Prediction::V, 0.0, 5.0).unwrap(),
        min_snr_weights(&tc, &s, Prediction::V, 5.0).unwrap()
    );
    assert!(snr_clamp_weights(&tc, &s, Prediction::V, 6.0, 5.0).is_err());

    // Min-SNR-gamma (gamma 5): min(snr, 5) / snr for eps, min(snr, 5) / (snr + 1) for v.
    let snr: Vec<f64> = t.iter().map(|&ti| s.snr(ti).unwrap()).collect();
    assert!(snr[0] > 5.0 && snr[2] < 5.0);
    let we = min_snr_weights(&t, &s, Prediction::Epsilon, MIN_SNR_GAMMA).unwrap();
    let wv = min_snr_weights(&t, &s, Prediction::V, MIN_SNR_GAMMA).unwrap();
    for k in 0..3 {
        let m = snr[k].min(5.0);
        assert!((we[k] - m / snr[k]).abs() < 1e-15);
        assert!((wv[k] - m / (snr[k] + 1.0)).abs() < 1e-15);
    }
    assert!((we[0] - 5.0 / snr[0]).abs() < 1e-15 && we[2] == 1.0);
}

/// Checks a rank-0 `loss` of `out` against the weighted mean of squared errors,
/// sum_i weight(i) (out_i - target_i)^2 / n, and its gradient 2 weight(i) (out_i -
/// target_i) / n after backward; returns the loss.
fn assert_weighted_mse(
    loss: &Tensor,
    out: &Tensor,
    target: &[f64],
    weight: impl Fn(usize) -> f64,
    what: &str,
) -> f64 {
    let o = f32s(out);
    let n = o.len();
    let (mut want, mut want_grad) = (0.0, vec![0.0; n]);
    for i in 0..n {
        let d = o[i] - target[i];
        want += weight(i) * d * d / n as f64;
        want_grad[i] = 2.0 * weight(i) * d / n as f64;
    }
    let got = loss.to_scalar::<f32>().unwrap() as f64;
    assert!((got - want).abs() < 1e-5 * want, "{what}: {got} vs {want}");
    loss.backward().unwrap();
    assert_close(
        "dloss/dout",
        &f32s(&out.grad().unwrap()),
        &want_grad,
        1e-7,
        1e-4,
    );
    got
}

#[test]
fn losses_by_hand_with_gradients() {
    let s = cosine();
    let shape = [4, 3, 2, 2];
    let n = 48;
    let x0 = tensor(&normals(n, 10), &shape);
    let eps = tensor(&normals(n, 11), &shape);
    let outv = normals(n, 12);
    let t = [3usize, 200, 600, 990];
    for prediction in [Prediction::Epsilon, Prediction::V] {
        for (gamma, floor) in [
            (None, None),
            (Some(MIN_SNR_GAMMA), None),
            (Some(MIN_SNR_GAMMA), Some(1.0)),
            (None, Some(1.0)),
        ] {
            let cfg = LossConfig {
                prediction,
                min_snr_gamma: gamma,
                snr_floor: floor,
                edge_weight: None,
            };
            let out = tensor(&outv, &shape).with_grad();
            let loss = diffusion_loss(&out, &x0, &eps, &t, &s, &cfg).unwrap();
            assert_eq!(loss.rank(), 0);
            let target = f32s(&prediction.target(&x0, &eps, &t, &s).unwrap());
            let w = match (gamma, floor) {
                (None, None) => vec![1.0; 4],
                (g, f) => snr_clamp_weights(
                    &t,
                    &s,
                    prediction,
                    f.unwrap_or(0.0),
                    g.unwrap_or(f64::INFINITY),
                )
                .unwrap(),
            };
            let got = assert_weighted_mse(&loss, &out, &target, |i| w[i / 12], &format!("{cfg:?}"));

            // p_losses = q_sample + model + diffusion_loss.
            let model_out = tensor(&outv, &shape);
            let via = p_losses(
                |xt, tt| {
                    assert_eq!(tt, t);
                    assert_eq!(f32s(xt), f32s(&q_sample(&x0, &t, &eps, &s).unwrap()));
                    Ok(model_out.clone())
                },
                &x0,
                &t,
                &eps,
                &s,
                &cfg,
            )
            .unwrap();
            assert_eq!(via.to_scalar::<f32>().unwrap(), got as f32);
        }
    }
}

#[test]
fn edge_weights_by_hand_and_in_the_loss() {
    // Two 4 x 5 pictures of 2 channels: a flat one (all weights 1) and one with a lit
    // pixel at (row 1, col 1) in channel 1 only, where |x0(p) - x0(q)| is 2 for p in
    // its 3 x 3 neighbourhood (g = 1) and 0 elsewhere.
    let (h, w) = (4, 5);
    let mut x0v = vec![-1.0; 2 * 2 * h * w];
    x0v[(2 + 1) * h * w + w + 1] = 1.0;
    let x0 = tensor(&x0v, &[2, 2, h, w]);
    let alpha = 3.0;
    let m = edge_weights(&x0, alpha).unwrap();
    assert_eq!(m.dims(), &[2, 1, h, w]);
    let m = f32s(&m);
    assert!(m[..h * w].iter().all(|&e| (e - 1.0).abs() < 1e-7));
    let raw: Vec<f64> = (0..h * w)
        .map(|i| {
            let (y, x) = (i / w, i % w);
            if y <= 2 && x <= 2 {
                1.0 + alpha
            } else {
                1.0
            }
        })
        .collect();
    let mean = raw.iter().sum::<f64>() / (h * w) as f64;
    for (i, r) in raw.iter().enumerate() {
        assert!((m[h * w + i] - r / mean).abs() < 1e-6, "pixel {i}");
    }

    // The loss weighs each pixel's squared error by m (both channels alike).
    let s = cosine();
    let n = x0v.len();
    let eps = tensor(&normals(n, 21), &[2, 2, h, w]);
    let outv = normals(n, 22);
    let t = [100usize, 700];
    let cfg = LossConfig {
        prediction: Prediction::V,
        min_snr_gamma: None,
        snr_floor: None,
        edge_weight: Some(alpha),
    };
    let out = tensor(&outv, &[2, 2, h, w]).with_grad();
    let loss = diffusion_loss(&out, &x0, &eps, &t, &s, &cfg).unwrap();
    let target = f32s(&Prediction::V.target(&x0, &eps, &t, &s).unwrap());
    // Pixel p of picture b has weight m[b, p], in both channels.
    let weight = |i: usize| m[i / (2 * h * w) * h * w + i % (h * w)];
    assert_weighted_mse(&loss, &out, &target, weight, "edge weights");

    // Bad arguments: not pictures, a negative or non-finite weight.
    assert_err_contains(
        edge_weights(&tensor(&[0.0; 8], &[2, 4]), 1.0),
        "[B, C, H, W]",
    );
    assert_err_contains(edge_weights(&x0, -1.0), "edge_weight must be");
    assert_err_contains(edge_weights(&x0, f64::NAN), "edge_weight must be");
}

#[test]
fn loss_and_q_sample_bad_arguments_are_errors() {
    let s = linear();
    let x0 = tensor(&[0.0; 8], &[2, 4]);
    let eps = tensor(&[0.0; 8], &[2, 4]);
    assert_err_contains(q_sample(&x0, &[1], &eps, &s), "1 timesteps for a batch");
    assert_err_contains(
        q_sample(&x0, &[1, 1000], &eps, &s),
        "timestep 1000 is out of range",
    );
    let wide = tensor(&[0.0; 4], &[1, 4]);
    assert_err_contains(q_sample(&x0, &[1, 2], &wide, &s), "must be equal");
    assert!(Prediction::Epsilon
        .target(&x0, &eps, &[5000, 1], &s)
        .is_err());
    assert_err_contains(min_snr_weights(&[1], &s, Prediction::V, 0.0), "gamma");
    assert!(min_snr_weights(&[1], &s, Prediction::V, f64::NAN).is_err());
    let cfg = LossConfig::default();
    assert!(diffusion_loss(&wide, &x0, &eps, &[1, 2], &s, &cfg).is_err());
    let empty = Tensor::zeros([0, 4], DType::F32, &Device::Cpu).unwrap();
    assert_err_contains(
        diffusion_loss(&empty, &empty, &empty, &[], &s, &cfg),
        "empty",
    );
}

// ---- guidance -----------------------------------------------------------------------

#[test]
fn classifier_free_guidance_by_hand() {
    let u = tensor(&[1.0, 2.0, -1.0, 0.5], &[2, 2]);
    let c = tensor(&[3.0, 2.0, 1.0, -0.5], &[2, 2]);
    let g = classifier_free_guidance(&u, &c, 7.5).unwrap();
    assert_eq!(f32s(&g), [16.0, 2.0, 14.0, -7.0]);
    assert_eq!(
        f32s(&classifier_free_guidance(&u, &c, 1.0).unwrap()),
        f32s(&c)
    );
    assert_eq!(
        f32s(&classifier_free_guidance(&u, &c, 0.0).unwrap()),
        f32s(&u)
    );
    let doubled = Tensor::cat(&[&u, &c], 0).unwrap();
    let (su, sc) = split_batch(&doubled).unwrap();
    assert_eq!((f32s(&su), f32s(&sc)), (f32s(&u), f32s(&c)));
    assert_eq!(f32s(&guide(&doubled, 7.5).unwrap()), f32s(&g));
    let dd = double_batch(&u).unwrap();
    assert_eq!(dd.dims(), [4, 2]);
    assert_eq!(f32s(&dd)[4..], f32s(&u)[..]);

    assert_err_contains(split_batch(&tensor(&[1.0; 6], &[3, 2])), "even");
    assert!(classifier_free_guidance(&u, &dd, 2.0).is_err());
    assert!(classifier_free_guidance(&u, &c, f64::INFINITY).is_err());
    let scalar = Tensor::full(1.0, (), DType::F32, &Device::Cpu).unwrap();
    assert!(double_batch(&scalar).is_err() && split_batch(&scalar).is_err());
}

/// diffusers' rescale_noise_cfg (Lin et al. 2023, eq. 15-16) in f64 on host values: each
/// sample of the guided output scaled to the text output's standard deviation, mixed by
/// phi.
fn rescale_by_hand(g: &[f64], c: &[f64], per: usize, phi: f64) -> Vec<f64> {
    let std = |x: &[f64]| {
        let m = x.iter().sum::<f64>() / x.len() as f64;
        (x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / x.len() as f64).sqrt()
    };
    g.chunks(per)
        .zip(c.chunks(per))
        .flat_map(|(g, c)| {
            let r = if std(g) > 0.0 { std(c) / std(g) } else { 1.0 };
            g.iter()
                .map(move |v| phi * v * r + (1.0 - phi) * v)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn guidance_rescale_matches_diffusers_rescale_noise_cfg() {
    // Three samples of [2, 3]: spread out, a constant one (std 0: left as it is), one
    // with a shifted mean.
    let g = [
        4.0, -4.0, 2.0, -2.0, 1.0, 0.0, /**/ 1.5, 1.5, 1.5, 1.5, 1.5, 1.5, /**/ 9.0, 7.0,
        8.0, 6.5, 10.0, 8.5,
    ];
    let c = [
        1.0, -1.0, 0.5, -0.5, 0.25, 0.0, /**/ 3.0, 2.0, 1.0, 0.0, -1.0, 2.0, /**/ 1.0,
        0.5, 0.0, -0.5, 2.0, 1.0,
    ];
    let (gt, ct) = (tensor(&g, &[3, 2, 3]), tensor(&c, &[3, 2, 3]));
    for phi in [0.0, 0.3, 0.7, 1.0] {
        let got = rescale_guidance(&gt, &ct, phi)
            .unwrap()
            .to_vec_f64()
            .unwrap();
        let want = rescale_by_hand(&g, &c, 6, phi);
        for (k, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                "phi {phi}, element {k}: {a} vs {b}"
            );
        }
    }
    // phi = 0 is the guided output itself, bit for bit; phi = 1 has the text's spread.
    assert_eq!(f32s(&rescale_guidance(&gt, &ct, 0.0).unwrap()), f32s(&gt));
    assert_err_contains(rescale_guidance(&gt, &ct, 1.5), "[0, 1]");
    assert!(rescale_guidance(&gt, &tensor(&c[..6], &[1, 2, 3]), 0.5).is_err());
    // Guidance::apply is guide, then the rescale against the text half.
    let doubled = Tensor::cat(&[&ct, &gt], 0).unwrap();
    let gd = Guidance {
        rescale: 0.7,
        ..Guidance::scale(3.0)
    };
    let want = rescale_guidance(&guide(&doubled, 3.0).unwrap(), &gt, 0.7).unwrap();
    assert_eq!(f32s(&gd.apply(&doubled).unwrap()), f32s(&want));
}

#[test]
fn the_guidance_window_follows_diffusers_guider() {
    // diffusers: step i is guided when int(start N) <= i < int(stop N).
    let g = Guidance {
        start: 0.2,
        stop: 0.75,
        ..Guidance::scale(4.0)
    };
    let on: Vec<usize> = (0..10).filter(|&i| g.active_at(i, 10)).collect();
    assert_eq!(on, [2, 3, 4, 5, 6]);
    assert!(g.any_active(10));
    // Three steps: int(0.6) = 0 and int(2.25) = 2, so steps 0 and 1.
    assert!(g.active_at(0, 3) && g.active_at(1, 3) && !g.active_at(2, 3));
    // A window too short to hold a step, and scale 1, guide nothing.
    let short = Guidance {
        start: 0.0,
        stop: 0.3,
        ..Guidance::scale(4.0)
    };
    assert!(!short.any_active(3) && short.any_active(4));
    assert!(!Guidance::scale(1.0).any_active(50));
    assert!(Guidance::scale(4.0).check().is_ok());
    for (bad, what) in [
        (
            Guidance {
                scale: f64::NAN,
                ..g
            },
            "finite",
        ),
        (Guidance { rescale: -0.1, ..g }, "guidance_rescale"),
        (Guidance { start: 0.8, ..g }, "start < stop"),
        (Guidance { stop: 1.5, ..g }, "start < stop"),
        (Guidance { start: -0.5, ..g }, "start < stop"),
    ] {
        assert_err_contains(bad.check(), what);
    }
}

// ---- single steps by hand -------------------------------------------------------------

/// diffusers' DDPMScheduler.step (fixed_small) in f64 on host values.
#[allow(clippy::too_many_arguments)]
fn ddpm_step_ref(
    out: &[f64],
    x: &[f64],
    z: &[f64],
    a_t: f64,
    a_p: f64,
    t: usize,
    p: Prediction,
    clip: Option<f64>,
) -> Vec<f64> {
    let (b_t, b_p) = (1.0 - a_t, 1.0 - a_p);
    let (ca, cb) = (a_t / a_p, 1.0 - a_t / a_p);
    (0..x.len())
        .map(|i| {
            let mut x0 = match p {
                Prediction::Epsilon => (x[i] - b_t.sqrt() * out[i]) / a_t.sqrt(),
                Prediction::V => a_t.sqrt() * x[i] - b_t.sqrt() * out[i],
            };
            if let Some(r) = clip {
                x0 = x0.clamp(-r, r);
            }
            let mean = a_p.sqrt() * cb / b_t * x0 + ca.sqrt() * b_p / b_t * x[i];
            let var = if t > 0 {
                (b_p / b_t * cb).max(1e-20)
            } else {
                0.0
            };
            mean + var.sqrt() * z[i]
        })
        .collect()
}

/// diffusers' DDIMScheduler.step in f64 on host values.
#[allow(clippy::too_many_arguments)]
fn ddim_step_ref(
    out: &[f64],
    x: &[f64],
    z: &[f64],
    a_t: f64,
    a_p: f64,
    eta: f64,
    p: Prediction,
    clip: Option<f64>,
) -> Vec<f64> {
    let b_t = 1.0 - a_t;
    (0..x.len())
        .map(|i| {
            let (mut x0, e) = match p {
                Prediction::Epsilon => ((x[i] - b_t.sqrt() * out[i]) / a_t.sqrt(), out[i]),
                Prediction::V => (
                    a_t.sqrt() * x[i] - b_t.sqrt() * out[i],
                    a_t.sqrt() * out[i] + b_t.sqrt() * x[i],
                ),
            };
            if let Some(r) = clip {
                x0 = x0.clamp(-r, r);
            }
            let var = (1.0 - a_p) / b_t * (1.0 - a_t / a_p);
            let std = eta * var.sqrt();
            a_p.sqrt() * x0 + (1.0 - a_p - std * std).sqrt() * e + std * z[i]
        })
        .collect()
}

#[test]
fn single_steps_match_diffusers_formulas() {
    let shape = [2, 3, 2, 2];
    let n = 24;
    let (xv, ov, zv) = (normals(n, 20), normals(n, 21), normals(n, 22));
    let round = |v: &[f64]| v.iter().map(|&x| x as f32 as f64).collect::<Vec<_>>();
    let (x, out, z) = (
        tensor(&xv, &shape),
        tensor(&ov, &shape),
        tensor(&zv, &shape),
    );
    for sched in [linear(), cosine()] {
        let a = sched.alphas_cumprod().to_vec();
        for p in [Prediction::Epsilon, Prediction::V] {
            for clip in [None, Some(1.0)] {
                // DDPM over 100 leading steps: t = 990, 980, .., 0.
                let cfg = DdpmConfig {
                    prediction: p,
                    clip_sample: clip,
                    num_inference_steps: Some(100),
                    ..DdpmConfig::default()
                };
                let ddpm = DdpmScheduler::new(sched.clone(), cfg).unwrap();
                for (t, a_p) in [(990, a[980]), (500, a[490]), (10, a[0]), (0, 1.0)] {
                    let got = ddpm.step_with_noise(&out, t, &x, Some(&z)).unwrap();
                    let want = ddpm_step_ref(&ov, &xv, &zv, a[t], a_p, t, p, clip);
                    // Relative to the x0 estimate: eps-prediction at t = 990 of the
                    // cosine schedule divides by sqrt(abar) ~ 1e-3.
                    let tol = if p == Prediction::Epsilon && t == 990 {
                        1e-4
                    } else {
                        1e-5
                    };
                    assert_close(
                        &format!("ddpm {p:?} clip {clip:?} t {t}"),
                        &f32s(&got.prev_sample),
                        &round(&want),
                        tol,
                        tol,
                    );
                }
                // Every training step: the step uses alpha_t and beta_t themselves.
                let full = DdpmScheduler::new(
                    sched.clone(),
                    DdpmConfig {
                        num_inference_steps: None,
                        ..cfg
                    },
                )
                .unwrap();
                let got = full.step_with_noise(&out, 400, &x, Some(&z)).unwrap();
                let want = ddpm_step_ref(&ov, &xv, &zv, a[400], a[399], 400, p, clip);
                assert_close(
                    "ddpm full",
                    &f32s(&got.prev_sample),
                    &round(&want),
                    1e-5,
                    1e-5,
                );

                for (eta, one) in [(0.0, false), (0.5, true), (1.0, false)] {
                    let cfg = DdimConfig {
                        num_inference_steps: 20,
                        eta,
                        prediction: p,
                        clip_sample: clip,
                        set_alpha_to_one: one,
                        ..DdimConfig::default()
                    };
                    let ddim = DdimScheduler::new(sched.clone(), cfg).unwrap();
                    assert_eq!(ddim.timesteps()[..2], [951, 901]);
                    let last = if one { 1.0 } else { a[0] };
                    for (t, a_p) in [(951, a[901]), (501, a[451]), (1, last)] {
                        let got = ddim.step_with_noise(&out, t, &x, Some(&z)).unwrap();
                        let want = ddim_step_ref(&ov, &xv, &zv, a[t], a_p, eta, p, clip);
                        let tol = if p == Prediction::Epsilon && t == 951 {
                            1e-4
                        } else {
                            1e-5
                        };
                        assert_close(
                            &format!("ddim {p:?} eta {eta} clip {clip:?} t {t}"),
                            &f32s(&got.prev_sample),
                            &round(&want),
                            tol,
                            tol,
                        );
                    }
                }
            }
        }
    }
}

/// `use_clipped_model_output`: when x0_hat is clipped, the step uses the eps that the
/// clipped x0_hat implies, (x_t - sqrt(abar) x0) / sqrt(1 - abar); unclipped elements
/// are unchanged, and without clipping the option changes nothing.
#[test]
fn ddim_recomputes_eps_from_the_clipped_x0() {
    let shape = [2, 3, 2, 2];
    let n = 24;
    // Model outputs large enough that some x0_hat leave [-1, 1].
    let (xv, ov) = (
        normals(n, 30),
        normals(n, 31).iter().map(|v| 3.0 * v).collect::<Vec<_>>(),
    );
    let (x, out) = (tensor(&xv, &shape), tensor(&ov, &shape));
    let sched = cosine();
    let a = sched.alphas_cumprod().to_vec();
    let cfg = |clip, recompute| DdimConfig {
        num_inference_steps: 20,
        clip_sample: clip,
        use_clipped_model_output: recompute,
        ..DdimConfig::default()
    };
    let step = |c| {
        let s = DdimScheduler::new(sched.clone(), c).unwrap();
        f32s(&s.step_with_noise(&out, 501, &x, None).unwrap().prev_sample)
    };
    let (a_t, a_p) = (a[501], a[451]);
    let want: Vec<f64> = (0..n)
        .map(|i| {
            let x0 = ((xv[i] - (1.0 - a_t).sqrt() * ov[i]) / a_t.sqrt()).clamp(-1.0, 1.0);
            let e = (xv[i] - a_t.sqrt() * x0) / (1.0 - a_t).sqrt();
            a_p.sqrt() * x0 + (1.0 - a_p).sqrt() * e
        })
        .collect();
    let clipped = (0..n)
        .filter(|&i| ((xv[i] - (1.0 - a_t).sqrt() * ov[i]) / a_t.sqrt()).abs() > 1.0)
        .count();
    assert!(clipped > 0 && clipped < n, "{clipped} of {n} clipped");
    assert_close(
        "recomputed eps",
        &step(cfg(Some(1.0), true)),
        &want,
        1e-5,
        1e-5,
    );
    assert_eq!(step(cfg(None, true)), step(cfg(None, false)));
}

#[test]
fn ddim_with_eta_one_is_the_ddpm_step() {
    // Without clipping, DDIM's eta = 1 step is DDPM's ancestral step (Song et al. 2021,
    // §4.1), for any spacing of the steps.
    let shape = [2, 2, 3, 3];
    let n = 36;
    let (x, out, z) = (
        tensor(&normals(n, 30), &shape),
        tensor(&normals(n, 31), &shape),
        tensor(&normals(n, 32), &shape),
    );
    for p in [Prediction::Epsilon, Prediction::V] {
        let ddpm = DdpmScheduler::new(
            linear(),
            DdpmConfig {
                prediction: p,
                clip_sample: None,
                num_inference_steps: Some(25),
                ..DdpmConfig::default()
            },
        )
        .unwrap();
        let ddim = DdimScheduler::new(
            linear(),
            DdimConfig {
                num_inference_steps: 25,
                eta: 1.0,
                prediction: p,
                clip_sample: None,
                set_alpha_to_one: true,
                steps_offset: 0,
                ..DdimConfig::default()
            },
        )
        .unwrap();
        assert_eq!(ddpm.timesteps(), ddim.timesteps());
        for &t in ddpm.timesteps() {
            if t == 0 {
                continue; // DDPM adds no noise there; DDIM's sigma is 0 there too.
            }
            let a = ddpm.step_with_noise(&out, t, &x, Some(&z)).unwrap();
            let b = ddim.step_with_noise(&out, t, &x, Some(&z)).unwrap();
            assert_close(
                &format!("{p:?} t {t}"),
                &f32s(&a.prev_sample),
                &f32s(&b.prev_sample),
                1e-5,
                1e-5,
            );
            assert!((ddpm.variance(t).unwrap().sqrt() - ddim.sigma(t).unwrap()).abs() < 1e-12);
        }
    }
}

// ---- the Gaussian oracle ---------------------------------------------------------------

/// Per-channel data distributions N(mu, s^2): a narrow, a wide and a unit one.
const MU: [f64; 3] = [1.0, -0.5, 0.25];
const SD: [f64; 3] = [0.5, 2.0, 1.0];
/// Samples [B, 3, 2, 2]: 20000 per channel.
const B: usize = 5000;

/// The exact optimal model output for x_t at abar = a as a per-channel affine map
/// out = k x + c (see the module docs).
fn oracle_coefficients(a: f64, p: Prediction) -> ([f64; 3], [f64; 3]) {
    let (mut k, mut c) = ([0.0; 3], [0.0; 3]);
    for ch in 0..3 {
        let (mu, s2) = (MU[ch], SD[ch] * SD[ch]);
        let vt = a * s2 + 1.0 - a;
        // eps* = sqrt(1-a) (x - sqrt(a) mu) / v_t
        let (ke, ce) = (
            (1.0 - a).sqrt() / vt,
            -(1.0 - a).sqrt() * a.sqrt() * mu / vt,
        );
        // x0* = mu + sqrt(a) s^2 (x - sqrt(a) mu) / v_t
        let (kx, cx) = (a.sqrt() * s2 / vt, mu - a * s2 * mu / vt);
        (k[ch], c[ch]) = match p {
            Prediction::Epsilon => (ke, ce),
            // v* = sqrt(a) eps* - sqrt(1-a) x0*
            Prediction::V => (
                a.sqrt() * ke - (1.0 - a).sqrt() * kx,
                a.sqrt() * ce - (1.0 - a).sqrt() * cx,
            ),
        };
    }
    (k, c)
}

/// The oracle as a model: out = k x + c with [1, 3, 1, 1] coefficients.
fn oracle(
    schedule: &NoiseSchedule,
    p: Prediction,
) -> impl FnMut(&Tensor, usize) -> kuosan_tensor::Result<Tensor> + '_ {
    move |x: &Tensor, t: usize| {
        let (k, c) = oracle_coefficients(schedule.alphas_cumprod()[t], p);
        let per_channel = |v: [f64; 3]| {
            Tensor::from_vec(v.to_vec(), [1, 3, 1, 1], &Device::Cpu)?
                .to_dtype(x.dtype())?
                .to_device(x.device())
        };
        x.mul(&per_channel(k)?)?.add(&per_channel(c)?)
    }
}

/// Which reverse step a chain takes.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Ddpm,
    Ddim { eta: f64, final_alpha: f64 },
}

/// The exact mean and variance per channel of a sampler's output when it starts from
/// N(0, 1) at `timesteps[0]` and is driven by the oracle: each step is affine in x_t,
/// x_prev = A x_t + B + sigma z. Written from the papers: DDPM's posterior (Ho et al.
/// eq. 6-7) around x0*; DDIM's eq. 12 with sigma from eq. 16.
fn chain_moments(schedule: &NoiseSchedule, timesteps: &[usize], kind: Kind) -> [(f64, f64); 3] {
    let abar = schedule.alphas_cumprod();
    let mut out = [(0.0, 0.0); 3];
    for ch in 0..3 {
        let (mu, s2) = (MU[ch], SD[ch] * SD[ch]);
        let (mut m, mut v) = (0.0, 1.0);
        for (i, &t) in timesteps.iter().enumerate() {
            let a = abar[t];
            let vt = a * s2 + 1.0 - a;
            // x0* = kx x + cx, eps* = ke x + ce.
            let (kx, cx) = (a.sqrt() * s2 / vt, mu - a * s2 * mu / vt);
            let (ke, ce) = (
                (1.0 - a).sqrt() / vt,
                -(1.0 - a).sqrt() * a.sqrt() * mu / vt,
            );
            let (gain, shift, var) = match kind {
                Kind::Ddpm => {
                    let ap = timesteps.get(i + 1).map_or(1.0, |&p| abar[p]);
                    let beta = 1.0 - a / ap;
                    // mean = sqrt(ap) beta / (1-a) x0 + sqrt(a/ap) (1-ap) / (1-a) x_t
                    let (c0, ct) = (
                        ap.sqrt() * beta / (1.0 - a),
                        (a / ap).sqrt() * (1.0 - ap) / (1.0 - a),
                    );
                    let var = if t > 0 {
                        ((1.0 - ap) / (1.0 - a) * beta).max(1e-20)
                    } else {
                        0.0
                    };
                    (c0 * kx + ct, c0 * cx, var)
                }
                Kind::Ddim { eta, final_alpha } => {
                    let ap = timesteps.get(i + 1).map_or(final_alpha, |&p| abar[p]);
                    let var = eta * eta * (1.0 - ap) / (1.0 - a) * (1.0 - a / ap);
                    let d = (1.0 - ap - var).max(0.0).sqrt();
                    (ap.sqrt() * kx + d * ke, ap.sqrt() * cx + d * ce, var)
                }
            };
            m = gain * m + shift;
            v = gain * gain * v + var;
        }
        out[ch] = (m, v);
    }
    out
}

/// Samples with `scheduler` from pure noise driven by the oracle, and checks each
/// channel's mean and variance against the chain's exact moments within 5 standard
/// errors (se of the mean sqrt(v/n), of the variance v sqrt(2/(n-1))). Prints both, with
/// the data's variance, so the discretisation error is visible with --nocapture.
fn check_sampler(name: &str, scheduler: &dyn Scheduler, p: Prediction, kind: Kind, seed: u64) {
    let schedule = scheduler.schedule();
    let mut rng = Philox::new(seed);
    let x_t = initial_noise(scheduler, [B, 3, 2, 2], &Device::Cpu, &mut rng).unwrap();
    let x = p_sample_loop(scheduler, x_t, &mut rng, oracle(schedule, p)).unwrap();
    let v = f32s(&x);
    let want = chain_moments(schedule, scheduler.timesteps(), kind);
    for ch in 0..3 {
        let vals: Vec<f64> = v.chunks(4).skip(ch).step_by(3).flatten().copied().collect();
        let n = vals.len() as f64;
        assert_eq!(n as usize, 4 * B);
        let mean = vals.iter().sum::<f64>() / n;
        let var = vals.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        let (cm, cv) = want[ch];
        let (se_m, se_v) = ((cv / n).sqrt(), cv * (2.0 / (n - 1.0)).sqrt());
        let msg = format!(
            "{name}, channel {ch} (data N({}, {}^2)): sampled mean {mean:.5} var {var:.5}; chain \
             mean {cm:.5} var {cv:.5}; data var {:.5}",
            MU[ch],
            SD[ch],
            SD[ch] * SD[ch]
        );
        eprintln!("{msg}");
        assert!(
            (mean - cm).abs() <= 5.0 * se_m,
            "{msg}: mean off by {:.1} se",
            (mean - cm).abs() / se_m
        );
        assert!(
            (var - cv).abs() <= 5.0 * se_v,
            "{msg}: var off by {:.1} se",
            (var - cv).abs() / se_v
        );
    }
}

#[test]
fn chains_converge_to_the_data() {
    // With every training step, the samplers' exact output moments are those of the data
    // (to the discretisation error, under 2% of the variance here); with few steps they
    // are not, which is why the sampling tests compare against `chain_moments`.
    for sched in [linear(), cosine()] {
        let all: Vec<usize> = (0..1000).rev().collect();
        for kind in [
            Kind::Ddpm,
            Kind::Ddim {
                eta: 0.0,
                final_alpha: 1.0,
            },
            Kind::Ddim {
                eta: 1.0,
                final_alpha: 1.0,
            },
        ] {
            let m = chain_moments(&sched, &all, kind);
            for ch in 0..3 {
                let (mu, s2) = (MU[ch], SD[ch] * SD[ch]);
                assert!(
                    (m[ch].0 - mu).abs() < 0.01 * SD[ch],
                    "{kind:?} ch {ch}: mean {}",
                    m[ch].0
                );
                assert!(
                    (m[ch].1 / s2 - 1.0).abs() < 0.02,
                    "{kind:?} ch {ch}: var {} vs {s2}",
                    m[ch].1
                );
            }
        }
        // Deterministic DDIM with 10 steps visibly shrinks the narrow channel; more
        // steps shrink it less.
        let var_err = |n: usize| {
            let ts = inference_timesteps(1000, n, TimestepSpacing::Leading, 0).unwrap();
            let m = chain_moments(
                &sched,
                &ts,
                Kind::Ddim {
                    eta: 0.0,
                    final_alpha: 1.0,
                },
            );
            (m[0].1 / (SD[0] * SD[0]) - 1.0).abs()
        };
        assert!(
            var_err(10) > var_err(50) && var_err(50) > var_err(250) && var_err(250) > var_err(1000)
        );
    }
}

#[test]
fn ddpm_samples_gaussian_data_epsilon() {
    let s = linear();
    let p = Prediction::Epsilon;
    let cfg = DdpmConfig {
        prediction: p,
        clip_sample: None,
        ..DdpmConfig::default()
    };
    let sched = DdpmScheduler::new(s.clone(), cfg).unwrap();
    check_sampler("ddpm 1000 eps linear", &sched, p, Kind::Ddpm, 1);
    let sched = DdpmScheduler::new(
        s,
        DdpmConfig {
            num_inference_steps: Some(100),
            ..cfg
        },
    )
    .unwrap();
    check_sampler("ddpm 100 eps linear", &sched, p, Kind::Ddpm, 2);
}

#[test]
fn ddpm_samples_gaussian_data_v() {
    let p = Prediction::V;
    let cfg = DdpmConfig {
        prediction: p,
        clip_sample: None,
        ..DdpmConfig::default()
    };
    let sched = DdpmScheduler::new(cosine(), cfg).unwrap();
    check_sampler("ddpm 1000 v cosine", &sched, p, Kind::Ddpm, 3);
    let sched = DdpmScheduler::new(
        linear(),
        DdpmConfig {
            num_inference_steps: Some(40),
            spacing: TimestepSpacing::Trailing,
            ..cfg
        },
    )
    .unwrap();
    check_sampler("ddpm 40 trailing v linear", &sched, p, Kind::Ddpm, 4);
}

#[test]
fn ddim_samples_gaussian_data() {
    let cases = [
        // (schedule, prediction, steps, eta, set_alpha_to_one, spacing, offset)
        (
            "linear",
            Prediction::Epsilon,
            10,
            0.0,
            false,
            TimestepSpacing::Leading,
            1,
        ),
        (
            "linear",
            Prediction::Epsilon,
            50,
            0.0,
            false,
            TimestepSpacing::Leading,
            1,
        ),
        (
            "linear",
            Prediction::Epsilon,
            50,
            1.0,
            true,
            TimestepSpacing::Leading,
            1,
        ),
        (
            "cosine",
            Prediction::V,
            20,
            0.0,
            true,
            TimestepSpacing::Trailing,
            0,
        ),
        (
            "cosine",
            Prediction::V,
            100,
            1.0,
            false,
            TimestepSpacing::Leading,
            1,
        ),
        (
            "linear",
            Prediction::V,
            25,
            0.5,
            true,
            TimestepSpacing::Linspace,
            0,
        ),
    ];
    for (i, (sched_name, p, n, eta, one, spacing, offset)) in cases.into_iter().enumerate() {
        let s = if sched_name == "linear" {
            linear()
        } else {
            cosine()
        };
        let final_alpha = if one { 1.0 } else { s.alphas_cumprod()[0] };
        let cfg = DdimConfig {
            num_inference_steps: n,
            eta,
            prediction: p,
            clip_sample: None,
            set_alpha_to_one: one,
            spacing,
            steps_offset: offset,
            use_clipped_model_output: false,
        };
        let sched = DdimScheduler::new(s, cfg).unwrap();
        let name = format!("ddim {n} {p:?} eta {eta} {sched_name} {spacing:?} alpha_to_one {one}");
        check_sampler(
            &name,
            &sched,
            p,
            Kind::Ddim { eta, final_alpha },
            100 + i as u64,
        );
    }
}

// ---- determinism, errors, GPU ---------------------------------------------------------

/// A few stochastic steps of each sampler with the oracle from `seed`, on `dev`.
fn short_runs(dev: &Device, seed: u64) -> Vec<Vec<f64>> {
    let s = linear();
    let ddpm = DdpmScheduler::new(
        s.clone(),
        DdpmConfig {
            num_inference_steps: Some(8),
            ..DdpmConfig::default()
        },
    )
    .unwrap();
    let ddim = DdimScheduler::new(
        s.clone(),
        DdimConfig {
            num_inference_steps: 8,
            eta: 0.7,
            prediction: Prediction::V,
            ..DdimConfig::default()
        },
    )
    .unwrap();
    let mut outs = vec![];
    for (sched, p) in [
        (&ddpm as &dyn Scheduler, Prediction::Epsilon),
        (&ddim, Prediction::V),
    ] {
        let mut rng = Philox::new(seed);
        let x = initial_noise(sched, [3, 3, 5, 7], dev, &mut rng).unwrap();
        let x = p_sample_loop(sched, x, &mut rng, oracle(&s, p)).unwrap();
        outs.push(f32s(&x));
    }
    outs
}

#[test]
fn same_seed_same_samples() {
    let a = short_runs(&Device::Cpu, 42);
    let b = short_runs(&Device::Cpu, 42);
    let bits = |v: &[Vec<f64>]| -> Vec<u64> { v.iter().flatten().map(|x| x.to_bits()).collect() };
    assert_eq!(bits(&a), bits(&b));
    assert_ne!(bits(&a), bits(&short_runs(&Device::Cpu, 43)));
    // Deterministic DDIM leaves the stream alone; stochastic steps advance it.
    let s = linear();
    let x = tensor(&normals(12, 5), &[1, 3, 2, 2]);
    let ddim = DdimScheduler::new(s.clone(), DdimConfig::default()).unwrap();
    let mut rng = Philox::new(9);
    ddim.step(&x, 981, &x, &mut rng).unwrap();
    assert_eq!(rng, Philox::new(9));
    let ddpm = DdpmScheduler::new(s, DdpmConfig::default()).unwrap();
    ddpm.step(&x, 0, &x, &mut rng).unwrap();
    assert_eq!(rng, Philox::new(9));
    ddpm.step(&x, 1, &x, &mut rng).unwrap();
    assert_ne!(rng, Philox::new(9));
}

#[test]
fn scheduler_bad_arguments_are_errors() {
    let s = linear();
    let ddpm = |c: DdpmConfig| DdpmScheduler::new(s.clone(), c);
    let ddim = |c: DdimConfig| DdimScheduler::new(s.clone(), c);
    assert_err_contains(
        ddpm(DdpmConfig {
            num_inference_steps: Some(0),
            ..DdpmConfig::default()
        }),
        "at least 1",
    );
    assert_err_contains(
        ddpm(DdpmConfig {
            num_inference_steps: Some(1001),
            ..DdpmConfig::default()
        }),
        "1001 inference steps",
    );
    assert_err_contains(
        ddpm(DdpmConfig {
            clip_sample: Some(0.0),
            ..DdpmConfig::default()
        }),
        "clip_sample",
    );
    for eta in [-0.1, 1.5, f64::NAN] {
        assert_err_contains(
            ddim(DdimConfig {
                eta,
                ..DdimConfig::default()
            }),
            "eta",
        );
    }
    assert!(ddim(DdimConfig {
        num_inference_steps: 0,
        ..DdimConfig::default()
    })
    .is_err());
    assert_err_contains(
        ddim(DdimConfig {
            num_inference_steps: 1000,
            ..DdimConfig::default()
        }),
        "steps_offset 1",
    );

    let x = tensor(&[0.5; 8], &[2, 1, 2, 2]);
    let other = tensor(&[0.5; 4], &[1, 1, 2, 2]);
    let d = ddim(DdimConfig {
        eta: 1.0,
        ..DdimConfig::default()
    })
    .unwrap();
    let p = ddpm(DdpmConfig::default()).unwrap();
    let mut rng = Philox::new(1);
    assert_err_contains(d.step(&x, 980, &x, &mut rng), "timestep 980 is not one of");
    assert_err_contains(
        p.step(&x, 1000, &x, &mut rng),
        "timestep 1000 is not one of",
    );
    assert_err_contains(d.step(&other, 981, &x, &mut rng), "must be equal");
    assert_eq!(rng, Philox::new(1), "a rejected step must not draw noise");
    assert_err_contains(
        d.step_with_noise(&x, 981, &x, None),
        "pass a standard normal",
    );
    assert_err_contains(p.step_with_noise(&x, 5, &x, None), "pass a standard normal");
    assert!(p.step_with_noise(&x, 5, &x, Some(&other)).is_err());
    // t = 0 needs no noise.
    assert!(p.step_with_noise(&x, 0, &x, None).is_ok());
}

#[test]
fn gpu_steps_match_cpu() {
    let dev = gpu();
    let cpu = short_runs(&Device::Cpu, 5);
    let gpu_out = short_runs(&dev, 5);
    for (i, (c, g)) in cpu.iter().zip(&gpu_out).enumerate() {
        assert_close(&format!("run {i} gpu vs cpu"), g, c, 1e-4, 1e-4);
    }
    // q_sample and a min-SNR v loss with its gradient, on the GPU.
    let s = cosine();
    let shape = [4, 3, 4, 4];
    let n = 192;
    let t = [0usize, 10, 500, 999];
    let cfg = LossConfig {
        prediction: Prediction::V,
        min_snr_gamma: Some(MIN_SNR_GAMMA),
        snr_floor: None,
        edge_weight: None,
    };
    let run = |dev: &Device| {
        let on = |v: Vec<f64>| tensor(&v, &shape).to_device(dev).unwrap();
        let (x0, eps) = (on(normals(n, 50)), on(normals(n, 51)));
        let out = on(normals(n, 52)).with_grad();
        let xt = q_sample(&x0, &t, &eps, &s).unwrap();
        let loss = diffusion_loss(&out, &x0, &eps, &t, &s, &cfg).unwrap();
        loss.backward().unwrap();
        (f32s(&xt), f32s(&loss), f32s(&out.grad().unwrap()))
    };
    let (c, g) = (run(&Device::Cpu), run(&dev));
    assert_close("q_sample gpu", &g.0, &c.0, 1e-6, 1e-5);
    assert_close("loss gpu", &g.1, &c.1, 1e-7, 1e-5);
    assert_close("grad gpu", &g.2, &c.2, 1e-8, 1e-5);
}
