//! GPU embedding (gather, scatter-add backward) and nearest upsampling against the CPU.

use super::config;
use crate::harness::*;
use kuosan_tensor::{DType, Device, Tensor};
use proptest::prelude::*;

proptest! {
    #![proptest_config(config(10))]

    #[test]
    fn embedding_forward_backward((vocab, d) in (1usize..=20, 1usize..=9), ids_shape in shape(1..=2, 30), seed in any::<u64>()) {
        let dev = gpu();
        let n: usize = ids_shape.iter().product();
        let ids: Vec<u32> = data(n, seed, 0.0, vocab as f64).into_iter().map(|v| v as u32).collect();
        let wv = data(vocab * d, seed ^ 1, -1.0, 1.0);
        let run = |dev: &Device| {
            let w = tensor_on(&wv, &[vocab, d], DType::F32, Arrange::Contiguous, dev).with_grad();
            let idt = Tensor::from_vec(ids.clone(), &ids_shape[..], &Device::Cpu).unwrap().to_device(dev).unwrap();
            let e = w.embedding(&idt).unwrap();
            let r = tensor_on(&data(e.elem_count(), seed ^ 2, -1.0, 1.0), e.dims(), DType::F32, Arrange::Contiguous, dev);
            e.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
            (values(&e), values(&w.grad().unwrap()))
        };
        let (want, got) = (run(&Device::Cpu), run(&dev));
        assert_close("embedding", &got.0, &want.0, 0.0, 0.0);
        assert_close("embedding dw", &got.1, &want.1, 1e-6, 1e-6);
    }

    #[test]
    fn upsample_forward_backward((n, c, h, w) in (1usize..=2, 1usize..=3, 1usize..=5, 1usize..=5), f in 1usize..=3, how in arrange(), seed in any::<u64>()) {
        let dev = gpu();
        let x = data(n * c * h * w, seed, -1.0, 1.0);
        let run = |dev: &Device| {
            let t = tensor_on(&x, &[n, c, h, w], DType::F32, how, dev).contiguous().unwrap().with_grad();
            let y = t.upsample_nearest2d(f).unwrap();
            y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            (values(&y), values(&t.grad().unwrap()))
        };
        let (want, got) = (run(&Device::Cpu), run(&dev));
        assert_close("upsample", &got.0, &want.0, 0.0, 0.0);
        assert_close("upsample backward", &got.1, &want.1, 1e-6, 1e-6);
    }
}
