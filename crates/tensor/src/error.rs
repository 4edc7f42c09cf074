//! Errors: every fallible op says which op failed, on which shapes or dtypes, and what to do.

use crate::{DType, Shape};

/// The crate's error type. Each variant names the op so a failure deep inside a model
/// still points at the call that was wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Operand shapes do not fit the op (`matmul: [2, 3] x [4, 5]: inner dims 3 and 4 differ`).
    #[error("{op}: {msg}")]
    Shape { op: &'static str, msg: String },

    /// A dtype the op does not compute in (f16/bf16 are storage-only on the CPU, say).
    #[error("{op}: {msg}")]
    DType { op: &'static str, msg: String },

    /// Operands live on different devices, or the device cannot run the op.
    #[error("{op}: {msg}")]
    Device { op: &'static str, msg: String },

    /// An argument out of range: a dim, an index, a group count, a stride.
    #[error("{op}: {msg}")]
    Arg { op: &'static str, msg: String },

    /// Autograd misuse: backward from a non-scalar, from a tensor that needs no grad, ...
    #[error("backward: {0}")]
    Grad(String),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn shape(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Shape {
            op,
            msg: msg.into(),
        }
    }
    pub(crate) fn arg(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Arg {
            op,
            msg: msg.into(),
        }
    }
    pub(crate) fn dtype(op: &'static str, msg: impl Into<String>) -> Self {
        Error::DType {
            op,
            msg: msg.into(),
        }
    }
    pub(crate) fn device(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Device {
            op,
            msg: msg.into(),
        }
    }

    /// Two operands whose shapes do not go together.
    pub(crate) fn shapes(op: &'static str, a: &Shape, b: &Shape, why: &str) -> Self {
        Error::shape(op, format!("{a} and {b}: {why}"))
    }

    /// A dtype the op cannot compute in.
    pub(crate) fn unsupported_dtype(op: &'static str, dtype: DType) -> Self {
        let hint = match dtype {
            DType::F16 | DType::BF16 => {
                "; it is a storage dtype: cast with .to_dtype(DType::F32) before computing"
            }
            DType::U32 => {
                "; u32 holds indices and masks: cast with .to_dtype(DType::F32) to compute"
            }
            _ => "",
        };
        Error::dtype(op, format!("does not support dtype {dtype}{hint}"))
    }
}
