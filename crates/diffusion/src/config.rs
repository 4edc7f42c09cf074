//! Model and training configuration: the presets `tiny` (tests, seconds), `small` (the
//! default on a CPU) and `base` (Ho et al. 2020's CIFAR-10 U-Net, for a GPU), and a JSON
//! file form with the same sections (`unet` in diffusers' keys, `text_encoder` in
//! transformers' keys, `scheduler`, `train`), in which an unknown key is an error.

use crate::text_pretrain::PretrainConfig;
use crate::timesteps::{BiasScope, BiasStrategy, TimestepBias};
use crate::unet::UNetConfig;
use crate::{BetaSchedule, Prediction};
use kuosan_textenc::TextConfig;
use serde_json::{json, Map, Value};
use std::path::Path;

/// Training hyper-parameters a preset suggests (the command line may override them).
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    pub lr: f64,
    pub batch: usize,
    pub steps: u64,
    pub warmup: u64,
    pub ema_decay: f64,
    /// Probability of training on the empty prompt, for classifier-free guidance.
    pub cond_drop: f64,
    pub min_snr_gamma: Option<f64>,
    /// A floor under the loss weight in x0 terms (`LossConfig::snr_floor`).
    pub snr_floor: Option<f64>,
    /// Extra loss weight on the clean picture's edges (`LossConfig::edge_weight`).
    pub edge_weight: Option<f64>,
    pub grad_clip: f64,
    pub weight_decay: f64,
    /// The text encoder learns at this multiple of `lr`; 0 freezes it (after its
    /// pretraining, if any: `small` does so, Stable Diffusion keeps CLIP frozen too).
    pub text_lr_scale: f64,
    /// Which timesteps training draws (uniform, or biased to one end: the `small` preset
    /// draws the noisiest quarter more often for the pictures of two objects).
    pub timestep_bias: TimestepBias,
    /// A batch's timesteps from one draw spread evenly over the range (VDM's
    /// low-discrepancy sampler, `timesteps::low_discrepancy`) instead of one draw each.
    pub timestep_low_discrepancy: bool,
    /// Caption pretraining of the text encoder before the first diffusion step
    /// (`text_pretrain`; steps 0: none).
    pub text_pretrain: PretrainConfig,
}

/// Everything that defines a model and how it trains.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub unet: UNetConfig,
    pub text: TextConfig,
    pub beta_schedule: BetaSchedule,
    pub num_train_timesteps: usize,
    pub prediction: Prediction,
    /// Two fixed channels, x and y in [-1, 1], join the noisy image at the U-Net's input
    /// (CoordConv, Liu et al. 2018), so "on the left" has a place to attach to: a conv
    /// net knows where it is only through its zero padding, which the small models learn
    /// slowly (README: what was tried). The U-Net then has in_channels = image channels
    /// + 2 and out_channels = image channels, as diffusers' inpainting U-Nets differ.
    pub coord_channels: bool,
    /// Cross-attention ignores the prompt's padding tokens (diffusers'
    /// `encoder_attention_mask`, which a pipeline has to pass itself). The causal text
    /// encoder's padding states each summarise the whole caption, like the pooled
    /// embedding, and unmasked the 20-30 of them outnumber the few tokens that name one
    /// object's shape; masking them did not change `small` on shapes, though (run CM:
    /// 79.0% all attributes over three seeds against 79.6%), so the presets leave it off.
    pub context_mask: bool,
    pub train: TrainConfig,
}

