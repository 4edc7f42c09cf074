//! The GPU runtime: device moves, pooled buffer reuse across many batches, clear errors
//! for what the GPU cannot hold, and autograd across devices.

use crate::harness::*;
use kuosan_tensor::{DType, Device, Tensor};

#[test]
fn round_trips_and_device_errors() {
    let dev = gpu();
    let x = data(1000, 1, -1.0, 1.0);
    let c = tensor(&x, &[10, 100], DType::F32, Arrange::Contiguous);
    let g = c.to_device(&dev).unwrap();
    assert_eq!(g.device(), &dev);
    assert_eq!(values(&g.to_device(&Device::Cpu).unwrap()), values(&c));
    let ids = Tensor::from_vec(vec![1u32, 2, 3], [3], &Device::Cpu)
        .unwrap()
        .to_device(&dev)
        .unwrap();
    assert_eq!(ids.to_vec::<u32>().unwrap(), [1, 2, 3]);
    // Mixing devices, and dtypes the GPU does not hold, are errors that say what to do.
    let err = g.add(&c).unwrap_err().to_string();
    assert!(err.contains("add") && err.contains("cpu"), "{err}");
    let err = c
        .to_dtype(DType::F64)
        .unwrap()
        .to_device(&dev)
        .unwrap_err()
        .to_string();
    assert!(err.contains("f64") && err.contains("CPU"), "{err}");
    // A tensor past the adapter's binding limit is refused, not a validation panic.
    if let Device::Gpu(gd) = &dev {
        let too_big = (gd.max_binding_bytes() / 4 + 1024) as usize;
        let err = Tensor::zeros([too_big], DType::F32, &dev)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bytes"), "{err}");
    }
}

/// Hundreds of ops with intermediate drops: buffers return to the pool and are reused
/// across batch submissions without one op's data leaking into another's.
#[test]
fn pooled_buffers_are_reused_safely() {
    let dev = gpu();
    let x = data(4096, 2, -1.0, 1.0);
    let (mut c, mut g) = (
        tensor(&x, &[64, 64], DType::F32, Arrange::Contiguous),
        tensor_on(&x, &[64, 64], DType::F32, Arrange::Contiguous, &dev),
    );
    for i in 0..150 {
        let s = (i % 7) as f64 * 0.1;
        c = c
            .affine(0.9, s)
            .unwrap()
            .tanh()
            .unwrap()
            .add(&c.t().unwrap())
            .unwrap();
        g = g
            .affine(0.9, s)
            .unwrap()
            .tanh()
            .unwrap()
            .add(&g.t().unwrap())
            .unwrap();
    }
    assert_close("150 chained ops", &values(&g), &values(&c), 1e-4, 1e-4);
}

/// Gradients flow back across a move between devices.
#[test]
fn autograd_across_devices() {
    let dev = gpu();
    let x = tensor(
        &data(6, 3, -1.0, 1.0),
        &[2, 3],
        DType::F32,
        Arrange::Contiguous,
    )
    .with_grad();
    let y = x.to_device(&dev).unwrap().sqr().unwrap().sum_all().unwrap();
    y.backward().unwrap();
    let want: Vec<f64> = values(&x).iter().map(|v| 2.0 * v).collect();
    let g = x.grad().unwrap();
    assert_eq!(g.device(), &Device::Cpu);
    assert_close("d sum(x^2) across devices", &values(&g), &want, 1e-6, 1e-6);
}
