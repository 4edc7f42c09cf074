//! The nn layer: modules against hand computation, the parameter store's names and
//! safetensors round trips (bit-exact in f32, rounded as half types round), strict and
//! clear load errors, AdamW / clipping / EMA / LR schedule arithmetic, exact resume of
//! the optimizer from saved state, and AdaGN's fused norm against its unfused ops.

use crate::harness::*;
use kuosan_nn::{
    clip_grad_norm, AdamW, AdamWConfig, Ema, GroupNorm, Init, Linear, LrSchedule, Module, VarStore,
};
use kuosan_tensor::{DType, Device};

fn store(seed: u64) -> VarStore {
    VarStore::new(Device::Cpu, DType::F32, seed)
}

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("kuosan-nn-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn linear_matches_hand_computation_and_names_parameters() {
    let vs = store(1);
    let lin = Linear::new(&vs.root().pp("proj"), 3, 2, true).unwrap();
    let names: Vec<String> = vs.vars().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["proj.bias", "proj.weight"]);
    let x = t32(
        &[1.0, 2.0, 3.0, -1.0, 0.5, 2.0],
        &[2, 3],
        Arrange::Contiguous,
    );
    let (w, b) = (values(&lin.weight), values(lin.bias.as_ref().unwrap()));
    let y = values(&lin.forward(&x).unwrap());
    let xv = values(&x);
    for r in 0..2 {
        for o in 0..2 {
            let want: f64 = (0..3).map(|i| xv[r * 3 + i] * w[o * 3 + i]).sum::<f64>() + b[o];
            assert!((y[r * 2 + o] - want).abs() < 1e-6);
        }
    }
    // Default init is U(-1/sqrt(in), 1/sqrt(in)), and asking again gives the same tensor.
    assert!(w.iter().all(|v| v.abs() <= 1.0 / 3f64.sqrt()));
    assert_eq!(
        vs.root()
            .pp("proj")
            .var("weight", &[2, 3], Init::Const(0.0))
            .unwrap()
            .id(),
        lin.weight.id()
    );
    assert!(vs
        .root()
        .pp("proj")
        .var("weight", &[3, 2], Init::Const(0.0))
        .is_err());
}

