//! The fast CPU kernels (f32) against the f64 reference in `cpu::reference`, over random
//! shapes (size 1, primes, one past tile sizes), non-contiguous inputs and value ranges.
//!
//! Tolerance per op, |got - want| <= atol + rtol |want| with inputs rounded to f32 first:
//! | op | atol | rtol | why |
//! |---|---|---|---|
//! | unary | 1e-6 | 1e-5 | one f32 evaluation of a libm function, ~1-2 ulp |
//! | binary, affine | 1e-7 | 1e-6 | one rounding |
//! | glu (fwd, bwd) | 2e-6 | 2e-5 | an activation (as unary) times up to two values |
//! | powf | 1e-6 | 1e-5 | libm powf |
//! | comparisons, max/min, where, copies, cat, upsample, embedding | 0 | 0 | exact |
//! | sum/mean | 1e-6 n | 1e-5 | n roundings of a sum of n terms |
//! | matmul, conv (fwd, both bwd) | 2e-6 k | 1e-5 | a k-term dot product (k = reduction length) |
//! | norms (fwd, bwd) | 1e-4 | 1e-4 | division by a std that f32 inputs set to ~1e-7 |
//! | softmax, attention (fwd, bwd) | 1e-5 | 1e-4 | exp and a length-S sum |

use crate::harness::*;
use kuosan_tensor::cpu::reference as r;
use kuosan_tensor::ops::{AttnShape, BinaryOp, ConvShape, NormShape, ReduceOp, UnaryOp};
use kuosan_tensor::{scaled_dot_product_attention, DType, Device, Tensor};
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Sum of y * dy over all elements: its gradient wrt y is dy, so backward gives each
/// input's gradient for the output gradient dy.
fn loss_with_grad(y: &Tensor, dy: &Tensor) -> Tensor {
    y.mul(dy).unwrap().sum_all().unwrap()
}

