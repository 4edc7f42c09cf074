//! Timestep embeddings: sinusoidal features of t (Vaswani et al. 2017, sec. 3.5, as
//! diffusers' get_timestep_embedding) and the MLP that lifts them (TimestepEmbedding).

use kuosan_nn::{Linear, Module, Path, Result as NnResult};
use kuosan_tensor::{DType, Device, Result, Tensor};

/// [B] timesteps -> [B, dim] features: exp(-ln(10000) i / (dim/2 - shift)) frequencies,
/// sin and cos concatenated (cos first when `flip_sin_to_cos`).
pub fn timestep_features(
    t: &[f64],
    dim: usize,
    flip_sin_to_cos: bool,
    shift: f64,
    device: &Device,
) -> Result<Tensor> {
    let half = dim / 2;
    let mut out = vec![0f32; t.len() * dim];
    for (b, &tb) in t.iter().enumerate() {
        for i in 0..half {
            let freq = (-(10000f64.ln()) * i as f64 / (half as f64 - shift)).exp();
            // diffusers computes the angle in f32: t * freq.
            let arg = (tb as f32) * (freq as f32);
            let (s, c) = (arg.sin(), arg.cos());
            let (first, second) = if flip_sin_to_cos { (c, s) } else { (s, c) };
            out[b * dim + i] = first;
            out[b * dim + half + i] = second;
        }
    }
    Tensor::from_vec(out, [t.len(), dim], &Device::Cpu)?
        .to_device(device)?
        .to_dtype(DType::F32)
}

/// linear_1 -> SiLU -> linear_2 (diffusers' TimestepEmbedding).
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    pub fn new(p: &Path, in_dim: usize, dim: usize) -> NnResult<Self> {
        Ok(TimestepEmbedding {
            linear_1: Linear::new(&p.pp("linear_1"), in_dim, dim, true)?,
            linear_2: Linear::new(&p.pp("linear_2"), dim, dim, true)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.linear_2.forward(&self.linear_1.forward(x)?.silu()?)
    }
}
