//! AVX2+FMA micro-kernels: f32 6×16 and f64 6×8 register tiles (12 ymm accumulators).

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

use super::driver::{gemm, Problem};
use super::kernel::{by_rows, edge_via_tile, ALayout, Blocking, MicroKernel, A_COLS, A_ROWS};

/// f32 register tile (rows, columns): 6 rows × 2 ymm, the classic Haswell shape (BLIS's
/// haswell 6×16 sgemm kernel). 12 accumulators + 2 B vectors + 1 broadcast = 15 of the 16 ymm
/// registers; 12 independent chains cover the FMA latency (4 cycles × 2 pipes).
pub(crate) const F32_TILE: (usize, usize) = (6, 16);
/// f64 register tile (rows, columns): the same 6 × 2 ymm with 4 lanes.
pub(crate) const F64_TILE: (usize, usize) = (6, 8);
/// f32 blocking, as for AVX-512 and for the same reasons: A micro-panel 6 × 384 × 4 B = 9 KiB
/// in L1, one task's B chunk 384 × 320 × 4 B = 480 KiB in a 1 MiB L2 (CPUs with a 256 or
/// 512 KiB L2 lose a little to L3 traffic; tuning per CPU model is not worth its complexity).
pub(crate) const F32_BLOCKING: Blocking = Blocking {
    kc: 384,
    nc: 320,
    mc: 2400,
};
/// f64 blocking: about the same bytes as f32.
pub(crate) const F64_BLOCKING: Blocking = Blocking {
    kc: 256,
    nc: 256,
    mc: 1200,
};
const F32_MR: usize = F32_TILE.0;
const F32_NR: usize = F32_TILE.1;
const F64_MR: usize = F64_TILE.0;
const F64_NR: usize = F64_TILE.1;

pub(crate) struct F32Kernel;

impl MicroKernel<f32, F32_MR, F32_NR> for F32Kernel {
    const BLOCKING: Blocking = F32_BLOCKING;

    unsafe fn run(
        k: usize,
        a: *const f32,
        al: ALayout,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        acc: bool,
    ) {
        // SAFETY: forwarded contract of `MicroKernel::run`, which includes AVX2+FMA support.
        unsafe {
            by_rows!(
                F32_MR,
                al,
                tile_f32,
                { F32_NR / 8 },
                F32_MR,
                (k, a, b, c, ldc, acc),
                []
            )
        }
    }

    unsafe fn run_edge(
        k: usize,
        a: *const f32,
        al: ALayout,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        acc: bool,
        rows: usize,
        cols: usize,
    ) {
        // SAFETY: forwarded contract of `MicroKernel::run_edge`. With every column valid, the
        // row-specialised kernel touches only `rows` rows of C; otherwise a stack tile is used.
        unsafe {
            if cols == F32_NR {
                by_rows!(
                    rows,
                    al,
                    tile_f32,
                    { F32_NR / 8 },
                    F32_MR,
                    (k, a, b, c, ldc, acc),
                    [1, 2, 3, 4, 5]
                )
            } else {
                edge_via_tile::<f32, F32_MR, F32_NR, Self>(k, a, al, b, c, ldc, acc, rows, cols)
            }
        }
    }
}

pub(crate) struct F64Kernel;

impl MicroKernel<f64, F64_MR, F64_NR> for F64Kernel {
    const BLOCKING: Blocking = F64_BLOCKING;

    unsafe fn run(
        k: usize,
        a: *const f64,
        al: ALayout,
        b: *const f64,
        c: *mut f64,
        ldc: usize,
        acc: bool,
    ) {
        // SAFETY: forwarded contract of `MicroKernel::run`, which includes AVX2+FMA support.
        unsafe {
            by_rows!(
                F64_MR,
                al,
                tile_f64,
                { F64_NR / 4 },
                F64_MR,
                (k, a, b, c, ldc, acc),
                []
            )
        }
    }

