//! Blocked GEMM for f32 (AVX-512 / AVX2 FMA micro-kernels, portable fallback) and f64.
