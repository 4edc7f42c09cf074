//! Embedding table: rows looked up by u32 id, as torch.nn.Embedding (N(0, 1) init).

use crate::{Init, Path, Result};
use kuosan_tensor::Tensor;

/// weight [vocab, dim].
#[derive(Clone, Debug)]
pub struct Embedding {
    pub weight: Tensor,
}

impl Embedding {
    pub fn new(path: &Path, vocab: usize, dim: usize) -> Result<Embedding> {
        Ok(Embedding {
            weight: path.var("weight", &[vocab, dim], Init::Normal { std: 1.0 })?,
        })
    }

    /// ids (u32, any shape) -> [.., dim].
    pub fn forward(&self, ids: &Tensor) -> kuosan_tensor::Result<Tensor> {
        self.weight.embedding(ids)
    }
}
