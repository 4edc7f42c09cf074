//! `bench train` / `bench sample`: the whole model's training step and sampling step,
//! beside PyTorch + diffusers running the same model (`../shared/peers/torch_unet.py`,
//! fed the config.json files written here).
//!
//! Each side runs in its own process, so peak RSS is each side's own: a round runs our
//! child (`current_exe() MODEL_CHILD_COMMAND ...`, JSON on stdout) and then the peer;
//! rounds alternate so drifting machine load hits both alike, and the report gives the
//! medians over rounds. A training step is the trainer's own `train_step`: the text
//! encoder and U-Net forward, loss, backward, gradient clipping, AdamW and EMA. A sampling
//! step is one U-Net forward without autograd on a fixed text context, as the peer's.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use kuosan_diffusion::config::ModelConfig;
use kuosan_diffusion::models::Models;
use kuosan_diffusion::train::{train_step, NoisyBatch, StepRule};
use kuosan_diffusion::{LossConfig, NoiseSchedule};
use kuosan_nn::{AdamW, AdamWConfig, Ema};
use kuosan_tensor::{no_grad, DType, Device, Philox, Tensor};
use serde::{Deserialize, Serialize};

use crate::timing::median;

/// Hidden subcommand the benchmark binary must route to [`run_child`] (xtask does).
pub const MODEL_CHILD_COMMAND: &str = "bench-model-child";

/// The peer's script, relative to the project root.
pub const DEFAULT_PEER: &str = "../shared/peers/torch_unet.py";

/// Tokens per prompt: kuosan's tokenizer pads every prompt to the text model's
/// max_position_embeddings (as CLIP pipelines pad to 77), so the peer is given as many.
fn tokens(cfg: &ModelConfig) -> usize {
    cfg.text.max_position_embeddings
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct Options {
    /// `tiny`, `small`, `base` or a kuosan config file.
    pub config: String,
    pub batch: usize,
    /// `cpu`, `gpu` or `auto`, for our side (the peer runs on the CPU).
    pub device: String,
    /// Whether a training step is measured (`bench train`); a sampling step always is.
    pub train: bool,
    /// Rounds (ours then the peer), at least 5 for the medians the issue asks for.
    pub rounds: usize,
    /// Timed steps of each kind per round, after one warm-up step.
    pub steps: usize,
    /// Threads for both sides.
    pub threads: usize,
    /// Where the config.json files go.
    pub out: PathBuf,
    /// The peer: a Python interpreter with torch + diffusers + transformers, and the
    /// script; None runs ours alone.
    pub peer: Option<Peer>,
}

/// How to run the PyTorch peer.
#[derive(Clone, Debug)]
pub struct Peer {
    pub python: PathBuf,
    pub script: PathBuf,
}

/// One side's medians (or one round's).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Timing {
    /// None when the training step was not measured (`bench sample`).
    pub train_step_ms: Option<f64>,
    pub sample_step_ms: f64,
    /// Peak resident set of the process (VmHWM / ru_maxrss).
    pub peak_rss_bytes: u64,
}

/// The whole result, as `--json` writes it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelReport {
    pub cpu: String,
    pub config: String,
    pub batch: usize,
    pub device: String,
    pub threads: usize,
    /// The configs both sides built, so anyone can run the peer on the same model.
    pub unet_config: PathBuf,
    pub text_config: PathBuf,
    pub params: usize,
    pub train_img_per_s: Option<f64>,
    pub sample_img_steps_per_s: f64,
    pub peak_rss_bytes: u64,
    pub ours: Timing,
    /// Every round of ours.
    pub ours_rounds: Vec<Timing>,
    pub peer: Option<PeerResult>,
}

/// The peer's medians and ours over theirs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerResult {
    pub name: String,
    pub train_img_per_s: f64,
    pub sample_img_steps_per_s: f64,
    /// The peer process's peak RSS (its whole run: sampling and training steps).
    pub peak_rss_bytes: u64,
    pub timing: Timing,
    pub rounds: Vec<Timing>,
    /// Our throughput over the peer's (higher is better).
    pub train_ratio: Option<f64>,
    pub sample_ratio: f64,
    /// Our peak RSS over the peer's (lower is better); training runs only.
    pub memory_ratio: Option<f64>,
}

/// The model config `config` names, at `batch`, for 3-channel 32x32 pictures (the
/// built-in shapes).
pub fn model_config(config: &str, batch: usize) -> Result<ModelConfig, String> {
    let mut cfg = match config {
        "tiny" | "small" | "base" => ModelConfig::preset(config, 3, 32)?,
        file => ModelConfig::load(Path::new(file))?,
    };
    cfg.train.batch = batch;
    Ok(cfg)
}

