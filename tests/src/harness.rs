//! Test plumbing: seeded data, tensors laid out in non-contiguous ways that hold the
//! same logical values, shape strategies with the sizes kernels get wrong, and closeness
//! checks that say where they failed.

use kuosan_tensor::{DType, Device, Philox, Tensor};
use proptest::prelude::*;

/// `n` values uniform in [lo, hi) from a seeded Philox stream.
pub fn data(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f64> {
    Philox::new(seed)
        .uniform_f32(n)
        .into_iter()
        .map(|u| lo + (hi - lo) * u as f64)
        .collect()
}

/// How a test tensor's storage is arranged; every arrangement holds the same values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrange {
    Contiguous,
    /// Stored with the last two axes swapped, then transposed back.
    Transposed,
    /// Stored with axis order reversed, then permuted back.
    Reversed,
    /// A window of a wider tensor whose margins hold NaN, so a kernel that reads
    /// outside the view poisons its output.
    Narrowed,
}

pub fn arrange() -> impl Strategy<Value = Arrange> {
    prop_oneof![
        Just(Arrange::Contiguous),
        Just(Arrange::Transposed),
        Just(Arrange::Reversed),
        Just(Arrange::Narrowed)
    ]
}

/// A tensor of `shape` holding `values` (row-major), stored as `how` says, on the CPU.
pub fn tensor(values: &[f64], shape: &[usize], dtype: DType, how: Arrange) -> Tensor {
    tensor_on(values, shape, dtype, how, &Device::Cpu)
}

/// A tensor of `shape` holding `values`, stored as `how` says, on `dev` (the
/// arrangement is built there, so a GPU tensor is a genuinely strided GPU view).
pub fn tensor_on(
    values: &[f64],
    shape: &[usize],
    dtype: DType,
    how: Arrange,
    dev: &Device,
) -> Tensor {
    let plain = || {
        Tensor::from_vec(values.to_vec(), shape, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
            .to_device(dev)
            .unwrap()
    };
    let r = shape.len();
    let t = match how {
        Arrange::Contiguous => plain(),
        Arrange::Transposed if r >= 2 => plain()
            .transpose(r - 2, r - 1)
            .unwrap()
            .copy()
            .unwrap()
            .transpose(r - 2, r - 1)
            .unwrap(),
        Arrange::Reversed if r >= 2 => {
            let rev: Vec<usize> = (0..r).rev().collect();
            plain()
                .permute(&rev)
                .unwrap()
                .copy()
                .unwrap()
                .permute(&rev)
                .unwrap()
        }
        Arrange::Narrowed if r >= 1 => {
            let mut wide = shape.to_vec();
            wide[r - 1] += 3;
            let pad = Tensor::full(f64::NAN, wide.clone(), dtype, dev).unwrap();
            // Build [NaN | values | NaN NaN] along the last axis, then view the middle.
            let left = pad.narrow(r - 1, 0, 1).unwrap();
            let right = pad.narrow(r - 1, 0, 2).unwrap();
            let full = Tensor::cat(&[&left, &plain(), &right], r - 1).unwrap();
            full.narrow(r - 1, 1, shape[r - 1]).unwrap()
        }
        _ => plain(),
    };
    assert_eq!(t.dims(), shape);
    t
}

/// An f32 tensor (the fast path's dtype).
pub fn t32(values: &[f64], shape: &[usize], how: Arrange) -> Tensor {
    tensor(values, shape, DType::F32, how)
}

/// An f64 tensor, contiguous.
pub fn t64(values: &[f64], shape: &[usize]) -> Tensor {
    tensor(values, shape, DType::F64, Arrange::Contiguous)
}

/// A tensor's values as f64.
pub fn values(t: &Tensor) -> Vec<f64> {
    t.to_vec_f64().unwrap()
}

/// Asserts |got - want| <= atol + rtol |want| elementwise (NaN equals NaN), naming the
/// first failing index.
#[track_caller]
pub fn assert_close(what: &str, got: &[f64], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let mut worst = (0.0, 0);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if g.is_nan() && w.is_nan() || g == w {
            continue;
        }
        let err = (g - w).abs();
        let bound = atol + rtol * w.abs();
        if err > bound || err.is_nan() {
            panic!("{what}: index {i}: got {g}, want {w} (|err| {err:e} > {bound:e})");
        }
        if err > worst.0 {
            worst = (err, i);
        }
    }
}

/// An axis size, weighted toward the sizes kernels get wrong: 1, primes, and one past
/// the usual tile sizes.
pub fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => 1usize..=6,
        2 => prop::sample::select(vec![1usize, 2, 3, 5, 7, 8, 9, 13, 16, 17, 31, 33]),
    ]
}

/// A shape of rank `ranks` with at most `max_elems` elements.
pub fn shape(
    ranks: std::ops::RangeInclusive<usize>,
    max_elems: usize,
) -> impl Strategy<Value = Vec<usize>> {
    ranks
        .prop_flat_map(|r| prop::collection::vec(dim(), r))
        .prop_filter("too large", move |s| {
            s.iter().product::<usize>() <= max_elems
        })
}

/// Row-major strides.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Rounds values to f32 precision, so the reference sees exactly what the f32 kernel sees.
pub fn round32(v: Vec<f64>) -> Vec<f64> {
    v.into_iter().map(|x| x as f32 as f64).collect()
}

/// Row-major values of `shape` rearranged so that axis `d` becomes the last axis.
pub fn move_axis_last(v: &[f64], shape: &[usize], d: usize) -> (Vec<f64>, Vec<usize>) {
    let mut perm: Vec<usize> = (0..shape.len()).filter(|&i| i != d).collect();
    perm.push(d);
    permute(v, shape, &perm)
}

/// Row-major values of `shape` with axes reordered by `perm` (out axis i = in axis perm[i]).
pub fn permute(v: &[f64], shape: &[usize], perm: &[usize]) -> (Vec<f64>, Vec<usize>) {
    let st = strides(shape);
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let n = v.len();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut rem = i;
        let mut off = 0;
        for a in (0..perm.len()).rev() {
            off += (rem % out_shape[a]) * st[perm[a]];
            rem /= out_shape[a];
        }
        out.push(v[off]);
    }
    (out, out_shape)
}

/// A shape that broadcasts to `out`: some axes set to 1, some leading axes dropped.
pub fn broadcastable(out: Vec<usize>) -> impl Strategy<Value = Vec<usize>> {
    let r = out.len();
    (0..=r, prop::collection::vec(any::<bool>(), r)).prop_map(move |(drop, ones)| {
        out.iter()
            .zip(&ones)
            .skip(drop)
            .map(|(&d, &one)| if one { 1 } else { d })
            .collect()
    })
}

/// The GPU device for GPU tests, with poison mode on (every op output starts as NaN, so
/// an element a kernel forgets to write fails the comparison). No adapter is a failure,
/// never a skip.
pub fn gpu() -> Device {
    match Device::gpu() {
        Ok(dev) => {
            if let Device::Gpu(g) = &dev {
                g.set_poison(true);
            }
            dev
        }
        Err(e) => panic!(
            "GPU tests need a Vulkan/Metal/DX12 adapter and found none ({e}). On Linux without a GPU, \
             install Mesa's software Vulkan: apt-get install -y mesa-vulkan-drivers"
        ),
    }
}