fn grad(t: &Tensor) -> Vec<f64> {
    values(&t.grad().expect("a gradient reached this input"))
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn unary_ops(shape in shape(0..=4, 4000), how in arrange(), seed in any::<u64>()) {
        for &op in UnaryOp::ALL {
            let (lo, hi) = match op {
                UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Recip => (0.1, 3.0),
                _ => (-4.0, 4.0),
            };
            let x = round32(data(shape.iter().product(), seed, lo, hi));
            let t = t32(&x, &shape, how);
            for derivative in [false, true] {
                let got = if derivative {
                    // f'(x) reaches users through backward: d/dx sum(f(x)) = f'(x).
                    let tg = t.contiguous().unwrap().with_grad();
                    tg.unary(op).unwrap().sum_all().unwrap().backward().unwrap();
                    grad(&tg)
                } else {
                    values(&t.unary(op).unwrap())
                };
                let what = format!("{}{} on {shape:?} {how:?}", op.name(), if derivative { "'" } else { "" });
                assert_close(&what, &got, &r::unary(&x, op, derivative), 1e-6, 1e-5);
            }
        }
    }

    #[test]
    fn glu_forward_and_backward(shape in shape(1..=3, 1500), how in arrange(), seed in any::<u64>()) {
        // The last axis doubled: a and g halves of any size, 1 and primes included.
        let mut shape = shape;
        *shape.last_mut().unwrap() *= 2;
        let n = shape.last().unwrap() / 2;
        let x = round32(data(shape.iter().product(), seed, -4.0, 4.0));
        let dy = round32(data(x.len() / 2, seed ^ 1, -1.0, 1.0));
        let mut out = shape.clone();
        *out.last_mut().unwrap() = n;
        for act in [UnaryOp::GeluErf, UnaryOp::Silu, UnaryOp::Sigmoid] {
            let t = t32(&x, &shape, how);
            let y = t.glu(act).unwrap();
            prop_assert_eq!(y.dims(), &out[..]);
            let what = format!("glu {} on {shape:?} {how:?}", act.name());
            // A product of one activation (see unary) and one rounding.
            assert_close(&what, &values(&y), &r::glu(&x, n, act), 2e-6, 2e-5);
            let tg = t.with_grad();
            loss_with_grad(&tg.glu(act).unwrap(), &t32(&dy, &out, Arrange::Contiguous)).backward().unwrap();
            assert_close(&format!("{what} backward"), &grad(&tg), &r::glu_backward(&x, &dy, n, act), 2e-6, 2e-5);
        }
    }

    #[test]
    fn binary_ops(
        (sa, sb) in shape(0..=4, 3000).prop_flat_map(|s| (broadcastable(s.clone()), broadcastable(s))),
        (ha, hb) in (arrange(), arrange()),
        seed in any::<u64>(),
    ) {
        let (na, nb) = (sa.iter().product(), sb.iter().product());
        // Values on a grid of halves, so comparisons and max/min meet ties.
        let a: Vec<f64> = data(na, seed, -4.0, 4.0).into_iter().map(|v| (v * 2.0).round() / 2.0).collect();
        let b: Vec<f64> = data(nb, seed ^ 1, -4.0, 4.0).into_iter().map(|v| (v * 2.0).round() / 2.0).collect();
        // Divisors kept away from zero.
        let b_div: Vec<f64> = b.iter().map(|&v| if v >= 0.0 { v + 0.5 } else { v - 0.5 }).collect();
        for &op in BinaryOp::ALL {
            let b = if op == BinaryOp::Div { &b_div } else { &b };
            let got = t32(&a, &sa, ha).binary(&t32(b, &sb, hb), op).unwrap();
            let (want, shape) = r::binary(&a, &sa, b, &sb, op);
            prop_assert_eq!(got.dims(), &shape[..]);
            let exact = !matches!(op, BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div);
            let (atol, rtol) = if exact { (0.0, 0.0) } else { (1e-7, 1e-6) };
            assert_close(&format!("{} {sa:?} {sb:?}", op.name()), &values(&got), &want, atol, rtol);
        }
    }

    #[test]
    fn affine_powf_where(
        (sc, st, sf) in shape(0..=3, 2000).prop_flat_map(|s| (broadcastable(s.clone()), broadcastable(s.clone()), Just(s))),
        how in arrange(),
        seed in any::<u64>(),
        (mul, add, e) in (-3.0f64..3.0, -3.0f64..3.0, -2.0f64..3.0),
    ) {
        let n: usize = sf.iter().product();
        let x = round32(data(n, seed, 0.1, 3.0));
        let t = t32(&x, &sf, how);
        let (m32, a32) = (mul as f32 as f64, add as f32 as f64);
        let want: Vec<f64> = x.iter().map(|v| (v * m32 + a32) as f32 as f64).collect();
        assert_close("affine", &values(&t.affine(mul, add).unwrap()), &want, 1e-6, 1e-6);
        let e32 = e as f32 as f64;
        let want: Vec<f64> = x.iter().map(|v| v.powf(e32)).collect();
        assert_close("powf", &values(&t.powf(e).unwrap()), &want, 1e-6, 1e-5);

        let c: Vec<f64> = data(sc.iter().product(), seed ^ 2, 0.0, 2.0).into_iter().map(f64::floor).collect();
        let tv = round32(data(st.iter().product(), seed ^ 3, -1.0, 1.0));
        let cond = Tensor::from_vec(c.clone(), &sc[..], &Device::Cpu).unwrap().to_dtype(DType::U32).unwrap();
        let got = cond.where_cond(&t32(&tv, &st, how), &t).unwrap();
        let (want, shape) = r::where_cond(&c, &sc, &tv, &st, &x, &sf);
        prop_assert_eq!(got.dims(), &shape[..]);
        assert_close("where_cond", &values(&got), &want, 0.0, 0.0);
    }

    #[test]
    fn reductions(
        shape in shape(1..=4, 6000),
        mask in prop::collection::vec(any::<bool>(), 4),
        keepdim in any::<bool>(),
        how in arrange(),
        seed in any::<u64>(),
    ) {
        let dims: Vec<usize> = (0..shape.len()).filter(|&d| mask[d]).collect();
        let dims = if dims.is_empty() { vec![shape.len() - 1] } else { dims };
        let x = round32(data(shape.iter().product(), seed, -2.0, 2.0));
        let t = t32(&x, &shape, how);
        let count: usize = dims.iter().map(|&d| shape[d]).product();
        let kept: Vec<usize> = if keepdim {
            shape.iter().enumerate().map(|(d, &n)| if dims.contains(&d) { 1 } else { n }).collect()
        } else {
            shape.iter().enumerate().filter(|(d, _)| !dims.contains(d)).map(|(_, &n)| n).collect()
        };
        for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min] {
            let got = match op {
                ReduceOp::Sum => t.sum(&dims, keepdim),
                ReduceOp::Max => t.max(&dims, keepdim),
                ReduceOp::Min => t.min(&dims, keepdim),
            }.unwrap();
            prop_assert_eq!(got.dims(), &kept[..]);
            let (atol, rtol) = if op == ReduceOp::Sum { (1e-6 * count as f64, 1e-5) } else { (0.0, 0.0) };
            assert_close(&format!("{} over {dims:?} of {shape:?}", op.name()), &values(&got), &r::reduce(&x, &shape, &dims, op), atol, rtol);
        }
        let want: Vec<f64> = r::reduce(&x, &shape, &dims, ReduceOp::Sum).iter().map(|v| v / count as f64).collect();
        assert_close("mean", &values(&t.mean(&dims, keepdim).unwrap()), &want, 1e-6, 1e-5);
    }

    #[test]
    fn matmul(
        batch in shape(0..=2, 12),
        (m, k, n) in (prop_oneof![dim(), 30usize..140], prop_oneof![dim(), 30usize..300], prop_oneof![dim(), 30usize..140]),
        (ba, bb) in (any::<bool>(), any::<bool>()),
        (ha, hb) in (arrange(), arrange()),
        seed in any::<u64>(),
    ) {
        // Each operand keeps the batch axes or broadcasts them (size 1 / dropped).
        let bshape = |keep: bool| if keep { batch.clone() } else { batch.iter().map(|_| 1).collect() };
        let sa = [bshape(ba), vec![m, k]].concat();
        let sb = [bshape(bb), vec![k, n]].concat();
        let a = round32(data(sa.iter().product(), seed, -1.0, 1.0));
        let b = round32(data(sb.iter().product(), seed ^ 1, -1.0, 1.0));
        let got = t32(&a, &sa, ha).matmul(&t32(&b, &sb, hb)).unwrap();
        let (want, shape) = r::matmul(&a, &sa, &b, &sb);
        prop_assert_eq!(got.dims(), &shape[..]);
        assert_close(&format!("matmul {sa:?} x {sb:?}"), &values(&got), &want, 2e-6 * k as f64, 1e-5);
    }

    #[test]
    fn conv2d_forward_and_backward(
        (n, c_in, c_out) in (1usize..=3, 1usize..=5, 1usize..=5),
        (h, w) in (1usize..=11, 1usize..=11),
        (kh, kw) in (prop::sample::select(vec![1usize, 2, 3, 5]), prop::sample::select(vec![1usize, 3])),
        (sh, sw, ph, pw) in (1usize..=3, 1usize..=2, 0usize..=2, 0usize..=1),
        with_bias in any::<bool>(),
        how in arrange(),
        seed in any::<u64>(),
    ) {
        prop_assume!(h + 2 * ph >= kh && w + 2 * pw >= kw);
        let s = ConvShape { n, c_in, h, w, c_out, kh, kw, stride: (sh, sw), padding: (ph, pw) };
        let x = round32(data(n * c_in * h * w, seed, -1.0, 1.0));
        let wt = round32(data(c_out * c_in * kh * kw, seed ^ 1, -1.0, 1.0));
        let b = round32(data(c_out, seed ^ 2, -1.0, 1.0));
        let (tx, tw) = (t32(&x, &s.x_dims(), how).with_grad(), t32(&wt, &s.w_dims(), how).with_grad());
        let tb = t32(&b, &[c_out], Arrange::Contiguous).with_grad();
        let y = tx.conv2d(&tw, with_bias.then_some(&tb), (sh, sw), (ph, pw)).unwrap();
        prop_assert_eq!(y.dims(), &s.y_dims()[..]);
        let k = (c_in * kh * kw) as f64;
        let what = format!("conv2d {s:?}");
        assert_close(&what, &values(&y), &r::conv2d(&x, &wt, with_bias.then_some(&b[..]), &s), 2e-6 * k, 1e-5);

        let dy = round32(data(y.elem_count(), seed ^ 3, -1.0, 1.0));
        loss_with_grad(&y, &t32(&dy, y.dims(), Arrange::Contiguous)).backward().unwrap();
        let taps = (c_out * kh * kw) as f64;
        assert_close(&format!("{what} dx"), &grad(&tx), &r::conv2d_backward_input(&dy, &wt, &s), 2e-6 * taps, 1e-5);
        let pixels = (n * s.h_out() * s.w_out()) as f64;
        assert_close(&format!("{what} dw"), &grad(&tw), &r::conv2d_backward_weight(&x, &dy, &s), 2e-6 * pixels, 1e-5);
        if with_bias {
            let db = r::reduce(&dy, &s.y_dims(), &[0, 2, 3], ReduceOp::Sum);
            assert_close(&format!("{what} db"), &grad(&tb), &db, 2e-6 * pixels, 1e-5);
        }
    }

    #[test]
    fn group_norm_and_layer_norm(
        (n, groups, cpg) in (1usize..=3, 1usize..=4, 1usize..=4),
        spatial in shape(0..=2, 40),
        (affine, layer, fused) in (any::<bool>(), any::<bool>(), any::<bool>()),
        how in arrange(),
        seed in any::<u64>(),
    ) {
        let c = groups * cpg;
        let silu = fused && !layer;
        let shape = if layer { [vec![n], spatial.clone(), vec![c]].concat() } else { [vec![n, c], spatial.clone()].concat() };
        let numel: usize = shape.iter().product();
        let inner: usize = spatial.iter().product();
        let s = if layer {
            NormShape { rows: numel / c, groups: 1, cpg: c, inner: 1, eps: 1e-5, silu: false }
        } else {
            NormShape { rows: n, groups, cpg, inner, eps: 1e-5, silu }
        };
        let x = round32(data(numel, seed, -2.0, 2.0));
        let wv = round32(data(c, seed ^ 1, 0.5, 1.5));
        let bv = round32(data(c, seed ^ 2, -0.5, 0.5));
        let tx = t32(&x, &shape, how).with_grad();
        let (tw, tb) = (t32(&wv, &[c], how).with_grad(), t32(&bv, &[c], how).with_grad());
        let (w, b) = if affine { (Some(&tw), Some(&tb)) } else { (None, None) };
        let y = if layer {
            tx.layer_norm(w, b, 1e-5)
        } else if silu {
            tx.group_norm_silu(groups, w, b, 1e-5)
        } else {
            tx.group_norm(groups, w, b, 1e-5)
        }
        .unwrap();
        let (rw, rb) = if affine { (Some(&wv[..]), Some(&bv[..])) } else { (None, None) };
        let what = format!("{} {shape:?} {s:?}", if layer { "layer_norm" } else { "group_norm" });
        let (want, _, rstd) = r::norm(&x, rw, rb, &s);
        assert_close(&what, &values(&y), &want, 1e-4, 1e-4);

        let dy = round32(data(numel, seed ^ 3, -1.0, 1.0));
        loss_with_grad(&y, &t32(&dy, &shape, Arrange::Contiguous)).backward().unwrap();
        let (dx, dw, db) = r::norm_backward(&x, &dy, rw, rb, &s);
        // dx = rstd (g - mean(g) - xhat mean(g xhat)): f32's error is relative to the
        // bracket's terms, so compare dx in units of its group's rstd (where that is
        // above 1). A LayerNorm row of three close values had rstd 78 and dx of about
        // +-41, and its middle dx, cancelling to -0.52, was off by 2.5e-4 (6e-6 of its
        // row's scale) against an absolute bound of 1.5e-4.
        let m = s.group_len().max(1);
        let in_rstd = |d: &[f64]| -> Vec<f64> {
            d.iter().enumerate().map(|(i, v)| v / rstd[i / m].max(1.0)).collect()
        };
        assert_close(&format!("{what} dx / rstd"), &in_rstd(&grad(&tx)), &in_rstd(&dx), 1e-4, 1e-4);
        if affine {
            assert_close(&format!("{what} dw"), &grad(&tw), &dw, 1e-4, 1e-4);
            assert_close(&format!("{what} db"), &grad(&tb), &db, 1e-4, 1e-4);
        }
    }

    #[test]
    fn softmax_any_axis(shape in shape(1..=4, 4000), axis in 0usize..4, how in arrange(), seed in any::<u64>()) {
        let d = axis % shape.len();
        let x = round32(data(shape.iter().product(), seed, -6.0, 6.0));
        let got = t32(&x, &shape, how).softmax(d).unwrap();
        let (xl, sl) = move_axis_last(&x, &shape, d);
        let (gl, _) = move_axis_last(&values(&got), &shape, d);
        assert_close(&format!("softmax axis {d} of {shape:?}"), &gl, &r::softmax_last(&xl, sl[sl.len() - 1]), 1e-6, 1e-5);
    }

    #[test]
    fn attention_forward_and_backward(
        (b, h) in (1usize..=2, 1usize..=3),
        (l, s_len) in (prop_oneof![1usize..=9, 60usize..=70], prop_oneof![1usize..=9, 60usize..=70]),
        (d, dv) in (1usize..=9, 1usize..=9),
        (causal, masked) in (any::<bool>(), any::<bool>()),
        how in arrange(),
        split in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let s = AttnShape { b, h, l, s: s_len, d, dv, causal, scale: 1.0 / (d as f64).sqrt(), seq_major: false };
        // `split`: heads split from a [B, rows, H * width] linear output (the view
        // transpose(1, 2) of a contiguous [B, rows, H, width]), which the kernels read and
        // write in place; else arranged as `how` says.
        let heads = |vals: &[f64], shape: [usize; 4]| {
            if !split {
                return t32(vals, &shape, how);
            }
            let (p, ps) = permute(vals, &shape, &[0, 2, 1, 3]);
            t32(&p, &ps, Arrange::Contiguous).transpose(1, 2).unwrap()
        };
        let q = round32(data(b * h * l * d, seed, -2.0, 2.0));
        let k = round32(data(b * h * s_len * d, seed ^ 1, -2.0, 2.0));
        let v = round32(data(b * h * s_len * dv, seed ^ 2, -1.0, 1.0));
        // Keep ~70% of keys; a batch may lose all of them (then its rows are zero).
        let mask: Vec<f64> = data(b * s_len, seed ^ 3, 0.0, 1.0).into_iter().map(|u| (u < 0.7) as u8 as f64).collect();
        let tq = heads(&q, [b, h, l, d]).with_grad();
        let tk = heads(&k, [b, h, s_len, d]).with_grad();
        let tv = heads(&v, [b, h, s_len, dv]).with_grad();
        let tm = Tensor::from_vec(mask.clone(), [b, s_len], &Device::Cpu).unwrap().to_dtype(DType::U32).unwrap();
        let out = scaled_dot_product_attention(&tq, &tk, &tv, masked.then_some(&tm), causal, None).unwrap();
        let rm = masked.then_some(&mask[..]);
        let what = format!("attention {s:?} masked={masked}");
        assert_close(&what, &values(&out), &r::attention(&q, &k, &v, rm, &s), 1e-5, 1e-4);
        // Split heads come back the same way: merging them is a free view.
        if split {
            prop_assert!(out.transpose(1, 2).unwrap().is_contiguous());
        }

        let dout = round32(data(out.elem_count(), seed ^ 4, -1.0, 1.0));
        loss_with_grad(&out, &heads(&dout, [b, h, l, dv])).backward().unwrap();
        let (dq, dk, dvv) = r::attention_backward(&q, &k, &v, rm, &dout, &s);
        assert_close(&format!("{what} dq"), &grad(&tq), &dq, 1e-5, 1e-4);
        assert_close(&format!("{what} dk"), &grad(&tk), &dk, 1e-5, 1e-4);
        assert_close(&format!("{what} dv"), &grad(&tv), &dvv, 1e-5, 1e-4);
    }

    #[test]
    fn embedding_cat_upsample(
        (vocab, d) in (1usize..=20, 1usize..=9),
        ids_shape in shape(1..=2, 30),
        parts in prop::collection::vec(1usize..=4, 1..=4),
        img in (1usize..=2, 1usize..=3, 1usize..=5, 1usize..=5),
        factor in 1usize..=3,
        how in arrange(),
        seed in any::<u64>(),
    ) {
        // Embedding: exact gather, scatter-add backward with repeated ids.
        let n_ids: usize = ids_shape.iter().product();
        let ids: Vec<u32> = data(n_ids, seed, 0.0, vocab as f64).into_iter().map(|v| v as u32).collect();
        let wv = round32(data(vocab * d, seed ^ 1, -1.0, 1.0));
        let tw = t32(&wv, &[vocab, d], how).with_grad();
        let tids = Tensor::from_vec(ids.clone(), &ids_shape[..], &Device::Cpu).unwrap();
        let e = tw.embedding(&tids).unwrap();
        prop_assert_eq!(e.dims(), &[ids_shape.clone(), vec![d]].concat()[..]);
        assert_close("embedding", &values(&e), &r::embedding(&ids, &wv, d), 0.0, 0.0);
        let dy = round32(data(e.elem_count(), seed ^ 2, -1.0, 1.0));
        loss_with_grad(&e, &t32(&dy, e.dims(), Arrange::Contiguous)).backward().unwrap();
        assert_close("embedding dw", &grad(&tw), &r::embedding_backward(&ids, &dy, vocab, d), 1e-6, 1e-6);

        // Cat along axis 1 of [2, len_i, 3] parts.
        let vals: Vec<Vec<f64>> = parts.iter().enumerate().map(|(i, &len)| data(2 * len * 3, seed ^ (10 + i as u64), -1.0, 1.0)).collect();
        let shapes: Vec<Vec<usize>> = parts.iter().map(|&len| vec![2, len, 3]).collect();
        let ts: Vec<Tensor> = vals.iter().zip(&shapes).map(|(v, s)| t32(v, s, how)).collect();
        let got = Tensor::cat(&ts.iter().collect::<Vec<_>>(), 1).unwrap();
        let rv: Vec<Vec<f64>> = vals.iter().map(|v| round32(v.clone())).collect();
        let refs: Vec<(&[f64], &[usize])> = rv.iter().zip(&shapes).map(|(v, s)| (&v[..], &s[..])).collect();
        let (want, shape) = r::cat(&refs, 1);
        prop_assert_eq!(got.dims(), &shape[..]);
        assert_close("cat", &values(&got), &want, 0.0, 0.0);
        // The same parts as windows of taller tensors whose first block is NaN: contiguous
        // views at an offset, which the one-pass CPU path must read from that offset.
        let windows: Vec<Tensor> = vals.iter().zip(&parts).map(|(v, &len)| {
            let tall: Vec<f64> = vec![f64::NAN; len * 3].into_iter().chain(v.iter().copied()).collect();
            t32(&tall, &[3, len, 3], Arrange::Contiguous).narrow(0, 1, 2).unwrap()
        }).collect();
        prop_assert!(windows.iter().all(|t| t.is_contiguous()));
        let got = Tensor::cat(&windows.iter().collect::<Vec<_>>(), 1).unwrap();
        assert_close("cat of offset windows", &values(&got), &want, 0.0, 0.0);
        // One tensor twice (guidance doubles a batch so): one storage, read once.
        let twice = Tensor::cat(&[&windows[0], &windows[0]], 1).unwrap();
        let (want_twice, _) = r::cat(&[refs[0], refs[0]], 1);
        assert_close("cat of a tensor with itself", &values(&twice), &want_twice, 0.0, 0.0);

        // Upsample.
        let (n, c, h, w) = img;
        let x = round32(data(n * c * h * w, seed ^ 5, -1.0, 1.0));
        let got = t32(&x, &[n, c, h, w], how).upsample_nearest2d(factor).unwrap();
        assert_close("upsample", &values(&got), &r::upsample_nearest2d(&x, [n, c, h, w], factor), 0.0, 0.0);
    }

    #[test]
    fn views_and_casts(shape in shape(1..=4, 2000), how in arrange(), seed in any::<u64>()) {
        let x = round32(data(shape.iter().product(), seed, -3.0, 3.0));
        let t = t32(&x, &shape, how);
        // Every arrangement reads back the logical values, and copies make them contiguous.
        assert_close("copy", &values(&t.copy().unwrap()), &x, 0.0, 0.0);
        // Permute = the reference permutation; reshape after permute keeps order.
        let perm: Vec<usize> = (0..shape.len()).rev().collect();
        let (want, pshape) = permute(&x, &shape, &perm);
        let p = t.permute(&perm).unwrap();
        prop_assert_eq!(p.dims(), &pshape[..]);
        assert_close("permute", &values(&p), &want, 0.0, 0.0);
        assert_close("reshape", &values(&p.reshape([want.len()]).unwrap()), &want, 0.0, 0.0);
        // f16 / bf16 round trips match half's rounding; f64 is exact.
        for (dt, round) in [
            (DType::F16, (|v: f64| half::f16::from_f64(v).to_f64()) as fn(f64) -> f64),
            (DType::BF16, |v: f64| half::bf16::from_f64(v).to_f64()),
            (DType::F64, |v: f64| v),
        ] {
            let back = t.to_dtype(dt).unwrap().to_dtype(DType::F32).unwrap();
            let want: Vec<f64> = x.iter().map(|&v| round(v) as f32 as f64).collect();
            assert_close(&format!("cast via {dt}"), &values(&back), &want, 0.0, 0.0);
        }
    }
}

