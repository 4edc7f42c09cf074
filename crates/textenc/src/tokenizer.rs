//! The byte-level tokenizer: each UTF-8 byte of the prompt is a token (so any language
//! works the same, "a red circle" and "红色的圆形" alike), framed by begin/end tokens and
//! padded to a fixed length.

use kuosan_tensor::{Device, Result, Tensor};

/// Token ids: bytes are 0..=255, then the three special tokens.
pub const BOS: u32 = 256;
pub const EOS: u32 = 257;
pub const PAD: u32 = 258;
/// Vocabulary size: 256 bytes + BOS, EOS, PAD.
pub const VOCAB: usize = 259;

/// A batch of encoded prompts.
#[derive(Clone, Debug, PartialEq)]
pub struct Tokens {
    /// [B, L] u32 ids.
    pub ids: Vec<u32>,
    /// [B, L] 1 for real tokens (BOS .. EOS), 0 for padding.
    pub mask: Vec<u32>,
    pub batch: usize,
    pub len: usize,
    /// Which prompts were cut to fit.
    pub truncated: Vec<bool>,
}

impl Tokens {
    /// [B, 1, L] f32 rows selecting each prompt's EOS token: `select @ hidden` is the
    /// pooled embedding, transformers' `pooler_output` (the first EOS of each row).
    pub fn eos_selector(&self, device: &Device) -> Result<Tensor> {
        let mut sel = vec![0f32; self.batch * self.len];
        for b in 0..self.batch {
            let row = &self.ids[b * self.len..(b + 1) * self.len];
            let eos = row.iter().position(|&t| t == EOS).unwrap_or(self.len - 1);
            sel[b * self.len + eos] = 1.0;
        }
        Tensor::from_vec(sel, [self.batch, 1, self.len], &Device::Cpu)?.to_device(device)
    }

    /// (ids, mask) as [B, L] u32 tensors on `device`.
    pub fn tensors(&self, device: &Device) -> Result<(Tensor, Tensor)> {
        let ids = Tensor::from_slice(&self.ids, [self.batch, self.len], &Device::Cpu)?
            .to_device(device)?;
        let mask = Tensor::from_slice(&self.mask, [self.batch, self.len], &Device::Cpu)?
            .to_device(device)?;
        Ok((ids, mask))
    }
}

/// Encodes prompts to `max_len` tokens: BOS, the bytes, EOS, then PAD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tokenizer {
    pub max_len: usize,
}

impl Tokenizer {
    pub fn new(max_len: usize) -> Self {
        Tokenizer {
            max_len: max_len.max(2),
        }
    }

    /// The most prompt bytes that fit (max_len minus BOS and EOS).
    pub fn capacity(&self) -> usize {
        self.max_len - 2
    }

    /// One prompt's ids and mask; a prompt too long is cut at the last whole UTF-8
    /// character that fits (a Chinese character is 3 bytes), and flagged.
    pub fn encode_one(&self, text: &str) -> (Vec<u32>, Vec<u32>, bool) {
        let mut end = text.len().min(self.capacity());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mut ids = Vec::with_capacity(self.max_len);
        ids.push(BOS);
        ids.extend(text.as_bytes()[..end].iter().map(|&b| u32::from(b)));
        ids.push(EOS);
        let real = ids.len();
        ids.resize(self.max_len, PAD);
        let mask = (0..self.max_len).map(|i| u32::from(i < real)).collect();
        (ids, mask, end < text.len())
    }

    /// A batch of prompts.
    pub fn encode(&self, texts: &[impl AsRef<str>]) -> Tokens {
        let mut t = Tokens {
            ids: vec![],
            mask: vec![],
            batch: texts.len(),
            len: self.max_len,
            truncated: vec![],
        };
        for text in texts {
            let (ids, mask, cut) = self.encode_one(text.as_ref());
            t.ids.extend(ids);
            t.mask.extend(mask);
            t.truncated.push(cut);
        }
        t
    }

    /// The text of a row of ids (bytes between BOS and EOS), lossy for cut characters.
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .skip_while(|&&i| i == BOS)
            .take_while(|&&i| i < 256)
            .map(|&i| i as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}
