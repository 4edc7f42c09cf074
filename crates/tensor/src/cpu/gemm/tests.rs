//! Tests: every kernel against an f64 triple loop over awkward shapes and layouts, plus
//! bitwise determinism across thread counts.

use super::kernel::Blocking;
use super::*;

/// Per-kernel tile and blocking sizes, so shapes can straddle each boundary.
struct Dims {
    mr: usize,
    nr: usize,
    bl: Blocking,
}

fn dims(kernel: Kernel, double: bool) -> Dims {
    let (tile, bl) = match (kernel, double) {
        #[cfg(target_arch = "x86_64")]
        (Kernel::Avx512, false) => (avx512::F32_TILE, avx512::F32_BLOCKING),
        #[cfg(target_arch = "x86_64")]
        (Kernel::Avx512, true) => (avx512::F64_TILE, avx512::F64_BLOCKING),
        #[cfg(target_arch = "x86_64")]
        (Kernel::Avx2, false) => (avx2::F32_TILE, avx2::F32_BLOCKING),
        #[cfg(target_arch = "x86_64")]
        (Kernel::Avx2, true) => (avx2::F64_TILE, avx2::F64_BLOCKING),
        (_, false) => (generic::F32_TILE, generic::BLOCKING),
        (_, true) => (generic::F64_TILE, generic::BLOCKING),
    };
    Dims {
        mr: tile.0,
        nr: tile.1,
        bl,
    }
}

/// Deterministic pseudo-random values in [-1, 1) (xorshift64*), no dependency needed.
fn random(len: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let x = s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
            x as f64 / (1u64 << 52) as f64 - 1.0
        })
        .collect()
}

/// How A or B is laid out: row-major, transposed (column-major), a broadcast row or column
/// (one stride 0), or padded strides.
#[derive(Clone, Copy, Debug)]
enum Layout {
    RowMajor,
    ColMajor,
    BroadcastRows,
    BroadcastCols,
    Padded,
}

impl Layout {
    /// (row stride, column stride, slice length) for a rows×cols operand.
    fn strides(self, rows: usize, cols: usize) -> (usize, usize, usize) {
        match self {
            Layout::RowMajor => (cols, 1, rows * cols),
            Layout::ColMajor => (1, rows, rows * cols),
            Layout::BroadcastRows => (0, 1, cols),
            Layout::BroadcastCols => (1, 0, rows),
            Layout::Padded => (
                2 * cols + 3,
                2,
                (rows - 1) * (2 * cols + 3) + 2 * (cols - 1) + 1,
            ),
        }
    }
}

const LAYOUTS: [Layout; 5] = [
    Layout::RowMajor,
    Layout::ColMajor,
    Layout::BroadcastRows,
    Layout::BroadcastCols,
    Layout::Padded,
];

/// A GEMM under test: (m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, accumulate).
type GemmFn<'a, T> =
    dyn Fn(usize, usize, usize, &[T], usize, usize, &[T], usize, usize, &mut [T], usize, bool) + 'a;

/// One checked case: fills operands, runs `gemm` (f32 or f64 through the closure), compares
/// against an f64 triple loop with tolerance (Σ|a||b| + |c0|) · (k + 2) · eps.
#[allow(clippy::too_many_arguments)]
fn check<T: Copy + Into<f64>>(
    conv: fn(f64) -> T,
    eps: f64,
    gemm: &GemmFn<'_, T>,
    (m, n, k): (usize, usize, usize),
    (la, lb): (Layout, Layout),
    accumulate: bool,
    seed: u64,
) {
    let (rsa, csa, len_a) = la.strides(m, k);
    let (rsb, csb, len_b) = lb.strides(k, n);
    let ldc = n + 3;
    let a: Vec<T> = random(len_a, seed).into_iter().map(conv).collect();
    let b: Vec<T> = random(len_b, seed + 1).into_iter().map(conv).collect();
    let c0: Vec<T> = random(m * ldc, seed + 2).into_iter().map(conv).collect();
    let mut c = c0.clone();
    gemm(m, n, k, &a, rsa, csa, &b, rsb, csb, &mut c, ldc, accumulate);
    for i in 0..m {
        for j in 0..ldc {
            let got: f64 = c[i * ldc + j].into();
            let old: f64 = c0[i * ldc + j].into();
            if j >= n {
                assert_eq!(
                    got.to_bits(),
                    old.to_bits(),
                    "padding column written at ({i},{j})"
                );
                continue;
            }
            let (mut want, mut mag) = if accumulate {
                (old, old.abs())
            } else {
                (0.0, 0.0)
            };
            for p in 0..k {
                let x: f64 = a[i * rsa + p * csa].into();
                let y: f64 = b[p * rsb + j * csb].into();
                want += x * y;
                mag += (x * y).abs();
            }
            let tol = mag * (k as f64 + 2.0) * eps + f64::MIN_POSITIVE;
            assert!(
                (got - want).abs() <= tol,
                "({i},{j}) of {m}×{n}×{k} {la:?}·{lb:?} acc={accumulate}: got {got}, want {want}"
            );
        }
    }
}