#[test]
fn safetensors_round_trips_and_refuses_bad_files() {
    let dir = tmpdir("st");
    let make = |seed| {
        let vs = store(seed);
        let r = vs.root();
        r.pp("a")
            .var("weight", &[4, 5], Init::Normal { std: 1.0 })
            .unwrap();
        r.pp("b")
            .var("bias", &[7], Init::Uniform { lo: -1.0, hi: 1.0 })
            .unwrap();
        vs
    };
    let (src, dst) = (make(1), make(2));
    let f32_file = dir.join("model.safetensors");
    src.save(&f32_file, DType::F32).unwrap();
    dst.load(&f32_file).unwrap();
    for ((n, a), (_, b)) in src.vars().iter().zip(dst.vars()) {
        assert_eq!(
            a.to_vec::<f32>().unwrap(),
            b.to_vec::<f32>().unwrap(),
            "{n} after f32 round trip"
        );
    }
    // No temporary files are left behind by the atomic write.
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    for dt in [DType::F16, DType::BF16] {
        let f = dir.join(format!("model-{dt}.safetensors"));
        src.save(&f, dt).unwrap();
        dst.load(&f).unwrap();
        for ((n, a), (_, b)) in src.vars().iter().zip(dst.vars()) {
            let want = values(&a.to_dtype(dt).unwrap().to_dtype(DType::F32).unwrap());
            assert_eq!(values(&b), want, "{n} after {dt} round trip");
        }
    }
    // Strict loading: errors name the file and the parameter, and change nothing.
    let other = store(3);
    other
        .root()
        .pp("a")
        .var("weight", &[4, 6], Init::Const(0.0))
        .unwrap();
    other
        .root()
        .pp("b")
        .var("bias", &[7], Init::Const(0.0))
        .unwrap();
    let err = other.load(&f32_file).unwrap_err().to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("a.weight") && err.contains("[4, 6]"),
        "{err}"
    );
    assert!(
        values(&other.get("b.bias").unwrap())
            .iter()
            .all(|&v| v == 0.0),
        "a failed load changed a parameter"
    );
    let fewer = store(4);
    fewer
        .root()
        .pp("a")
        .var("weight", &[4, 5], Init::Const(0.0))
        .unwrap();
    let err = fewer.load(&f32_file).unwrap_err().to_string();
    assert!(err.contains("b.bias"), "{err}");
    let more = make(5);
    more.root()
        .pp("c")
        .var("w", &[1], Init::Const(0.0))
        .unwrap();
    assert!(more
        .load(&f32_file)
        .unwrap_err()
        .to_string()
        .contains("c.w"));
    let bad = dir.join("bad.safetensors");
    std::fs::write(&bad, b"not a checkpoint").unwrap();
    assert!(dst
        .load(&bad)
        .unwrap_err()
        .to_string()
        .contains("bad.safetensors"));
    assert!(dst
        .load(dir.join("missing.safetensors"))
        .unwrap_err()
        .to_string()
        .contains("cannot read"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Fits y = 3x - 1 with a linear layer: the loss falls; saving and restoring the model
/// and optimizer mid-run continues bit-identically.
#[test]
fn adamw_trains_and_resumes_exactly() {
    let xs: Vec<f64> = (0..16).map(|i| i as f64 / 8.0 - 1.0).collect();
    let x = t32(&xs, &[16, 1], Arrange::Contiguous);
    let y = t32(
        &xs.iter().map(|v| 3.0 * v - 1.0).collect::<Vec<_>>(),
        &[16, 1],
        Arrange::Contiguous,
    );
    let run = |vs: &VarStore, opt: &mut AdamW, steps: u64| -> Vec<f32> {
        let lin = Linear::new(&vs.root(), 1, 1, true).unwrap();
        let mut losses = vec![];
        for _ in 0..steps {
            let loss = lin
                .forward(&x)
                .unwrap()
                .sub(&y)
                .unwrap()
                .sqr()
                .unwrap()
                .mean_all()
                .unwrap();
            loss.backward().unwrap();
            clip_grad_norm(opt.params(), 1.0).unwrap();
            opt.step(0.05).unwrap();
            losses.push(loss.to_scalar::<f32>().unwrap());
        }
        losses
    };
    let cfg = AdamWConfig::default();
    let vs = store(7);
    Linear::new(&vs.root(), 1, 1, true).unwrap();
    let mut opt = AdamW::new(vs.vars(), cfg).unwrap();
    let straight = run(&vs, &mut opt, 200);
    assert!(
        straight[199] < 0.01 * straight[0],
        "loss {} -> {}",
        straight[0],
        straight[199]
    );

    // Stop at 100, save, rebuild from the files, continue to 200.
    let dir = tmpdir("resume");
    let vs = store(7);
    Linear::new(&vs.root(), 1, 1, true).unwrap();
    let mut opt = AdamW::new(vs.vars(), cfg).unwrap();
    let first = run(&vs, &mut opt, 100);
    vs.save(dir.join("model.safetensors"), DType::F32).unwrap();
    kuosan_nn::safetensors::save(
        dir.join("optim.safetensors"),
        &opt.state(),
        DType::F32,
        None,
    )
    .unwrap();
    let vs2 = store(99);
    Linear::new(&vs2.root(), 1, 1, true).unwrap();
    vs2.load(dir.join("model.safetensors")).unwrap();
    let mut opt2 = AdamW::new(vs2.vars(), cfg).unwrap();
    let state = kuosan_nn::safetensors::load(dir.join("optim.safetensors"), &Device::Cpu).unwrap();
    opt2.load_state(&state, opt.step).unwrap();
    let second = run(&vs2, &mut opt2, 100);
    let resumed: Vec<u32> = first.iter().chain(&second).map(|v| v.to_bits()).collect();
    assert_eq!(
        resumed,
        straight.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn clipping_ema_and_schedule_arithmetic() {
    let vs = store(1);
    let p = vs.root().var("p", &[2], Init::Const(0.0)).unwrap();
    p.mul(&t32(&[3.0, 4.0], &[2], Arrange::Contiguous))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let norm = clip_grad_norm(&vs.vars(), 1.0).unwrap();
    assert!((norm.to_scalar::<f32>().unwrap() - 5.0).abs() < 1e-6);
    let g = values(&p.grad().unwrap());
    assert!(
        (g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6,
        "{g:?}"
    );

    let mut ema = Ema::new(&vs.vars(), 0.5).unwrap();
    p.assign(&t32(&[2.0, 2.0], &[2], Arrange::Contiguous))
        .unwrap();
    ema.update(&vs.vars(), 100).unwrap(); // decay 0.5: shadow 0 -> 1
    assert_eq!(values(&ema.tensors()[0].1), [1.0, 1.0]);
    assert!(
        (ema.decay_at(0) - 0.1).abs() < 1e-12,
        "warm-up decay (1 + t) / (10 + t)"
    );

    let s = LrSchedule {
        base: 1e-3,
        warmup: 10,
        total: 110,
        min_ratio: 0.1,
    };
    assert!((s.at(5) - 5e-4).abs() < 1e-12);
    assert!((s.at(10) - 1e-3).abs() < 1e-12);
    assert!((s.at(60) - 1e-3 * (0.1 + 0.9 * 0.5)).abs() < 1e-12);
    assert!((s.at(110) - 1e-4).abs() < 1e-12 && (s.at(500) - 1e-4).abs() < 1e-12);
}

#[test]
fn cross_entropy_matches_f64_and_its_gradient() {
    use kuosan_nn::cross_entropy;
    // Logits with a large spread (one row would overflow a naive exp in f32).
    let (b, k) = (5, 7);
    let mut z = data(b * k, 3, -4.0, 4.0);
    z[3] = 95.0;
    let labels = [0usize, 3, 6, 2, 3];
    let want = |z: &[f64]| {
        (0..b)
            .map(|i| {
                let row = &z[i * k..(i + 1) * k];
                let m = row.iter().cloned().fold(f64::MIN, f64::max);
                let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
                lse - row[labels[i]]
            })
            .sum::<f64>()
            / b as f64
    };
    let x = t64(&z, &[b, k]).with_grad();
    let loss = cross_entropy(&x, &labels).unwrap();
    assert!((values(&loss)[0] - want(&z)).abs() < 1e-12);
    loss.backward().unwrap();
    let g = values(&x.grad().unwrap());
    for i in 0..b * k {
        let h = 1e-6;
        let (mut p, mut m) = (z.clone(), z.clone());
        p[i] += h;
        m[i] -= h;
        let fd = (want(&p) - want(&m)) / (2.0 * h);
        assert!((g[i] - fd).abs() < 1e-7, "d/dz[{i}]: {} vs {fd}", g[i]);
    }
    // f32 agrees, and bad labels are clear errors.
    let l32 = cross_entropy(&t32(&z, &[b, k], Arrange::Contiguous), &labels).unwrap();
    assert!((values(&l32)[0] - want(&z)).abs() < 1e-5);
    let e = cross_entropy(&x, &[0, 1, 2, 3, 7]).unwrap_err().to_string();
    assert!(e.contains("label 7") && e.contains("7 classes"), "{e}");
    assert!(cross_entropy(&x, &[0]).is_err());
}

/// silu(group_norm(x) (1 + scale) + shift) in one fused kernel equals the four ops it
/// replaces, values and the gradients of x, the norm's affine, scale and shift (f64), with
/// scale and shift strided halves of one tensor as the U-Net's time projection gives them.
#[test]
fn modulated_group_norm_silu_matches_its_unfused_ops() {
    let (n, c, h, w) = (3, 6, 4, 5);
    let x = t64(&data(n * c * h * w, 1, -2.0, 2.0), &[n, c, h, w]).with_grad();
    let t = t64(&data(n * 2 * c, 2, -1.0, 1.0), &[n, 2 * c]).with_grad();
    let norm = GroupNorm {
        weight: t64(&data(c, 3, 0.5, 1.5), &[c]).with_grad(),
        bias: t64(&data(c, 4, -0.5, 0.5), &[c]).with_grad(),
        groups: 2,
        eps: 1e-5,
    };
    let dy = t64(&data(n * c * h * w, 5, -1.0, 1.0), &[n, c, h, w]);
    let run = |fused: bool| {
        let (scale, shift) = (t.narrow(1, 0, c).unwrap(), t.narrow(1, c, c).unwrap());
        let y = if fused {
            norm.forward_modulated_silu(&x, &scale, &shift).unwrap()
        } else {
            let col = |v: &kuosan_tensor::Tensor| v.unsqueeze(2).unwrap().unsqueeze(3).unwrap();
            let gain = col(&scale.add_scalar(1.0).unwrap());
            norm.forward(&x)
                .unwrap()
                .mul(&gain)
                .unwrap()
                .add(&col(&shift))
                .unwrap()
                .silu()
                .unwrap()
        };
        y.mul(&dy).unwrap().sum_all().unwrap().backward().unwrap();
        let grads = [&x, &t, &norm.weight, &norm.bias].map(|p| {
            let g = values(&p.grad().unwrap());
            p.zero_grad();
            g
        });
        (values(&y), grads)
    };
    let (y_fused, g_fused) = run(true);
    let (y_ops, g_ops) = run(false);
    assert_close("y", &y_fused, &y_ops, 1e-12, 1e-10);
    for (name, (a, b)) in ["x", "scale/shift", "weight", "bias"]
        .iter()
        .zip(g_fused.iter().zip(&g_ops))
    {
        assert_close(&format!("d{name}"), a, b, 1e-12, 1e-10);
    }
}
