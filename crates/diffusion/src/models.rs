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

    /// The text of `prompts`: the context [B, L, D] for cross-attention and the pooled
    /// embedding [B, D] (the EOS token's state) for a U-Net that adds it to the time
    /// embedding (None for one that does not).
    pub fn encode(&self, prompts: &[String]) -> kuosan_tensor::Result<TextCond> {
        let device = self.unet_vars.device();
        let tokens = self.tokenizer.encode(prompts);
        let (ids, mask) = tokens.tensors(&device)?;
        let context = self.text.forward(&ids, &mask)?;
        let pooled = match self.unet.config.pooled_text_dim {
            Some(_) => {
                let d = context.dims()[2];
                let p = tokens.eos_selector(&device)?.matmul(&context)?;
                Some(p.reshape([prompts.len(), d])?)
            }
            None => None,
        };
        Ok(TextCond { context, pooled })
    }

    /// The U-Net's prediction for `x` at `t` under `text`.
    pub fn predict(&self, x: &Tensor, t: &[f64], text: &TextCond) -> kuosan_tensor::Result<Tensor> {
        self.unet
            .forward_pooled(x, t, &text.context, None, text.pooled.as_ref())
    }
}

/// Encoded prompts: what the U-Net is conditioned on.
#[derive(Clone)]
pub struct TextCond {
    /// [B, L, D]
    pub context: Tensor,
    /// [B, D]
    pub pooled: Option<Tensor>,
}

impl TextCond {
    /// `self` then `other` along the batch.
    pub fn cat(&self, other: &TextCond) -> kuosan_tensor::Result<TextCond> {
        let pooled = match (&self.pooled, &other.pooled) {
            (Some(a), Some(b)) => Some(Tensor::cat(&[a, b], 0)?),
            _ => None,
        };
        Ok(TextCond {
            context: Tensor::cat(&[&self.context, &other.context], 0)?,
            pooled,
        })
    }
}
