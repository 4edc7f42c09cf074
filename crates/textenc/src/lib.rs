//! kuosan's text encoder: UTF-8 bytes as tokens (English and Chinese alike) and a
//! transformer with the architecture, config keys and parameter names of transformers'
//! CLIPTextModel.
