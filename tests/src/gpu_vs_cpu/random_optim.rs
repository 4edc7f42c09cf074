//! Philox fills on the GPU equal the CPU's bit for bit, and the fused AdamW kernel
//! matches the CPU's.

use crate::harness::*;
use kuosan_tensor::ops::{adamw_step, AdamWStep};
use kuosan_tensor::{DType, Device, Philox, Tensor};

#[test]
fn philox_streams_are_bit_identical() {
    let dev = gpu();
    // Offsets straddling 2^32 blocks check the carry into the counter's high word.
    for (seed, offset, n) in [
        (0u64, 0u64, 1usize),
        (7, 3, 1001),
        (u64::MAX, (1 << 32) - 40, 4099),
        (12345, 1 << 40, 64),
    ] {
        for normal in [false, true] {
            let (mut a, mut b) = (Philox { seed, offset }, Philox { seed, offset });
            let make = |d: &Device, r: &mut Philox| {
                if normal {
                    Tensor::randn([n], DType::F32, d, r)
                } else {
                    Tensor::rand([n], DType::F32, d, r)
                }
                .unwrap()
            };
            let cpu = make(&Device::Cpu, &mut a).to_vec::<f32>().unwrap();
            let gpu = make(&dev, &mut b).to_vec::<f32>().unwrap();
            assert_eq!(a, b, "both streams advance alike");
            for (i, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
                assert_eq!(
                    c.to_bits(),
                    g.to_bits(),
                    "normal={normal} seed={seed} offset={offset} element {i}: cpu {c} gpu {g}"
                );
            }
        }
    }
}

#[test]
fn adamw_matches_the_cpu() {
    let dev = gpu();
    let n = 5000;
    let run = |d: &Device| {
        let t = |v: &[f64]| tensor_on(v, &[n], DType::F32, Arrange::Contiguous, d);
        let (p, m, v) = (
            t(&data(n, 1, -1.0, 1.0)),
            t(&vec![0.0; n]),
            t(&vec![0.0; n]),
        );
        for step in 1..=4u64 {
            let h = AdamWStep {
                lr: 3e-3,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.01,
                step,
            };
            // A strided gradient exercises the kernel's dense copy.
            let g = tensor_on(
                &data(2 * n, step, -1.0, 1.0),
                &[n, 2],
                DType::F32,
                Arrange::Contiguous,
                d,
            )
            .narrow(1, 0, 1)
            .unwrap()
            .squeeze(1)
            .unwrap();
            adamw_step(&p, &g, &m, &v, &h).unwrap();
        }
        [values(&p), values(&m), values(&v)]
    };
    let (want, got) = (run(&Device::Cpu), run(&dev));
    for (i, name) in ["param", "m", "v"].iter().enumerate() {
        assert_close(&format!("adamw {name}"), &got[i], &want[i], 1e-6, 1e-5);
    }
}