/// Writes the diffusers / transformers config.json files the peer reads; returns
/// (unet, text) paths.
fn write_configs(cfg: &ModelConfig, out: &Path) -> Result<(PathBuf, PathBuf), String> {
    let unet = out.join("unet").join("config.json");
    let text = out.join("text_encoder").join("config.json");
    for (path, json) in [(&unet, cfg.unet.to_json()), (&text, cfg.text.to_json())] {
        let dir = path.parent().expect("joined path has a parent");
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let body = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
        std::fs::write(path, body).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok((unet, text))
}

/// Runs the rounds and gathers the report.
pub fn run(opts: &Options) -> Result<ModelReport, String> {
    if opts.rounds == 0 || opts.steps == 0 || opts.batch == 0 || opts.threads == 0 {
        return Err("--rounds, --steps, --batch and --threads must be at least 1".into());
    }
    let cfg = model_config(&opts.config, opts.batch)?;
    let (unet_config, text_config) = write_configs(&cfg, &opts.out)?;
    if let Some(p) = &opts.peer {
        if !p.script.is_file() {
            return Err(format!(
                "peer script {} not found: pass --peer PATH (../shared/peers/torch_unet.py) or --no-peer",
                p.script.display()
            ));
        }
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let (mut ours, mut theirs) = (vec![], vec![]);
    let mut params = 0;
    for round in 1..=opts.rounds {
        eprintln!("bench model: round {round}/{}: kuosan", opts.rounds);
        let mut cmd = Command::new(&exe);
        cmd.args([
            MODEL_CHILD_COMMAND,
            "--config",
            &opts.config,
            "--batch",
            &opts.batch.to_string(),
            "--device",
            &opts.device,
            "--steps",
            &opts.steps.to_string(),
        ]);
        if opts.train {
            cmd.arg("--train");
        }
        let out = run_captured(cmd.env("RAYON_NUM_THREADS", opts.threads.to_string()))?;
        let child: ChildResult = serde_json::from_slice(&out)
            .map_err(|e| format!("benchmark child printed no result: {e}"))?;
        params = child.params;
        ours.push(child.timing);
        if let Some(peer) = &opts.peer {
            eprintln!("bench model: round {round}/{}: PyTorch", opts.rounds);
            theirs.push(run_peer(peer, opts, &cfg, &unet_config, &text_config)?);
        }
    }
    let ours_median = medians(&ours);
    let per_s = |ms: f64| opts.batch as f64 / ms * 1e3;
    let peer = (!theirs.is_empty()).then(|| {
        let t = medians(&theirs.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>());
        PeerResult {
            name: theirs[0].1.clone(),
            train_img_per_s: per_s(t.train_step_ms.unwrap_or(f64::NAN)),
            sample_img_steps_per_s: per_s(t.sample_step_ms),
            peak_rss_bytes: t.peak_rss_bytes,
            train_ratio: ours_median
                .train_step_ms
                .zip(t.train_step_ms)
                .map(|(o, p)| p / o),
            sample_ratio: t.sample_step_ms / ours_median.sample_step_ms,
            memory_ratio: opts
                .train
                .then(|| ours_median.peak_rss_bytes as f64 / t.peak_rss_bytes as f64),
            timing: t,
            rounds: theirs.into_iter().map(|(t, _)| t).collect(),
        }
    });
    Ok(ModelReport {
        cpu: crate::cpu::cpu_model(),
        config: opts.config.clone(),
        batch: opts.batch,
        device: opts.device.clone(),
        threads: opts.threads,
        unet_config,
        text_config,
        params,
        train_img_per_s: ours_median.train_step_ms.map(per_s),
        sample_img_steps_per_s: per_s(ours_median.sample_step_ms),
        peak_rss_bytes: ours_median.peak_rss_bytes,
        ours: ours_median,
        ours_rounds: ours,
        peer,
    })
}

/// Runs `cmd`, passing its stderr through; its stdout, or why it failed.
fn run_captured(cmd: &mut Command) -> Result<Vec<u8>, String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}", out.status));
    }
    Ok(out.stdout)
}

