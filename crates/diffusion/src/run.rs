//! A run folder, laid out as a diffusers pipeline (model_index.json, unet/,
//! text_encoder/, scheduler/, tokenizer/, holding the EMA weights) plus what training needs
//! to resume exactly (checkpoint/: raw weights, EMA, AdamW moments, state.json), the
//! sample grids and metrics.jsonl. A checkpoint is written to checkpoint.tmp/ and swapped
//! in by renames, so an interrupted write leaves the previous one whole.

use crate::config::ModelConfig;
use crate::models::Models;
use kuosan_nn::safetensors as st;
use kuosan_nn::{Error, Result};
use kuosan_tensor::{DType, Device, Tensor};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Training progress that a resume restores.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainState {
    pub step: u64,
    pub seed: u64,
    /// The Philox stream's next block (timesteps, prompt dropout, noise).
    pub rng_offset: u64,
    pub data_epoch: u64,
    pub data_index: usize,
    pub data: String,
    pub elapsed_s: f64,
}

impl TrainState {
    fn to_json(&self) -> Value {
        json!({"step": self.step, "seed": self.seed, "rng_offset": self.rng_offset, "data_epoch": self.data_epoch,
               "data_index": self.data_index, "data": self.data, "elapsed_s": self.elapsed_s})
    }

    fn from_json(v: &Value, origin: &Path) -> Result<TrainState> {
        let bad = |k: &str| Error::file(origin, format!("state key {k:?} is missing or mistyped"));
        let u = |k: &str| v.get(k).and_then(Value::as_u64).ok_or_else(|| bad(k));
        Ok(TrainState {
            step: u("step")?,
            seed: u("seed")?,
            rng_offset: u("rng_offset")?,
            data_epoch: u("data_epoch")?,
            data_index: u("data_index")? as usize,
            data: v
                .get("data")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("data"))?
                .to_string(),
            elapsed_s: v.get("elapsed_s").and_then(Value::as_f64).unwrap_or(0.0),
        })
    }
}

