//! kuosan's neural-network layer on the tensor library: modules (Linear, Conv2d,
//! GroupNorm, LayerNorm, Embedding), cross-entropy, a named parameter store with safetensors load/save,
//! AdamW with gradient clipping, EMA of weights, and learning-rate schedules. File names
//! follow candle-nn (linear.rs, conv.rs, group_norm.rs, optim.rs).

mod conv;
mod ema;
mod embedding;
mod error;
mod group_norm;
mod init;
mod layer_norm;
mod linear;
mod loss;
mod optim;
pub mod safetensors;
mod schedule;
mod var_store;

pub use conv::Conv2d;
pub use ema::Ema;
pub use embedding::Embedding;
pub use error::{Error, Result};
pub use group_norm::GroupNorm;
pub use init::Init;
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use loss::cross_entropy;
pub use optim::{clip_grad_norm, AdamW, AdamWConfig};
pub use schedule::LrSchedule;
pub use var_store::{Path, VarStore};

use kuosan_tensor::Tensor;

/// A layer mapping one tensor to another.
pub trait Module {
    fn forward(&self, x: &Tensor) -> kuosan_tensor::Result<Tensor>;
}
