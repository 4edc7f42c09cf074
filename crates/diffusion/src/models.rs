//! The trained pair: the text encoder and the U-Net, each in its own parameter store
//! (so each exports as its own diffusers / transformers component), and the tokenizer.

use crate::config::ModelConfig;
use crate::unet::UNet2DConditionModel;
use kuosan_nn::{Result, VarStore};
use kuosan_tensor::{DType, Device, Tensor};
use kuosan_textenc::{TextEncoder, Tokenizer, Tokens};

pub struct Models {
    pub unet_vars: VarStore,
    pub text_vars: VarStore,
    pub unet: UNet2DConditionModel,
    pub text: TextEncoder,
    pub tokenizer: Tokenizer,
    /// Whether the U-Net's input gets x / y coordinate channels (`ModelConfig`).
    pub coord_channels: bool,
    /// Whether cross-attention ignores the padding tokens (`ModelConfig`).
    pub context_mask: bool,
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
            coord_channels: cfg.coord_channels,
            context_mask: cfg.context_mask,
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
    /// embedding (None for one that does not), and the padding mask [B, L] where the
    /// config masks the padding out of cross-attention.
    pub fn encode(&self, prompts: &[String]) -> kuosan_tensor::Result<TextCond> {
        let tokens = self.tokenizer.encode(prompts);
        let (ids, mask) = tokens.tensors(&self.unet_vars.device())?;
        let context = self.text.forward(&ids, &mask)?;
        let pooled = match self.unet.config.pooled_text_dim {
            Some(_) => Some(self.pool(&tokens, &context)?),
            None => None,
        };
        let mask = self.context_mask.then_some(mask);
        Ok(TextCond {
            context,
            pooled,
            mask,
        })
    }

    /// (context [B, L, D], pooled [B, D], key mask [B, L]: 1 at real tokens, 0 at
    /// padding) with the prompts padded only to the longest of them, not to the
    /// tokenizer's length: the states of real tokens are the same (the encoder is causal
    /// and masks padding keys), and a short batch costs less. For the text pretraining.
    pub fn encode_pooled(
        &self,
        prompts: &[String],
    ) -> kuosan_tensor::Result<(Tensor, Tensor, Tensor)> {
        let longest = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
        let tokenizer = Tokenizer::new((longest + 2).min(self.tokenizer.max_len));
        let tokens = tokenizer.encode(prompts);
        let (ids, mask) = tokens.tensors(&self.unet_vars.device())?;
        let context = self.text.forward(&ids, &mask)?;
        let pooled = self.pool(&tokens, &context)?;
        Ok((context, pooled, mask))
    }

    /// Each prompt's EOS state [B, D] (transformers' `pooler_output`).
    fn pool(&self, tokens: &Tokens, context: &Tensor) -> kuosan_tensor::Result<Tensor> {
        let d = context.dims()[2];
        let p = tokens
            .eos_selector(&self.unet_vars.device())?
            .matmul(context)?;
        p.reshape([tokens.batch, d])
    }

    /// The U-Net's prediction for x [B, C, H, W] at `t` under `text`.
    pub fn predict(&self, x: &Tensor, t: &[f64], text: &TextCond) -> kuosan_tensor::Result<Tensor> {
        let input = if self.coord_channels {
            let &[b, _, h, w] = x.dims() else {
                return Err(kuosan_tensor::Error::Shape {
                    op: "Models::predict",
                    msg: format!("expects images [B, C, H, W], got {}", x.shape()),
                });
            };
            let coords = coordinate_channels(h, w, x.device())?.broadcast_as([b, 2, h, w])?;
            Tensor::cat(&[x, &coords.to_dtype(x.dtype())?], 1)?
        } else {
            x.clone()
        };
        self.unet.forward_pooled(
            &input,
            t,
            &text.context,
            text.mask.as_ref(),
            text.pooled.as_ref(),
        )
    }
}

/// [1, 2, H, W]: channel 0 is x, channel 1 is y, each from -1 at the first pixel centre
/// to 1 at the last (CoordConv's normalised coordinates).
pub fn coordinate_channels(h: usize, w: usize, device: &Device) -> kuosan_tensor::Result<Tensor> {
    let at = |i: usize, n: usize| {
        if n == 1 {
            0.0
        } else {
            2.0 * i as f32 / (n - 1) as f32 - 1.0
        }
    };
    let mut v = Vec::with_capacity(2 * h * w);
    v.extend((0..h * w).map(|p| at(p % w, w)));
    v.extend((0..h * w).map(|p| at(p / w, h)));
    Tensor::from_vec(v, [1, 2, h, w], device)
}

/// Encoded prompts: what the U-Net is conditioned on.
#[derive(Clone)]
pub struct TextCond {
    /// [B, L, D]
    pub context: Tensor,
    /// [B, D]
    pub pooled: Option<Tensor>,
    /// [B, L], 1 at real tokens and 0 at padding, for a U-Net whose cross-attention
    /// ignores the padding (diffusers' `encoder_attention_mask`); None: it attends to all.
    pub mask: Option<Tensor>,
}

impl TextCond {
    /// `self` then `other` along the batch.
    pub fn cat(&self, other: &TextCond) -> kuosan_tensor::Result<TextCond> {
        let pooled = match (&self.pooled, &other.pooled) {
            (Some(a), Some(b)) => Some(Tensor::cat(&[a, b], 0)?),
            _ => None,
        };
        let mask = match (&self.mask, &other.mask) {
            (Some(a), Some(b)) => Some(Tensor::cat(&[a, b], 0)?),
            _ => None,
        };
        Ok(TextCond {
            context: Tensor::cat(&[&self.context, &other.context], 0)?,
            pooled,
            mask,
        })
    }
}