/// One round of the peer, through `peer_wrapper.py` (next to this file, embedded): it
/// runs the peer's script unchanged, adds our U-Net's pooled-text input (the EOS token's
/// state as diffusers' `class_labels`, since kuosan's U-Net has `class_embed_type`
/// "projection"), and reports the process's peak RSS.
fn run_peer(
    peer: &Peer,
    opts: &Options,
    cfg: &ModelConfig,
    unet: &Path,
    text: &Path,
) -> Result<(Timing, String), String> {
    let wrapper = opts.out.join("peer_wrapper.py");
    std::fs::write(&wrapper, include_str!("peer_wrapper.py"))
        .map_err(|e| format!("cannot write {}: {e}", wrapper.display()))?;
    let mut cmd = Command::new(&peer.python);
    cmd.arg(&wrapper)
        .arg(&peer.script)
        .args(["--batch", &opts.batch.to_string()])
        .args(["--threads", &opts.threads.to_string()])
        .args(["--tokens", &tokens(cfg).to_string()])
        .args(["--reps", &opts.steps.to_string()])
        .arg("--unet")
        .arg(unet)
        .arg("--text")
        .arg(text)
        .env("OMP_NUM_THREADS", opts.threads.to_string());
    let out = run_captured(&mut cmd)?;
    let text = String::from_utf8_lossy(&out);
    let mut fields = serde_json::Map::new();
    for line in text.lines().filter(|l| l.trim_start().starts_with('{')) {
        if let Ok(serde_json::Value::Object(m)) = serde_json::from_str(line) {
            fields.extend(m);
        }
    }
    let num = |k: &str| {
        fields
            .get(k)
            .and_then(|v| v.as_f64())
            .ok_or_else(|| format!("the peer printed no {k:?}: {text}"))
    };
    let timing = Timing {
        train_step_ms: Some(num("train_step_ms")?),
        sample_step_ms: num("sample_step_ms")?,
        peak_rss_bytes: num("peak_rss_bytes")? as u64,
    };
    let name = fields
        .get("peer")
        .and_then(|v| v.as_str())
        .unwrap_or("torch")
        .to_string();
    Ok((timing, name))
}

/// Field-wise medians over rounds.
fn medians(rounds: &[Timing]) -> Timing {
    let mut train: Vec<f64> = rounds.iter().filter_map(|t| t.train_step_ms).collect();
    let mut sample: Vec<f64> = rounds.iter().map(|t| t.sample_step_ms).collect();
    let mut rss: Vec<f64> = rounds.iter().map(|t| t.peak_rss_bytes as f64).collect();
    Timing {
        train_step_ms: (!train.is_empty()).then(|| median(&mut train)),
        sample_step_ms: median(&mut sample),
        peak_rss_bytes: median(&mut rss) as u64,
    }
}

/// What a child prints.
#[derive(Serialize, Deserialize)]
pub struct ChildResult {
    pub params: usize,
    pub timing: Timing,
}

