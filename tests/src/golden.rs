//! Golden tests against the reference implementations: the files in `tests/golden/`
//! were written by `tests/golden/make_golden.py` with diffusers' UNet2DConditionModel and
//! transformers' CLIPTextModel (seeded weights, fixed inputs). Loading the same weights
//! by name into kuosan's models must reproduce their outputs to <= 1e-4 relative.

use crate::harness::*;
use kuosan_diffusion::unet::{UNet2DConditionModel, UNetConfig};
use kuosan_nn::VarStore;
use kuosan_tensor::{DType, Device};
use kuosan_textenc::{TextConfig, TextEncoder, Tokenizer};
use std::path::PathBuf;

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("golden")
        .join(name)
}

fn io(name: &str, device: &Device) -> std::collections::BTreeMap<String, kuosan_tensor::Tensor> {
    kuosan_nn::safetensors::load(golden(name), device).unwrap()
}

/// |got - want| <= 1e-4 (|want| + the output's typical size): relative to the scale of
/// the output, so elements near zero do not demand more than f32 gives.
fn close(what: &str, got: &[f64], want: &[f64]) {
    let scale = (want.iter().map(|v| v * v).sum::<f64>() / want.len() as f64).sqrt();
    assert_close(what, got, want, 1e-4 * scale, 1e-4);
}

fn text_matches(device: &Device) {
    let vs = VarStore::new(device.clone(), DType::F32, 0);
    let model = TextEncoder::new(&vs.root(), &TextConfig::new(24, 2, 2, 16)).unwrap();
    vs.load(golden("text_weights.safetensors")).unwrap();
    let data = io("text_io.safetensors", device);
    // Our tokenizer gives the same ids the script wrote.
    let tokens = Tokenizer::new(16).encode(&["a red circle", "左边是一个红色的圆形"]);
    let want_ids: Vec<u32> = values(&data["ids"]).iter().map(|&v| v as u32).collect();
    assert_eq!(tokens.ids, want_ids);
    let (ids, mask) = tokens.tensors(device).unwrap();
    let out = model.forward(&ids, &mask).unwrap();
    close(
        &format!("CLIPTextModel last_hidden_state on {device}"),
        &values(&out),
        &values(&data["out"]),
    );
    // pooler_output: the EOS token's state.
    let pooled = tokens.eos_selector(device).unwrap().matmul(&out).unwrap();
    close(
        &format!("CLIPTextModel pooler_output on {device}"),
        &values(&pooled),
        &values(&data["pooled"]),
    );
}

/// The golden U-Net `name` (unet: cross-attention only; unet_pooled: with the pooled
/// text MLP, diffusers' class_embed_type "projection"; unet_scale_shift: that with AdaGN
/// resnets, resnet_time_scale_shift "scale_shift"; unet_only_cross: that with
/// only_cross_attention, each transformer's first attention attending to the text).
fn unet_matches(name: &str, device: &Device) {
    let file = format!("{name}_config.json");
    let text = std::fs::read_to_string(golden(&file)).unwrap();
    let config = UNetConfig::from_json(&serde_json::from_str(&text).unwrap(), &file).unwrap();
    let vs = VarStore::new(device.clone(), DType::F32, 0);
    let model = UNet2DConditionModel::new(&vs.root(), &config).unwrap();
    vs.load(golden(&format!("{name}_weights.safetensors")))
        .unwrap();
    let data = io(&format!("{name}_io.safetensors"), device);
    assert_eq!(
        config.pooled_text_dim.is_some(),
        data.contains_key("pooled")
    );
    let t = values(&data["timesteps"]);
    let out = model
        .forward_pooled(
            &data["sample"],
            &t,
            &data["context"],
            None,
            data.get("pooled"),
        )
        .unwrap();
    close(
        &format!("UNet2DConditionModel ({name}) output on {device}"),
        &values(&out),
        &values(&data["out"]),
    );
}

#[test]
fn clip_text_model_matches_transformers() {
    text_matches(&Device::Cpu);
    text_matches(&gpu());
}

