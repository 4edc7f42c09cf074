//! The conv2d section: 3x3 convolutions at the U-Net's shapes (batch 64, 32/64 channels,
//! 32x32 and 16x16), forward and both backward passes, each beside our own sgemm on the
//! equivalent single GEMM, so the ratio is what im2col/col2im and per-image blocking cost.

use kuosan_tensor::cpu::gemm::sgemm;
use kuosan_tensor::ops::{conv2d_backward_input, conv2d_backward_weight, ConvShape};
use kuosan_tensor::{Device, Tensor};

use crate::report::{Row, Section};
use crate::timing::{interleaved, random_f32};

/// Peer named in the report.
pub const PEER: &str = "sgemm (equivalent GEMM)";

/// (batch, channels in, channels out, height = width).
fn shapes(quick: bool) -> Vec<(usize, usize, usize, usize)> {
    let mut v = vec![(64, 32, 32, 32), (64, 64, 64, 16)];
    if !quick {
        v.extend([(64, 64, 64, 32), (64, 32, 32, 16)]);
    }
    v
}

#[derive(Clone, Copy)]
enum Pass {
    Forward,
    BackwardInput,
    BackwardWeight,
}

const PASSES: [Pass; 3] = [Pass::Forward, Pass::BackwardInput, Pass::BackwardWeight];

/// The section's name in reports.
pub const NAME: &str = "conv2d 3x3";

fn label(pass: Pass, (n, c_in, c_out, hw): (usize, usize, usize, usize)) -> String {
    let name = match pass {
        Pass::Forward => "fwd",
        Pass::BackwardInput => "bwd-in",
        Pass::BackwardWeight => "bwd-w",
    };
    format!("{name} {n}x{c_in}->{c_out} {hw}²")
}

/// The same cases for the out-of-process peer (PyTorch): see `peers`.
pub fn peer_cases(quick: bool) -> Vec<serde_json::Value> {
    let mut v = vec![];
    for shape in shapes(quick) {
        for pass in PASSES {
            let op = match pass {
                Pass::Forward => "conv_fwd",
                Pass::BackwardInput => "conv_bwd_in",
                Pass::BackwardWeight => "conv_bwd_w",
            };
            let (n, cin, cout, hw) = shape;
            v.push(
                serde_json::json!({"section": NAME, "case": label(pass, shape), "op": op,
                "n": n, "cin": cin, "cout": cout, "hw": hw}),
            );
        }
    }
    v
}

/// Runs every shape and pass on the current rayon pool.
pub fn run(threads: usize, reps: usize, quick: bool, peak_gflops: f64) -> Section {
    let mut rows = Vec::new();
    for (n, c_in, c_out, hw) in shapes(quick) {
        let s = ConvShape {
            n,
            c_in,
            h: hw,
            w: hw,
            c_out,
            kh: 3,
            kw: 3,
            stride: (1, 1),
            padding: (1, 1),
        };
        for pass in PASSES {
            let label = label(pass, (n, c_in, c_out, hw));
            eprintln!("  conv2d {label} on {threads} thread(s)");
            rows.push(row(&label, &s, pass, threads, reps, peak_gflops));
        }
    }
    Section {
        unit: "GFLOP/s".into(),
        ext_peer: None,
        name: NAME.into(),
        peer: PEER.into(),
        rows,
    }
}

fn tensor(shape: [usize; 4], seed: u64) -> Tensor {
    Tensor::from_vec(
        random_f32(shape.iter().product(), seed),
        shape,
        &Device::Cpu,
    )
    .expect("shape matches data")
}

fn row(
    label: &str,
    s: &ConvShape,
    pass: Pass,
    threads: usize,
    reps: usize,
    peak_gflops: f64,
) -> Row {
    let (x, w, dy) = (
        tensor(s.x_dims(), 1),
        tensor(s.w_dims(), 2),
        tensor(s.y_dims(), 3),
    );
    let mut ours = || {
        let out = match pass {
            Pass::Forward => x.conv2d(&w, None, s.stride, s.padding),
            Pass::BackwardInput => conv2d_backward_input(&dy, &w, s),
            Pass::BackwardWeight => conv2d_backward_weight(&x, &dy, s),
        };
        std::hint::black_box(out.expect("benchmark shapes are valid"));
    };
    // The same multiply-adds as one GEMM: pixels p = N*HO*WO, taps k = Cin*KH*KW.
    let (p, taps) = (s.n * s.h_out() * s.w_out(), s.c_in * s.kh * s.kw);
    let (m, n, k) = match pass {
        Pass::Forward => (s.c_out, p, taps),
        Pass::BackwardInput => (taps, p, s.c_out),
        Pass::BackwardWeight => (s.c_out, taps, p),
    };
    let (a, b) = (random_f32(m * k, 4), random_f32(k * n, 5));
    let mut c = vec![0f32; m * n];
    let mut peer = || sgemm(m, n, k, &a, k, 1, &b, n, 1, &mut c, n, false, true);
    let (t_ours, t_peer) = interleaved(&mut ours, &mut peer, reps);
    let flop = s.flops();
    let (g_ours, g_peer) = (flop / t_ours / 1e9, flop / t_peer / 1e9);
    Row {
        case: label.into(),
        threads,
        flop,
        ours_gflops: g_ours,
        peer_gflops: g_peer,
        ratio: g_ours / g_peer,
        frac_peak: g_ours / peak_gflops,
        reps,
        ext: None,
        ext_ratio: None,
    }
}
