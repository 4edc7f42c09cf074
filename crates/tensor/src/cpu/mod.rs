//! The CPU backend: fast kernels (SIMD + rayon) and the f64 reference that defines right.

pub mod gemm;
