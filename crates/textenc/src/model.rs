//! The CLIP text transformer (Radford et al. 2021), transformers' CLIPTextModel: token +
//! learned position embeddings, pre-LN layers of causal self-attention and a quick_gelu
//! MLP, a final LayerNorm. Parameter names match `text_model.*` in transformers, so the
//! saved weights load there unchanged.

use crate::TextConfig;
use kuosan_nn::{Embedding, Init, LayerNorm, Linear, Module, Path};
use kuosan_tensor::{scaled_dot_product_attention, Result, Tensor};

/// Self-attention with CLIP's names (q_proj, k_proj, v_proj, out_proj).
struct SelfAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
}

impl SelfAttention {
    /// x [B, L, D], key mask [B, L] -> [B, L, D], causal.
    fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, l, d) = (x.dims()[0], x.dims()[1], x.dims()[2]);
        let split = |t: Tensor| {
            t.reshape([b, l, self.heads, d / self.heads])?
                .transpose(1, 2)
        };
        let (q, k, v) = (
            split(self.q.forward(x)?)?,
            split(self.k.forward(x)?)?,
            split(self.v.forward(x)?)?,
        );
        let o = scaled_dot_product_attention(&q, &k, &v, Some(mask), true, None)?;
        self.out.forward(&o.transpose(1, 2)?.reshape([b, l, d])?)
    }
}

struct Layer {
    ln1: LayerNorm,
    attn: SelfAttention,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    quick_gelu: bool,
}

impl Layer {
    /// Pre-LN residual block: x + attn(ln1 x), then + mlp(ln2 x).
    fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let x = x.add(&self.attn.forward(&self.ln1.forward(x)?, mask)?)?;
        let h = self.fc1.forward(&self.ln2.forward(&x)?)?;
        let h = if self.quick_gelu {
            h.quick_gelu()?
        } else {
            h.gelu()?
        };
        x.add(&self.fc2.forward(&h)?)
    }
}

/// The text encoder. Its output [B, L, D] is the U-Net's cross-attention context.
pub struct TextEncoder {
    pub config: TextConfig,
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<Layer>,
    final_layer_norm: LayerNorm,
}

/// A linear layer with transformers' CLIP init: weight N(0, std), bias 0.
fn linear(p: &Path, i: usize, o: usize, std: f64) -> kuosan_nn::Result<Linear> {
    Ok(Linear {
        weight: p.var("weight", &[o, i], Init::Normal { std })?,
        bias: Some(p.var("bias", &[o], Init::Const(0.0))?),
    })
}

impl TextEncoder {
    /// The parameters under `path` (transformers' names start with `text_model.`).
    pub fn new(path: &Path, config: &TextConfig) -> kuosan_nn::Result<TextEncoder> {
        let c = config;
        let root = path.pp("text_model");
        let emb = root.pp("embeddings");
        let f = c.initializer_factor;
        let d = c.hidden_size as f64;
        // CLIPPreTrainedModel._init_weights: token N(0, 0.02 f), position N(0, 0.01 f),
        // attention in/out std d^-0.5 (2 layers)^-0.5 f and d^-0.5 f, fc1 (2d)^-0.5 f.
        let token_embedding = Embedding {
            weight: emb.pp("token_embedding").var(
                "weight",
                &[c.vocab_size, c.hidden_size],
                Init::Normal { std: 0.02 * f },
            )?,
        };
        let position_embedding = Embedding {
            weight: emb.pp("position_embedding").var(
                "weight",
                &[c.max_position_embeddings, c.hidden_size],
                Init::Normal { std: 0.01 * f },
            )?,
        };
        let in_std = d.powf(-0.5) * (2.0 * c.num_hidden_layers as f64).powf(-0.5) * f;
        let out_std = d.powf(-0.5) * f;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = root.pp("encoder").pp("layers").pp(i);
            let a = p.pp("self_attn");
            let (h, m) = (c.hidden_size, c.intermediate_size);
            layers.push(Layer {
                ln1: LayerNorm::new(&p.pp("layer_norm1"), h, c.layer_norm_eps)?,
                attn: SelfAttention {
                    q: linear(&a.pp("q_proj"), h, h, in_std)?,
                    k: linear(&a.pp("k_proj"), h, h, in_std)?,
                    v: linear(&a.pp("v_proj"), h, h, in_std)?,
                    out: linear(&a.pp("out_proj"), h, h, out_std)?,
                    heads: c.num_attention_heads,
                },
                ln2: LayerNorm::new(&p.pp("layer_norm2"), h, c.layer_norm_eps)?,
                fc1: linear(&p.pp("mlp").pp("fc1"), h, m, (2.0 * d).powf(-0.5) * f)?,
                fc2: linear(&p.pp("mlp").pp("fc2"), m, h, in_std)?,
                quick_gelu: c.hidden_act == "quick_gelu",
            });
        }
        let final_layer_norm = LayerNorm::new(
            &root.pp("final_layer_norm"),
            c.hidden_size,
            c.layer_norm_eps,
        )?;
        Ok(TextEncoder {
            config: c.clone(),
            token_embedding,
            position_embedding,
            layers,
            final_layer_norm,
        })
    }

    /// ids, mask: [B, L] u32 (L <= max_position_embeddings) -> last hidden state [B, L, D].
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let l = ids.dims()[1];
        let pos = self.position_embedding.weight.narrow(0, 0, l)?;
        let mut x = self.token_embedding.forward(ids)?.add(&pos)?;
        for layer in &self.layers {
            x = layer.forward(&x, mask)?;
        }
        self.final_layer_norm.forward(&x)
    }
}
