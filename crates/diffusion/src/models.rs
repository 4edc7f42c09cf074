//! The trained pair: the text encoder and the U-Net, each in its own parameter store
//! (so each exports as its own diffusers / transformers component), and the tokenizer.

use crate::config::ModelConfig;
use crate::unet::UNet2DConditionModel;
use kuosan_nn::{Result, VarStore};
use kuosan_tensor::{DType, Device, Tensor};
use kuosan_textenc::{TextEncoder, Tokenizer};

pub struct Models {
    pub unet_vars: VarStore,
    pub text_vars: VarStore,
    pub unet: UNet2DConditionModel,
    pub text: TextEncoder,
    pub tokenizer: Tokenizer,
}

impl Models {
    /// Fresh models on `device`, initialised from `seed`.
    pub fn new(cfg: &ModelConfig, device: &Device, seed: u64) -> Result<Models> {
        let unet_vars = VarStore::new(device.clone(), DType::F32, seed);
        let text_vars = VarStore::new(device.clone(), DType::F32, seed ^ 0x7E47);
        let unet = UNet2DConditionModel::new(&unet_vars.root(), &cfg.unet)?;
        let text = TextEncoder::new(&text_vars.root(), &cfg.text)?;
        Ok(Models {
            unet_vars,
            text_vars,
            unet,
            text,
            tokenizer: Tokenizer::new(cfg.text.max_position_embeddings),
        })
    }

    /// Every parameter as `unet.<name>` / `text_encoder.<name>`.
    pub fn params(&self) -> Vec<(String, Tensor)> {
        let prefixed = |p: &str, vs: &VarStore| {
            vs.vars()
                .into_iter()
                .map(|(n, t)| (format!("{p}.{n}"), t))
                .collect::<Vec<_>>()
        };
        [
            prefixed("unet", &self.unet_vars),
            prefixed("text_encoder", &self.text_vars),
        ]
        .concat()
    }

    /// Overwrites every parameter from named tensors as `params` names them.
    pub fn load_params(&self, tensors: &std::collections::BTreeMap<String, Tensor>) -> Result<()> {
        for (name, p) in self.params() {
            let t = tensors.get(&name).ok_or_else(|| {
                kuosan_nn::Error::Arg(format!("checkpoint has no parameter {name:?}"))
            })?;
            if t.shape() != p.shape() {
                return Err(kuosan_nn::Error::Arg(format!(
                    "checkpoint parameter {name:?} is {}, the model's {}",
                    t.shape(),
                    p.shape()
                )));
            }
            p.assign(&t.to_device(p.device())?)?;
        }
        Ok(())
    }

    /// The text context [B, L, D] of `prompts`.
    pub fn encode(&self, prompts: &[String]) -> kuosan_tensor::Result<Tensor> {
        let device = self.unet_vars.device();
        let (ids, mask) = self.tokenizer.encode(prompts).tensors(&device)?;
        self.text.forward(&ids, &mask)
    }
}