/// Shapes that straddle every boundary of a kernel: 1, primes, one past the tile and each
/// block size.
fn shapes(d: &Dims) -> Vec<(usize, usize, usize)> {
    let mut s = vec![
        (1, 1, 1),
        (1, 1, 7),
        (2, 3, 1),
        (d.mr, d.nr, 5),
        (d.mr + 1, d.nr + 1, 13),
        (d.mr - 1, d.nr - 1, 2),
        (17, 31, 37),
        (2 * d.mr + 1, 3 * d.nr + 1, 29),
        (2 * d.mr, 3 * d.nr / 4, 19),
        (7, 11, d.bl.kc + 1),
        (3, d.nr + 5, 2 * d.bl.kc + 3),
        (2 * d.mr + 3, d.bl.nc + 1, 9),
        (d.bl.mc + 1, 3, 5),
        // Deep enough that the packed-A budget, not mc, cuts M into blocks.
        (700, 5, 3100),
    ];
    s.retain(|&(m, n, k)| m > 0 && n > 0 && k > 0);
    s
}

fn check_kernel_f32(kernel: Kernel, parallel: bool) {
    let d = dims(kernel, false);
    let gemm = |m, n, k, a: &[f32], rsa, csa, b: &[f32], rsb, csb, c: &mut [f32], ldc, acc| {
        sgemm_with(
            kernel, m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, acc, parallel,
        )
    };
    for (s, &shape) in shapes(&d).iter().enumerate() {
        for (l, (&la, &lb)) in LAYOUTS.iter().zip(LAYOUTS.iter().rev()).enumerate() {
            for accumulate in [false, true] {
                let seed = (s * 100 + l * 10) as u64;
                check(
                    |x| x as f32,
                    f32::EPSILON as f64,
                    &gemm,
                    shape,
                    (la, lb),
                    accumulate,
                    seed,
                );
            }
        }
    }
}

fn check_kernel_f64(kernel: Kernel, parallel: bool) {
    let d = dims(kernel, true);
    let gemm = |m, n, k, a: &[f64], rsa, csa, b: &[f64], rsb, csb, c: &mut [f64], ldc, acc| {
        dgemm_with(
            kernel, m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, acc, parallel,
        )
    };
    for (s, &shape) in shapes(&d).iter().enumerate() {
        for (l, (&la, &lb)) in LAYOUTS.iter().zip(LAYOUTS.iter().rev()).enumerate() {
            for accumulate in [false, true] {
                let seed = (s * 100 + l * 10 + 5) as u64;
                check(
                    |x| x,
                    f64::EPSILON,
                    &gemm,
                    shape,
                    (la, lb),
                    accumulate,
                    seed,
                );
            }
        }
    }
}

/// Runs `f` for a kernel, or reports that this CPU cannot (the generic kernel always runs).
fn for_kernel(kernel: Kernel, f: impl Fn(Kernel)) {
    if kernel.is_supported() {
        f(kernel);
    } else {
        eprintln!("skipping {}: not supported by this CPU", kernel.name());
    }
}

#[test]
fn avx512_f32_matches_reference() {
    for_kernel(Kernel::Avx512, |k| check_kernel_f32(k, true));
}

#[test]
fn avx512_f64_matches_reference() {
    for_kernel(Kernel::Avx512, |k| check_kernel_f64(k, true));
}

#[test]
fn avx2_f32_matches_reference() {
    for_kernel(Kernel::Avx2, |k| check_kernel_f32(k, true));
}

#[test]
fn avx2_f64_matches_reference() {
    for_kernel(Kernel::Avx2, |k| check_kernel_f64(k, true));
}

#[test]
fn generic_f32_matches_reference() {
    check_kernel_f32(Kernel::Generic, false);
}

#[test]
fn generic_f64_matches_reference() {
    check_kernel_f64(Kernel::Generic, true);
}

#[test]
fn all_layout_pairs_on_selected_kernel() {
    // Every (A layout, B layout) pair once, through the public entry points.
    let gemm = |m, n, k, a: &[f32], rsa, csa, b: &[f32], rsb, csb, c: &mut [f32], ldc, acc| {
        sgemm(m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, acc, true)
    };
    for (i, &la) in LAYOUTS.iter().enumerate() {
        for (j, &lb) in LAYOUTS.iter().enumerate() {
            let seed = (1000 + i * 10 + j) as u64;
            check(
                |x| x as f32,
                f32::EPSILON as f64,
                &gemm,
                (37, 131, 53),
                (la, lb),
                j % 2 == 0,
                seed,
            );
        }
    }
}

