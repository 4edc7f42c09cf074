//! Bad input gives an `Err` that names the op and the shapes, never a panic: one test
//! per op family.

use kuosan_tensor::{scaled_dot_product_attention, DType, Device, Error, Result, Tensor};

fn z(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap()
}

/// Asserts `r` is an error whose message contains every one of `words`.
#[track_caller]
fn fails<T: std::fmt::Debug>(r: Result<T>, words: &[&str]) {
    let msg = match r {
        Err(e) => e.to_string(),
        Ok(v) => panic!("expected an error mentioning {words:?}, got Ok({v:?})"),
    };
    for w in words {
        assert!(msg.contains(w), "error {msg:?} should mention {w:?}");
    }
}

#[test]
fn construction_and_readback() {
    fails(
        Tensor::from_vec(vec![1f32; 5], [2, 3], &Device::Cpu),
        &["from_vec", "5", "[2, 3]"],
    );
    fails(z(&[2]).to_vec::<f64>(), &["to_vec", "f64", "f32"]);
    fails(z(&[2]).to_scalar::<f32>(), &["to_scalar", "[2]"]);
    fails(
        Tensor::arange(0.0, 1.0, 0.0, DType::F32, &Device::Cpu),
        &["arange"],
    );
}

#[test]
fn elementwise_and_broadcasting() {
    fails(
        z(&[2, 3]).add(&z(&[4])),
        &["add", "[2, 3]", "[4]", "broadcast"],
    );
    fails(
        z(&[2]).mul(&z(&[2]).to_dtype(DType::F64).unwrap()),
        &["mul", "f32", "f64"],
    );
    fails(
        z(&[2]).to_dtype(DType::U32).unwrap().exp(),
        &["exp", "u32", "to_dtype"],
    );
    fails(
        z(&[2]).to_dtype(DType::U32).unwrap().sqrt(),
        &["sqrt", "u32"],
    );
    fails(z(&[2, 2]).masked_fill(&z(&[3]), 0.0), &["where_cond"]);
    fails(
        z(&[2, 2]).masked_fill(&z(&[2, 2, 2]), 0.0),
        &["masked_fill"],
    );
}

#[test]
fn views_and_reductions() {
    fails(z(&[2, 3]).reshape([4]), &["reshape", "[2, 3]", "[4]"]);
    fails(z(&[2, 3]).narrow(1, 2, 2), &["narrow", "axis 1"]);
    fails(z(&[2, 3]).permute(&[0, 0]), &["permute"]);
    fails(z(&[2, 3]).squeeze(0), &["squeeze", "size 2"]);
    fails(z(&[2, 3]).transpose(0, 2), &["transpose", "axis 2"]);
    fails(z(&[2, 3]).sum(&[2], false), &["sum", "axis 2"]);
    fails(z(&[2, 3]).sum(&[1, -1], false), &["sum", "twice"]);
    fails(z(&[2, 0]).max(&[1], false), &["max", "empty"]);
    fails(z(&[2, 3]).broadcast_as([3, 3]), &["broadcast_as"]);
}

#[test]
fn matmul_shapes() {
    fails(
        z(&[2, 3]).matmul(&z(&[4, 5])),
        &["matmul", "[2, 3]", "[4, 5]", "inner"],
    );
    fails(z(&[3]).matmul(&z(&[3, 2])), &["matmul", "rank"]);
    fails(
        z(&[2, 2, 3]).matmul(&z(&[3, 3, 2])),
        &["matmul", "broadcast"],
    );
}

#[test]
fn conv2d_shapes() {
    let x = z(&[1, 3, 8, 8]);
    fails(
        x.conv2d(&z(&[4, 2, 3, 3]), None, 1, 1),
        &["conv2d", "3 channels", "expects 2"],
    );
    fails(
        x.conv2d(&z(&[4, 3, 3]), None, 1, 1),
        &["conv2d", "[Cout, Cin, KH, KW]"],
    );
    fails(
        x.conv2d(&z(&[4, 3, 11, 3]), None, 1, 0),
        &["conv2d", "does not fit"],
    );
    fails(
        x.conv2d(&z(&[4, 3, 3, 3]), Some(&z(&[3])), 1, 1),
        &["conv2d", "bias", "[4]"],
    );
    fails(
        x.conv2d(&z(&[4, 3, 3, 3]), None, 0, 1),
        &["conv2d", "stride"],
    );
}

