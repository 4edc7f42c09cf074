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
}

fn unet_matches(device: &Device) {
    let text = std::fs::read_to_string(golden("unet_config.json")).unwrap();
    let config =
        UNetConfig::from_json(&serde_json::from_str(&text).unwrap(), "unet_config.json").unwrap();
    let vs = VarStore::new(device.clone(), DType::F32, 0);
    let model = UNet2DConditionModel::new(&vs.root(), &config).unwrap();
    vs.load(golden("unet_weights.safetensors")).unwrap();
    let data = io("unet_io.safetensors", device);
    let t = values(&data["timesteps"]);
    let out = model
        .forward(&data["sample"], &t, &data["context"], None)
        .unwrap();
    close(
        &format!("UNet2DConditionModel output on {device}"),
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
    unet_matches(&Device::Cpu);
    unet_matches(&gpu());
}
