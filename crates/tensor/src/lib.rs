//! kuosan's tensor library: strided tensors with reverse-mode autograd, run by SIMD +
//! rayon CPU kernels (and, later, WGSL kernels through wgpu).
//!
//! ```
//! use kuosan_tensor::{Device, DType, Tensor};
//! let x = Tensor::from_vec(vec![1f32, 2., 3., 4.], [2, 2], &Device::Cpu)?.with_grad();
//! let loss = x.matmul(&x)?.sum_all()?;
//! loss.backward()?;
//! assert_eq!(x.grad().unwrap().to_vec::<f32>()?, [7., 11., 9., 13.]);
//! # Ok::<(), kuosan_tensor::Error>(())
//! ```

mod autograd;
pub mod backend;
pub mod cpu;
mod device;
mod dtype;
mod error;
pub mod fastmath;
pub mod gpu;
mod layout;
mod normal;
mod op;
pub mod ops;
pub mod profile;
mod random;
mod shape;
mod storage;
mod tensor;
mod widen;

pub use autograd::{is_grad_enabled, no_grad, NoGradGuard};
pub use device::{Device, DEVICE_ENV};
pub use dtype::{erf_f32, erf_f64, DType, Element, Float};
pub use error::{Error, Result};
pub use gpu::GpuDevice;
pub use layout::Layout;
pub use ops::scaled_dot_product_attention;
pub use random::{philox4x32_10, Philox};
pub use shape::{Dim, Shape};
pub use storage::Storage;
pub use tensor::{Tensor, TensorId};
