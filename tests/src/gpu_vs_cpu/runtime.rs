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
/// Feature detection: the adapter's SHADER_F16 and subgroup support are reported; a
/// subgroup range, where there is one, is a range of powers of two.
#[test]
fn features_are_detected() {
    let Device::Gpu(g) = gpu() else {
        unreachable!("gpu() gives a GPU")
    };
    let caps = g.capabilities();
    assert!(
        caps.starts_with("f16: ") && caps.contains("subgroups: "),
        "{caps}"
    );
    if let Some((lo, hi)) = g.subgroup_sizes() {
        assert!(
            lo.is_power_of_two() && hi.is_power_of_two() && lo <= hi,
            "{caps}"
        );
    }
}

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

/// The composite of the CPU gradient check (conv -> group_norm -> silu -> attention ->
/// sum) on GPU tensors gives the CPU's value and gradients.
#[test]
fn composite_gradients_match_the_cpu() {
    let dev = gpu();
    let run = |d: &Device| {
        let t = |shape: &[usize], seed: u64, scale: f64| {
            tensor_on(
                &data(shape.iter().product(), seed, -scale, scale),
                shape,
                DType::F32,
                Arrange::Contiguous,
                d,
            )
            .with_grad()
        };
        let (x, w) = (t(&[2, 8, 5, 5], 1, 1.0), t(&[8, 8, 3, 3], 2, 0.3));
        let (gw, gb) = (t(&[8], 3, 1.0), t(&[8], 4, 0.5));
        let h = x
            .conv2d(&w, None, 1, 1)
            .unwrap()
            .group_norm(2, Some(&gw), Some(&gb), 1e-5)
            .unwrap()
            .silu()
            .unwrap();
        let seq = h
            .flatten_from(2)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .unsqueeze(1)
            .unwrap();
        let out = kuosan_tensor::scaled_dot_product_attention(&seq, &seq, &seq, None, true, None)
            .unwrap();
        let loss = out.sqr().unwrap().sum_all().unwrap();
        loss.backward().unwrap();
        let mut all = vec![values(&loss)];
        all.extend(
            [&x, &w, &gw, &gb]
                .iter()
                .map(|p| values(&p.grad().unwrap())),
        );
        all
    };
    let (want, got) = (run(&Device::Cpu), run(&dev));
    for (i, name) in ["loss", "dx", "dw", "dgamma", "dbeta"].iter().enumerate() {
        assert_close(&format!("composite {name}"), &got[i], &want[i], 1e-4, 1e-4);
    }
}

/// A whole training step (forward, backward, AdamW on every parameter) reads back
/// nothing but the loss.
#[test]
fn a_training_step_reads_back_only_the_loss() {
    use kuosan_tensor::ops::{adamw_step, AdamWStep};
    // A device of its own: tests running beside this one read back from the shared one.
    let g = kuosan_tensor::GpuDevice::new().expect("a GPU adapter (see gpu())");
    let dev = Device::Gpu(g.clone());
    let t = |shape: &[usize], seed: u64| {
        tensor_on(
            &data(shape.iter().product(), seed, -0.5, 0.5),
            shape,
            DType::F32,
            Arrange::Contiguous,
            &dev,
        )
    };
    let params: Vec<Tensor> = [t(&[8, 3, 3, 3], 1), t(&[8], 2), t(&[8], 3), t(&[8, 8], 4)]
        .into_iter()
        .map(|p| p.with_grad())
        .collect();
    let moments: Vec<(Tensor, Tensor)> = params
        .iter()
        .map(|p| (p.zeros_like().unwrap(), p.zeros_like().unwrap()))
        .collect();
    let x = t(&[2, 3, 6, 6], 5);
    let target = t(&[2, 36, 8], 6);
    let before = g.readbacks();
    for step in 1..=2u64 {
        let h = x
            .conv2d(&params[0], Some(&params[1]), 1, 1)
            .unwrap()
            .group_norm_silu(4, Some(&params[2]), None, 1e-5)
            .unwrap();
        let seq = h.flatten_from(2).unwrap().transpose(1, 2).unwrap(); // [2, 36, 8]
        let y = seq.matmul(&params[3]).unwrap();
        let loss = y.sub(&target).unwrap().sqr().unwrap().mean_all().unwrap();
        loss.backward().unwrap();
        let hp = AdamWStep {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            step,
        };
        for (p, (m, v)) in params.iter().zip(&moments) {
            adamw_step(p, &p.grad().unwrap(), m, v, &hp).unwrap();
            p.zero_grad();
        }
        let _ = loss.to_scalar::<f32>().unwrap();
        assert_eq!(
            g.readbacks() - before,
            step,
            "step {step} read back more than its loss"
        );
    }
}
