//! f16 tensors compute in f32 and round once: on the CPU every op widens its operands,
//! runs the f32 kernel and rounds the result, so an op on f16 equals the f32 op on the
//! same values rounded to f16, bit for bit; on a GPU with SHADER_F16 the elementwise
//! kernels read f16 and write f16 themselves and every other kernel runs through f32, so
//! the GPU's f16 results equal the CPU's to one f16 step (2^-10 relative: the f32
//! results differ by the usual GPU-vs-CPU tolerance, and a rounding may land either
//! side). Forward and backward, on random shapes and strided views.

use super::config;
use crate::harness::*;
use kuosan_tensor::ops::{BinaryOp, UnaryOp};
use kuosan_tensor::{scaled_dot_product_attention, DType, Device, Tensor};
use proptest::prelude::*;

/// One f16 step at |v| <= 1 plus a relative step: where two roundings may part.
const ATOL: f64 = 1e-3;
const RTOL: f64 = 2e-3;

fn f16_bits(t: &Tensor) -> Vec<u16> {
    t.to_vec::<half::f16>()
        .unwrap()
        .iter()
        .map(|h| h.to_bits())
        .collect()
}

/// The GPU, or None (after checking the refusal says why) without SHADER_F16.
fn f16_gpu() -> Option<Device> {
    let dev = gpu();
    let Device::Gpu(g) = &dev else {
        unreachable!("gpu() gives a GPU")
    };
    if g.has_f16() {
        return Some(dev);
    }
    let h = Tensor::zeros([2], DType::F16, &Device::Cpu).unwrap();
    let err = h.to_device(&dev).unwrap_err().to_string();
    assert!(err.contains("SHADER_F16"), "{err}");
    None
}

/// An op checked three ways: CPU f16 == round(CPU f32) bitwise, GPU f16 ~ CPU f16.
fn check(what: &str, inputs: &[(Vec<f64>, Vec<usize>, Arrange)], f: impl Fn(&[Tensor]) -> Tensor) {
    let make = |dtype: DType, dev: &Device| -> Vec<Tensor> {
        inputs
            .iter()
            .map(|(v, s, how)| {
                // Values f16 can hold, so the f32 and f16 runs see the same numbers.
                let v: Vec<f64> = v.iter().map(|&x| half::f16::from_f64(x).to_f64()).collect();
                tensor_on(&v, s, dtype, *how, dev)
            })
            .collect()
    };
    let c16 = f(&make(DType::F16, &Device::Cpu));
    assert_eq!(c16.dtype(), DType::F16, "{what} keeps f16");
    let c32 = f(&make(DType::F32, &Device::Cpu));
    assert_eq!(
        f16_bits(&c16),
        f16_bits(&c32.to_dtype(DType::F16).unwrap()),
        "{what}: the CPU's f16 result is not the f32 result rounded to f16"
    );
    if let Some(dev) = f16_gpu() {
        let g16 = f(&make(DType::F16, &dev));
        assert_eq!(g16.dtype(), DType::F16, "{what} keeps f16 on the GPU");
        assert_close(
            &format!("{what} on the GPU"),
            &values(&g16),
            &values(&c16),
            ATOL,
            RTOL,
        );
    }
}