    unsafe fn run_edge(
        k: usize,
        a: *const f64,
        al: ALayout,
        b: *const f64,
        c: *mut f64,
        ldc: usize,
        acc: bool,
        rows: usize,
        cols: usize,
    ) {
        // SAFETY: forwarded contract of `MicroKernel::run_edge`. With every column valid, the
        // row-specialised kernel touches only `rows` rows of C; otherwise a stack tile is used.
        unsafe {
            if cols == F64_NR {
                by_rows!(
                    rows,
                    al,
                    tile_f64,
                    { F64_NR / 4 },
                    F64_MR,
                    (k, a, b, c, ldc, acc),
                    [1, 2, 3, 4, 5]
                )
            } else {
                edge_via_tile::<f64, F64_MR, F64_NR, Self>(k, a, al, b, c, ldc, acc, rows, cols)
            }
        }
    }
}

pub(crate) fn sgemm(p: &Problem<'_, f32>, c: &mut [MaybeUninit<f32>], parallel: bool) {
    gemm::<f32, F32_MR, F32_NR, F32Kernel>(p, c, parallel);
}

pub(crate) fn dgemm(p: &Problem<'_, f64>, c: &mut [MaybeUninit<f64>], parallel: bool) {
    gemm::<f64, F64_MR, F64_NR, F64Kernel>(p, c, parallel);
}

/// Generates an R-row × NV-vector kernel body for one element type, A packed with stride
/// AS ≥ R or read in place (`MODE`, stride `a_rs`); see avx512.rs.
macro_rules! tile_kernel {
    ($name:ident, $t:ty, $lanes:expr, $zero:ident, $load:ident, $set1:ident, $fma:ident, $add:ident, $store:ident) => {
        /// # Safety
        /// See `MicroKernel::run`; requires AVX2 and FMA.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $name<
            const R: usize,
            const NV: usize,
            const BV: usize,
            const AS: usize,
            const MODE: u8,
        >(
            a_rs: usize,
            k: usize,
            a: *const $t,
            b: *const $t,
            c: *mut $t,
            ldc: usize,
            accumulate: bool,
        ) {
            let mut acc = [[$zero(); NV]; R];
            let (mut a, mut b) = (a, b);
            // Packed: A(i, p) = a[p*AS + i]; rows: a[i*a_rs + p]; columns: a[p*a_rs + i].
            let (row_step, k_step) = match MODE {
                A_ROWS => (a_rs, 1),
                A_COLS => (1, a_rs),
                _ => (1, AS),
            };
            for _ in 0..k {
                let mut bv = [$zero(); NV];
                for (v, x) in bv.iter_mut().enumerate() {
                    // SAFETY: b points at the current k-row of BV·lanes ≥ NV·lanes packed elements.
                    *x = unsafe { $load(b.add(v * $lanes)) };
                }
                for (i, row) in acc.iter_mut().enumerate() {
                    // SAFETY: a points at A(0, p); A(i, p) for i < R is readable (contract).
                    let ai = $set1(unsafe { *a.add(i * row_step) });
                    for (r, &bx) in row.iter_mut().zip(&bv) {
                        *r = $fma(ai, bx, *r);
                    }
                }
                // SAFETY: stays within (or one past) A's k columns and the k·BV·lanes B panel.
                unsafe {
                    a = a.add(k_step);
                    b = b.add(BV * $lanes);
                }
            }
            for (i, row) in acc.iter().enumerate() {
                for (v, &r) in row.iter().enumerate() {
                    // SAFETY: (i, v·lanes..) is inside the R×NR tile the caller owns.
                    unsafe {
                        let cp = c.add(i * ldc + v * $lanes);
                        let out = if accumulate { $add($load(cp), r) } else { r };
                        $store(cp, out);
                    }
                }
            }
        }
    };
}

tile_kernel!(
    tile_f32,
    f32,
    8,
    _mm256_setzero_ps,
    _mm256_loadu_ps,
    _mm256_set1_ps,
    _mm256_fmadd_ps,
    _mm256_add_ps,
    _mm256_storeu_ps
);
tile_kernel!(
    tile_f64,
    f64,
    4,
    _mm256_setzero_pd,
    _mm256_loadu_pd,
    _mm256_set1_pd,
    _mm256_fmadd_pd,
    _mm256_add_pd,
    _mm256_storeu_pd
);
