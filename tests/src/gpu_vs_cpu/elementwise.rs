//! GPU elementwise kernels (unary maps and derivatives, GLU, binary ops with
//! broadcasting, affine, powf, where, casts, strided copies and cat) against the CPU.

use super::config;
use crate::harness::*;
use kuosan_tensor::ops::{BinaryOp, UnaryOp};
use kuosan_tensor::{DType, Device, Tensor};
use proptest::prelude::*;

/// The same values arranged the same way on the CPU and on the GPU.
fn pair(values: &[f64], shape: &[usize], how: Arrange, dev: &Device) -> (Tensor, Tensor) {
    (
        tensor(values, shape, DType::F32, how),
        tensor_on(values, shape, DType::F32, how, dev),
    )
}

proptest! {
    #![proptest_config(config(8))]

    #[test]
    fn unary_ops_and_derivatives(shape in shape(0..=4, 600), how in arrange(), seed in any::<u64>()) {
        let dev = gpu();
        for &op in UnaryOp::ALL {
            let (lo, hi) = match op {
                UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Recip => (0.1, 3.0),
                _ => (-4.0, 4.0),
            };
            let x = data(shape.iter().product(), seed, lo, hi);
            let (c, g) = pair(&x, &shape, how, &dev);
            let what = format!("{} on {shape:?} {how:?}", op.name());
            assert_close(&what, &values(&g.unary(op).unwrap()), &values(&c.unary(op).unwrap()), 1e-6, 1e-4);
            // The derivative, as backward uses it.
            let grad_of = |t: &Tensor| {
                let t = t.contiguous().unwrap().with_grad();
                t.unary(op).unwrap().sum_all().unwrap().backward().unwrap();
                values(&t.grad().unwrap())
            };
            assert_close(&format!("{what} derivative"), &grad_of(&g), &grad_of(&c), 1e-6, 1e-4);
        }
    }

    #[test]
    fn glu_forward_and_backward(shape in shape(1..=3, 400), how in arrange(), seed in any::<u64>()) {
        let dev = gpu();
        let mut shape = shape;
        *shape.last_mut().unwrap() *= 2;
        let x = data(shape.iter().product(), seed, -4.0, 4.0);
        let (c, g) = pair(&x, &shape, how, &dev);
        for act in [UnaryOp::GeluErf, UnaryOp::Silu] {
            let what = format!("glu {} on {shape:?} {how:?}", act.name());
            assert_close(&what, &values(&g.glu(act).unwrap()), &values(&c.glu(act).unwrap()), 1e-6, 1e-4);
            let grad_of = |t: &Tensor| {
                let t = t.with_grad();
                let y = t.glu(act).unwrap();
                let r = Tensor::from_vec(data(y.elem_count(), seed ^ 5, -1.0, 1.0), y.dims(), &Device::Cpu)
                    .unwrap()
                    .to_dtype(DType::F32)
                    .unwrap()
                    .to_device(t.device())
                    .unwrap();
                y.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
                values(&t.grad().unwrap())
            };
            assert_close(&format!("{what} backward"), &grad_of(&g), &grad_of(&c), 1e-6, 1e-4);
        }
    }

    #[test]
    fn binary_ops_broadcast(
        (sa, sb) in shape(0..=4, 600).prop_flat_map(|s| (broadcastable(s.clone()), broadcastable(s))),
        (ha, hb) in (arrange(), arrange()),
        seed in any::<u64>(),
    ) {
        let dev = gpu();
        let a: Vec<f64> = data(sa.iter().product(), seed, -4.0, 4.0).into_iter().map(|v| (v * 2.0).round() / 2.0).collect();
        let b: Vec<f64> = data(sb.iter().product(), seed ^ 1, -4.0, 4.0)
            .into_iter()
            .map(|v| (v * 2.0).round() / 2.0)
            .map(|v| if v >= 0.0 { v + 0.5 } else { v })
            .collect();
        let (ca, ga) = pair(&a, &sa, ha, &dev);
        let (cb, gb) = pair(&b, &sb, hb, &dev);
        for &op in BinaryOp::ALL {
            let want = ca.binary(&cb, op).unwrap();
            let got = ga.binary(&gb, op).unwrap();
            prop_assert_eq!(got.dims(), want.dims());
            let exact = !matches!(op, BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div);
            let (atol, rtol) = if exact { (0.0, 0.0) } else { (1e-7, 1e-6) };
            assert_close(&format!("{} {sa:?} {sb:?}", op.name()), &values(&got), &values(&want), atol, rtol);
        }
        // Gradients through broadcasting reduce on the device.
        let grads = |a: &Tensor, b: &Tensor| {
            let (a, b) = (a.contiguous().unwrap().with_grad(), b.contiguous().unwrap().with_grad());
            a.mul(&b).unwrap().add(&a).unwrap().sum_all().unwrap().backward().unwrap();
            (values(&a.grad().unwrap()), values(&b.grad().unwrap()))
        };
        let (want, got) = (grads(&ca, &cb), grads(&ga, &gb));
        assert_close("d(ab + a)/da", &got.0, &want.0, 1e-5, 1e-5);
        assert_close("d(ab + a)/db", &got.1, &want.1, 1e-5, 1e-5);
    }

    #[test]
    fn affine_powf_where_casts(shape in shape(1..=3, 600), how in arrange(), seed in any::<u64>(), e in -2.0f64..3.0) {
        let dev = gpu();
        let n: usize = shape.iter().product();
        let x = data(n, seed, 0.1, 3.0);
        let (c, g) = pair(&x, &shape, how, &dev);
        assert_close("affine", &values(&g.affine(-1.5, 0.25).unwrap()), &values(&c.affine(-1.5, 0.25).unwrap()), 1e-7, 1e-6);
        assert_close("powf", &values(&g.powf(e).unwrap()), &values(&c.powf(e).unwrap()), 1e-6, 1e-4);
        // Integer powers of negative values, as powf gives them.
        let (cn, gn) = (c.neg().unwrap(), g.neg().unwrap());
        assert_close("powf(-x, 3)", &values(&gn.powf(3.0).unwrap()), &values(&cn.powf(3.0).unwrap()), 1e-6, 1e-4);
        assert_close("powf(-x, 2)", &values(&gn.powf(2.0).unwrap()), &values(&cn.powf(2.0).unwrap()), 1e-6, 1e-4);

        let cond: Vec<f64> = data(n, seed ^ 2, 0.0, 2.0).into_iter().map(f64::floor).collect();
        for dt in [DType::U32, DType::F32] {
            let cc = tensor(&cond, &shape, dt, how);
            let gc = tensor_on(&cond, &shape, dt, how, &dev);
            let want = cc.where_cond(&c, &c.neg().unwrap()).unwrap();
            let got = gc.where_cond(&g, &g.neg().unwrap()).unwrap();
            assert_close(&format!("where {dt}"), &values(&got), &values(&want), 0.0, 0.0);
            // Casts both ways are exact for small integers.
            assert_close("cast", &values(&gc.to_dtype(DType::F32).unwrap().to_dtype(DType::U32).unwrap()), &cond, 0.0, 0.0);
        }
        assert_close("masked_fill", &values(&g.masked_fill(&g.gt(&g.mean_all().unwrap()).unwrap(), -7.0).unwrap()),
            &values(&c.masked_fill(&c.gt(&c.mean_all().unwrap()).unwrap(), -7.0).unwrap()), 0.0, 0.0);
    }

    #[test]
    fn copies_views_and_cat(shape in shape(1..=4, 600), how in arrange(), seed in any::<u64>(), parts in 1usize..=3) {
        let dev = gpu();
        let x = data(shape.iter().product(), seed, -3.0, 3.0);
        let (c, g) = pair(&x, &shape, how, &dev);
        assert_close("copy", &values(&g.copy().unwrap()), &values(&c), 0.0, 0.0);
        let rev: Vec<usize> = (0..shape.len()).rev().collect();
        assert_close("permute+reshape", &values(&g.permute(&rev).unwrap().reshape([x.len()]).unwrap()),
            &values(&c.permute(&rev).unwrap().reshape([x.len()]).unwrap()), 0.0, 0.0);
        let last = shape.len() - 1;
        let gs: Vec<Tensor> = (0..parts).map(|i| g.affine(1.0, i as f64).unwrap()).collect();
        let cs: Vec<Tensor> = (0..parts).map(|i| c.affine(1.0, i as f64).unwrap()).collect();
        let got = Tensor::cat(&gs.iter().collect::<Vec<_>>(), last).unwrap();
        let want = Tensor::cat(&cs.iter().collect::<Vec<_>>(), last).unwrap();
        assert_close("cat", &values(&got), &values(&want), 0.0, 0.0);
        // Narrow's backward pads with zeros through cat on the device.
        let grad = |t: &Tensor| {
            let t = t.contiguous().unwrap().with_grad();
            let len = t.dims()[last];
            t.narrow(last, len / 2, len - len / 2).unwrap().sqr().unwrap().sum_all().unwrap().backward().unwrap();
            values(&t.grad().unwrap())
        };
        assert_close("narrow backward", &grad(&g), &grad(&c), 1e-6, 1e-6);
    }
}

