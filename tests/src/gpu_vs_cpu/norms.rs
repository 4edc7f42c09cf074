//! GPU group_norm / layer_norm, forward and backward, fused and split paths, against
//! the CPU.

use super::config;
use crate::harness::*;
use kuosan_tensor::{DType, Device, Tensor};
use proptest::prelude::*;

/// (y, dx, dw, db) of a norm on `dev` for output gradient `dy`.
fn run(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    dy: &Tensor,
    groups: Option<(usize, bool)>,
    affine: bool,
) -> [Vec<f64>; 4] {
    let (x, w, b) = (
        x.contiguous().unwrap().with_grad(),
        w.with_grad(),
        b.with_grad(),
    );
    let (wo, bo) = if affine {
        (Some(&w), Some(&b))
    } else {
        (None, None)
    };
    let y = match groups {
        Some((g, false)) => x.group_norm(g, wo, bo, 1e-5),
        Some((g, true)) => x.group_norm_silu(g, wo, bo, 1e-5),
        None => x.layer_norm(wo, bo, 1e-5),
    }
    .unwrap();
    y.mul(dy).unwrap().sum_all().unwrap().backward().unwrap();
    let grad = |t: &Tensor| t.grad().map(|g| values(&g)).unwrap_or_default();
    [values(&y), grad(&x), grad(&w), grad(&b)]
}

fn compare(
    shape: &[usize],
    groups: Option<(usize, bool)>,
    affine: bool,
    how: Arrange,
    seed: u64,
    dev: &Device,
) {
    let c = if groups.is_some() {
        shape[1]
    } else {
        shape[shape.len() - 1]
    };
    let n: usize = shape.iter().product();
    let (x, dy) = (data(n, seed, -2.0, 2.0), data(n, seed ^ 1, -1.0, 1.0));
    let (wv, bv) = (data(c, seed ^ 2, 0.5, 1.5), data(c, seed ^ 3, -0.5, 0.5));
    let on = |d: &Device| {
        let t = |v: &[f64], s: &[usize], h| tensor_on(v, s, DType::F32, h, d);
        run(
            &t(&x, shape, how),
            &t(&wv, &[c], Arrange::Contiguous),
            &t(&bv, &[c], Arrange::Contiguous),
            &t(&dy, shape, Arrange::Contiguous),
            groups,
            affine,
        )
    };
    let (want, got) = (on(&Device::Cpu), on(dev));
    for (i, name) in ["y", "dx", "dw", "db"].iter().enumerate() {
        assert_close(
            &format!("norm {name} {shape:?} groups {groups:?} affine {affine}"),
            &got[i],
            &want[i],
            1e-5,
            1e-4,
        );
    }
}

proptest! {
    #![proptest_config(config(10))]

    #[test]
    fn group_and_layer_norm(
        (n, groups, cpg) in (1usize..=3, 1usize..=4, 1usize..=4),
        spatial in shape(0..=2, 40),
        (affine, layer, silu) in (any::<bool>(), any::<bool>(), any::<bool>()),
        how in arrange(),
        seed in any::<u64>(),
    ) {
        let c = groups * cpg;
        let dev = gpu();
        if layer {
            compare(&[vec![n], spatial, vec![c]].concat(), None, affine, how, seed, &dev);
        } else {
            compare(&[vec![n, c], spatial].concat(), Some((groups, silu)), affine, how, seed, &dev);
        }
    }
}

/// Groups longer than the fused kernel's limit take the split paths, forward (chunk
/// statistics, merged in order, then a normalising pass) and backward (chunk sums of
/// g and g xhat, then one thread per element).
#[test]
fn large_groups_split_across_workgroups() {
    let dev = gpu();
    compare(
        &[2, 4, 9000],
        Some((2, false)),
        true,
        Arrange::Contiguous,
        7,
        &dev,
    );
    compare(
        &[2, 4, 9000],
        Some((2, true)),
        true,
        Arrange::Contiguous,
        9,
        &dev,
    );
    compare(&[1, 20_000], None, true, Arrange::Contiguous, 8, &dev);
}
