//! Caption pretraining of the text encoder (`text_pretrain`): the block-mean targets,
//! that the trained decoder reads the caption (matched captions predict their pictures
//! far better than shuffled ones), that only the text encoder changes, that a run with
//! pretraining still resumes bit for bit, and the config keys.

use kuosan_diffusion::config::ModelConfig;
use kuosan_diffusion::data::{DataOptions, DataSpec, Dataset, Loader};
use kuosan_diffusion::models::Models;
use kuosan_diffusion::text_pretrain::{block_mean, pretrain_text, target_side, PretrainConfig};
use kuosan_diffusion::train::{train, Phase, TrainOptions};
use kuosan_nn::VarStore;
use kuosan_tensor::{no_grad, Device, Tensor};
use std::path::PathBuf;
use std::sync::Arc;

fn shapes16() -> Arc<dyn Dataset> {
    DataSpec::parse("shapes")
        .unwrap()
        .open(&DataOptions {
            size: 16,
            ..DataOptions::default()
        })
        .unwrap()
}

#[test]
fn block_mean_averages_blocks_and_rejects_bad_shapes() {
    // [1, 1, 4, 4] holding 0..16 row-major -> 2x2 means of 2x2 blocks.
    let x = Tensor::from_vec(
        (0..16).map(|v| v as f32).collect(),
        [1, 1, 4, 4],
        &Device::Cpu,
    )
    .unwrap();
    let m = block_mean(&x, 2).unwrap();
    assert_eq!(m.dims(), [1, 1, 2, 2]);
    assert_eq!(m.to_vec::<f32>().unwrap(), [2.5, 4.5, 10.5, 12.5]);
    assert_eq!(
        block_mean(&x, 4).unwrap().to_vec::<f32>().unwrap(),
        x.to_vec::<f32>().unwrap()
    );
    let e = block_mean(&x, 3).unwrap_err().to_string();
    assert!(e.contains("block_mean") && e.contains("3x3"), "{e}");
    assert!(block_mean(&x.reshape([4, 4]).unwrap(), 2).is_err());
    assert_eq!(
        (
            target_side(32),
            target_side(64),
            target_side(28),
            target_side(8)
        ),
        (16, 16, 28, 8)
    );
}

/// Mean squared error of the decoder's pictures for `captions` against `target`.
fn decoder_mse(
    models: &Models,
    decoder: &kuosan_diffusion::text_pretrain::CaptionDecoder,
    captions: &[String],
    target: &Tensor,
) -> f64 {
    let (_, pooled, _) = models.encode_pooled(captions).unwrap();
    mse(&decoder.forward(&pooled).unwrap(), target)
}

/// Mean squared error of the spatial decoder's pictures (from the token states).
fn spatial_mse(
    models: &Models,
    decoder: &kuosan_diffusion::text_pretrain::SpatialDecoder,
    captions: &[String],
    target: &Tensor,
) -> f64 {
    let (context, _, mask) = models.encode_pooled(captions).unwrap();
    mse(&decoder.forward(&context, &mask).unwrap(), target)
}

/// Mean of (a - b)^2 over all elements.
fn mse(a: &Tensor, b: &Tensor) -> f64 {
    a.sub(b)
        .unwrap()
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64
}

/// Every parameter's values, in the store's order.
fn values(vars: &VarStore) -> Vec<Vec<f32>> {
    vars.vars()
        .iter()
        .map(|(_, t)| t.to_vec().unwrap())
        .collect()
}