/// The knobs that distinguish the presets.
struct Preset {
    ch: Vec<usize>,
    attn: Vec<bool>,
    layers: usize,
    groups: usize,
    heads: usize,
    text_dim: usize,
    text_layers: usize,
    lr: f64,
    batch: usize,
    steps: u64,
    /// Linear warm-up steps (kept when `--steps` changes the length).
    warmup: u64,
    ema: f64,
    schedule: BetaSchedule,
    min_snr: Option<f64>,
    /// The floor under the x0-terms loss weight (`TrainConfig::snr_floor`).
    snr_floor: Option<f64>,
    /// Extra loss weight on the clean picture's outlines (`TrainConfig::edge_weight`).
    edge: Option<f64>,
    /// v-prediction (else epsilon).
    v: bool,
    coords: bool,
    bias: TimestepBias,
    /// Caption pretraining of the text encoder.
    text_pretrain: PretrainConfig,
    /// The text encoder's lr multiple (0: frozen after its pretraining).
    text_lr: f64,
    /// AdaGN in the resnets (`resnet_time_scale_shift` "scale_shift").
    scale_shift: bool,
}

fn blocks(attn: &[bool]) -> (Vec<String>, Vec<String>) {
    let down = attn
        .iter()
        .map(|&a| {
            if a {
                "CrossAttnDownBlock2D"
            } else {
                "DownBlock2D"
            }
            .to_string()
        })
        .collect();
    let up = attn
        .iter()
        .rev()
        .map(|&a| if a { "CrossAttnUpBlock2D" } else { "UpBlock2D" }.to_string())
        .collect();
    (down, up)
}