#[test]
fn k_zero_clears_or_keeps_c() {
    let mut c = vec![5.0f32; 3 * 4];
    sgemm(3, 2, 0, &[], 0, 0, &[], 0, 0, &mut c, 4, true, true);
    assert!(c.iter().all(|&x| x == 5.0));
    sgemm(3, 2, 0, &[], 0, 0, &[], 0, 0, &mut c, 4, false, true);
    for (i, &x) in c.iter().enumerate() {
        assert_eq!(x, if i % 4 < 2 { 0.0 } else { 5.0 });
    }
    let mut d = vec![5.0f64; 4];
    dgemm(0, 4, 3, &[], 0, 0, &[0.0; 12], 4, 1, &mut d, 4, false, true);
    dgemm(2, 0, 3, &[0.0; 6], 3, 1, &[], 0, 1, &mut d, 0, false, true);
    assert!(d.iter().all(|&x| x == 5.0));
}

/// A read in place as rows, in place as columns (a transposed view) or packed (a column
/// stride past `A_COLS_BYTES`) gives the same bits: one multiply-add chain per element.
#[test]
fn a_rows_columns_and_packed_agree_bitwise() {
    for (m, n, k) in [(37, 131, 53), (6, 64, 300), (13, 70, 5), (600, 9, 17)] {
        let a: Vec<f32> = random(m * k, 3).iter().map(|&x| x as f32).collect();
        let b: Vec<f32> = random(k * n, 4).iter().map(|&x| x as f32).collect();
        // The same A column-major, and column-major with a long column stride.
        let at: Vec<f32> = (0..k * m).map(|q| a[(q % m) * k + q / m]).collect();
        let wide = 1024;
        let mut aw = vec![0f32; k * wide];
        (0..k).for_each(|p| (0..m).for_each(|i| aw[p * wide + i] = a[i * k + p]));
        let run = |a: &[f32], rs: usize, cs: usize| {
            let mut c = vec![0f32; m * n];
            sgemm(m, n, k, a, rs, cs, &b, n, 1, &mut c, n, false, true);
            c.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        };
        let rows = run(&a, k, 1);
        assert_eq!(run(&at, 1, m), rows, "{m}x{n}x{k} columns");
        assert_eq!(run(&aw, 1, wide), rows, "{m}x{n}x{k} packed");
    }
}

/// A row-major B exactly NR wide is read in place (it is its own packed panel); the
/// same B with longer rows is packed: the same bits, over several K blocks, with and
/// without accumulation, on one thread and several.
#[test]
fn b_read_in_place_matches_packed_bitwise() {
    let d = dims(Kernel::selected(), false);
    let n = d.nr;
    for (m, k) in [(37, 53), (64, 3 * d.bl.kc + 7), (5, 1)] {
        let a: Vec<f32> = random(m * k, 5).iter().map(|&x| x as f32).collect();
        let b: Vec<f32> = random(k * n, 6).iter().map(|&x| x as f32).collect();
        let ld = n + 3;
        let mut wide = vec![0f32; k * ld];
        (0..k).for_each(|p| wide[p * ld..p * ld + n].copy_from_slice(&b[p * n..(p + 1) * n]));
        let c0: Vec<f32> = random(m * n, 7).iter().map(|&x| x as f32).collect();
        for (accumulate, parallel) in [(false, true), (true, true), (false, false)] {
            let run = |b: &[f32], rs: usize| {
                let mut c = c0.clone();
                sgemm(m, n, k, &a, k, 1, b, rs, 1, &mut c, n, accumulate, parallel);
                c.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            };
            assert_eq!(
                run(&b, n),
                run(&wide, ld),
                "{m}x{n}x{k}, accumulate {accumulate}"
            );
        }
    }
}

/// The write-only entry point never reads C (it starts as NaN here, which any read would
/// carry into the result) and gives the bits of the ordinary call, k == 0 included.
#[test]
fn write_into_fresh_c_matches_sgemm_and_reads_nothing() {
    let d = dims(Kernel::selected(), false);
    let mut all = shapes(&d);
    all.push((3, 5, 0));
    for (m, n, k) in all {
        let a: Vec<f32> = random(m * k, 7).iter().map(|&x| x as f32).collect();
        // B transposed, as attention's K^T is.
        let b: Vec<f32> = random(k * n, 8).iter().map(|&x| x as f32).collect();
        let mut want = vec![0f32; m * n];
        sgemm(m, n, k, &a, k, 1, &b, 1, k, &mut want, n, false, true);
        let mut c = vec![std::mem::MaybeUninit::new(f32::NAN); m * n];
        gemm_write(m, n, k, (&a, k, 1), (&b, 1, k), &mut c, true);
        // SAFETY: MaybeUninit::new initialised every element.
        let got: Vec<u32> = c
            .iter()
            .map(|x| unsafe { x.assume_init() }.to_bits())
            .collect();
        let want: Vec<u32> = want.iter().map(|x| x.to_bits()).collect();
        assert_eq!(got, want, "{m}x{n}x{k}");
    }
}

