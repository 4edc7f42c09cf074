//! Every differentiable op's backward rule against central finite differences in f64:
//! d/dx sum(f(x) * r) for a fixed random r, perturbing each input element by +-h.
//! With h = 1e-6 the difference quotient is good to ~1e-9 on smooth functions, so the
//! tolerance 1e-6 + 1e-5 |g| leaves room only for a wrong rule. Inputs keep away from
//! kinks (relu, abs at 0; ties of max) so the function is smooth where it is probed.

use crate::harness::*;
use kuosan_tensor::ops::UnaryOp;
use kuosan_tensor::{scaled_dot_product_attention, DType, Device, Result, Tensor};

const H: f64 = 1e-6;

/// Compares autograd's gradient of sum(f(xs) * r) with finite differences for every
/// element of every input.
#[track_caller]
fn check(name: &str, inputs: Vec<(Vec<f64>, Vec<usize>)>, f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    let make = |vals: &[Vec<f64>]| -> Vec<Tensor> {
        vals.iter()
            .zip(&inputs)
            .map(|(v, (_, s))| t64(v, s))
            .collect()
    };
    let base: Vec<Vec<f64>> = inputs.iter().map(|(v, _)| v.clone()).collect();
    let xs: Vec<Tensor> = make(&base).into_iter().map(|t| t.with_grad()).collect();
    let y = f(&xs).unwrap_or_else(|e| panic!("{name}: forward failed: {e}"));
    let r = t64(&data(y.elem_count(), 99, -1.0, 1.0), y.dims());
    let loss = |y: &Tensor| {
        y.mul(&r)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    y.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    for (i, x) in xs.iter().enumerate() {
        let analytic = values(
            &x.grad()
                .unwrap_or_else(|| panic!("{name}: no gradient for input {i}")),
        );
        for j in 0..base[i].len() {
            let mut vals = base.clone();
            vals[i][j] += H;
            let up = loss(&f(&make(&vals)).unwrap());
            vals[i][j] -= 2.0 * H;
            let down = loss(&f(&make(&vals)).unwrap());
            let numeric = (up - down) / (2.0 * H);
            let err = (analytic[j] - numeric).abs();
            assert!(
                err <= 1e-6 + 1e-5 * numeric.abs(),
                "{name}: d/d input {i}[{j}]: autograd {} vs finite difference {numeric} (err {err:e})",
                analytic[j]
            );
        }
    }
}

fn input(shape: &[usize], seed: u64, lo: f64, hi: f64) -> (Vec<f64>, Vec<usize>) {
    (data(shape.iter().product(), seed, lo, hi), shape.to_vec())
}

/// Values in [0.1, 2] with random signs: away from the kinks at 0.
fn away_from_zero(shape: &[usize], seed: u64) -> (Vec<f64>, Vec<usize>) {
    let (v, s) = input(shape, seed, 0.1, 2.0);
    let signs = data(v.len(), seed ^ 7, -1.0, 1.0);
    (
        v.iter()
            .zip(signs)
            .map(|(x, s)| if s < 0.0 { -x } else { *x })
            .collect(),
        s,
    )
}

#[test]
fn unary_ops() {
    for &op in UnaryOp::ALL {
        let x = match op {
            UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Recip => {
                input(&[2, 3], 1, 0.2, 2.0)
            }
            _ => away_from_zero(&[2, 3], 1),
        };
        check(op.name(), vec![x], |t| t[0].unary(op));
    }
}

#[test]
fn glu() {
    // Odd half sizes and a 3-D input: a [2, 3, 3], g [2, 3, 3].
    for act in [UnaryOp::GeluErf, UnaryOp::Silu, UnaryOp::Sigmoid] {
        check(
            &format!("glu {}", act.name()),
            vec![away_from_zero(&[2, 3, 6], 40)],
            |t| t[0].glu(act),
        );
    }
}

#[test]
fn affine_powf() {
    check("affine", vec![input(&[3, 2], 2, -1.0, 1.0)], |t| {
        t[0].affine(-1.5, 0.25)
    });
    check("powf", vec![input(&[3, 2], 3, 0.2, 2.0)], |t| {
        t[0].powf(2.7)
    });
    check("powf negative", vec![input(&[4], 4, 0.2, 2.0)], |t| {
        t[0].powf(-0.5)
    });
}

#[test]
fn binary_ops_with_broadcasting() {
    let a = away_from_zero(&[2, 3, 1], 5);
    let b = away_from_zero(&[3, 4], 6);
    check("add", vec![a.clone(), b.clone()], |t| t[0].add(&t[1]));
    check("sub", vec![a.clone(), b.clone()], |t| t[0].sub(&t[1]));
    check("mul", vec![a.clone(), b.clone()], |t| t[0].mul(&t[1]));
    check("div", vec![a.clone(), b.clone()], |t| t[0].div(&t[1]));
    check("maximum", vec![a.clone(), b.clone()], |t| {
        t[0].maximum(&t[1])
    });
    check("minimum", vec![a, b], |t| t[0].minimum(&t[1]));
}

#[test]
fn where_and_masked_fill() {
    let cond = Tensor::from_vec(vec![1u32, 0, 1], [3, 1], &Device::Cpu).unwrap();
    check(
        "where_cond",
        vec![input(&[3, 2], 7, -1.0, 1.0), input(&[2], 8, -1.0, 1.0)],
        |t| cond.where_cond(&t[0], &t[1]),
    );
    let mask = Tensor::from_vec(vec![0f64, 1.0], [2], &Device::Cpu).unwrap();
    check("masked_fill", vec![input(&[3, 2], 9, -1.0, 1.0)], |t| {
        t[0].masked_fill(&mask, -3.0)
    });
}

#[test]
fn reductions() {
    let x = input(&[3, 4, 2], 10, -1.0, 1.0);
    check("sum", vec![x.clone()], |t| t[0].sum(&[0, 2], false));
    check("sum keepdim", vec![x.clone()], |t| t[0].sum(&[1], true));
    check("mean", vec![x.clone()], |t| t[0].mean(&[-1], false));
    check("max", vec![x.clone()], |t| t[0].max(&[1], false));
    check("min", vec![x.clone()], |t| t[0].min(&[0, 1], true));
    check("sum_all", vec![x.clone()], |t| t[0].sum_all());
    check("mean_all", vec![x], |t| t[0].mean_all());
}

#[test]
fn matmul_batched_and_broadcast() {
    check(
        "matmul 2-D",
        vec![input(&[3, 4], 11, -1.0, 1.0), input(&[4, 2], 12, -1.0, 1.0)],
        |t| t[0].matmul(&t[1]),
    );
    check(
        "matmul batch broadcast",
        vec![
            input(&[2, 1, 3, 4], 13, -1.0, 1.0),
            input(&[3, 4, 2], 14, -1.0, 1.0),
        ],
        |t| t[0].matmul(&t[1]),
    );
    check(
        "matmul transposed operand",
        vec![input(&[3, 4], 15, -1.0, 1.0), input(&[2, 4], 16, -1.0, 1.0)],
        |t| t[0].matmul(&t[1].t()?),
    );
}

#[test]
fn conv2d_with_stride_padding_bias() {
    let x = input(&[2, 2, 5, 4], 17, -1.0, 1.0);
    let w = input(&[3, 2, 3, 2], 18, -1.0, 1.0);
    let b = input(&[3], 19, -1.0, 1.0);
    check("conv2d", vec![x.clone(), w.clone(), b], |t| {
        t[0].conv2d(&t[1], Some(&t[2]), (2, 1), (1, 0))
    });
    check(
        "conv2d 1x1",
        vec![x, input(&[3, 2, 1, 1], 20, -1.0, 1.0)],
        |t| t[0].conv2d(&t[1], None, 1, 0),
    );
}

#[test]
fn norms() {
    let x = input(&[2, 4, 3], 21, -2.0, 2.0);
    let (w, b) = (input(&[4], 22, 0.5, 1.5), input(&[4], 23, -0.5, 0.5));
    check("group_norm", vec![x.clone(), w.clone(), b.clone()], |t| {
        t[0].group_norm(2, Some(&t[1]), Some(&t[2]), 1e-5)
    });
    check(
        "group_norm+silu",
        vec![x.clone(), w.clone(), b.clone()],
        |t| t[0].group_norm_silu(2, Some(&t[1]), Some(&t[2]), 1e-5),
    );
    check("group_norm plain", vec![x], |t| {
        t[0].group_norm(4, None, None, 1e-5)
    });
    let y = input(&[3, 4], 24, -2.0, 2.0);
    check("layer_norm", vec![y, w, b], |t| {
        t[0].layer_norm(Some(&t[1]), Some(&t[2]), 1e-5)
    });
}

#[test]
fn softmax() {
    let x = input(&[2, 3, 4], 25, -2.0, 2.0);
    check("softmax last", vec![x.clone()], |t| t[0].softmax(-1));
    check("softmax middle", vec![x], |t| t[0].softmax(1));
}

#[test]
fn attention_with_masks() {
    let q = input(&[2, 2, 3, 4], 26, -1.0, 1.0);
    let k = input(&[2, 2, 5, 4], 27, -1.0, 1.0);
    let v = input(&[2, 2, 5, 3], 28, -1.0, 1.0);
    // Batch 1 hides its last two keys.
    let mask =
        Tensor::from_vec(vec![1u32, 1, 1, 1, 1, 1, 1, 1, 0, 0], [2, 5], &Device::Cpu).unwrap();
    check("attention", vec![q.clone(), k.clone(), v.clone()], |t| {
        scaled_dot_product_attention(&t[0], &t[1], &t[2], None, false, None)
    });
    check("attention causal+mask", vec![q, k, v], |t| {
        scaled_dot_product_attention(&t[0], &t[1], &t[2], Some(&mask), true, Some(0.7))
    });
}

#[test]
fn embedding_cat_upsample_views() {
    let ids = Tensor::from_vec(vec![2u32, 0, 2, 1], [2, 2], &Device::Cpu).unwrap();
    check("embedding", vec![input(&[3, 4], 29, -1.0, 1.0)], |t| {
        t[0].embedding(&ids)
    });
    let (a, b) = (
        input(&[2, 1, 3], 30, -1.0, 1.0),
        input(&[2, 2, 3], 31, -1.0, 1.0),
    );
    check("cat", vec![a, b], |t| Tensor::cat(&[&t[0], &t[1]], 1));
    check("upsample", vec![input(&[1, 2, 2, 3], 32, -1.0, 1.0)], |t| {
        t[0].upsample_nearest2d(2)
    });
    let x = input(&[2, 3, 4], 33, -1.0, 1.0);
    check("narrow", vec![x.clone()], |t| t[0].narrow(2, 1, 2));
    check("permute+reshape", vec![x.clone()], |t| {
        t[0].permute(&[2, 0, 1])?.reshape([4, 6])
    });
    check("broadcast", vec![input(&[3, 1], 34, -1.0, 1.0)], |t| {
        t[0].broadcast_as([2, 3, 5])
    });
    check("copy+squeeze", vec![input(&[3, 1], 35, -1.0, 1.0)], |t| {
        t[0].t()?.contiguous()?.squeeze(0)
    });
    // Casts round, so finite differences through f32 are meaningless; the rule is the
    // identity, checked exactly.
    let xc = t64(&x.0, &x.1).with_grad();
    xc.to_dtype(DType::F32)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g = xc.grad().unwrap();
    assert_eq!((g.dtype(), values(&g)), (DType::F64, vec![1.0; 24]));
}

/// The composite of the issue: conv -> group_norm -> silu -> attention -> sum, with the
/// feature map's pixels as the attention sequence.
#[test]
fn composite_conv_norm_silu_attention() {
    let x = input(&[2, 4, 3, 3], 36, -1.0, 1.0);
    let w = input(&[4, 4, 3, 3], 37, -0.5, 0.5);
    let (gw, gb) = (input(&[4], 38, 0.5, 1.5), input(&[4], 39, -0.5, 0.5));
    check("composite", vec![x, w, gw, gb], |t| {
        let h = t[0]
            .conv2d(&t[1], None, 1, 1)?
            .group_norm(2, Some(&t[2]), Some(&t[3]), 1e-5)?
            .silu()?;
        // [B, C, H, W] -> [B, 1, H*W, C]: one head attending over pixels.
        let seq = h.flatten_from(2)?.transpose(1, 2)?.unsqueeze(1)?;
        scaled_dot_product_attention(&seq, &seq, &seq, None, true, None)?.sum_all()
    });
}

/// Gradients accumulate over backward calls and over repeated uses; no_grad records
/// nothing; detach stops the flow.
#[test]
fn accumulation_no_grad_detach() {
    let x = t64(&[1.0, 2.0], &[2]).with_grad();
    let y = x.mul(&x).unwrap().sum_all().unwrap(); // uses x twice: d = 2x
    y.backward().unwrap();
    y.backward().unwrap();
    assert_eq!(values(&x.grad().unwrap()), [4.0, 8.0]);
    x.zero_grad();
    assert!(x.grad().is_none());
    {
        let _g = kuosan_tensor::no_grad();
        assert!(!x.exp().unwrap().requires_grad());
    }
    let z = x.detach().mul(&x).unwrap().sum_all().unwrap(); // d/dx = detached x
    z.backward().unwrap();
    assert_eq!(values(&x.grad().unwrap()), [1.0, 2.0]);
}

/// A very deep recorded graph backpropagates and drops without overflowing the stack.
#[test]
fn deep_graphs_do_not_overflow() {
    let x = t64(&[1.0], &[1]).with_grad();
    let mut y = x.clone();
    for _ in 0..200_000 {
        y = y.add_scalar(1e-6).unwrap();
    }
    y.sum_all().unwrap().backward().unwrap();
    assert_eq!(values(&x.grad().unwrap()), [1.0]);
    drop(y);
}