impl ModelConfig {
    /// A preset for images of `channels` x `size` x `size`.
    pub fn preset(name: &str, channels: usize, size: usize) -> Result<ModelConfig, String> {
        let p = match name {
            "tiny" => Preset {
                ch: vec![16, 32],
                attn: vec![true, false],
                layers: 1,
                groups: 8,
                heads: 2,
                text_dim: 32,
                text_layers: 1,
                lr: 1e-3,
                batch: 8,
                steps: 20,
                warmup: 1,
                ema: 0.99,
                schedule: BetaSchedule::cosine(),
                min_snr: None,
                snr_floor: None,
                edge: None,
                v: false,
                coords: false,
                bias: TimestepBias::default(),
                text_pretrain: PretrainConfig::NONE,
                text_lr: 1.0,
                scale_shift: false,
            },
            // Sized for ~10 minutes on 2 CPU cores (README: what was tried, runs A-D7):
            // attention at 8x8 only (16x16 attention cost 1.5-1.75x the step time), batch
            // 16 (twice the updates of 32 in the same time), 4000 steps (what fits: 7 min
            // 48 s with the text pretraining on 2026-12-08's AMD EPYC, where 2400 took 4-7
            // min; 2400, 2000, 1800 and 1600 on slower engines and machines; run S40:
            // 80.1 -> 93.6% all attributes, the mean of five training seeds), its warm-up
            // the 120 steps it had at 2400, lr 2e-3, v-prediction.
            // Three things made the prompt readable in that time:
            // - the text encoder is pretrained on the run's own captions first
            //   (`text_pretrain`: MSE to each caption's 16x16 picture plus CLIP's
            //   contrastive loss; 600 steps, ~75 s): it then tells colours, places and
            //   relations apart before the first diffusion step (runs S, Y), and stays
            //   frozen after (text_lr 0): trained on with the U-Net at 2e-3 it drifts
            //   from what it learned (runs Y -> Y0: 23 -> 39% all attributes);
            // - half the timesteps of a two-object picture come from the noisiest
            //   quarter (timestep bias "later" x3), where the prompt decides the picture
            //   and binds each object's words to it (runs O, X, Z1, U), while single
            //   objects draw uniformly, so the middle steps that draw their outlines
            //   come up more often (scope multi_object: small squares 58 -> 81-89%,
            //   all attributes 81 -> 87%, run PK, with training seed 0; seeds 1 and 2
            //   give 70% and 81%, runs PKS1-2: one run's spread); the loss weight in
            //   x0 terms is clamp(SNR, 1, 20): a floor of 1 so the noisiest steps teach
            //   (runs G-K, W), and a cap of 20 rather than min-SNR's 5, so the nearly
            //   clean steps that draw the corners weigh more (shapes 48 -> 53% right,
            //   run G20), and a pixel on the clean picture's outline
            //   weighs up to 4x a flat one (edge weight 3: the outline is what the
            //   shape is read from; 68 -> 75% all attributes, run E3);
            // - x/y input channels (CoordConv) and AdaGN resnets (scale_shift), which
            //   give "on the left" a place to attach to (runs Q, W).
            "small" => Preset {
                ch: vec![32, 64, 64],
                attn: vec![false, false, true],
                layers: 1,
                groups: 8,
                heads: 4,
                text_dim: 64,
                text_layers: 2,
                lr: 2e-3,
                batch: 16,
                steps: 4000,
                warmup: 120,
                ema: 0.995,
                schedule: BetaSchedule::cosine(),
                min_snr: Some(20.0),
                snr_floor: Some(1.0),
                edge: Some(3.0),
                v: true,
                coords: true,
                bias: TimestepBias {
                    strategy: BiasStrategy::Later,
                    multiplier: 3.0,
                    portion: 0.25,
                    scope: BiasScope::MultiObject,
                },
                text_pretrain: PretrainConfig {
                    steps: 600,
                    batch: 128,
                    lr: 3e-3,
                    contrastive: 0.3,
                    spatial: 0.0,
                },
                text_lr: 0.0,
                scale_shift: true,
            },
            // Ho et al. 2020's CIFAR-10 model: 128 channels x (1, 2, 2, 2), 2 resnets per
            // level, attention at 16x16, the linear schedule.
            "base" => Preset {
                ch: vec![128, 256, 256, 256],
                attn: vec![false, true, false, false],
                layers: 2,
                groups: 32,
                heads: 4,
                text_dim: 256,
                text_layers: 4,
                lr: 2e-4,
                batch: 128,
                steps: 100_000,
                warmup: 500,
                ema: 0.9999,
                schedule: BetaSchedule::linear(),
                min_snr: None,
                snr_floor: None,
                edge: None,
                v: false,
                coords: false,
                bias: TimestepBias::default(),
                text_pretrain: PretrainConfig::NONE,
                text_lr: 1.0,
                scale_shift: false,
            },
            other => {
                return Err(format!(
                    "unknown config preset {other:?}: use tiny, small, base or a JSON file"
                ))
            }
        };
        let Preset {
            ch,
            attn,
            layers,
            groups,
            heads,
            text_dim,
            text_layers,
            lr,
            batch,
            steps,
            warmup,
            ema,
            schedule,
            min_snr,
            snr_floor,
            edge,
            v,
            coords,
            bias,
            text_pretrain,
            text_lr,
            scale_shift,
        } = p;
        let (down, up) = blocks(&attn);
        let max_len = 64;
        let unet = UNetConfig {
            only_cross_attention: vec![false; attn.len()],
            sample_size: size,
            in_channels: channels + if coords { 2 } else { 0 },
            out_channels: channels,
            block_out_channels: ch,
            down_block_types: down,
            up_block_types: up,
            layers_per_block: layers,
            norm_num_groups: groups,
            norm_eps: 1e-5,
            cross_attention_dim: text_dim,
            attention_head_dim: heads,
            transformer_layers_per_block: 1,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            // The prompt's pooled embedding joins the time embedding (Imagen): a global
            // path for what the image holds, beside cross-attention for where.
            pooled_text_dim: Some(text_dim),
            scale_shift,
        };
        unet.validate()?;
        Ok(ModelConfig {
            unet,
            text: TextConfig::new(
                text_dim,
                text_layers,
                heads.min(text_dim / 16).max(1),
                max_len,
            ),
            beta_schedule: schedule,
            num_train_timesteps: 1000,
            prediction: if v {
                Prediction::V
            } else {
                Prediction::Epsilon
            },
            coord_channels: coords,
            context_mask: false,
            train: TrainConfig {
                lr,
                batch,
                steps,
                warmup,
                ema_decay: ema,
                cond_drop: 0.1,
                min_snr_gamma: min_snr,
                snr_floor,
                edge_weight: edge,
                grad_clip: 1.0,
                weight_decay: 0.01,
                text_lr_scale: text_lr,
                timestep_bias: bias,
                timestep_low_discrepancy: false,
                text_pretrain,
            },
        })
    }

