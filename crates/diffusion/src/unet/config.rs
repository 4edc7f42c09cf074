//! The U-Net's configuration with the keys and meanings of diffusers'
//! UNet2DConditionModel `config.json` (so the saved model loads with
//! `UNet2DConditionModel.from_pretrained`), and kuosan's presets.

use super::transformer::Attn;
use serde_json::{json, Value};

/// The subset of UNet2DConditionModel's config that kuosan builds. Note diffusers'
/// legacy naming: `attention_head_dim` holds the number of heads.
#[derive(Clone, Debug, PartialEq)]
pub struct UNetConfig {
    pub sample_size: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    /// "CrossAttnDownBlock2D" or "DownBlock2D" per level.
    pub down_block_types: Vec<String>,
    /// "CrossAttnUpBlock2D" or "UpBlock2D" per level, deepest first.
    pub up_block_types: Vec<String>,
    pub layers_per_block: usize,
    pub norm_num_groups: usize,
    pub norm_eps: f64,
    pub cross_attention_dim: usize,
    /// Number of heads (diffusers' legacy name).
    pub attention_head_dim: usize,
    pub transformer_layers_per_block: usize,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    /// The width of a pooled text embedding added to the time embedding (Imagen,
    /// Saharia et al. 2022, sec. 2.4), through an MLP named `class_embedding`: diffusers'
    /// `class_embed_type = "projection"` with `projection_class_embeddings_input_dim`,
    /// the pooled vector passed as `class_labels`. None: no such input.
    pub pooled_text_dim: Option<usize>,
    /// `resnet_time_scale_shift`: false for "default" (the time embedding is added before
    /// each resnet's second norm), true for "scale_shift" (it scales and shifts the
    /// normalised features: AdaGN, Dhariwal & Nichol 2021).
    pub scale_shift: bool,
    /// diffusers' `only_cross_attention`, one flag per level in down-block order (the up
    /// path reads it reversed): a cross-attention block's first attention attends to
    /// the text instead of the pixels, so a block at 16x16 costs 256 x 64 scores per
    /// head rather than 256 x 256. Written as one `false` when no level sets it.
    pub only_cross_attention: Vec<bool>,
}

/// Keys diffusers writes whose value kuosan's U-Net fixes; a config may carry them only
/// with these values.
fn fixed_keys() -> Value {
    json!({
        "act_fn": "silu",
        "center_input_sample": false,
        "downsample_padding": 1,
        "mid_block_scale_factor": 1,
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "use_linear_projection": false,
        "dual_cross_attention": false,
        "upcast_attention": false,
        "resnet_skip_time_act": false,
        "resnet_out_scale_factor": 1.0,
        "num_class_embeds": null,
        "time_embedding_type": "positional",
        "num_attention_heads": null,
        "addition_embed_type": null,
        "encoder_hid_dim": null,
        "encoder_hid_dim_type": null,
        "conv_in_kernel": 3,
        "conv_out_kernel": 3,
        "attention_type": "default",
        "dropout": 0.0,
        "timestep_post_act": null,
        "time_cond_proj_dim": null,
        "time_embedding_dim": null,
        "time_embedding_act_fn": null,
        "cross_attention_norm": null,
        "class_embeddings_concat": false,
        "mid_block_only_cross_attention": null,
        "reverse_transformer_layers_per_block": null,
        "addition_time_embed_dim": null,
        "addition_embed_type_num_heads": 64
    })
}

/// Bookkeeping keys accepted with any value.
const BOOKKEEPING: &[&str] = &[
    "_class_name",
    "_diffusers_version",
    "_name_or_path",
    "_use_default_values",
];

impl UNetConfig {
    /// Hidden width of the time embedding MLP (4 x the first level's channels).
    pub fn time_embed_dim(&self) -> usize {
        4 * self.block_out_channels[0]
    }

    /// The attention of level `i`'s cross-attention blocks (down-block order).
    pub fn attn(&self, i: usize) -> Attn {
        if self.only_cross_attention.get(i).copied().unwrap_or(false) {
            Attn::OnlyCross
        } else {
            Attn::SelfAndCross
        }
    }

