//! GPU flash attention (`kernels/attention.wgsl`) against the CPU's fused attention,
//! forward and backward through autograd, on the shapes that break tiled kernels.
//!
//! Tolerance: |gpu - cpu| <= 1e-5 + 1e-4 |cpu|. Both run in f32 but sum in different
//! orders (the GPU's online softmax rescales once per key tile, the CPU normalises whole
//! rows and uses blocked GEMMs), so with inputs of magnitude ~1 they differ by a few ulps
//! of exp and of length-S and length-D sums, as the CPU does from the f64 reference.
//!
//! GPU tests never skip: with no adapter they fail and say how to get one. Poison mode
//! fills every new GPU output with NaN first, so an element a kernel forgets shows up.

use crate::harness::{assert_close, data, gpu, round32};
use kuosan_tensor::{scaled_dot_product_attention, DType, Device, Tensor};
use proptest::prelude::*;

const ATOL: f64 = 1e-5;
const RTOL: f64 = 1e-4;

/// How a GPU input is laid out; each holds the same logical values [B, H, N, X].
#[derive(Clone, Copy, Debug)]
enum Layout {
    Contiguous,
    /// Stored [B, N, H, X] (as a projection writes it) and viewed with heads and
    /// positions swapped: a strided view the op has to make dense.
    HeadsSwapped,
    /// The middle of a wider tensor with NaN margins: a view with an offset.
    Narrowed,
}

fn layout() -> impl Strategy<Value = Layout> {
    prop_oneof![
        Just(Layout::Contiguous),
        Just(Layout::HeadsSwapped),
        Just(Layout::Narrowed)
    ]
}

/// An f32 tensor of `values` (row-major) on `dev`.
fn f32s(values: &[f64], shape: impl Into<kuosan_tensor::Shape>, dev: &Device) -> Tensor {
    let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
    Tensor::from_vec(v, shape, dev).unwrap()
}

/// `values` (row-major [B, H, N, X]) on `dev`, laid out as `how` says.
fn input(values: &[f64], shape: [usize; 4], how: Layout, dev: &Device) -> Tensor {
    let cpu = f32s(values, shape, &Device::Cpu);
    let t = match how {
        Layout::Contiguous => cpu.to_device(dev).unwrap(),
        Layout::HeadsSwapped => {
            let stored = cpu.transpose(1, 2).unwrap().copy().unwrap();
            stored.to_device(dev).unwrap().transpose(1, 2).unwrap()
        }
        Layout::Narrowed => {
            let mut wide = shape;
            wide[3] += 3;
            let pad = Tensor::full(f64::NAN, wide, DType::F32, &Device::Cpu).unwrap();
            let (left, right) = (pad.narrow(3, 0, 1).unwrap(), pad.narrow(3, 0, 2).unwrap());
            let full = Tensor::cat(&[&left, &cpu, &right], 3).unwrap();
            full.to_device(dev).unwrap().narrow(3, 1, shape[3]).unwrap()
        }
    };
    assert_eq!(t.dims(), shape);
    t
}

/// Which keys a case hides.
#[derive(Clone, Copy, Debug)]
enum Mask {
    None,
    /// ~70% of keys kept (values 1 or 2.5: any nonzero attends).
    Random,
    /// As Random, but batch 0 loses every key: its rows give zeros and no gradient.
    BatchHidden,
}

fn mask_kind() -> impl Strategy<Value = Mask> {
    prop_oneof![
        Just(Mask::None),
        Just(Mask::Random),
        Just(Mask::BatchHidden)
    ]
}

fn mask_values(kind: Mask, b: usize, s: usize, seed: u64) -> Option<Vec<f64>> {
    let u = data(b * s, seed, 0.0, 1.0);
    let keep = |i: usize| match kind {
        Mask::BatchHidden if i < s => 0.0,
        _ if u[i] < 0.35 => 1.0,
        _ if u[i] < 0.7 => 2.5,
        _ => 0.0,
    };
    match kind {
        Mask::None => None,
        _ => Some((0..b * s).map(keep).collect()),
    }
}

/// One attention problem: sizes, flags and seeded inputs.
#[derive(Clone, Debug)]
struct Case {
    b: usize,
    h: usize,
    l: usize,
    s: usize,
    d: usize,
    dv: usize,
    causal: bool,
    mask: Mask,
    scale: Option<f64>,
    how: [Layout; 3],
    seed: u64,
}