    /// The config as a JSON document (what a run folder stores as kuosan_config.json).
    pub fn to_json(&self) -> Value {
        let t = &self.train;
        json!({
            "unet": self.unet.to_json(),
            "text_encoder": self.text.to_json(),
            "scheduler": {
                "beta_schedule": self.beta_schedule.name(),
                "beta_start": self.beta_schedule.range().0,
                "beta_end": self.beta_schedule.range().1,
                "num_train_timesteps": self.num_train_timesteps,
                "prediction_type": self.prediction.as_str(),
            },
            "coord_channels": self.coord_channels,
            "context_mask": self.context_mask,
            "train": {
                "lr": t.lr, "batch": t.batch, "steps": t.steps, "warmup": t.warmup,
                "ema_decay": t.ema_decay, "cond_drop": t.cond_drop, "min_snr_gamma": t.min_snr_gamma, "snr_floor": t.snr_floor,
                "edge_weight": t.edge_weight, "grad_clip": t.grad_clip, "weight_decay": t.weight_decay, "text_lr_scale": t.text_lr_scale,
                "timestep_bias_strategy": t.timestep_bias.strategy.name(),
                "timestep_bias_multiplier": t.timestep_bias.multiplier,
                "timestep_bias_portion": t.timestep_bias.portion,
                "timestep_bias_scope": t.timestep_bias.scope.name(),
                "timestep_low_discrepancy": t.timestep_low_discrepancy,
                "text_pretrain_steps": t.text_pretrain.steps,
                "text_pretrain_batch": t.text_pretrain.batch,
                "text_pretrain_lr": t.text_pretrain.lr,
                "text_pretrain_contrastive": t.text_pretrain.contrastive,
                "text_pretrain_spatial": t.text_pretrain.spatial,
            },
        })
    }