    /// The config.json diffusers writes for this model.
    pub fn to_json(&self) -> Value {
        let mut v = fixed_keys();
        let obj = v.as_object_mut().expect("an object");
        for (k, val) in [
            ("_class_name", json!("UNet2DConditionModel")),
            ("_diffusers_version", json!("0.30.0")),
            ("sample_size", json!(self.sample_size)),
            ("in_channels", json!(self.in_channels)),
            ("out_channels", json!(self.out_channels)),
            ("block_out_channels", json!(self.block_out_channels)),
            ("down_block_types", json!(self.down_block_types)),
            ("up_block_types", json!(self.up_block_types)),
            ("layers_per_block", json!(self.layers_per_block)),
            ("norm_num_groups", json!(self.norm_num_groups)),
            ("norm_eps", json!(self.norm_eps)),
            ("cross_attention_dim", json!(self.cross_attention_dim)),
            ("attention_head_dim", json!(self.attention_head_dim)),
            (
                "transformer_layers_per_block",
                json!(self.transformer_layers_per_block),
            ),
            ("flip_sin_to_cos", json!(self.flip_sin_to_cos)),
            ("freq_shift", json!(self.freq_shift)),
            (
                "class_embed_type",
                json!(self.pooled_text_dim.map(|_| "projection")),
            ),
            (
                "projection_class_embeddings_input_dim",
                json!(self.pooled_text_dim),
            ),
            (
                "only_cross_attention",
                if self.only_cross_attention.iter().any(|&o| o) {
                    json!(self.only_cross_attention)
                } else {
                    json!(false)
                },
            ),
            (
                "resnet_time_scale_shift",
                json!(if self.scale_shift {
                    "scale_shift"
                } else {
                    "default"
                }),
            ),
        ] {
            obj.insert(k.to_string(), val);
        }
        v
    }