proptest! {
    #![proptest_config(config(3))]

    #[test]
    fn elementwise_in_f16(shape in shape(1..=3, 300), how in arrange(), seed in any::<u64>()) {
        let n: usize = shape.iter().product();
        for &op in UnaryOp::ALL {
            let (lo, hi) = match op {
                UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Recip => (0.1, 3.0),
                _ => (-3.0, 3.0),
            };
            let x = vec![(data(n, seed, lo, hi), shape.clone(), how)];
            check(&format!("{} {shape:?} {how:?}", op.name()), &x, |t| t[0].unary(op).unwrap());
        }
        let ab = vec![
            (data(n, seed, -3.0, 3.0), shape.clone(), how),
            (data(n, seed ^ 1, 0.5, 3.0), shape.clone(), Arrange::Contiguous),
        ];
        for &op in BinaryOp::ALL {
            check(&format!("{} {shape:?}", op.name()), &ab, |t| t[0].binary(&t[1], op).unwrap());
        }
        check("affine", &ab, |t| t[0].affine(0.75, -0.5).unwrap());
        check("powf", &ab[1..], |t| t[0].powf(1.5).unwrap());
        check("where", &ab, |t| t[0].gt(&t[1]).unwrap().where_cond(&t[0], &t[1]).unwrap());
        check("sum", &ab, |t| t[0].sum(&[shape.len() - 1], false).unwrap());
        check("max", &ab, |t| t[0].max(&[0], true).unwrap());
        check("softmax", &ab, |t| t[0].softmax(shape.len() - 1).unwrap());
    }

    #[test]
    fn kernels_in_f16(
        (m, k, n) in (1usize..20, 1usize..40, 1usize..20),
        (c, hw) in (1usize..4, 2usize..7),
        seed in any::<u64>(),
    ) {
        let mk = |n: usize, s: &[usize], salt: u64, how| (data(n, seed ^ salt, -1.0, 1.0), s.to_vec(), how);
        check("matmul", &[mk(m * k, &[m, k], 1, Arrange::Transposed), mk(k * n, &[k, n], 2, Arrange::Contiguous)],
            |t| t[0].matmul(&t[1]).unwrap());
        let g = 2;
        let x = mk(2 * g * c * hw * hw, &[2, g * c, hw, hw], 3, Arrange::Contiguous);
        let w = mk(3 * g * c * 9, &[3, g * c, 3, 3], 4, Arrange::Contiguous);
        let b = mk(3, &[3], 5, Arrange::Contiguous);
        check("conv2d", &[x.clone(), w, b], |t| t[0].conv2d(&t[1], Some(&t[2]), 1, 1).unwrap());
        let (gw, gb) = (mk(g * c, &[g * c], 6, Arrange::Contiguous), mk(g * c, &[g * c], 7, Arrange::Contiguous));
        check("group_norm_silu", &[x.clone(), gw, gb], |t| t[0].group_norm_silu(g, Some(&t[1]), Some(&t[2]), 1e-5).unwrap());
        check("upsample", &[x], |t| t[0].upsample_nearest2d(2).unwrap());
        let q = mk(2 * m * 8, &[1, 2, m, 8], 8, Arrange::Contiguous);
        let kv = mk(2 * n * 8, &[1, 2, n, 8], 9, Arrange::Contiguous);
        check("attention", &[q, kv.clone(), kv], |t| {
            scaled_dot_product_attention(&t[0], &t[1], &t[2], None, false, None).unwrap()
        });
        let table = mk(7 * k, &[7, k], 10, Arrange::Contiguous);
        check("embedding", &[table], |t| {
            let ids = Tensor::from_slice(&[3u32, 0, 6, 3], [4], t[0].device()).unwrap();
            t[0].embedding(&ids).unwrap()
        });
    }
}

/// Backward through f16 tensors: the gradients of a small network are f16, and the GPU's
/// equal the CPU's to f16 precision (several roundings deep, so a looser bound).
#[test]
fn gradients_in_f16() {
    let grads = |dev: &Device| -> Vec<Vec<f64>> {
        let x = tensor_on(
            &data(2 * 4 * 5 * 5, 1, -1.0, 1.0),
            &[2, 4, 5, 5],
            DType::F16,
            Arrange::Contiguous,
            dev,
        );
        let w = tensor_on(
            &data(4 * 4 * 9, 2, -0.3, 0.3),
            &[4, 4, 3, 3],
            DType::F16,
            Arrange::Contiguous,
            dev,
        )
        .with_grad();
        let m = tensor_on(
            &data(25 * 6, 3, -0.5, 0.5),
            &[25, 6],
            DType::F16,
            Arrange::Contiguous,
            dev,
        )
        .with_grad();
        let h = x
            .conv2d(&w, None, 1, 1)
            .unwrap()
            .group_norm_silu(2, None, None, 1e-5)
            .unwrap();
        let y = h
            .flatten_from(2)
            .unwrap()
            .matmul(&m)
            .unwrap()
            .softmax(2)
            .unwrap();
        let loss = y.sqr().unwrap().sum_all().unwrap();
        assert_eq!(loss.dtype(), DType::F16);
        loss.backward().unwrap();
        let (gw, gm) = (w.grad().unwrap(), m.grad().unwrap());
        assert_eq!((gw.dtype(), gm.dtype()), (DType::F16, DType::F16));
        vec![values(&gw), values(&gm)]
    };
    let cpu = grads(&Device::Cpu);
    if let Some(dev) = f16_gpu() {
        let gpu = grads(&dev);
        for (what, (g, c)) in ["conv weight", "matmul weight"]
            .iter()
            .zip(gpu.iter().zip(&cpu))
        {
            let scale = c.iter().fold(0.0f64, |a, v| a.max(v.abs()));
            assert_close(
                &format!("f16 gradient of the {what}"),
                g,
                c,
                1e-2 * scale,
                1e-2,
            );
        }
    }
}
