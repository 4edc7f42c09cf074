//! The GPU GEMM kernels (matmul: naive, 64- and 128-wide tiles; conv2d and its two
//! backward passes as implicit GEMMs) against the CPU kernels, on lavapipe or any GPU.
//!
//! Tolerance, |gpu - cpu| <= atol + rtol |cpu|, both f32 with inputs in [-1, 1): each
//! side rounds a k-term dot product in its own order (the GPU with FMAs), so the error
//! grows with the reduction length k: atol = 1e-6 k, rtol = 1e-5.
//!
//! GPU tests never skip: without an adapter they fail and say how to get one. Poison
//! mode fills every output with NaN first, so an element a kernel forgets shows.

use super::config;
use crate::harness::*;
use kuosan_tensor::gpu::{matmul_with, GemmKernel};
use kuosan_tensor::ops::ConvShape;
use kuosan_tensor::{DType, Device, Tensor};
use proptest::prelude::*;

fn upload(values: &[f64], shape: &[usize], dev: &Device) -> Tensor {
    Tensor::from_vec(values.to_vec(), shape, &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_device(dev)
        .unwrap()
}

/// A GPU tensor of `shape` holding `values`, its storage arranged as `how` says by views
/// taken on the GPU (so the kernels see the strides, not a CPU-made copy).
fn on_gpu(values: &[f64], shape: &[usize], how: Arrange, dev: &Device) -> Tensor {
    let r = shape.len();
    match how {
        Arrange::Transposed if r >= 2 => {
            let mut perm: Vec<usize> = (0..r).collect();
            perm.swap(r - 2, r - 1);
            let (v, s) = permute(values, shape, &perm);
            upload(&v, &s, dev).transpose(r - 2, r - 1).unwrap()
        }
        Arrange::Reversed if r >= 2 => {
            let rev: Vec<usize> = (0..r).rev().collect();
            let (v, s) = permute(values, shape, &rev);
            upload(&v, &s, dev).permute(&rev).unwrap()
        }
        Arrange::Narrowed if r >= 1 => {
            // Rows [NaN | values | NaN NaN]: a read outside the view poisons the output.
            let last = shape[r - 1];
            let mut wide = Vec::with_capacity(values.len() / last.max(1) * (last + 3));
            for row in values.chunks(last.max(1)) {
                wide.push(f64::NAN);
                wide.extend_from_slice(row);
                wide.extend([f64::NAN, f64::NAN]);
            }
            let mut ws = shape.to_vec();
            ws[r - 1] += 3;
            if values.is_empty() {
                wide = vec![f64::NAN; ws.iter().product()];
            }
            upload(&wide, &ws, dev).narrow(r - 1, 1, last).unwrap()
        }
        _ => upload(values, shape, dev),
    }
}

/// A matrix side, weighted toward what tiled kernels get wrong: 1, small primes, one
/// either side of the 64-wide tile, and sizes spanning several tiles.
fn side() -> impl Strategy<Value = usize> {
    prop_oneof![
        2 => 1usize..=9,
        2 => prop::sample::select(vec![1usize, 4, 13, 17, 31, 63, 64, 65, 127, 129]),
        1 => 30usize..140,
    ]
}

proptest! {
    #![proptest_config(config(40))]

    /// Every matmul kernel vs the CPU, over batches with broadcast axes and transposed,
    /// reversed and narrowed (NaN-margined) operands; the default kernel twice, bitwise.
    #[test]
    fn matmul_matches_cpu(
        batch in shape(0..=2, 6),
        (m, k, n) in (side(), side(), side()),
        (ba, bb) in (any::<bool>(), any::<bool>()),
        (ha, hb) in (arrange(), arrange()),
        seed in any::<u64>(),
    ) {
        let dev = gpu();
        let bshape = |keep: bool| if keep { batch.clone() } else { batch.iter().map(|_| 1).collect() };
        let sa = [bshape(ba), vec![m, k]].concat();
        let sb = [bshape(bb), vec![k, n]].concat();
        let a = round32(data(sa.iter().product(), seed, -1.0, 1.0));
        let b = round32(data(sb.iter().product(), seed ^ 1, -1.0, 1.0));
        let want = t32(&a, &sa, Arrange::Contiguous).matmul(&t32(&b, &sb, Arrange::Contiguous)).unwrap();
        let (ga, gb) = (on_gpu(&a, &sa, ha, &dev), on_gpu(&b, &sb, hb, &dev));
        let what = format!("matmul {sa:?} {ha:?} x {sb:?} {hb:?}");
        let auto = ga.matmul(&gb).unwrap();
        prop_assert_eq!(auto.dims(), want.dims());
        let (want, atol) = (values(&want), 1e-6 * k as f64);
        let first = values(&auto);
        assert_close(&format!("{what} auto"), &first, &want, atol, 1e-5);
        let again = values(&ga.matmul(&gb).unwrap());
        prop_assert!(first.iter().zip(&again).all(|(x, y)| x.to_bits() == y.to_bits()), "{what}: not deterministic");
        for kernel in [GemmKernel::Naive, GemmKernel::Tile64, GemmKernel::Tile128] {
            let got = matmul_with(&ga, &gb, kernel).unwrap();
            assert_close(&format!("{what} {kernel:?}"), &values(&got), &want, atol, 1e-5);
        }
    }

    /// conv2d forward and both backward passes vs the CPU over random shapes, strides
    /// and padding.
    #[test]
    fn conv2d_matches_cpu(
        (n, c_in, c_out) in (1usize..=3, prop_oneof![1usize..=5, Just(8)], prop_oneof![1usize..=5, Just(65)]),
        (h, w) in (1usize..=11, 1usize..=11),
        (kh, kw) in prop_oneof![Just((1usize, 1usize)), Just((3, 3)), Just((2, 3)), Just((5, 1))],
        (sh, sw, ph, pw) in prop_oneof![Just((1usize, 1usize, 0usize, 0usize)), (1usize..=3, 1usize..=2, 0usize..=2, 0usize..=1)],
        with_bias in any::<bool>(),
        how in prop_oneof![Just(ConvInput::Contiguous), Just(ConvInput::Offset), Just(ConvInput::Transposed)],
        seed in any::<u64>(),
    ) {
        prop_assume!(h + 2 * ph >= kh && w + 2 * pw >= kw);
        let s = ConvShape { n, c_in, h, w, c_out, kh, kw, stride: (sh, sw), padding: (ph, pw) };
        check_conv(&s, with_bias, how, seed);
    }
}

/// How the GPU conv inputs x and w are stored.
#[derive(Clone, Copy, Debug)]
enum ConvInput {
    Contiguous,
    /// A window of a larger batch: contiguous at a non-zero offset, NaN before it.
    Offset,
    /// Transposed views, which the op makes contiguous first.
    Transposed,
}

/// conv2d forward and both backward passes (through autograd: loss = sum(y * r), so the
/// conv's dy is r) on the GPU vs the CPU: y, dx, dw and the bias gradient.
fn check_conv(s: &ConvShape, with_bias: bool, how: ConvInput, seed: u64) {
    let dev = gpu();
    let x = round32(data(s.x_dims().iter().product(), seed, -1.0, 1.0));
    let wt = round32(data(s.w_dims().iter().product(), seed ^ 1, -1.0, 1.0));
    let b = round32(data(s.c_out, seed ^ 2, -1.0, 1.0));
    let ys = s.y_dims();
    let r = round32(data(ys.iter().product(), seed ^ 3, -1.0, 1.0));
    let run = |tx: Tensor, tw: Tensor, tb: Tensor, tr: Tensor| {
        let (tx, tw, tb) = (tx.with_grad(), tw.with_grad(), tb.with_grad());
        let y = tx
            .conv2d(&tw, with_bias.then_some(&tb), s.stride, s.padding)
            .unwrap();
        y.mul(&tr).unwrap().sum_all().unwrap().backward().unwrap();
        let g = |t: &Tensor| values(&t.grad().expect("a gradient reached this input"));
        let db = if with_bias { g(&tb) } else { vec![] };
        (values(&y), g(&tx), g(&tw), db)
    };
    let cpu = |v: &[f64], shape: &[usize]| t32(v, shape, Arrange::Contiguous);
    let want = run(
        cpu(&x, &s.x_dims()),
        cpu(&wt, &s.w_dims()),
        cpu(&b, &[s.c_out]),
        cpu(&r, &ys),
    );
    let arranged = |v: &[f64], shape: [usize; 4]| match how {
        ConvInput::Offset => {
            let mut big = shape;
            big[0] += 1;
            let pad = vec![f64::NAN; shape[1..].iter().product()];
            upload(&[&pad[..], v].concat(), &big, &dev)
                .narrow(0, 1, shape[0])
                .unwrap()
        }
        ConvInput::Transposed => on_gpu(v, &shape, Arrange::Transposed, &dev),
        ConvInput::Contiguous => upload(v, &shape, &dev),
    };
    let got = run(
        arranged(&x, s.x_dims()),
        arranged(&wt, s.w_dims()),
        upload(&b, &[s.c_out], &dev),
        upload(&r, &ys, &dev),
    );
    let what = format!("conv2d {s:?} {how:?}");
    let pixels = (s.n * s.h_out() * s.w_out()) as f64;
    let (k_fwd, k_dx) = (
        (s.c_in * s.kh * s.kw) as f64,
        (s.c_out * s.kh * s.kw) as f64,
    );
    assert_close(&format!("{what} y"), &got.0, &want.0, 1e-6 * k_fwd, 1e-5);
    assert_close(&format!("{what} dx"), &got.1, &want.1, 1e-6 * k_dx, 1e-5);
    assert_close(&format!("{what} dw"), &got.2, &want.2, 1e-6 * pixels, 1e-5);
    assert_close(&format!("{what} db"), &got.3, &want.3, 1e-6 * pixels, 1e-5);
}

/// Every staging path of both tiles, whatever the random cases drew: A and B row-major,
/// transposed (vec4 along k, m or n when aligned) and narrowed (scalar, unaligned), at
/// aligned sizes crossing a tile edge and at odd ones.
#[test]
fn matmul_every_operand_layout() {
    let dev = gpu();
    let hows = [Arrange::Contiguous, Arrange::Transposed, Arrange::Narrowed];
    for (m, k, n) in [(68, 20, 132), (5, 7, 3)] {
        let (sa, sb) = ([2, m, k], [k, n]);
        let a = round32(data(2 * m * k, 3, -1.0, 1.0));
        let b = round32(data(k * n, 4, -1.0, 1.0));
        let want = values(
            &t32(&a, &sa, Arrange::Contiguous)
                .matmul(&t32(&b, &sb, Arrange::Contiguous))
                .unwrap(),
        );
        for (ha, hb) in hows.iter().flat_map(|&x| hows.iter().map(move |&y| (x, y))) {
            let (ga, gb) = (on_gpu(&a, &sa, ha, &dev), on_gpu(&b, &sb, hb, &dev));
            for kernel in [
                GemmKernel::Auto,
                GemmKernel::Naive,
                GemmKernel::Tile64,
                GemmKernel::Tile128,
            ] {
                let got = values(&matmul_with(&ga, &gb, kernel).unwrap());
                let what = format!("{sa:?} {ha:?} x {sb:?} {hb:?} {kernel:?}");
                assert_close(&what, &got, &want, 1e-6 * k as f64, 1e-5);
            }
        }
    }
}

/// Conv paths random shapes may miss: 1x1 stride-1 convs read without a gather (split
/// n and k axes, vec4 when H W % 4 == 0), more channels than one tile, wide strides.
#[test]
fn conv2d_special_shapes() {
    let conv = |n, c_in, h, w, c_out, k: (usize, usize), stride, padding| ConvShape {
        n,
        c_in,
        h,
        w,
        c_out,
        kh: k.0,
        kw: k.1,
        stride,
        padding,
    };
    let cases = [
        conv(2, 8, 4, 4, 12, (1, 1), (1, 1), (0, 0)),
        conv(3, 5, 3, 3, 7, (1, 1), (1, 1), (0, 0)),
        conv(2, 4, 2, 6, 4, (1, 1), (1, 1), (0, 0)),
        conv(2, 70, 5, 5, 66, (3, 3), (1, 1), (1, 1)),
        conv(1, 3, 12, 12, 5, (3, 3), (2, 2), (1, 1)),
        conv(2, 2, 9, 7, 3, (2, 2), (3, 2), (0, 1)),
    ];
    for (i, s) in cases.iter().enumerate() {
        for how in [ConvInput::Contiguous, ConvInput::Offset] {
            check_conv(s, i % 2 == 0, how, i as u64);
        }
    }
}

/// Batch axes that cannot merge (B broadcast along every other one: 7 axes) pass the
/// kernel's limit of 6 and take the copy-first path; a B shared by the whole batch with a
/// contiguous A folds the batch into A's rows.
#[test]
fn matmul_many_batch_axes_and_folded_batch() {
    let dev = gpu();
    let sa = [2, 2, 2, 2, 2, 2, 2, 3, 5];
    let sb = [2, 1, 2, 1, 2, 1, 2, 5, 4];
    let a = round32(data(sa.iter().product(), 7, -1.0, 1.0));
    let b = round32(data(sb.iter().product(), 8, -1.0, 1.0));
    let want = values(
        &t32(&a, &sa, Arrange::Contiguous)
            .matmul(&t32(&b, &sb, Arrange::Contiguous))
            .unwrap(),
    );
    let got = upload(&a, &sa, &dev)
        .matmul(&upload(&b, &sb, &dev))
        .unwrap();
    assert_close("7 batch axes", &values(&got), &want, 5e-6, 1e-5);

    // x [3, 7, 66] @ w [66, 5]: one [21, 66] x [66, 5] GEMM.
    let x = round32(data(3 * 7 * 66, 9, -1.0, 1.0));
    let wt = round32(data(66 * 5, 10, -1.0, 1.0));
    let want = values(
        &t32(&x, &[3, 7, 66], Arrange::Contiguous)
            .matmul(&t32(&wt, &[66, 5], Arrange::Contiguous))
            .unwrap(),
    );
    let got = upload(&x, &[3, 7, 66], &dev)
        .matmul(&upload(&wt, &[66, 5], &dev))
        .unwrap();
    assert_close("folded batch", &values(&got), &want, 66e-6, 1e-5);
}

/// More workgroups than one grid dimension holds (65535) fold into the second: 66000
/// one-tile batch entries for the tiled kernel, 4097^2 outputs for the naive one (256 per
/// workgroup). About 10 s on lavapipe, which computes every padded 64 x 64 tile.
#[test]
fn matmul_grid_past_one_dimension() {
    let dev = gpu();
    let (batch, k) = (66_000, 2);
    let a = round32(data(batch * k, 11, -1.0, 1.0));
    let b = round32(data(batch * k, 12, -1.0, 1.0));
    let (ga, gb) = (
        upload(&a, &[batch, 1, k], &dev),
        upload(&b, &[batch, k, 1], &dev),
    );
    let got = matmul_with(&ga, &gb, GemmKernel::Tile64).unwrap();
    let want: Vec<f64> = a
        .chunks(k)
        .zip(b.chunks(k))
        .map(|(x, y)| x[0] * y[0] + x[1] * y[1])
        .collect();
    assert_close("66000 batch entries", &values(&got), &want, 1e-6, 1e-6);

    let n = 4097;
    let u = round32(data(n, 13, -1.0, 1.0));
    let got = matmul_with(
        &upload(&u, &[n, 1], &dev),
        &upload(&u, &[1, n], &dev),
        GemmKernel::Naive,
    )
    .unwrap();
    let got = values(&got);
    let want: Vec<f64> = u
        .iter()
        .flat_map(|&x| u.iter().map(move |&y| x * y))
        .collect();
    assert_close("4097 x 4097 outer product", &got, &want, 0.0, 1e-6);
}

/// Empty operands give empty (or zero) results without dispatching garbage.
#[test]
fn matmul_empty_and_k_zero() {
    let dev = gpu();
    let e = upload(&[], &[0, 3], &dev)
        .matmul(&upload(&[0.0; 6], &[3, 2], &dev))
        .unwrap();
    assert_eq!(e.dims(), [0, 2]);
    let z = upload(&[], &[2, 0], &dev)
        .matmul(&upload(&[], &[0, 3], &dev))
        .unwrap();
    assert_eq!(values(&z), vec![0.0; 6]);
}