/// The spatial decoder (`text_pretrain_spatial`) learns to draw a caption's picture from
/// the token states, through cross-attention, and only from the right captions.
#[test]
fn the_spatial_decoder_reads_the_picture_from_the_token_states() {
    let data = shapes16();
    let cfg = ModelConfig::preset("tiny", 3, 16).unwrap();
    let models = Models::new(&cfg, &Device::Cpu, 0).unwrap();
    let p = PretrainConfig {
        steps: 200,
        batch: 64,
        lr: 5e-3,
        contrastive: 0.0,
        spatial: 1.0,
    };
    let report = pretrain_text(&models, data.clone(), &p, 0, |_, _, _| {}).unwrap();
    let spatial = report
        .spatial
        .expect("spatial > 0 trains a spatial decoder");
    let _g = no_grad();
    let batch = Loader::new(data, 98, 64)
        .unwrap()
        .next_batch(&Device::Cpu)
        .unwrap();
    let target = block_mean(&batch.images, target_side(16)).unwrap();
    let pic = {
        let (context, _, mask) = models.encode_pooled(&batch.captions).unwrap();
        spatial.forward(&context, &mask).unwrap()
    };
    assert_eq!(pic.dims(), target.dims());
    let mut shifted = batch.captions.clone();
    shifted.rotate_left(1);
    let matched = spatial_mse(&models, &spatial, &batch.captions, &target);
    let shuffled = spatial_mse(&models, &spatial, &shifted, &target);
    // Measured 0.196 against 0.228 after these 200 steps (the pooled decoder learns
    // faster); a decoder that ignored the tokens would score the two alike.
    assert!(
        matched < 0.9 * shuffled,
        "spatial decoder MSE with the right captions {matched:.4}, with shuffled ones {shuffled:.4}"
    );
    // Weight 0 trains no image tower (and, in the other tests, no spatial decoder).
    assert!(report.tower.is_none());
}

