//! The U-Net's attention blocks, diffusers' Transformer2DModel: GroupNorm, a 1x1 conv in,
//! BasicTransformerBlocks (self-attention, cross-attention to the text, GEGLU
//! feed-forward, each pre-LayerNorm and residual), a 1x1 conv out, and the residual.
//! With `only_cross_attention` the first attention attends to the text too.

use kuosan_nn::{Conv2d, GroupNorm, LayerNorm, Linear, Module, Path, Result as NnResult};
use kuosan_tensor::{scaled_dot_product_attention, Result, Tensor};

/// diffusers' Attention: to_q, to_k, to_v without bias, to_out.0 with bias.
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
}

impl Attention {
    pub fn new(
        p: &Path,
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        head_dim: usize,
    ) -> NnResult<Self> {
        let inner = heads * head_dim;
        Ok(Attention {
            to_q: Linear::new(&p.pp("to_q"), query_dim, inner, false)?,
            to_k: Linear::new(&p.pp("to_k"), context_dim, inner, false)?,
            to_v: Linear::new(&p.pp("to_v"), context_dim, inner, false)?,
            to_out: Linear::new(&p.pp("to_out").pp(0), inner, query_dim, true)?,
            heads,
        })
    }

    /// x [B, L, Dq], context [B, S, Dc] (None: self-attention), key mask [B, S].
    pub fn forward(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let ctx = context.unwrap_or(x);
        let heads = |t: Tensor| -> Result<Tensor> {
            let (b, l, d) = (t.dims()[0], t.dims()[1], t.dims()[2]);
            t.reshape([b, l, self.heads, d / self.heads])?
                .transpose(1, 2)
        };
        let q = heads(self.to_q.forward(x)?)?;
        let k = heads(self.to_k.forward(ctx)?)?;
        let v = heads(self.to_v.forward(ctx)?)?;
        let o = scaled_dot_product_attention(&q, &k, &v, mask, false, None)?; // [B, H, L, Dh]
        let (b, l) = (x.dims()[0], x.dims()[1]);
        self.to_out.forward(
            &o.transpose(1, 2)?
                .reshape([b, l, o.dims()[1] * o.dims()[3]])?,
        )
    }
}

/// GEGLU feed-forward (Shazeer 2020): ff.net.0.proj to 2 x inner, h * gelu(gate),
/// ff.net.2 back.
struct FeedForward {
    proj: Linear,
    out: Linear,
}

impl FeedForward {
    fn new(p: &Path, dim: usize) -> NnResult<Self> {
        let inner = 4 * dim;
        Ok(FeedForward {
            proj: Linear::new(&p.pp("net").pp(0).pp("proj"), dim, 2 * inner, true)?,
            out: Linear::new(&p.pp("net").pp(2), inner, dim, true)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // [B, L, 2 inner] -> h * gelu(gate) [B, L, inner], one fused op.
        self.out.forward(&self.proj.forward(x)?.geglu()?)
    }
}

/// A block's attention: its transformers' first attention is self-attention, or with
/// diffusers' `only_cross_attention` for the block, cross-attention to the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attn {
    SelfAndCross,
    OnlyCross,
}

/// Self-attention, cross-attention, feed-forward; each x + f(LayerNorm(x)).
struct BasicTransformerBlock {
    norm1: LayerNorm,
    /// Self-attention, or with `Attn::OnlyCross` a second cross-attention to the text.
    attn1: Attention,
    kind: Attn,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl BasicTransformerBlock {
    fn new(p: &Path, dim: usize, heads: usize, context_dim: usize, kind: Attn) -> NnResult<Self> {
        let head_dim = dim / heads;
        // diffusers' attn1 takes cross_attention_dim keys and values with only_cross_attention.
        let attn1_kv = match kind {
            Attn::SelfAndCross => dim,
            Attn::OnlyCross => context_dim,
        };
        Ok(BasicTransformerBlock {
            norm1: LayerNorm::new(&p.pp("norm1"), dim, 1e-5)?,
            attn1: Attention::new(&p.pp("attn1"), dim, attn1_kv, heads, head_dim)?,
            kind,
            norm2: LayerNorm::new(&p.pp("norm2"), dim, 1e-5)?,
            attn2: Attention::new(&p.pp("attn2"), dim, context_dim, heads, head_dim)?,
            norm3: LayerNorm::new(&p.pp("norm3"), dim, 1e-5)?,
            ff: FeedForward::new(&p.pp("ff"), dim)?,
        })
    }

    fn forward(&self, x: &Tensor, context: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        // x: [B, H*W, C]. diffusers gives attn1 the U-Net's `attention_mask` (None here),
        // never the text's padding mask, also when it attends to the text: so does this.
        let ctx1 = (self.kind == Attn::OnlyCross).then_some(context);
        let x = x.add(&self.attn1.forward(&self.norm1.forward(x)?, ctx1, None)?)?;
        let x = x.add(
            &self
                .attn2
                .forward(&self.norm2.forward(&x)?, Some(context), mask)?,
        )?;
        x.add(&self.ff.forward(&self.norm3.forward(&x)?)?)
    }
}

/// Transformer2DModel over a feature map, with 1x1 conv projections
/// (use_linear_projection = false, as Stable Diffusion 1.x).
pub struct Transformer2D {
    norm: GroupNorm,
    proj_in: Conv2d,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Conv2d,
}

impl Transformer2D {
    pub fn new(
        p: &Path,
        channels: usize,
        heads: usize,
        context_dim: usize,
        layers: usize,
        groups: usize,
        kind: Attn,
    ) -> NnResult<Self> {
        Ok(Transformer2D {
            norm: GroupNorm::new(&p.pp("norm"), groups, channels, 1e-6)?,
            proj_in: Conv2d::new(&p.pp("proj_in"), channels, channels, 1, 1, 0)?,
            blocks: (0..layers)
                .map(|i| {
                    BasicTransformerBlock::new(
                        &p.pp("transformer_blocks").pp(i),
                        channels,
                        heads,
                        context_dim,
                        kind,
                    )
                })
                .collect::<NnResult<_>>()?,
            proj_out: Conv2d::new(&p.pp("proj_out"), channels, channels, 1, 1, 0)?,
        })
    }

    /// x [B, C, H, W], context [B, S, Dc] -> [B, C, H, W].
    pub fn forward(&self, x: &Tensor, context: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let [b, c, h, w] = x.dims().try_into().expect("a feature map is [B, C, H, W]");
        let hs = self.proj_in.forward(&self.norm.forward(x)?)?;
        // [B, C, H, W] -> [B, H*W, C]: pixels become the sequence.
        let mut seq = hs.reshape([b, c, h * w])?.transpose(1, 2)?;
        for block in &self.blocks {
            seq = block.forward(&seq, context, mask)?;
        }
        let hs = seq.transpose(1, 2)?.reshape([b, c, h, w])?;
        self.proj_out.forward(&hs)?.add(x)
    }
}
