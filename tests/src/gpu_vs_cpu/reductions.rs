//! GPU reductions (sum, mean, max, min; chunked long rows) and softmax against the CPU.

use super::config;
use crate::harness::*;
use kuosan_tensor::DType;
use proptest::prelude::*;

proptest! {
    #![proptest_config(config(10))]

    #[test]
    fn reductions_over_axes(
        shape in shape(1..=4, 2000),
        mask in prop::collection::vec(any::<bool>(), 4),
        keepdim in any::<bool>(),
        how in arrange(),
        seed in any::<u64>(),
    ) {
        let dev = gpu();
        let dims: Vec<usize> = (0..shape.len()).filter(|&d| mask[d]).collect();
        let dims = if dims.is_empty() { vec![0] } else { dims };
        let x = data(shape.iter().product(), seed, -2.0, 2.0);
        let c = tensor(&x, &shape, DType::F32, how);
        let g = tensor_on(&x, &shape, DType::F32, how, &dev);
        let n: usize = dims.iter().map(|&d| shape[d]).product();
        let what = format!("over {dims:?} of {shape:?} {how:?}");
        assert_close(&format!("sum {what}"), &values(&g.sum(&dims, keepdim).unwrap()), &values(&c.sum(&dims, keepdim).unwrap()), 1e-6 * n as f64, 1e-5);
        assert_close(&format!("mean {what}"), &values(&g.mean(&dims, keepdim).unwrap()), &values(&c.mean(&dims, keepdim).unwrap()), 1e-6, 1e-5);
        assert_close(&format!("max {what}"), &values(&g.max(&dims, keepdim).unwrap()), &values(&c.max(&dims, keepdim).unwrap()), 0.0, 0.0);
        assert_close(&format!("min {what}"), &values(&g.min(&dims, keepdim).unwrap()), &values(&c.min(&dims, keepdim).unwrap()), 0.0, 0.0);
        // max's backward (ties share the gradient) runs eq, sum and div on the device.
        let grad = |t: &kuosan_tensor::Tensor| {
            let t = t.contiguous().unwrap().with_grad();
            t.max(&dims, false).unwrap().sum_all().unwrap().backward().unwrap();
            values(&t.grad().unwrap())
        };
        assert_close(&format!("max backward {what}"), &grad(&g), &grad(&c), 1e-7, 1e-6);
    }

    #[test]
    fn softmax_any_axis(shape in shape(1..=3, 2000), axis in 0usize..3, how in arrange(), seed in any::<u64>()) {
        let dev = gpu();
        let d = axis % shape.len();
        let x = data(shape.iter().product(), seed, -6.0, 6.0);
        let c = tensor(&x, &shape, DType::F32, how);
        let g = tensor_on(&x, &shape, DType::F32, how, &dev);
        assert_close(&format!("softmax {d} of {shape:?}"), &values(&g.softmax(d).unwrap()), &values(&c.softmax(d).unwrap()), 1e-6, 1e-4);
    }
}

/// Rows longer than the kernel's chunk are reduced in two passes; sum_all of a long
/// vector and a wide 2-D sum exercise it.
#[test]
fn long_rows_reduce_in_chunks() {
    let dev = gpu();
    for shape in [vec![70_001], vec![3, 20_000]] {
        let x = data(shape.iter().product(), 5, -1.0, 1.0);
        let c = tensor(&x, &shape, DType::F32, Arrange::Contiguous);
        let g = tensor_on(&x, &shape, DType::F32, Arrange::Contiguous, &dev);
        let last = [shape.len() - 1];
        assert_close(
            &format!("sum {shape:?}"),
            &values(&g.sum(&last, false).unwrap()),
            &values(&c.sum(&last, false).unwrap()),
            1e-3,
            1e-5,
        );
        assert_close(
            &format!("max {shape:?}"),
            &values(&g.max(&last, false).unwrap()),
            &values(&c.max(&last, false).unwrap()),
            0.0,
            0.0,
        );
    }
}