    /// Reads a config; unknown keys, unsupported values and inconsistent shapes are
    /// errors naming the key.
    pub fn from_json(v: &Value, origin: &str) -> Result<Self, String> {
        let obj = v
            .as_object()
            .ok_or_else(|| format!("{origin}: not a JSON object"))?;
        let fixed = fixed_keys();
        let fixed = fixed.as_object().expect("an object");
        let own = [
            "sample_size",
            "in_channels",
            "out_channels",
            "block_out_channels",
            "down_block_types",
            "up_block_types",
            "layers_per_block",
            "norm_num_groups",
            "norm_eps",
            "cross_attention_dim",
            "attention_head_dim",
            "transformer_layers_per_block",
            "flip_sin_to_cos",
            "freq_shift",
            "class_embed_type",
            "projection_class_embeddings_input_dim",
            "resnet_time_scale_shift",
            "only_cross_attention",
        ];
        for (k, val) in obj {
            if own.contains(&k.as_str()) || BOOKKEEPING.contains(&k.as_str()) {
                continue;
            }
            match fixed.get(k) {
                None => return Err(format!("{origin}: unknown config key {k:?}")),
                Some(want) if !same(want, val) => {
                    return Err(format!(
                    "{origin}: config key {k:?} = {val} is not supported (kuosan builds {want})"
                ))
                }
                _ => {}
            }
        }
        let get = |k: &str| {
            obj.get(k)
                .ok_or_else(|| format!("{origin}: missing config key {k:?}"))
        };
        let int = |k: &str| {
            get(k)?
                .as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| format!("{origin}: {k:?} must be an integer"))
        };
        let num = |k: &str| {
            get(k)?
                .as_f64()
                .ok_or_else(|| format!("{origin}: {k:?} must be a number"))
        };
        let ints = |k: &str| -> Result<Vec<usize>, String> {
            get(k)?
                .as_array()
                .and_then(|a| a.iter().map(|x| x.as_u64().map(|x| x as usize)).collect())
                .ok_or_else(|| format!("{origin}: {k:?} must be a list of integers"))
        };
        let strs = |k: &str| -> Result<Vec<String>, String> {
            get(k)?
                .as_array()
                .and_then(|a| a.iter().map(|x| x.as_str().map(String::from)).collect())
                .ok_or_else(|| format!("{origin}: {k:?} must be a list of strings"))
        };
        let heads = match get("attention_head_dim")? {
            Value::Array(a) => a
                .first()
                .and_then(Value::as_u64)
                .filter(|&h| a.iter().all(|x| x.as_u64() == Some(h)))
                .ok_or_else(|| {
                    format!(
                        "{origin}: per-level \"attention_head_dim\" lists must repeat one value"
                    )
                })? as usize,
            x => x
                .as_u64()
                .ok_or_else(|| format!("{origin}: \"attention_head_dim\" must be an integer"))?
                as usize,
        };
        let pooled_text_dim = match obj.get("class_embed_type") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s == "projection" => {
                Some(int("projection_class_embeddings_input_dim")?)
            }
            Some(other) => {
                return Err(format!(
                    "{origin}: config key \"class_embed_type\" = {other} is not supported (kuosan builds null or \"projection\")"
                ))
            }
        };
        let scale_shift = match obj.get("resnet_time_scale_shift") {
            None => false,
            Some(Value::String(s)) if s == "default" => false,
            Some(Value::String(s)) if s == "scale_shift" => true,
            Some(other) => {
                return Err(format!(
                    "{origin}: config key \"resnet_time_scale_shift\" = {other} is not supported (kuosan builds \"default\" or \"scale_shift\")"
                ))
            }
        };
        let levels = obj
            .get("block_out_channels")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let only_cross_attention = match obj.get("only_cross_attention") {
            None | Some(Value::Null) => vec![false; levels],
            Some(Value::Bool(b)) => vec![*b; levels],
            Some(Value::Array(a)) => a
                .iter()
                .map(Value::as_bool)
                .collect::<Option<Vec<bool>>>()
                .ok_or_else(|| {
                    format!("{origin}: \"only_cross_attention\" must be a bool or a list of bools")
                })?,
            Some(other) => {
                return Err(format!(
                    "{origin}: \"only_cross_attention\" = {other} must be a bool or a list of bools"
                ))
            }
        };
        let c = UNetConfig {
            pooled_text_dim,
            only_cross_attention,
            scale_shift,
            sample_size: int("sample_size")?,
            in_channels: int("in_channels")?,
            out_channels: int("out_channels")?,
            block_out_channels: ints("block_out_channels")?,
            down_block_types: strs("down_block_types")?,
            up_block_types: strs("up_block_types")?,
            layers_per_block: int("layers_per_block")?,
            norm_num_groups: int("norm_num_groups")?,
            norm_eps: num("norm_eps")?,
            cross_attention_dim: int("cross_attention_dim")?,
            attention_head_dim: heads,
            transformer_layers_per_block: obj
                .get("transformer_layers_per_block")
                .and_then(Value::as_u64)
                .unwrap_or(1) as usize,
            flip_sin_to_cos: obj
                .get("flip_sin_to_cos")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            freq_shift: obj.get("freq_shift").and_then(Value::as_f64).unwrap_or(0.0),
        };
        c.validate().map_err(|e| format!("{origin}: {e}"))?;
        Ok(c)
    }

    /// Checks that the levels, block types, groups and heads fit together.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.block_out_channels.len();
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(format!(
                "block_out_channels, down_block_types and up_block_types must have one entry per level ({n}, {}, {})",
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        if self.only_cross_attention.len() != n {
            return Err(format!(
                "only_cross_attention must have one entry per level ({n}), not {}",
                self.only_cross_attention.len()
            ));
        }
        for t in &self.down_block_types {
            if t != "CrossAttnDownBlock2D" && t != "DownBlock2D" {
                return Err(format!(
                    "down block type {t:?} is not CrossAttnDownBlock2D or DownBlock2D"
                ));
            }
        }
        for t in &self.up_block_types {
            if t != "CrossAttnUpBlock2D" && t != "UpBlock2D" {
                return Err(format!(
                    "up block type {t:?} is not CrossAttnUpBlock2D or UpBlock2D"
                ));
            }
        }
        for &c in &self.block_out_channels {
            if !c.is_multiple_of(self.norm_num_groups)
                || !c.is_multiple_of(self.attention_head_dim.max(1))
            {
                return Err(format!(
                    "{c} channels must split into {} norm groups and {} heads",
                    self.norm_num_groups, self.attention_head_dim
                ));
            }
        }
        if !self.sample_size.is_multiple_of(1 << (n - 1)) {
            return Err(format!(
                "sample_size {} does not halve {} times",
                self.sample_size,
                n - 1
            ));
        }
        Ok(())
    }
}

/// JSON equality where 1 and 1.0 are the same number.
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}
