//! The memory-bound section: GroupNorm (+ SiLU), SiLU, add and AdamW at the U-Net's
//! activation size, in GB/s of the least traffic each must move (every input read once,
//! every output written once), beside a plain copy of the same bytes: the ratio is the
//! fraction of the machine's copy bandwidth the kernel reaches.

use kuosan_tensor::ops::{adamw_step, AdamWStep};
use kuosan_tensor::{Device, Tensor};

use crate::report::{Row, Section};
use crate::timing::{interleaved, random_f32};

/// Peer named in the report.
pub const PEER: &str = "copy (same bytes)";

/// The U-Net's largest activation: batch 64, 32 channels, 32x32 (8 MiB of f32).
const ACT: [usize; 4] = [64, 32, 32, 32];
/// Parameters of the `small` config (text encoder + U-Net): what AdamW updates per step.
const PARAMS: usize = 1_558_307;

/// (peer op name, label, streams of ACT-sized f32 traffic: inputs read + outputs written).
const KERNELS: [(&str, &str, usize); 4] = [
    ("gn_silu", "group_norm+silu", 2),
    ("gn", "group_norm", 2),
    ("silu", "silu", 2),
    ("add", "add", 3),
];
/// AdamW reads p, g, m, v and writes p, m, v.
const ADAMW_STREAMS: usize = 7;
const ADAMW_LABEL: &str = "adamw 1558307 params";

fn label(name: &str) -> String {
    format!("{name} 64x32x32²")
}

/// The same cases for the out-of-process peer (PyTorch): see `peers`.
pub fn peer_cases(section: &str) -> Vec<serde_json::Value> {
    let elems: usize = ACT.iter().product();
    let mut v: Vec<serde_json::Value> = KERNELS
        .iter()
        .map(|&(op, name, streams)| {
            serde_json::json!({"section": section, "case": label(name), "op": op,
                "shape": ACT, "bytes": streams * elems * 4})
        })
        .collect();
    v.push(
        serde_json::json!({"section": section, "case": ADAMW_LABEL, "op": "adamw",
        "shape": [PARAMS], "bytes": ADAMW_STREAMS * PARAMS * 4}),
    );
    v
}

/// The section's name in reports.
pub const NAME: &str = "memory-bound";

fn tensor(dims: &[usize], seed: u64) -> Tensor {
    Tensor::from_vec(random_f32(dims.iter().product(), seed), dims, &Device::Cpu)
        .expect("shape matches data")
}

/// Runs every case on the current rayon pool.
pub fn run(threads: usize, reps: usize) -> Section {
    let elems: usize = ACT.iter().product();
    let x = tensor(&ACT, 1);
    let y = tensor(&ACT, 2);
    let (w, b) = (tensor(&[ACT[1]], 3), tensor(&[ACT[1]], 4));
    let (p, g, m, v) = (
        tensor(&[PARAMS], 5),
        tensor(&[PARAMS], 6),
        tensor(&[PARAMS], 7),
        tensor(&[PARAMS], 8).abs().expect("valid"),
    );
    let h = AdamWStep {
        lr: 1e-6,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        step: 10,
    };
    let f32s = std::mem::size_of::<f32>();
    type Case<'a> = (String, usize, Box<dyn FnMut() + 'a>);
    let mut cases: Vec<Case> = KERNELS
        .iter()
        .map(|&(op, name, streams)| {
            let f: Box<dyn FnMut()> = match op {
                "gn_silu" => Box::new(|| {
                    let r = x.group_norm_silu(8, Some(&w), Some(&b), 1e-5);
                    std::hint::black_box(r.expect("valid shapes"));
                }),
                "gn" => Box::new(|| {
                    let r = x.group_norm(8, Some(&w), Some(&b), 1e-5);
                    std::hint::black_box(r.expect("valid shapes"));
                }),
                "silu" => Box::new(|| {
                    std::hint::black_box(x.silu().expect("valid"));
                }),
                _ => Box::new(|| {
                    std::hint::black_box(x.add(&y).expect("same shapes"));
                }),
            };
            (label(name), streams * elems * f32s, f)
        })
        .collect();
    cases.push((
        ADAMW_LABEL.into(),
        ADAMW_STREAMS * PARAMS * f32s,
        Box::new(|| adamw_step(&p, &g, &m, &v, &h).expect("valid")),
    ));
    let rows = cases
        .into_iter()
        .map(|(label, bytes, mut ours)| {
            eprintln!("  {label} on {threads} thread(s)");
            // The peer moves the same bytes: half read, half written.
            let src = random_f32(bytes / f32s / 2, 9);
            let mut dst = vec![0f32; src.len()];
            let mut peer = || {
                dst.copy_from_slice(&src);
                std::hint::black_box(&mut dst);
            };
            let (t_ours, t_peer) = interleaved(&mut ours, &mut peer, reps);
            let (g_ours, g_peer) = (bytes as f64 / t_ours / 1e9, bytes as f64 / t_peer / 1e9);
            Row {
                case: label,
                threads,
                flop: bytes as f64,
                ours_gflops: g_ours,
                peer_gflops: g_peer,
                ratio: g_ours / g_peer,
                frac_peak: g_ours / g_peer,
                reps,
                ext: None,
                ext_ratio: None,
            }
        })
        .collect();
    Section {
        name: NAME.into(),
        unit: "GB/s".into(),
        peer: PEER.into(),
        ext_peer: None,
        rows,
    }
}