/// Bits of C for one call of `sgemm_with` inside a rayon pool of `threads` threads.
#[allow(clippy::too_many_arguments)]
fn bits_in_pool(
    kernel: Kernel,
    threads: usize,
    parallel: bool,
    (m, n, k): (usize, usize, usize),
    (rsa, csa): (usize, usize),
    (rsb, csb): (usize, usize),
    a: &[f32],
    b: &[f32],
    accumulate: bool,
) -> Vec<u32> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let ldc = n + 1;
    let mut c: Vec<f32> = random(m * ldc, 99).into_iter().map(|x| x as f32).collect();
    pool.install(|| {
        sgemm_with(
            kernel, m, n, k, a, rsa, csa, b, rsb, csb, &mut c, ldc, accumulate, parallel,
        )
    });
    c.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn bitwise_identical_for_any_thread_count() {
    // Shapes that make the driver split N only, M and N, or M only, with several K blocks.
    let shapes = [
        (200, 300, 900),
        (40, 700, 300),
        (500, 20, 800),
        (97, 1031, 131),
        (256, 256, 64),
        (700, 70, 3100),
    ];
    for kernel in Kernel::available() {
        for &(m, n, k) in &shapes {
            // Row-major A and transposed B, so packing fast paths on both sides take part.
            let a: Vec<f32> = random(m * k, 7).into_iter().map(|x| x as f32).collect();
            let b: Vec<f32> = random(k * n, 8).into_iter().map(|x| x as f32).collect();
            for accumulate in [false, true] {
                let run = |threads, parallel| {
                    bits_in_pool(
                        kernel,
                        threads,
                        parallel,
                        (m, n, k),
                        (k, 1),
                        (1, k),
                        &a,
                        &b,
                        accumulate,
                    )
                };
                let reference = run(1, false);
                for (threads, parallel) in [(1, true), (2, true), (3, true), (2, false), (3, false)]
                {
                    assert!(
                        run(threads, parallel) == reference,
                        "{} {m}×{n}×{k}: {threads} threads (parallel={parallel}) differs",
                        kernel.name()
                    );
                }
            }
        }
    }
}

#[test]
fn kernel_names_round_trip() {
    for k in Kernel::ALL {
        assert_eq!(Kernel::from_name(k.name()), Some(k));
    }
    assert!(Kernel::Generic.is_supported());
    assert!(Kernel::selected().is_supported());
}

#[test]
fn sub_block_is_bitwise_equal_to_the_same_block_of_a_larger_product() {
    // The rows 5.. and columns 70.. of a 50×150 product, computed on their own, put every
    // element at a different tile position (interior tiles become edge tiles and vice versa);
    // with the same k the bits must not change.
    let (m, n, k) = (50, 150, 400);
    let (i0, j0) = (5, 70);
    let a: Vec<f32> = random(m * k, 11).into_iter().map(|x| x as f32).collect();
    let b: Vec<f32> = random(k * n, 12).into_iter().map(|x| x as f32).collect();
    for kernel in Kernel::available() {
        for (rsa, csa) in [(k, 1), (1, m)] {
            let a = if rsa == 1 {
                // The same matrix stored column-major, so the packed-A path is covered too.
                (0..m * k).map(|x| a[(x % m) * k + x / m]).collect()
            } else {
                a.clone()
            };
            let mut full = vec![0.0f32; m * n];
            sgemm_with(
                kernel, m, n, k, &a, rsa, csa, &b, n, 1, &mut full, n, false, false,
            );
            let (ms, ns) = (m - i0, n - j0);
            let mut sub = vec![0.0f32; ms * ns];
            let a_sub = &a[i0 * rsa..];
            sgemm_with(
                kernel,
                ms,
                ns,
                k,
                a_sub,
                rsa,
                csa,
                &b[j0..],
                n,
                1,
                &mut sub,
                ns,
                false,
                false,
            );
            for i in 0..ms {
                for j in 0..ns {
                    assert_eq!(
                        sub[i * ns + j].to_bits(),
                        full[(i0 + i) * n + j0 + j].to_bits(),
                        "{} ({i},{j}) strides ({rsa},{csa})",
                        kernel.name()
                    );
                }
            }
        }
    }
}
