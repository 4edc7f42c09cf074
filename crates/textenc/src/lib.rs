//! kuosan's text encoder: UTF-8 bytes as tokens (English and Chinese alike) and a
//! transformer with the architecture, config keys and parameter names of transformers'
//! CLIPTextModel, whose last hidden states are the U-Net's cross-attention context.

mod config;
mod model;
mod tokenizer;

pub use config::{ConfigError, TextConfig};
pub use model::TextEncoder;
pub use tokenizer::{Tokenizer, Tokens, BOS, EOS, PAD, VOCAB};
