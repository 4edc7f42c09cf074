//! The op vocabulary at the tensor level: shape checks, dispatch to the device's
//! storage, and recording for autograd. Backward rules live in the gradient table
//! (`op.rs`).

mod attention;
mod binary;
mod conv;
mod glu;
mod index;
mod matmul;
mod norm;
mod optim;
mod reduce;
mod softmax;
mod unary;
mod view;

pub use attention::{scaled_dot_product_attention, AttnShape};
pub use binary::{BinaryOp, MapFn2};
pub use conv::{conv2d_backward_input, conv2d_backward_weight, ConvShape, IntoPair};
pub use norm::NormShape;
pub use optim::{adamw_step, AdamWStep};
pub use reduce::ReduceOp;
pub use unary::{MapFn, MapFnPair, UnaryOp};

pub(crate) use attention::attention_backward;
pub(crate) use glu::glu_backward;
pub(crate) use index::embedding_backward;
pub(crate) use norm::norm_backward;
