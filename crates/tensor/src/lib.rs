//! kuosan's tensor library: strided tensors with reverse-mode autograd, run by SIMD +
//! rayon CPU kernels (and, later, WGSL kernels through wgpu).

pub mod cpu;
