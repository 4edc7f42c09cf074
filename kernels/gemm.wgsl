// gemm: kernels pending
