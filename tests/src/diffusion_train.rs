//! The trainer and sampler end to end on the tiny config: the loss falls, CPU and GPU
//! runs from one seed give the same losses, a run stopped and resumed continues bit for
//! bit, the exported run folder loads and samples, and bad input is a clear error.

use crate::harness::gpu;
use kuosan_diffusion::config::ModelConfig;
use kuosan_diffusion::data::{DataOptions, DataSpec};
use kuosan_diffusion::run::RunDir;
use kuosan_diffusion::sample::{sample, SampleOptions, SamplerKind};
use kuosan_diffusion::timesteps::BiasScope;
use kuosan_diffusion::train::{train, TrainOptions};
use kuosan_diffusion::Guidance;
use kuosan_tensor::Device;
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kuosan-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The tiny config on 16x16 shapes: small enough for the suite's time budget.
fn options(out: PathBuf, steps: u64, device: Device, resume: bool) -> TrainOptions {
    let spec = DataSpec::parse("shapes").unwrap();
    let dataset = spec
        .open(&DataOptions {
            size: 16,
            ..DataOptions::default()
        })
        .unwrap();
    let mut config = ModelConfig::preset("tiny", 3, 16).unwrap();
    config.train.steps = steps;
    TrainOptions {
        data_spec: "shapes".into(),
        dataset,
        config,
        device,
        out,
        resume,
        seed: 3,
        sample_every: 0,
        checkpoint_every: 10,
        log_every: 1,
        sample_prompts: vec!["a red circle".into()],
        stop_after: None,
        eval: None,
    }
}

/// (step, loss) from a run's metrics.jsonl.
fn losses(dir: &std::path::Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap())
        })
        .collect()
}