/// f16 storage on an adapter with SHADER_F16: moves, casts both ways and strided copies
/// give the CPU's bits (computing on f16 is `half.rs`'s).
#[test]
fn half_precision_storage() {
    let dev = gpu();
    let Device::Gpu(g) = &dev else {
        unreachable!("gpu() gives a GPU")
    };
    let x = data(1001, 3, -70000.0, 70000.0);
    let c = tensor(&x, &[7, 143], DType::F32, Arrange::Contiguous);
    let c16 = c.to_dtype(DType::F16).unwrap();
    if !g.has_f16() {
        assert!(c16
            .to_device(&dev)
            .unwrap_err()
            .to_string()
            .contains("SHADER_F16"));
        return;
    }
    let bits = |t: &Tensor| {
        t.to_vec::<half::f16>()
            .unwrap()
            .iter()
            .map(|h| h.to_bits())
            .collect::<Vec<_>>()
    };
    // Cast on the GPU (f32 -> f16) equals the CPU's rounding, and moves keep the bits.
    let g16 = c.to_device(&dev).unwrap().to_dtype(DType::F16).unwrap();
    assert_eq!(bits(&g16), bits(&c16));
    assert_eq!(bits(&c16.to_device(&dev).unwrap()), bits(&c16));
    // Back to f32 on the GPU, and a transposed f16 view copied on the GPU.
    assert_eq!(
        values(&g16.to_dtype(DType::F32).unwrap()),
        values(&c16.to_dtype(DType::F32).unwrap())
    );
    assert_eq!(
        bits(&g16.t().unwrap().contiguous().unwrap()),
        bits(&c16.t().unwrap().contiguous().unwrap())
    );
    assert_eq!(
        bits(&Tensor::full(1.5, [5], DType::F16, &dev).unwrap()),
        vec![half::f16::from_f32(1.5).to_bits(); 5]
    );
}
