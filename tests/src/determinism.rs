//! The same seed gives bitwise the same CPU results for any thread count: a forward and
//! backward pass through every parallel kernel, big enough to split, in rayon pools of
//! 1, 2 and 3 threads.

use crate::harness::*;
use kuosan_tensor::{scaled_dot_product_attention, Tensor};

/// Bits of every output and gradient of a pass through the parallel kernels.
fn pass() -> Vec<Vec<u32>> {
    let t = |shape: &[usize], seed: u64| {
        t32(
            &data(shape.iter().product(), seed, -1.0, 1.0),
            shape,
            Arrange::Contiguous,
        )
        .with_grad()
    };
    let x = t(&[4, 16, 20, 20], 1);
    let w = t(&[16, 16, 3, 3], 2);
    let (gw, gb) = (t(&[16], 3), t(&[16], 4));
    let a = t(&[150, 300], 5);
    let b = t(&[300, 200], 6);
    let big = t(&[300_001], 7);

    let h = x
        .conv2d(&w, Some(&gb), 1, 1)
        .unwrap()
        .group_norm(4, Some(&gw), Some(&gb), 1e-5)
        .unwrap()
        .silu()
        .unwrap();
    let seq = h.reshape([4, 4, 4, 400]).unwrap().transpose(2, 3).unwrap(); // [B, H, L=400, D=4]
    let att = scaled_dot_product_attention(&seq, &seq, &seq, None, true, None).unwrap();
    let mm = a.matmul(&b).unwrap().softmax(-1).unwrap();
    let outs = [
        att.sum_all().unwrap(),
        mm.sum(&[0], false).unwrap(),
        big.sum_all().unwrap(),
        big.mean_all().unwrap(),
    ];
    let loss = outs.iter().fold(
        Tensor::zeros((), kuosan_tensor::DType::F32, &kuosan_tensor::Device::Cpu).unwrap(),
        |acc, o| acc.add(&o.sum_all().unwrap()).unwrap(),
    );
    loss.backward().unwrap();
    let bits = |t: &Tensor| {
        t.to_vec::<f32>()
            .unwrap()
            .into_iter()
            .map(f32::to_bits)
            .collect::<Vec<u32>>()
    };
    let mut all: Vec<Vec<u32>> = outs.iter().map(bits).collect();
    all.extend(
        [&x, &w, &gw, &gb, &a, &b, &big]
            .iter()
            .map(|p| bits(&p.grad().unwrap())),
    );
    all
}

#[test]
fn identical_bits_for_1_2_and_3_threads() {
    let run = |n: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
            .install(pass)
    };
    let one = run(1);
    for n in [2, 3] {
        let other = run(n);
        for (i, (a, b)) in one.iter().zip(&other).enumerate() {
            assert!(a == b, "result {i} differs between 1 and {n} threads");
        }
    }
}