#[test]
fn the_pretrained_encoder_tells_captions_apart_and_the_unet_is_untouched() {
    let data = shapes16();
    let cfg = ModelConfig::preset("tiny", 3, 16).unwrap();
    let models = Models::new(&cfg, &Device::Cpu, 0).unwrap();
    let unet_before = values(&models.unet_vars);
    let text_before = models.text_vars.vars()[0].1.to_vec::<f32>().unwrap();
    let p = PretrainConfig {
        steps: 300,
        batch: 64,
        lr: 5e-3,
        contrastive: 0.3,
        spatial: 0.0,
    };
    let mut seen = 0;
    let report = pretrain_text(&models, data.clone(), &p, 0, |step, steps, _| {
        assert_eq!((step, steps), (seen + 1, 300));
        seen = step;
    })
    .unwrap();
    assert_eq!(seen, 300);
    assert!(
        report.spatial.is_none(),
        "spatial 0 trains no spatial decoder"
    );
    assert!(
        report.last_loss < 0.5 * report.first_loss,
        "loss {} -> {}",
        report.first_loss,
        report.last_loss
    );
    // Held-out items (another order's batch): the decoder predicts a picture from its
    // own caption far better than from another item's. A decoder that ignored the text
    // (the mean picture of all captions) would score the two alike.
    let _g = no_grad();
    let batch = Loader::new(data, 99, 64)
        .unwrap()
        .next_batch(&Device::Cpu)
        .unwrap();
    let target = block_mean(&batch.images, target_side(16)).unwrap();
    let mut shifted = batch.captions.clone();
    shifted.rotate_left(1);
    let matched = decoder_mse(&models, &report.decoder, &batch.captions, &target);
    let shuffled = decoder_mse(&models, &report.decoder, &shifted, &target);
    assert!(
        matched < 0.7 * shuffled,
        "decoder MSE with the right captions {matched:.4}, with shuffled ones {shuffled:.4}"
    );
    // Only the text encoder learned.
    let unet_after = values(&models.unet_vars);
    assert!(
        unet_before == unet_after,
        "the pretraining changed the U-Net"
    );
    assert_ne!(
        text_before,
        models.text_vars.vars()[0].1.to_vec::<f32>().unwrap()
    );
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kuosan-pretrain-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn options(out: PathBuf, resume: bool, stop_after: Option<u64>) -> TrainOptions {
    let mut config = ModelConfig::preset("tiny", 3, 16).unwrap();
    config.train.steps = 16;
    config.train.text_pretrain = PretrainConfig {
        steps: 12,
        batch: 16,
        lr: 2e-3,
        contrastive: 0.5,
        spatial: 0.0,
    };
    TrainOptions {
        data_spec: "shapes".into(),
        dataset: shapes16(),
        config,
        device: Device::Cpu,
        out,
        resume,
        seed: 5,
        sample_every: 0,
        checkpoint_every: 8,
        log_every: 1,
        sample_prompts: vec![],
        stop_after,
        eval: None,
    }
}

#[test]
fn a_run_with_text_pretraining_resumes_bitwise_without_pretraining_again() {
    let (a, b) = (tmp("straight"), tmp("resumed"));
    let phases = |opts: &TrainOptions| {
        let mut p = vec![];
        train(opts, |s| p.push(s.phase)).unwrap();
        p
    };
    let straight = phases(&options(a.clone(), false, None));
    assert_eq!(
        straight
            .iter()
            .filter(|&&p| p == Phase::TextPretrain)
            .count(),
        12
    );
    assert_eq!(
        straight.iter().filter(|&&p| p == Phase::Diffusion).count(),
        16
    );
    phases(&options(b.clone(), false, Some(8)));
    let resumed = phases(&options(b.clone(), true, None));
    assert!(
        resumed.iter().all(|&p| p == Phase::Diffusion) && resumed.len() == 8,
        "the resumed run pretrained again or ran the wrong steps: {resumed:?}"
    );
    let file = |d: &PathBuf, f: &str| std::fs::read(d.join(f)).unwrap();
    assert!(
        file(&a, "checkpoint/model.safetensors") == file(&b, "checkpoint/model.safetensors"),
        "the resumed run's weights differ from the straight run's"
    );
    let losses = |d: &PathBuf| -> Vec<(u64, u64)> {
        String::from_utf8(file(d, "metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter_map(|v| Some((v["step"].as_u64()?, v["loss"].as_f64()?.to_bits())))
            .collect()
    };
    assert_eq!(losses(&a), losses(&b));
    assert_eq!(losses(&a).len(), 16);
    // The pretraining's own line comes first.
    let first: serde_json::Value = serde_json::from_str(
        String::from_utf8(file(&a, "metrics.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["step"], 0);
    assert_eq!(first["text_pretrain"]["steps"], 12);
    assert!(first["text_pretrain"]["last_loss"].as_f64().unwrap() > 0.0);
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn pretraining_scale_shift_and_snr_floor_keys_round_trip_and_bad_values_are_named() {
    let mut cfg = ModelConfig::preset("tiny", 3, 16).unwrap();
    cfg.train.text_pretrain = PretrainConfig {
        steps: 300,
        batch: 64,
        lr: 1e-3,
        contrastive: 0.25,
        spatial: 0.0,
    };
    cfg.unet.scale_shift = true;
    cfg.train.min_snr_gamma = Some(5.0);
    cfg.train.snr_floor = Some(1.0);
    let v = cfg.to_json();
    assert_eq!(v["unet"]["resnet_time_scale_shift"], "scale_shift");
    assert_eq!(ModelConfig::from_json(&v, "test").unwrap(), cfg);
    // A config written before these keys existed reads as no pretraining, "default".
    let mut old = v.clone();
    for k in [
        "text_pretrain_steps",
        "text_pretrain_batch",
        "text_pretrain_lr",
    ] {
        old["train"].as_object_mut().unwrap().remove(k);
    }
    old["unet"]
        .as_object_mut()
        .unwrap()
        .remove("resnet_time_scale_shift");
    let back = ModelConfig::from_json(&old, "old").unwrap();
    assert_eq!(back.train.text_pretrain.steps, 0);
    assert!(!back.unet.scale_shift);
    let bad = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut w = v.clone();
        edit(&mut w);
        ModelConfig::from_json(&w, "cfg.json").unwrap_err()
    };
    let e = bad(&|w| w["train"]["text_pretrain_lr"] = serde_json::json!(0.0));
    assert!(
        e.contains("cfg.json") && e.contains("text_pretrain_lr"),
        "{e}"
    );
    let e = bad(&|w| w["train"]["text_pretrain_batch"] = serde_json::json!(0));
    assert!(e.contains("text_pretrain_batch"), "{e}");
    let e = bad(&|w| w["train"]["text_pretrain_contrastive"] = serde_json::json!(-0.5));
    assert!(e.contains("text_pretrain_contrastive"), "{e}");
    let e = bad(&|w| w["train"]["text_pretrain_spatial"] = serde_json::json!(-1.0));
    assert!(e.contains("text_pretrain_spatial"), "{e}");
    let e = bad(&|w| w["train"]["snr_floor"] = serde_json::json!(6.0));
    assert!(
        e.contains("snr_floor") && e.contains("min_snr_gamma"),
        "{e}"
    );
    let e = bad(&|w| w["train"]["min_snr_gamma"] = serde_json::json!(-1.0));
    assert!(e.contains("min_snr_gamma"), "{e}");
    let e = bad(&|w| w["unet"]["resnet_time_scale_shift"] = serde_json::json!("film"));
    assert!(
        e.contains("resnet_time_scale_shift") && e.contains("film"),
        "{e}"
    );
}

#[test]
fn a_frozen_text_encoder_keeps_its_pretrained_weights() {
    let out = tmp("frozen");
    let mut opts = options(out.clone(), false, None);
    opts.config.train.text_lr_scale = 0.0;
    opts.config.train.steps = 6;
    train(&opts, |_| {}).unwrap();
    // The checkpoint's raw text encoder equals a model that was only pretrained: the
    // diffusion steps never touched it.
    let models = Models::new(&opts.config, &Device::Cpu, opts.seed).unwrap();
    pretrain_text(
        &models,
        opts.dataset.clone(),
        &opts.config.train.text_pretrain,
        opts.seed,
        |_, _, _| {},
    )
    .unwrap();
    let run = kuosan_diffusion::run::RunDir::new(&out);
    let (_, raw, _, _) = run.load_checkpoint(&Device::Cpu).unwrap();
    let (mut text, mut unet_moved) = (0, false);
    for (name, want) in models.params() {
        let got = raw[&name].to_vec::<f32>().unwrap();
        if name.starts_with("text_encoder.") {
            assert_eq!(want.to_vec::<f32>().unwrap(), got, "{name} moved");
            text += 1;
        } else {
            unet_moved |= want.to_vec::<f32>().unwrap() != got;
        }
    }
    assert!(text > 0 && unet_moved, "the U-Net did not train");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn every_preset_round_trips_and_small_pretrains_then_freezes_its_text_encoder() {
    for name in ["tiny", "small", "base"] {
        for channels in [1, 3] {
            let cfg = ModelConfig::preset(name, channels, 32).unwrap();
            let back = ModelConfig::from_json(&cfg.to_json(), name).unwrap();
            assert_eq!(back, cfg, "{name} with {channels} channels");
        }
    }
    // What the README says the CPU default does (runs S-Y0, G20, E3).
    let s = ModelConfig::preset("small", 3, 32).unwrap();
    assert!(s.train.text_pretrain.steps > 0 && s.train.text_pretrain.contrastive > 0.0);
    assert_eq!(s.train.text_lr_scale, 0.0);
    // 4000 steps with the 120-step warm-up of its 2400-step days (run S40).
    assert_eq!((s.train.steps, s.train.warmup), (4000, 120));
    assert!(s.coord_channels && s.unet.in_channels == 5 && s.unet.out_channels == 3);
    assert!(s.unet.scale_shift);
    assert_eq!(
        (s.train.min_snr_gamma, s.train.snr_floor),
        (Some(20.0), Some(1.0))
    );
    assert_eq!(s.train.edge_weight, Some(3.0));
    // tiny stays the plain model the unit tests were written for.
    let t = ModelConfig::preset("tiny", 3, 32).unwrap();
    assert_eq!(t.train.text_pretrain, PretrainConfig::NONE);
    assert_eq!(t.train.text_lr_scale, 1.0);
    assert_eq!(t.train.edge_weight, None);
}
