// attention: kernels pending