/// (out, dq, dk, dv) on `dev`, with loss = sum(out * r) for a seeded r.
fn run(c: &Case, dev: &Device) -> [Vec<f64>; 4] {
    let q = round32(data(c.b * c.h * c.l * c.d, c.seed, -2.0, 2.0));
    let k = round32(data(c.b * c.h * c.s * c.d, c.seed ^ 1, -2.0, 2.0));
    let v = round32(data(c.b * c.h * c.s * c.dv, c.seed ^ 2, -1.0, 1.0));
    let r = round32(data(c.b * c.h * c.l * c.dv, c.seed ^ 3, -1.0, 1.0));
    let tq = input(&q, [c.b, c.h, c.l, c.d], c.how[0], dev).with_grad();
    let tk = input(&k, [c.b, c.h, c.s, c.d], c.how[1], dev).with_grad();
    let tv = input(&v, [c.b, c.h, c.s, c.dv], c.how[2], dev).with_grad();
    let mask = mask_values(c.mask, c.b, c.s, c.seed ^ 4).map(|m| f32s(&m, [c.b, c.s], dev));
    let out =
        scaled_dot_product_attention(&tq, &tk, &tv, mask.as_ref(), c.causal, c.scale).unwrap();
    let tr = f32s(&r, [c.b, c.h, c.l, c.dv], dev);
    out.mul(&tr).unwrap().sum_all().unwrap().backward().unwrap();
    let grad = |t: &Tensor| t.grad().expect("a gradient reached this input");
    [out, grad(&tq), grad(&tk), grad(&tv)].map(|t| t.to_vec_f64().unwrap())
}

/// GPU against CPU for every output and gradient.
fn check(c: &Case) {
    let gpu = run(c, &gpu());
    let cpu = run(c, &Device::Cpu);
    for ((name, g), w) in ["out", "dq", "dk", "dv"].iter().zip(&gpu).zip(&cpu) {
        assert_close(&format!("{name} of {c:?}"), g, w, ATOL, RTOL);
    }
}

/// Sequence lengths: 1, small primes, and one past the row blocks (16) and key tiles
/// (32 forward, 16 backward).
fn len() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![1usize, 2, 3, 5, 7, 13, 16, 17, 31, 32, 33])
}

/// Head dims: every small size, and 32/64/65 around the chunk widths.
fn head_dim() -> impl Strategy<Value = usize> {
    prop_oneof![3 => 1usize..=9, 1 => prop::sample::select(vec![32usize, 64, 65])]
}

fn case() -> impl Strategy<Value = Case> {
    (
        (1usize..=2, 1usize..=3, len(), len(), head_dim(), head_dim()),
        (
            any::<bool>(),
            mask_kind(),
            prop_oneof![Just(None), Just(Some(0.9))],
        ),
        (layout(), layout(), layout()),
        any::<u64>(),
    )
        .prop_map(
            |((b, h, l, s, d, dv), (causal, mask, scale), how, seed)| Case {
                b,
                h,
                l,
                s,
                d,
                dv,
                causal,
                mask,
                scale,
                how: [how.0, how.1, how.2],
                seed,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn gpu_attention_matches_cpu(c in case()) {
        check(&c);
    }
}

fn fixed(l: usize, s: usize, d: usize, dv: usize, causal: bool, mask: Mask) -> Case {
    Case {
        b: 2,
        h: 1,
        l,
        s,
        d,
        dv,
        causal,
        mask,
        scale: None,
        how: [Layout::Contiguous; 3],
        seed: (l * 1000 + s * 10 + d) as u64,
    }
}

/// Head dims past the widest chunk (128), so dot products and outputs run in several
/// chunks on every device, with D and DV in different numbers of chunks.
#[test]
fn gpu_attention_wide_heads() {
    for (d, dv) in [(130, 7), (5, 200), (129, 129), (80, 160)] {
        check(&fixed(19, 23, d, dv, true, Mask::Random));
    }
}

/// Many key tiles, with scores large enough that the running max moves between tiles.
#[test]
fn gpu_attention_long_rows() {
    let mut c = fixed(70, 97, 16, 24, false, Mask::Random);
    c.scale = Some(2.0);
    check(&c);
    c.causal = true;
    c.mask = Mask::BatchHidden;
    check(&c);
}

/// No atomics: two runs give the same bits.
#[test]
fn gpu_attention_is_deterministic() {
    let c = fixed(33, 40, 64, 32, true, Mask::Random);
    let dev = gpu();
    assert_eq!(run(&c, &dev), run(&c, &dev));
}
