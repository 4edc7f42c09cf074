//! The sgemm section: kuosan's sgemm vs the matrixmultiply crate, square and model shapes.

use kuosan_tensor::cpu::gemm::sgemm;

use crate::report::{Row, Section};
use crate::timing::{interleaved, random_f32};

/// The section's name in reports.
pub const NAME: &str = "sgemm";

/// The same cases for the out-of-process peer (OpenBLAS through numpy): see `peers`.
pub fn peer_cases(quick: bool) -> Vec<serde_json::Value> {
    cases(quick)
        .into_iter()
        .map(|c| {
            serde_json::json!({"section": NAME, "case": c.label, "op": "gemm",
                "m": c.m, "n": c.n, "k": c.k, "at": c.a_transposed, "bt": c.b_transposed})
        })
        .collect()
}

/// Peer named in the report.
pub const PEER: &str = "matrixmultiply";

/// One GEMM shape. `b_transposed`: B is read as a column-major view (stride (1, k)), as
/// attention's Q·Kᵀ and a linear layer's x·Wᵀ do; `a_transposed`: A likewise (stride
/// (1, m)), as a linear layer's weight gradient dYᵀ·X does.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub label: &'static str,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a_transposed: bool,
    pub b_transposed: bool,
}

const fn case(label: &'static str, m: usize, n: usize, k: usize, b_transposed: bool) -> Case {
    Case {
        label,
        m,
        n,
        k,
        a_transposed: false,
        b_transposed,
    }
}

/// A case whose A is a transposed view.
const fn case_at(label: &'static str, m: usize, n: usize, k: usize) -> Case {
    Case {
        a_transposed: true,
        ..case(label, m, n, k, false)
    }
}

/// Square sizes, then the U-Net's shapes: conv3x3 as GEMM (m = out channels, n = pixels,
/// k = 9 · in channels) and attention (Q·Kᵀ with k = head dim, then P·V).
pub fn cases(quick: bool) -> Vec<Case> {
    let mut v = vec![
        case("256³", 256, 256, 256, false),
        case("512³", 512, 512, 512, false),
        case("1024³", 1024, 1024, 1024, false),
    ];
    if !quick {
        v.push(case("2048³", 2048, 2048, 2048, false));
    }
    v.extend([
        case("conv m32 n1024 k288", 32, 1024, 288, false),
        case("conv m64 n1024 k576", 64, 1024, 576, false),
        case("conv m128 n256 k1152", 128, 256, 1152, false),
        case("attn QKᵀ 256² k32", 256, 256, 32, true),
        case("attn QKᵀ 1024² k64", 1024, 1024, 64, true),
        case("attn PV m1024 n64 k1024", 1024, 64, 1024, false),
        case("attn PV m1024 n32 k1024", 1024, 32, 1024, false),
        // The `small` U-Net's 8x8 transformer at batch 64 (4096 tokens of 64 channels):
        // a linear layer's x·Wᵀ and its weight gradients (dW = dYᵀ X; the feed-forward's
        // output layer, Xᵀ dY = dWᵀ).
        case("linear xWᵀ m4096 n64 k64", 4096, 64, 64, true),
        case_at("linear dYᵀX m64 n64 k4096", 64, 64, 4096),
        case_at("linear XᵀdY m256 n64 k4096", 256, 64, 4096),
    ]);
    v
}

/// Runs every case on the current rayon pool (`threads` wide; matrixmultiply's own thread
/// count must already be set to match through MATMUL_NUM_THREADS).
pub fn run(threads: usize, reps: usize, quick: bool, peak_gflops: f64) -> Section {
    let rows = cases(quick)
        .into_iter()
        .map(|c| {
            eprintln!("  sgemm {} on {threads} thread(s)", c.label);
            row(c, threads, reps, peak_gflops)
        })
        .collect();
    Section {
        unit: "GFLOP/s".into(),
        ext_peer: None,
        name: NAME.into(),
        peer: PEER.into(),
        rows,
    }
}

fn row(c: Case, threads: usize, reps: usize, peak_gflops: f64) -> Row {
    let (m, n, k) = (c.m, c.n, c.k);
    let a = random_f32(m * k, 1);
    let b = random_f32(k * n, 2);
    let (rsa, csa) = if c.a_transposed { (1, m) } else { (k, 1) };
    let (rsb, csb) = if c.b_transposed { (1, k) } else { (n, 1) };
    let mut c_ours = vec![0.0f32; m * n];
    let mut c_peer = vec![0.0f32; m * n];

    let mut ours = || {
        sgemm(
            m,
            n,
            k,
            &a,
            rsa,
            csa,
            &b,
            rsb,
            csb,
            &mut c_ours,
            n,
            false,
            true,
        )
    };
    let mut peer = || {
        // SAFETY: a is m×k with strides (rsa, csa), b is k×n with strides (rsb, csb), c is
        // m×n row-major; all three slices are exactly that long, so every access is in
        // bounds.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                a.as_ptr(),
                rsa as isize,
                csa as isize,
                b.as_ptr(),
                rsb as isize,
                csb as isize,
                0.0,
                c_peer.as_mut_ptr(),
                n as isize,
                1,
            )
        }
    };
    let (t_ours, t_peer) = interleaved(&mut ours, &mut peer, reps);
    check_close(&c_ours, &c_peer, k, c.label);

    let flop = 2.0 * (m * n * k) as f64;
    let (g_ours, g_peer) = (flop / t_ours / 1e9, flop / t_peer / 1e9);
    Row {
        case: c.label.into(),
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

/// A benchmark of a wrong answer is worthless: both results must agree to f32 rounding.
fn check_close(ours: &[f32], peer: &[f32], k: usize, label: &str) {
    let tol = 4.0 * k as f32 * f32::EPSILON * k as f32;
    let worst = ours
        .iter()
        .zip(peer)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= tol,
        "sgemm {label}: ours and {PEER} differ by {worst} (> {tol})"
    );
}
