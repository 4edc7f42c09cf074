// adamw: kernels pending