/// Paths inside a run folder.
pub struct RunDir {
    pub root: PathBuf,
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).expect("JSON values serialise");
    st::write_atomic(path, text.as_bytes())
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    serde_json::from_str(&text).map_err(|e| Error::file(path, format!("bad JSON: {e}")))
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> RunDir {
        RunDir { root: root.into() }
    }

    pub fn checkpoint_dir(&self) -> PathBuf {
        self.root.join("checkpoint")
    }

    pub fn samples_dir(&self) -> PathBuf {
        self.root.join("samples")
    }

    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join("kuosan_config.json")
    }

    /// The model config the run was trained with.
    pub fn config(&self) -> Result<ModelConfig> {
        let path = self.config_path();
        ModelConfig::from_json(&read_json(&path)?, &path.display().to_string()).map_err(Error::Arg)
    }

    /// Writes the pipeline layout from `ema` (the weights to sample with).
    pub fn export(&self, cfg: &ModelConfig, ema: &Models) -> Result<()> {
        let r = &self.root;
        write_json(&self.config_path(), &cfg.to_json())?;
        write_json(
            &r.join("model_index.json"),
            &json!({
                "_class_name": "KuosanPipeline",
                "_diffusers_version": "0.30.0",
                "unet": ["diffusers", "UNet2DConditionModel"],
                "text_encoder": ["transformers", "CLIPTextModel"],
                "scheduler": ["diffusers", "DDPMScheduler"],
                "tokenizer": ["kuosan", "ByteTokenizer"],
            }),
        )?;
        write_json(&r.join("unet/config.json"), &cfg.unet.to_json())?;
        ema.unet_vars.save(
            r.join("unet/diffusion_pytorch_model.safetensors"),
            DType::F32,
        )?;
        write_json(&r.join("text_encoder/config.json"), &cfg.text.to_json())?;
        ema.text_vars
            .save(r.join("text_encoder/model.safetensors"), DType::F32)?;
        write_json(
            &r.join("scheduler/scheduler_config.json"),
            &json!({
                "_class_name": "DDPMScheduler",
                "_diffusers_version": "0.30.0",
                "num_train_timesteps": cfg.num_train_timesteps,
                "beta_schedule": cfg.beta_schedule.name(),
                "beta_start": cfg.beta_schedule.range().0,
                "beta_end": cfg.beta_schedule.range().1,
                "prediction_type": cfg.prediction.as_str(),
                "variance_type": "fixed_small",
                // Pixels in [-1, 1]: kuosan's samplers clip x0_hat there, as diffusers'
                // default for DDPM/DDIM.
                "clip_sample": true,
                "clip_sample_range": 1.0,
            }),
        )?;
        write_json(
            &r.join("tokenizer/tokenizer_config.json"),
            &json!({"tokenizer_class": "ByteTokenizer", "model_max_length": cfg.text.max_position_embeddings,
                    "bos_token_id": kuosan_textenc::BOS, "eos_token_id": kuosan_textenc::EOS, "pad_token_id": kuosan_textenc::PAD}),
        )
    }

    /// Models with the exported (EMA) weights, for sampling.
    pub fn load_models(&self, device: &Device) -> Result<(ModelConfig, Models)> {
        let cfg = self.config()?;
        let models = Models::new(&cfg, device, 0)?;
        models
            .unet_vars
            .load(self.root.join("unet/diffusion_pytorch_model.safetensors"))?;
        models
            .text_vars
            .load(self.root.join("text_encoder/model.safetensors"))?;
        Ok((cfg, models))
    }

    /// Writes a checkpoint: raw weights, EMA weights, optimizer moments and the state.
    pub fn save_checkpoint(
        &self,
        state: &TrainState,
        params: &[(String, Tensor)],
        ema: &[(String, Tensor)],
        optim: &[(String, Tensor)],
    ) -> Result<()> {
        let (tmp, dir, old) = (
            self.root.join("checkpoint.tmp"),
            self.checkpoint_dir(),
            self.root.join("checkpoint.old"),
        );
        let _ = std::fs::remove_dir_all(&tmp);
        st::save(tmp.join("model.safetensors"), params, DType::F32, None)?;
        st::save(tmp.join("ema.safetensors"), ema, DType::F32, None)?;
        st::save(tmp.join("optimizer.safetensors"), optim, DType::F32, None)?;
        write_json(&tmp.join("state.json"), &state.to_json())?;
        let swap = || -> std::io::Result<()> {
            if dir.exists() {
                let _ = std::fs::remove_dir_all(&old);
                std::fs::rename(&dir, &old)?;
            }
            std::fs::rename(&tmp, &dir)?;
            let _ = std::fs::remove_dir_all(&old);
            Ok(())
        };
        swap().map_err(|e| Error::file(&dir, format!("cannot install the checkpoint: {e}")))
    }

    /// The newest whole checkpoint: checkpoint/, or checkpoint.old/ when a crash fell
    /// between the two renames.
    pub fn find_checkpoint(&self) -> Option<PathBuf> {
        [self.checkpoint_dir(), self.root.join("checkpoint.old")]
            .into_iter()
            .find(|d| d.join("state.json").exists())
    }

    /// The training state of the newest checkpoint (which data, which step).
    pub fn state(&self) -> Result<TrainState> {
        let dir = self.find_checkpoint().ok_or_else(|| {
            Error::file(
                &self.root,
                "has no checkpoint/state.json: is this a run folder that `cargo xtask train` wrote?",
            )
        })?;
        let path = dir.join("state.json");
        TrainState::from_json(&read_json(&path)?, &path)
    }

    /// (state, raw weights, EMA weights, optimizer state) of the newest checkpoint.
    #[allow(clippy::type_complexity)]
    pub fn load_checkpoint(
        &self,
        device: &Device,
    ) -> Result<(
        TrainState,
        BTreeMap<String, Tensor>,
        BTreeMap<String, Tensor>,
        BTreeMap<String, Tensor>,
    )> {
        let dir = self.find_checkpoint().ok_or_else(|| {
            Error::file(
                &self.root,
                "has no checkpoint to resume from (train without --resume to start a new run)",
            )
        })?;
        let state = self.state()?;
        Ok((
            state,
            st::load(dir.join("model.safetensors"), device)?,
            st::load(dir.join("ema.safetensors"), device)?,
            st::load(dir.join("optimizer.safetensors"), device)?,
        ))
    }
}