proptest! {
    #![proptest_config(config(32))]

    /// The fused AdamW step against the f64 reference over several steps (in place).
    #[test]
    fn adamw_steps(n in 1usize..3000, seed in any::<u64>(), wd in 0.0f64..0.1, lr in 1e-4f64..1e-2) {
        use kuosan_tensor::ops::{adamw_step, AdamWStep};
        let p0 = round32(data(n, seed, -1.0, 1.0));
        let t = |v: &[f64]| t32(v, &[n], Arrange::Contiguous);
        let (p, m, v) = (t(&p0), t(&vec![0.0; n]), t(&vec![0.0; n]));
        let (mut rp, mut rm, mut rv) = (p0.clone(), vec![0.0; n], vec![0.0; n]);
        for step in 1..=3u64 {
            let g = round32(data(n, seed ^ step, -1.0, 1.0));
            let h = AdamWStep { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: wd, step };
            adamw_step(&p, &t(&g), &m, &v, &h).unwrap();
            (rp, rm, rv) = r::adamw(&rp, &g, &rm, &rv, &h);
        }
        assert_close("adamw param", &values(&p), &rp, 1e-6, 1e-5);
        assert_close("adamw m", &values(&m), &rm, 1e-6, 1e-5);
        assert_close("adamw v", &values(&v), &rv, 1e-7, 1e-5);
    }
}