#[test]
fn loss_falls_over_200_cpu_steps() {
    let out = tmp("falls");
    let mut opts = options(out.clone(), 200, Device::Cpu, false);
    opts.checkpoint_every = 1000;
    let report = train(&opts, |_| {}).unwrap();
    assert_eq!(report.final_step, 200);
    let l = losses(&out);
    let mean = |r: &[(u64, f64)]| r.iter().map(|x| x.1).sum::<f64>() / r.len() as f64;
    let (first, last) = (mean(&l[..20]), mean(&l[180..]));
    assert!(
        last < 0.6 * first,
        "loss {first:.3} over the first 20 steps, {last:.3} over the last 20"
    );
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn stop_and_resume_equals_straight_bitwise() {
    let (a, b) = (tmp("straight"), tmp("resumed"));
    train(&options(a.clone(), 20, Device::Cpu, false), |_| {}).unwrap();
    // The same 20-step run, interrupted after step 10 and resumed.
    train(
        &TrainOptions {
            stop_after: Some(10),
            ..options(b.clone(), 20, Device::Cpu, false)
        },
        |_| {},
    )
    .unwrap();
    train(&options(b.clone(), 20, Device::Cpu, true), |_| {}).unwrap();
    let bits = |d: &std::path::Path| {
        losses(d)
            .iter()
            .map(|(s, l)| (*s, l.to_bits()))
            .collect::<Vec<_>>()
    };
    assert_eq!(bits(&a), bits(&b));
    let weights =
        |d: &std::path::Path| std::fs::read(d.join("checkpoint/model.safetensors")).unwrap();
    assert!(
        weights(&a) == weights(&b),
        "the resumed run's weights differ from the straight run's"
    );
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn cpu_and_gpu_losses_agree() {
    let (c, g) = (tmp("cpu"), tmp("gpu"));
    // Batch 2: software Vulkan runs the U-Net ~100x slower than the CPU kernels.
    let small = |out: PathBuf, device: Device| {
        let mut o = options(out, 20, device, false);
        o.config.train.batch = 2;
        o
    };
    train(&small(c.clone(), Device::Cpu), |_| {}).unwrap();
    train(&small(g.clone(), gpu()), |_| {}).unwrap();
    for ((s, lc), (_, lg)) in losses(&c).iter().zip(losses(&g)) {
        assert!(
            (lc - lg).abs() <= 2e-3 * lc.abs().max(1.0),
            "step {s}: cpu loss {lc}, gpu loss {lg}"
        );
    }
    let _ = std::fs::remove_dir_all(&c);
    let _ = std::fs::remove_dir_all(&g);
}

#[test]
fn run_folder_loads_and_samples_and_errors_are_clear() {
    let out = tmp("folder");
    train(
        &TrainOptions {
            stop_after: Some(2),
            ..options(out.clone(), 4, Device::Cpu, false)
        },
        |_| {},
    )
    .unwrap();
    for f in [
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "scheduler/scheduler_config.json",
        "checkpoint/state.json",
    ] {
        assert!(out.join(f).exists(), "{f} missing from the run folder");
    }
    let run = RunDir::new(&out);
    let (cfg, models) = run.load_models(&Device::Cpu).unwrap();
    let o = SampleOptions {
        prompts: vec!["a red circle".into(), "一个蓝色的正方形".into()],
        negative: Some("a green square".into()),
        sampler: SamplerKind::Ddim,
        steps: 3,
        guidance: Guidance::scale(4.0),
        eta: 0.0,
        n: 2,
        seed: 1,
        init: None,
    };
    let images = sample(&models, &cfg, &o, |_, _| {}).unwrap();
    assert_eq!(images.dims(), [4, 3, 16, 16]);
    let v = images.to_vec_f64().unwrap();
    assert!(v.iter().all(|x| (-1.0..=1.0).contains(x)));
    // Same seed, same images (DDPM draws noise at every step).
    let ddpm = SampleOptions {
        sampler: SamplerKind::Ddpm,
        steps: 4,
        ..o.clone()
    };
    assert_eq!(
        sample(&models, &cfg, &ddpm, |_, _| {})
            .unwrap()
            .to_vec_f64()
            .unwrap(),
        sample(&models, &cfg, &ddpm, |_, _| {})
            .unwrap()
            .to_vec_f64()
            .unwrap()
    );

    // A corrupt checkpoint file: resuming names it.
    std::fs::write(out.join("checkpoint/optimizer.safetensors"), b"garbage").unwrap();
    let err = train(&options(out.clone(), 4, Device::Cpu, true), |_| {})
        .err()
        .expect("a corrupt checkpoint fails")
        .to_string();
    assert!(err.contains("optimizer.safetensors"), "{err}");
    // No checkpoint at all.
    let empty = tmp("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(RunDir::new(&empty).load_models(&Device::Cpu).is_err());
    // An unknown config key.
    let bad = empty.join("bad.json");
    let mut v = ModelConfig::preset("tiny", 3, 16).unwrap().to_json();
    v["train"]["learning_rate"] = serde_json::json!(1.0);
    std::fs::write(&bad, v.to_string()).unwrap();
    let err = ModelConfig::load(&bad).unwrap_err();
    assert!(err.contains("learning_rate"), "{err}");
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&empty);
}

/// Two DDIM pictures of `prompt` from pure noise.
fn ddim(prompt: &str, steps: usize, guidance: f64, eta: f64, seed: u64) -> SampleOptions {
    SampleOptions {
        prompts: vec![prompt.into()],
        negative: None,
        sampler: SamplerKind::Ddim,
        steps,
        guidance: Guidance::scale(guidance),
        eta,
        n: 2,
        seed,
        init: None,
    }
}

#[test]
fn the_guidance_window_and_rescale_change_only_the_steps_they_name() {
    use kuosan_diffusion::models::Models;
    let cfg = ModelConfig::preset("tiny", 3, 16).unwrap();
    let models = Models::new(&cfg, &Device::Cpu, 0).unwrap();
    let run = |g: Guidance| {
        let o = SampleOptions {
            guidance: g,
            ..ddim("a red circle", 4, 1.0, 1.0, 3)
        };
        sample(&models, &cfg, &o, |_, _| {})
            .unwrap()
            .to_vec::<f32>()
            .unwrap()
    };
    let plain = run(Guidance::scale(4.0));
    let unguided = run(Guidance::scale(1.0));
    assert_ne!(plain, unguided);
    // A window that holds no step (int(0.2 x 4) = 0) is guidance 1, bit for bit; one over
    // every step, and a rescale of 0, are plain guidance.
    let window = |start, stop| Guidance {
        start,
        stop,
        ..Guidance::scale(4.0)
    };
    assert_eq!(run(window(0.0, 0.2)), unguided);
    assert_eq!(run(window(0.0, 1.0)), plain);
    // Guiding the first half only, or rescaling, gives a third result.
    let half = run(window(0.0, 0.5));
    assert!(half != plain && half != unguided);
    let rescaled = run(Guidance {
        rescale: 0.7,
        ..Guidance::scale(4.0)
    });
    assert!(rescaled != plain && rescaled != unguided);
    // Out-of-range settings are an error, not a silent default.
    let o = SampleOptions {
        guidance: window(0.6, 0.4),
        ..ddim("a red circle", 4, 1.0, 1.0, 3)
    };
    let err = sample(&models, &cfg, &o, |_, _| {})
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("start < stop"), "{err}");
}

#[test]
fn img2img_runs_the_last_steps_and_inpainting_keeps_the_unmasked_pixels() {
    use kuosan_diffusion::data::shapes::ShapesDataset;
    use kuosan_diffusion::image::{write_png, Image};
    use kuosan_diffusion::models::Models;
    use kuosan_diffusion::sample::InitImage;
    let cfg = ModelConfig::preset("tiny", 3, 16).unwrap();
    let models = Models::new(&cfg, &Device::Cpu, 0).unwrap();
    let dir = tmp("edit");
    std::fs::create_dir_all(&dir).unwrap();
    let picture = ShapesDataset::new(0, 4, 16).image(1);
    write_png(dir.join("init.png"), &picture).unwrap();
    // White (paint) on the left half, black (keep) on the right.
    let mut mask = Image::new(16, 16, 1, 0);
    (0..16 * 16)
        .filter(|p| p % 16 < 8)
        .for_each(|p| mask.data[p] = 255);
    write_png(dir.join("mask.png"), &mask).unwrap();
    let base = ddim("a red circle", 10, 2.0, 1.0, 5);
    // img2img at strength 0.5 runs the last 5 of 10 steps.
    let init = InitImage::from_files(&dir.join("init.png"), None, Some(0.5), 3, 16).unwrap();
    let mut calls = Vec::new();
    let o = SampleOptions {
        init: Some(init),
        ..base.clone()
    };
    let out = sample(&models, &cfg, &o, |i, n| calls.push((i, n))).unwrap();
    assert_eq!(calls, (1..=5).map(|i| (i, 5)).collect::<Vec<_>>());
    assert_eq!(out.dims(), [2, 3, 16, 16]);
    // Inpainting: the kept (right) half is the picture itself, exactly.
    let init = InitImage::from_files(
        &dir.join("init.png"),
        Some(&dir.join("mask.png")),
        None,
        3,
        16,
    )
    .unwrap();
    assert_eq!(init.strength, 1.0);
    let want = init.image.to_vec::<f32>().unwrap();
    let o = SampleOptions {
        init: Some(init),
        ..base.clone()
    };
    let got = sample(&models, &cfg, &o, |_, _| {})
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let mut painted_differs = false;
    for (k, v) in got.iter().enumerate() {
        let p = k % (3 * 256);
        if p % 16 >= 8 {
            assert_eq!(*v, want[p], "kept pixel {k} changed");
        } else {
            painted_differs |= *v != want[p];
        }
    }
    assert!(painted_differs, "the masked half was not painted");
    // Bad pictures and masks: clear errors that name the file.
    write_png(dir.join("big.png"), &Image::new(20, 20, 3, 0)).unwrap();
    let e = InitImage::from_files(&dir.join("big.png"), None, None, 3, 16)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("big.png") && e.contains("20x20") && e.contains("16x16"),
        "{e}"
    );
    write_png(dir.join("black.png"), &Image::new(16, 16, 1, 0)).unwrap();
    let e = InitImage::from_files(
        &dir.join("init.png"),
        Some(&dir.join("black.png")),
        None,
        3,
        16,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("black.png") && e.contains("all black"), "{e}");
    let e = InitImage::from_files(&dir.join("init.png"), None, Some(0.0), 3, 16)
        .unwrap_err()
        .to_string();
    assert!(e.contains("strength"), "{e}");
    std::fs::write(dir.join("junk.png"), b"not a png").unwrap();
    let e = InitImage::from_files(&dir.join("junk.png"), None, None, 3, 16)
        .unwrap_err()
        .to_string();
    assert!(e.contains("junk.png"), "{e}");
    let e = InitImage::from_files(&dir.join("missing.png"), None, None, 3, 16)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.png"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_checkpoint_before_the_first_logged_step_still_trains() {
    // Logged every 10 steps, checkpointed at 2: no metrics.jsonl yet, so no curve yet.
    let out = tmp("earlyckpt");
    let mut o = options(out.clone(), 4, Device::Cpu, false);
    (o.log_every, o.checkpoint_every) = (10, 2);
    train(&o, |_| {}).unwrap();
    assert!(out.join("loss.png").exists() && out.join("checkpoint/state.json").exists());
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn periodic_eval_is_logged_and_plotted() {
    use kuosan_diffusion::eval::{EvalOptions, Judge};
    use kuosan_diffusion::train::PeriodicEval;
    let out = tmp("evalevery");
    let mut o = options(out.clone(), 4, Device::Cpu, false);
    let eo = EvalOptions {
        n: 1,
        steps: 2,
        ..EvalOptions::default()
    };
    o.eval = Some(PeriodicEval {
        every: 2,
        judge: Judge::Shapes,
        options: eo,
    });
    train(&o, |_| {}).unwrap();
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let evals: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("eval").is_some())
        .collect();
    assert_eq!(
        evals
            .iter()
            .map(|v| v["step"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [2, 4]
    );
    let e = &evals[1]["eval"];
    assert_eq!(e["n"].as_u64(), Some(18));
    assert!(
        e["accuracy"].is_number() && e["attributes"]["color"].is_number(),
        "{e}"
    );
    let (w, h) = kuosan_diffusion::image::png_dimensions(out.join("eval.png")).unwrap();
    assert!(w > 0 && h > 0);
    // `plot` redraws both from metrics.jsonl alone.
    std::fs::remove_file(out.join("loss.png")).unwrap();
    let written = kuosan_diffusion::plot::plot_run(&out).unwrap();
    assert_eq!(written, [out.join("loss.png"), out.join("eval.png")]);
    let e = kuosan_diffusion::plot::plot_run(&out.join("nope"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("metrics.jsonl"), "{e}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn coordinate_channels_and_text_lr_scale_round_trip() {
    use kuosan_diffusion::models::{coordinate_channels, Models};
    // x runs -1..1 along a row, y down a column.
    let c = coordinate_channels(3, 5, &Device::Cpu).unwrap();
    assert_eq!(c.dims(), [1, 2, 3, 5]);
    let v = c.to_vec::<f32>().unwrap();
    assert_eq!(&v[..5], &[-1.0, -0.5, 0.0, 0.5, 1.0]);
    assert_eq!((v[15], v[20], v[25]), (-1.0, 0.0, 1.0));
    // A config with them survives JSON, and a model with them samples images of the
    // image's channels (not the U-Net's 5 input channels).
    let mut cfg = ModelConfig::preset("tiny", 3, 16).unwrap();
    cfg.coord_channels = true;
    cfg.unet.in_channels = 5;
    cfg.train.text_lr_scale = 3.0;
    cfg.train.edge_weight = Some(8.0);
    let back = ModelConfig::from_json(&cfg.to_json(), "test").unwrap();
    assert_eq!(back, cfg);
    assert_eq!(cfg.image_channels(), 3);
    let models = Models::new(&cfg, &Device::Cpu, 0).unwrap();
    let o = ddim("a red circle", 2, 1.0, 0.0, 0);
    assert_eq!(
        sample(&models, &cfg, &o, |_, _| {}).unwrap().dims(),
        [2, 3, 16, 16]
    );
    // in_channels must match the coordinate setting.
    let mut v = cfg.to_json();
    v["coord_channels"] = serde_json::json!(false);
    let e = ModelConfig::from_json(&v, "cfg.json").unwrap_err();
    assert!(
        e.contains("in_channels") && e.contains("coord_channels"),
        "{e}"
    );
    let mut v = cfg.to_json();
    v["train"]["text_lr_scale"] = serde_json::json!(-1.0);
    let e = ModelConfig::from_json(&v, "cfg.json").unwrap_err();
    assert!(e.contains("text_lr_scale"), "{e}");
    let mut v = cfg.to_json();
    v["train"]["edge_weight"] = serde_json::json!(-2.0);
    let e = ModelConfig::from_json(&v, "cfg.json").unwrap_err();
    assert!(e.contains("train.edge_weight"), "{e}");
    // The timestep bias's scope: `small` biases only the pairs; a file without the key
    // (a run folder from before it) keeps every picture biased; a bad name is named.
    let small = ModelConfig::preset("small", 3, 32).unwrap();
    assert_eq!(small.train.timestep_bias.scope, BiasScope::MultiObject);
    assert_eq!(
        ModelConfig::from_json(&small.to_json(), "test").unwrap(),
        small
    );
    let mut v = small.to_json();
    v["train"]
        .as_object_mut()
        .unwrap()
        .remove("timestep_bias_scope");
    let old = ModelConfig::from_json(&v, "old.json").unwrap();
    assert_eq!(old.train.timestep_bias.scope, BiasScope::All);
    v["train"]["timestep_bias_scope"] = serde_json::json!("pairs");
    let e = ModelConfig::from_json(&v, "cfg.json").unwrap_err();
    assert!(
        e.contains("train.timestep_bias_scope") && e.contains("multi_object"),
        "{e}"
    );
    // The low-discrepancy timesteps: off in the presets and in files without the key,
    // on round-trips, a non-boolean is named.
    assert!(!small.train.timestep_low_discrepancy);
    let mut v = small.to_json();
    v["train"]
        .as_object_mut()
        .unwrap()
        .remove("timestep_low_discrepancy");
    assert_eq!(ModelConfig::from_json(&v, "old.json").unwrap(), small);
    let mut ld = small.clone();
    ld.train.timestep_low_discrepancy = true;
    assert_eq!(ModelConfig::from_json(&ld.to_json(), "test").unwrap(), ld);
    v["train"]["timestep_low_discrepancy"] = serde_json::json!(1);
    let e = ModelConfig::from_json(&v, "cfg.json").unwrap_err();
    assert!(e.contains("train.timestep_low_discrepancy"), "{e}");
}

#[test]
fn context_mask_hides_the_padding_from_cross_attention() {
    use kuosan_diffusion::models::Models;
    use kuosan_tensor::Tensor;
    let mut cfg = ModelConfig::preset("tiny", 3, 16).unwrap();
    cfg.context_mask = true;
    assert_eq!(ModelConfig::from_json(&cfg.to_json(), "test").unwrap(), cfg);
    let prompt = vec!["a red circle".to_string()];
    let x = Tensor::from_vec(
        (0..3 * 16 * 16)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect(),
        [1, 3, 16, 16],
        &Device::Cpu,
    )
    .unwrap();
    let t = [600.0];
    let predict = |m: &Models| {
        let text = m.encode(&prompt).unwrap();
        m.predict(&x, &t, &text).unwrap().to_vec::<f32>().unwrap()
    };
    // Padded to the tokenizer's length with the mask, the prediction is the one from the
    // prompt's own tokens alone (BOS, 12 bytes, EOS: no padding at all).
    let padded = Models::new(&cfg, &Device::Cpu, 3).unwrap();
    let cond = padded.encode(&prompt).unwrap();
    assert_eq!(
        cond.mask.as_ref().unwrap().dims(),
        [1, cfg.text.max_position_embeddings]
    );
    let mut exact = Models::new(&cfg, &Device::Cpu, 3).unwrap();
    exact.tokenizer = kuosan_textenc::Tokenizer::new(14);
    let max_diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max)
    };
    let a = predict(&padded);
    let diff = max_diff(&a, &predict(&exact));
    assert!(
        diff < 1e-5,
        "masked padding changed the prediction by {diff}"
    );
    // Without the mask the padding states take part, and the prediction moves.
    let mut unmasked = Models::new(&cfg, &Device::Cpu, 3).unwrap();
    unmasked.context_mask = false;
    assert!(unmasked.encode(&prompt).unwrap().mask.is_none());
    let moved = max_diff(&a, &predict(&unmasked));
    assert!(
        moved > 1e-4,
        "the padding did not matter unmasked ({moved})"
    );
}
