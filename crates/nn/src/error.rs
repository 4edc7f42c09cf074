//! Errors of the nn layer: tensor errors, and file errors that name the file and what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Tensor(#[from] kuosan_tensor::Error),

    /// A file could not be read or written, or its contents do not fit.
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },

    /// A parameter asked for twice with different shapes, or a bad argument.
    #[error("{0}")]
    Arg(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A file error naming the file.
    pub fn file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::File {
            path: path.into(),
            msg: msg.into(),
        }
    }
}
