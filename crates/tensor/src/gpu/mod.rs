//! The wgpu backend: hand-written WGSL kernels (in `kernels/`) run through wgpu on any
//! GPU (Vulkan, Metal, DX12) or Mesa's software Vulkan, behind the same
//! `BackendStorage` trait as the CPU.

mod attention;
mod backend;
mod device;
mod elementwise;
mod fill;
mod gemm;
mod index;
mod norm;
mod optim;
pub(crate) mod random;
mod reduce;
mod runtime;
mod source;
mod storage;

pub use device::{GpuDevice, ADAPTER_ENV};
pub use gemm::{matmul_with, GemmKernel};
pub use storage::GpuStorage;