    /// Reads a config document; unknown keys anywhere are errors naming them.
    pub fn from_json(v: &Value, origin: &str) -> Result<ModelConfig, String> {
        let obj = v
            .as_object()
            .ok_or_else(|| format!("{origin}: not a JSON object"))?;
        only_keys(
            obj,
            &[
                "unet",
                "text_encoder",
                "scheduler",
                "train",
                "coord_channels",
                "context_mask",
            ],
            origin,
        )?;
        let section = |k: &str| {
            obj.get(k)
                .ok_or_else(|| format!("{origin}: missing section {k:?}"))
        };
        let unet = UNetConfig::from_json(section("unet")?, &format!("{origin}: unet"))?;
        let text =
            TextConfig::from_json(section("text_encoder")?, &format!("{origin}: text_encoder"))
                .map_err(|e| e.0)?;
        let s = section("scheduler")?
            .as_object()
            .ok_or_else(|| format!("{origin}: scheduler must be an object"))?;
        only_keys(
            s,
            &[
                "beta_schedule",
                "beta_start",
                "beta_end",
                "num_train_timesteps",
                "prediction_type",
            ],
            &format!("{origin}: scheduler"),
        )?;
        let sched_name = s
            .get("beta_schedule")
            .and_then(Value::as_str)
            .unwrap_or("linear");
        let (start, end) = (
            s.get("beta_start").and_then(Value::as_f64).unwrap_or(1e-4),
            s.get("beta_end").and_then(Value::as_f64).unwrap_or(0.02),
        );
        let beta_schedule = BetaSchedule::parse(sched_name, start, end)
            .ok_or_else(|| format!("{origin}: unknown beta_schedule {sched_name:?}"))?;
        let pred = s
            .get("prediction_type")
            .and_then(Value::as_str)
            .unwrap_or("epsilon");
        let prediction = Prediction::parse(pred)
            .ok_or_else(|| format!("{origin}: unknown prediction_type {pred:?}"))?;
        let tr = section("train")?
            .as_object()
            .ok_or_else(|| format!("{origin}: train must be an object"))?;
        let keys = [
            "lr",
            "batch",
            "steps",
            "warmup",
            "ema_decay",
            "cond_drop",
            "min_snr_gamma",
            "snr_floor",
            "edge_weight",
            "grad_clip",
            "weight_decay",
            "text_lr_scale",
            "timestep_bias_strategy",
            "timestep_bias_multiplier",
            "timestep_bias_portion",
            "timestep_bias_scope",
            "timestep_low_discrepancy",
            "text_pretrain_steps",
            "text_pretrain_batch",
            "text_pretrain_lr",
            "text_pretrain_contrastive",
            "text_pretrain_spatial",
        ];
        only_keys(tr, &keys, &format!("{origin}: train"))?;
        let num = |k: &str| {
            tr.get(k)
                .and_then(Value::as_f64)
                .ok_or_else(|| format!("{origin}: train.{k} must be a number"))
        };
        let train = TrainConfig {
            lr: num("lr")?,
            batch: num("batch")? as usize,
            steps: num("steps")? as u64,
            warmup: num("warmup")? as u64,
            ema_decay: num("ema_decay")?,
            cond_drop: num("cond_drop")?,
            min_snr_gamma: tr.get("min_snr_gamma").and_then(Value::as_f64),
            snr_floor: tr.get("snr_floor").and_then(Value::as_f64),
            edge_weight: tr.get("edge_weight").and_then(Value::as_f64),
            grad_clip: num("grad_clip")?,
            weight_decay: num("weight_decay")?,
            text_lr_scale: match tr.get("text_lr_scale") {
                None => 1.0,
                Some(_) => num("text_lr_scale")?,
            },
            timestep_bias: {
                let d = TimestepBias::default();
                let opt_num = |k: &str, default: f64| match tr.get(k) {
                    None => Ok(default),
                    Some(_) => num(k),
                };
                let strategy = match tr.get("timestep_bias_strategy") {
                    None => d.strategy,
                    Some(v) => v.as_str().and_then(BiasStrategy::parse).ok_or_else(|| {
                        format!("{origin}: train.timestep_bias_strategy must be \"none\", \"earlier\" or \"later\", got {v}")
                    })?,
                };
                let scope = match tr.get("timestep_bias_scope") {
                    None => d.scope,
                    Some(v) => v.as_str().and_then(BiasScope::parse).ok_or_else(|| {
                        format!("{origin}: train.timestep_bias_scope must be \"all\" or \"multi_object\", got {v}")
                    })?,
                };
                let b = TimestepBias {
                    strategy,
                    multiplier: opt_num("timestep_bias_multiplier", d.multiplier)?,
                    portion: opt_num("timestep_bias_portion", d.portion)?,
                    scope,
                };
                b.validate().map_err(|e| format!("{origin}: train.{e}"))?;
                b
            },
            timestep_low_discrepancy: match tr.get("timestep_low_discrepancy") {
                None => false,
                Some(v) => v.as_bool().ok_or_else(|| {
                    format!(
                        "{origin}: train.timestep_low_discrepancy must be true or false, got {v}"
                    )
                })?,
            },
            text_pretrain: {
                let opt = |k: &str, default: f64| match tr.get(k) {
                    None => Ok(default),
                    Some(_) => num(k),
                };
                PretrainConfig {
                    steps: opt("text_pretrain_steps", 0.0)? as u64,
                    batch: opt("text_pretrain_batch", 128.0)? as usize,
                    lr: opt("text_pretrain_lr", 2e-3)?,
                    contrastive: opt("text_pretrain_contrastive", 0.0)?,
                    spatial: opt("text_pretrain_spatial", 0.0)?,
                }
            },
        };
        if let Some(g) = train.min_snr_gamma {
            if g.is_nan() || g <= 0.0 {
                return Err(format!(
                    "{origin}: train.min_snr_gamma must be > 0, got {g}"
                ));
            }
        }
        if let Some(f) = train.snr_floor {
            let cap = train.min_snr_gamma.unwrap_or(f64::INFINITY);
            if !(f >= 0.0 && f.is_finite() && f <= cap) {
                return Err(format!(
                    "{origin}: train.snr_floor must be a finite number >= 0 and <= train.min_snr_gamma, got {f}"
                ));
            }
        }
        if let Some(a) = train.edge_weight {
            if !(a >= 0.0 && a.is_finite()) {
                return Err(format!(
                    "{origin}: train.edge_weight must be a finite number >= 0, got {a}"
                ));
            }
        }
        let tp = &train.text_pretrain;
        if tp.steps > 0 && (tp.batch == 0 || !(tp.lr > 0.0 && tp.lr.is_finite())) {
            return Err(format!(
                "{origin}: train.text_pretrain_batch must be >= 1 and train.text_pretrain_lr a finite number > 0, got {} and {}",
                tp.batch, tp.lr
            ));
        }
        if !(tp.contrastive >= 0.0 && tp.contrastive.is_finite()) {
            return Err(format!(
                "{origin}: train.text_pretrain_contrastive must be a finite number >= 0, got {}",
                tp.contrastive
            ));
        }
        if !(tp.spatial >= 0.0 && tp.spatial.is_finite()) {
            return Err(format!(
                "{origin}: train.text_pretrain_spatial must be a finite number >= 0, got {}",
                tp.spatial
            ));
        }
        if !(train.text_lr_scale >= 0.0 && train.text_lr_scale.is_finite()) {
            return Err(format!(
                "{origin}: train.text_lr_scale must be a finite number >= 0, got {}",
                train.text_lr_scale
            ));
        }
        if text.hidden_size != unet.cross_attention_dim {
            return Err(format!(
                "{origin}: text_encoder.hidden_size {} must equal unet.cross_attention_dim {}",
                text.hidden_size, unet.cross_attention_dim
            ));
        }
        let coord_channels = match obj.get("coord_channels") {
            None => false,
            Some(v) => v
                .as_bool()
                .ok_or_else(|| format!("{origin}: coord_channels must be true or false"))?,
        };
        let context_mask = match obj.get("context_mask") {
            None => false,
            Some(v) => v
                .as_bool()
                .ok_or_else(|| format!("{origin}: context_mask must be true or false"))?,
        };
        let extra = if coord_channels { 2 } else { 0 };
        if unet.in_channels != unet.out_channels + extra {
            return Err(format!(
                "{origin}: unet.in_channels {} must be out_channels {} {}",
                unet.in_channels,
                unet.out_channels,
                if coord_channels {
                    "+ 2 with coord_channels"
                } else {
                    "(set coord_channels for 2 more)"
                }
            ));
        }
        let num_train_timesteps = s
            .get("num_train_timesteps")
            .and_then(Value::as_u64)
            .unwrap_or(1000) as usize;
        Ok(ModelConfig {
            unet,
            text,
            beta_schedule,
            num_train_timesteps,
            prediction,
            coord_channels,
            context_mask,
            train,
        })
    }

    /// Channels of the images the model makes (and is trained on).
    pub fn image_channels(&self) -> usize {
        self.unet.out_channels
    }

    pub fn load(path: &Path) -> Result<ModelConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{}: bad JSON: {e}", path.display()))?;
        ModelConfig::from_json(&v, &path.display().to_string())
    }
}

fn only_keys(obj: &Map<String, Value>, allowed: &[&str], origin: &str) -> Result<(), String> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "{origin}: unknown config key {k:?} (expected one of {allowed:?})"
        )),
        None => Ok(()),
    }
}