#[test]
fn unet_matches_diffusers() {
    for name in ["unet", "unet_pooled", "unet_scale_shift", "unet_only_cross"] {
        unet_matches(name, &Device::Cpu);
        unet_matches(name, &gpu());
    }
}

/// diffusers' DDPMScheduler and DDIMScheduler (clip_sample off, both predictions, the
/// linear and squaredcos_cap_v2 schedules) on one fixed sample and model output: the
/// training schedule's abar, DDPM's posterior mean (its step without the noise), x0
/// estimate and variance at t = 999, 500, 37, 1, 0, and DDIM's timesteps and eta = 0
/// steps for 50 and 10 inference steps.
#[test]
fn schedulers_match_diffusers() {
    use kuosan_diffusion::{
        BetaSchedule, DdimConfig, DdimScheduler, DdpmConfig, DdpmScheduler, NoiseSchedule,
        Prediction, Scheduler,
    };
    let data = io("schedulers.safetensors", &Device::Cpu);
    let (sample, out) = (&data["sample"], &data["model_output"]);
    let zeros = sample.zeros_like().unwrap();
    for (pred_name, pred) in [
        ("epsilon", Prediction::Epsilon),
        ("v_prediction", Prediction::V),
    ] {
        for (sched_name, beta) in [
            ("linear", BetaSchedule::linear()),
            ("squaredcos_cap_v2", BetaSchedule::cosine()),
        ] {
            let key = format!("{pred_name}.{sched_name}");
            let schedule = NoiseSchedule::new(beta, 1000).unwrap();
            assert_close(
                &format!("{key} alphas_cumprod"),
                schedule.alphas_cumprod(),
                &values(&data[&format!("{key}.alphas_cumprod")]),
                0.0,
                1e-4,
            );
            let ddpm = DdpmScheduler::new(
                schedule.clone(),
                DdpmConfig {
                    prediction: pred,
                    clip_sample: None,
                    ..DdpmConfig::default()
                },
            )
            .unwrap();
            for t in [999, 500, 37, 1, 0] {
                let step = ddpm.step_with_noise(out, t, sample, Some(&zeros)).unwrap();
                close(
                    &format!("{key} DDPM mean at t = {t}"),
                    &values(&step.prev_sample),
                    &values(&data[&format!("{key}.ddpm.{t}.mean")]),
                );
                close(
                    &format!("{key} DDPM x0 at t = {t}"),
                    &values(&step.pred_original_sample),
                    &values(&data[&format!("{key}.ddpm.{t}.pred_x0")]),
                );
                let want = values(&data[&format!("{key}.ddpm.{t}.variance")])[0];
                let got = ddpm.variance(t).unwrap();
                // diffusers keeps abar in f32, kuosan in f64: ~1e-5 apart, and near
                // t = 0 diffusers' 1 - abar (abar ~ 1) keeps only a few f32 bits: an
                // absolute 1e-8 (the variances there are ~2e-5). At t = 0 both are ~0.
                assert!(
                    (got - want).abs() <= 1e-4 * want.abs() + 1e-8,
                    "{key} DDPM variance at t = {t}: {got} vs diffusers {want}"
                );
            }
            for steps in [50, 10] {
                let ddim = DdimScheduler::new(
                    schedule.clone(),
                    DdimConfig {
                        num_inference_steps: steps,
                        prediction: pred,
                        clip_sample: None,
                        ..DdimConfig::default()
                    },
                )
                .unwrap();
                let want_t: Vec<usize> = values(&data[&format!("{key}.ddim{steps}.timesteps")])
                    .iter()
                    .map(|&v| v as usize)
                    .collect();
                assert_eq!(ddim.timesteps(), &want_t[..], "{key} DDIM timesteps");
                let ts = ddim.timesteps();
                for t in [ts[0], ts[steps / 2], ts[steps - 1]] {
                    let step = ddim.step_with_noise(out, t, sample, None).unwrap();
                    close(
                        &format!("{key} DDIM {steps} steps at t = {t}"),
                        &values(&step.prev_sample),
                        &values(&data[&format!("{key}.ddim{steps}.{t}")]),
                    );
                }
            }
        }
    }
}
