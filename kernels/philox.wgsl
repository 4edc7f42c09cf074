// philox: kernels pending
