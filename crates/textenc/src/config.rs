//! The text encoder's configuration, read and written as transformers' CLIPTextConfig
//! `config.json` (the same keys), so the weights load with
//! `CLIPTextModel.from_pretrained`.

use serde_json::{json, Map, Value};
use std::path::Path;

/// CLIPTextConfig's fields that shape the model.
#[derive(Clone, Debug, PartialEq)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    /// "quick_gelu" (CLIP) or "gelu".
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    pub initializer_range: f64,
    pub initializer_factor: f64,
}

/// A config file that cannot be used, with the file and the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Keys transformers writes for bookkeeping, accepted and ignored.
const BOOKKEEPING: &[&str] = &[
    "_name_or_path",
    "architectures",
    "model_type",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "attention_dropout",
    "dropout",
    "projection_dim",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
];

impl TextConfig {
    /// A CLIP text tower of `layers` layers of width `hidden` over the byte vocabulary.
    pub fn new(hidden: usize, layers: usize, heads: usize, max_len: usize) -> Self {
        TextConfig {
            vocab_size: crate::VOCAB,
            hidden_size: hidden,
            intermediate_size: 4 * hidden,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            max_position_embeddings: max_len,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            initializer_range: 0.02,
            initializer_factor: 1.0,
        }
    }

    /// The config as transformers writes it.
    pub fn to_json(&self) -> Value {
        json!({
            "architectures": ["CLIPTextModel"],
            "model_type": "clip_text_model",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "max_position_embeddings": self.max_position_embeddings,
            "hidden_act": self.hidden_act,
            "layer_norm_eps": self.layer_norm_eps,
            "initializer_range": self.initializer_range,
            "initializer_factor": self.initializer_factor,
            "attention_dropout": 0.0,
            "projection_dim": self.hidden_size,
            "bos_token_id": crate::BOS,
            "eos_token_id": crate::EOS,
            "pad_token_id": crate::PAD,
            "torch_dtype": "float32",
        })
    }

    /// Reads a config; an unknown key or a missing or mistyped field is an error naming it.
    pub fn from_json(v: &Value, origin: &str) -> Result<Self, ConfigError> {
        let obj = v
            .as_object()
            .ok_or_else(|| ConfigError(format!("{origin}: not a JSON object")))?;
        let known = [
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "max_position_embeddings",
            "hidden_act",
            "layer_norm_eps",
            "initializer_range",
            "initializer_factor",
        ];
        if let Some(k) = obj
            .keys()
            .find(|k| !known.contains(&k.as_str()) && !BOOKKEEPING.contains(&k.as_str()))
        {
            return Err(ConfigError(format!("{origin}: unknown config key {k:?}")));
        }
        let int = |k: &str| {
            field(obj, k, origin)?
                .as_u64()
                .map(|v| v as usize)
                .ok_or_else(|| bad(origin, k, "an integer"))
        };
        let num = |k: &str| {
            field(obj, k, origin)?
                .as_f64()
                .ok_or_else(|| bad(origin, k, "a number"))
        };
        let act = field(obj, "hidden_act", origin)?
            .as_str()
            .ok_or_else(|| bad(origin, "hidden_act", "a string"))?;
        if act != "quick_gelu" && act != "gelu" {
            return Err(ConfigError(format!(
                "{origin}: hidden_act {act:?} is not quick_gelu or gelu"
            )));
        }
        let c = TextConfig {
            vocab_size: int("vocab_size")?,
            hidden_size: int("hidden_size")?,
            intermediate_size: int("intermediate_size")?,
            num_hidden_layers: int("num_hidden_layers")?,
            num_attention_heads: int("num_attention_heads")?,
            max_position_embeddings: int("max_position_embeddings")?,
            hidden_act: act.to_string(),
            layer_norm_eps: num("layer_norm_eps")?,
            initializer_range: num("initializer_range").unwrap_or(0.02),
            initializer_factor: num("initializer_factor").unwrap_or(1.0),
        };
        if c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            return Err(ConfigError(format!(
                "{origin}: hidden_size {} does not split into {} heads",
                c.hidden_size, c.num_attention_heads
            )));
        }
        Ok(c)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| ConfigError(format!("{}: bad JSON: {e}", path.display())))?;
        TextConfig::from_json(&v, &path.display().to_string())
    }
}

fn field<'a>(obj: &'a Map<String, Value>, k: &str, origin: &str) -> Result<&'a Value, ConfigError> {
    obj.get(k)
        .ok_or_else(|| ConfigError(format!("{origin}: missing config key {k:?}")))
}

fn bad(origin: &str, k: &str, what: &str) -> ConfigError {
    ConfigError(format!("{origin}: config key {k:?} must be {what}"))
}