#[test]
fn norm_and_softmax_shapes() {
    let x = z(&[2, 6, 4]);
    fails(
        x.group_norm(4, None, None, 1e-5),
        &["group_norm", "6 channels", "4 groups"],
    );
    fails(
        x.group_norm(3, Some(&z(&[4])), None, 1e-5),
        &["group_norm", "[6]"],
    );
    fails(
        z(&[5]).group_norm(1, None, None, 1e-5),
        &["group_norm", "[N, C, *]"],
    );
    fails(
        x.layer_norm(Some(&z(&[6])), None, 1e-5),
        &["layer_norm", "[4]"],
    );
    fails(x.layer_norm(None, None, -1.0), &["layer_norm", "eps"]);
    fails(x.softmax(3), &["softmax", "axis 3"]);
}

#[test]
fn attention_shapes() {
    let (q, k, v) = (z(&[1, 2, 3, 4]), z(&[1, 2, 5, 4]), z(&[1, 2, 5, 6]));
    fails(
        scaled_dot_product_attention(&q, &z(&[1, 2, 5, 3]), &v, None, false, None),
        &["attention", "head size"],
    );
    fails(
        scaled_dot_product_attention(&q, &k, &z(&[1, 2, 4, 6]), None, false, None),
        &["attention"],
    );
    fails(
        scaled_dot_product_attention(&z(&[2, 3, 4]), &k, &v, None, false, None),
        &["attention", "[B, H, L, D]"],
    );
    fails(
        scaled_dot_product_attention(&q, &k, &v, Some(&z(&[1, 4])), false, None),
        &["attention", "mask", "[1, 5]"],
    );
}

#[test]
fn embedding_cat_upsample() {
    let table = z(&[5, 3]);
    let ids = Tensor::from_vec(vec![1u32, 7], [2], &Device::Cpu).unwrap();
    fails(table.embedding(&ids), &["embedding", "id 7", "5 rows"]);
    fails(table.embedding(&z(&[2])), &["embedding", "u32"]);
    fails(z(&[5]).embedding(&ids), &["embedding", "[V, D]"]);
    fails(
        Tensor::cat(&[&z(&[2, 3]), &z(&[3, 2])], 0),
        &["cat", "[2, 3]", "[3, 2]"],
    );
    fails(Tensor::cat(&[], 0), &["cat", "at least one"]);
    fails(
        z(&[2, 3]).upsample_nearest2d(2),
        &["upsample_nearest2d", "[N, C, H, W]"],
    );
    fails(z(&[2, 3]).geglu(), &["glu", "even", "[2, 3]"]);
}

#[test]
fn autograd_misuse() {
    let x = z(&[2]).with_grad();
    fails(x.exp().unwrap().backward(), &["backward", "shape [2]"]);
    fails(z(&[]).backward(), &["backward", "requires grad"]);
    let e = z(&[1]).assign(&z(&[2]));
    assert!(matches!(e, Err(Error::Shape { op: "assign", .. })));
}

#[test]
fn adamw_misuse() {
    use kuosan_tensor::ops::{adamw_step, AdamWStep};
    let h = AdamWStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        step: 1,
    };
    let (p, g) = (z(&[4]), z(&[4]));
    fails(
        adamw_step(&p, &g, &z(&[3]), &z(&[4]), &h),
        &["adamw_step", "m", "[3]"],
    );
    fails(
        adamw_step(&p, &g, &p, &z(&[4]), &h),
        &["adamw_step", "share"],
    );
    let wide = z(&[4, 2]);
    fails(
        adamw_step(
            &wide.narrow(1, 0, 1).unwrap().squeeze(1).unwrap(),
            &g,
            &z(&[4]),
            &z(&[4]),
            &h,
        ),
        &["adamw_step", "view"],
    );
}