/// The child's work: build the model, time `steps` sampling steps (and training steps
/// when `train`) after one warm-up each, report medians and this process's peak RSS.
pub fn run_child(
    config: &str,
    batch: usize,
    device: &str,
    steps: usize,
    train: bool,
) -> Result<ChildResult, String> {
    let cfg = model_config(config, batch)?;
    let device = Device::from_name(device).map_err(|e| e.to_string())?;
    let err = |e: kuosan_nn::Error| e.to_string();
    let terr = |e: kuosan_tensor::Error| e.to_string();
    let models = Models::new(&cfg, &device, 0).map_err(err)?;
    let ema_models = Models::new(&cfg, &device, 0).map_err(err)?;
    let params = models.params();
    let n_params = params.iter().map(|(_, t)| t.elem_count()).sum();
    let mut rng = Philox { seed: 7, offset: 0 };
    let c = cfg.image_channels();
    let s = cfg.unet.sample_size;
    let x0 = Tensor::randn([batch, c, s, s], DType::F32, &device, &mut rng).map_err(terr)?;
    // Every prompt is padded to the tokenizer's full length, so what they say does not
    // change the work.
    let captions: Vec<String> = (0..batch)
        .map(|i| format!("a red circle on the left {i}"))
        .collect();
    let time = |f: &mut dyn FnMut() -> Result<(), String>| -> Result<f64, String> {
        f()?; // warm-up: page faults, buffer pools, thread start
        let mut ms = Vec::with_capacity(steps);
        for _ in 0..steps {
            let t = Instant::now();
            f()?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        Ok(median(&mut ms))
    };
    let sample_step_ms = {
        let _guard = no_grad();
        let ctx = models.encode(&captions).map_err(terr)?;
        let t: Vec<f64> = vec![500.0; batch];
        time(&mut || {
            let out = models.predict(&x0, &t, &ctx).map_err(terr)?;
            // Wait for the result (a GPU queues work): read one value back.
            out.reshape([out.elem_count()])
                .and_then(|o| o.narrow(0, 0, 1))
                .and_then(|o| o.to_vec::<f32>())
                .map_err(terr)?;
            Ok(())
        })?
    };
    let train_step_ms = if train {
        let schedule = NoiseSchedule::new(cfg.beta_schedule, cfg.num_train_timesteps)
            .map_err(|e| e.to_string())?;
        let rule = StepRule {
            schedule,
            loss: LossConfig {
                prediction: cfg.prediction,
                min_snr_gamma: cfg.train.min_snr_gamma,
                snr_floor: cfg.train.snr_floor,
                // The peer's loss has no edge weights; a host-side map, cheap either way.
                edge_weight: None,
            },
            grad_clip: cfg.train.grad_clip,
            // The peer's step trains the text encoder with the U-Net; so does ours here,
            // whatever the config's text_lr_scale, so both time the same work.
            train_text: true,
        };
        let mut opt = AdamW::new(params.clone(), AdamWConfig::default()).map_err(err)?;
        let mut ema =
            Ema::with_shadow(ema_models.params(), &params, cfg.train.ema_decay).map_err(err)?;
        let mut step = 0;
        Some(time(&mut || {
            step += 1;
            let t: Vec<usize> = (0..batch).map(|i| (i * 997 + step * 31) % 1000).collect();
            let noise = Tensor::randn(x0.dims(), DType::F32, &device, &mut rng).map_err(terr)?;
            let batch = NoisyBatch {
                x0: x0.clone(),
                captions: captions.clone(),
                t,
                noise,
            };
            train_step(
                &models,
                &mut opt,
                &mut ema,
                &rule,
                &batch,
                1e-4,
                step as u64,
            )
            .map_err(err)?
            .to_vec::<f32>()
            .map_err(terr)?;
            Ok(())
        })?)
    } else {
        None
    };
    Ok(ChildResult {
        params: n_params,
        timing: Timing {
            train_step_ms,
            sample_step_ms,
            peak_rss_bytes: peak_rss_bytes(),
        },
    })
}

/// This process's peak resident set (Linux's VmHWM), 0 where unknown.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl ModelReport {
    /// A Markdown table: ours, the peer, the ratio.
    pub fn to_table(&self) -> String {
        let mut s = format!(
            "{} config {:?}, batch {}, {} thread(s), device {}, {} parameters\n\
             configs: {} {}\n\n| measure | kuosan | peer | ratio |\n|---|---|---|---|\n",
            self.cpu,
            self.config,
            self.batch,
            self.threads,
            self.device,
            self.params,
            self.unet_config.display(),
            self.text_config.display()
        );
        let p = self.peer.as_ref();
        let opt = |v: Option<f64>, d: usize| v.map_or("-".into(), |v| format!("{v:.d$}"));
        let ratio = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}x"));
        if let Some(t) = self.train_img_per_s {
            s += &format!(
                "| training img/s | {t:.1} | {} | {} |\n",
                opt(p.map(|p| p.train_img_per_s), 1),
                ratio(p.and_then(|p| p.train_ratio))
            );
        }
        s += &format!(
            "| sampling img-steps/s | {:.1} | {} | {} |\n",
            self.sample_img_steps_per_s,
            opt(p.map(|p| p.sample_img_steps_per_s), 1),
            ratio(p.map(|p| p.sample_ratio))
        );
        s += &format!(
            "| peak RSS MiB | {:.0} | {} | {} |\n",
            mib(self.peak_rss_bytes),
            opt(p.map(|p| mib(p.peak_rss_bytes)), 0),
            ratio(p.and_then(|p| p.memory_ratio))
        );
        if let Some(p) = p {
            s += &format!(
                "\npeer: {}; ratios are kuosan / peer: throughput (higher is better), peak RSS (lower is better)\n",
                p.name
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_take_each_field_over_rounds() {
        let t = |train: Option<f64>, sample: f64, rss: u64| Timing {
            train_step_ms: train,
            sample_step_ms: sample,
            peak_rss_bytes: rss,
        };
        let m = medians(&[
            t(Some(3.0), 9.0, 5),
            t(Some(1.0), 7.0, 6),
            t(Some(2.0), 8.0, 4),
        ]);
        assert_eq!(
            (m.train_step_ms, m.sample_step_ms, m.peak_rss_bytes),
            (Some(2.0), 8.0, 5)
        );
        // Sampling-only rounds have no training median.
        assert_eq!(medians(&[t(None, 1.0, 1)]).train_step_ms, None);
    }

    #[test]
    fn configs_are_written_for_the_peer_and_bad_configs_are_errors() {
        let dir = std::env::temp_dir().join(format!("kuosan-bench-model-{}", std::process::id()));
        let cfg = model_config("tiny", 4).expect("preset");
        assert_eq!(cfg.train.batch, 4);
        let (unet, text) = write_configs(&cfg, &dir).expect("writable");
        let u: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(unet).unwrap()).unwrap();
        assert_eq!(u["_class_name"], "UNet2DConditionModel");
        let t: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(text).unwrap()).unwrap();
        assert_eq!(t["model_type"], "clip_text_model");
        std::fs::remove_dir_all(&dir).ok();
        assert!(model_config("no-such-config.json", 4).is_err());
        let opts = Options {
            config: "tiny".into(),
            batch: 0,
            device: "cpu".into(),
            train: true,
            rounds: 5,
            steps: 1,
            threads: 1,
            out: dir,
            peer: None,
        };
        assert!(run(&opts).unwrap_err().contains("at least 1"));
    }
}
