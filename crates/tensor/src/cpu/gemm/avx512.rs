//! AVX-512F micro-kernels: f32 6×64 and f64 6×32 register tiles (24 zmm accumulators).

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

use super::driver::{gemm, Problem};
use super::kernel::{by_rows, ALayout, Blocking, MicroKernel, A_COLS, A_PACKED, A_ROWS};

/// f32 register tile (rows, columns): 6 rows × 4 zmm. 24 accumulators + 4 B vectors + 1
/// broadcast = 29 of the 32 zmm registers. Per k step, 4 vector loads and 6 broadcasts feed 24
/// FMAs: well inside the load ports' budget on Zen 4 (one 512-bit FMA per cycle) and Zen 5
/// (two), and 24 independent chains cover the FMA latency (4 cycles × 2 pipes = 8 needed).
pub(crate) const F32_TILE: (usize, usize) = (6, 64);
/// f64 register tile (rows, columns): the same 6 × 4 zmm with 8 lanes.
pub(crate) const F64_TILE: (usize, usize) = (6, 32);

/// f32 blocking. The A micro-panel, 6 × 384 × 4 B = 9 KiB, stays in L1 (32 KiB on Zen 4,
/// 48 KiB on Zen 5) while the B micro-panels stream past it; one task's B chunk,
/// 384 × 320 × 4 B = 480 KiB, stays in the 1 MiB L2 with room for the A and C streams.
/// kc = 384 makes the C update (a load and a store per element) ~1/400 of the FMA work.
/// mc bounds the packed A block (2400 × 384 × 4 B = 3.5 MiB, L3-resident).
pub(crate) const F32_BLOCKING: Blocking = Blocking {
    kc: 384,
    nc: 320,
    mc: 2400,
};
/// f64 blocking: about the same bytes as f32 (B chunk 256 × 256 × 8 B = 512 KiB).
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
        // SAFETY: forwarded contract of `MicroKernel::run`, which includes AVX-512F support.
        unsafe { Self::run_edge(k, a, al, b, c, ldc, acc, F32_MR, F32_NR) }
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
        // SAFETY: forwarded contract of `MicroKernel::run_edge`; the kernel touches only
        // `rows` rows and, through masks, `cols` columns of C. A narrow full-height tile (n
        // smaller than NR, e.g. attention's P·V with a head dimension of 32) computes only the
        // vectors it needs.
        unsafe {
            if rows == F32_MR && cols <= F32_NR - 16 {
                by_cols!(
                    cols.div_ceil(16),
                    al,
                    tile_f32,
                    { F32_NR / 16 },
                    F32_MR,
                    (k, a, b, c, ldc, acc, cols)
                )
            } else {
                by_rows!(
                    rows,
                    al,
                    tile_f32,
                    { F32_NR / 16 },
                    F32_MR,
                    (k, a, b, c, ldc, acc, cols),
                    [1, 2, 3, 4, 5]
                )
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
        // SAFETY: forwarded contract of `MicroKernel::run`, which includes AVX-512F support.
        unsafe { Self::run_edge(k, a, al, b, c, ldc, acc, F64_MR, F64_NR) }
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
        // SAFETY: forwarded contract of `MicroKernel::run_edge`; the kernel touches only
        // `rows` rows and, through masks, `cols` columns of C. A narrow full-height tile (n
        // smaller than NR, e.g. attention's P·V with a head dimension of 32) computes only the
        // vectors it needs.
        unsafe {
            if rows == F64_MR && cols <= F64_NR - 8 {
                by_cols!(
                    cols.div_ceil(8),
                    al,
                    tile_f64,
                    { F64_NR / 8 },
                    F64_MR,
                    (k, a, b, c, ldc, acc, cols)
                )
            } else {
                by_rows!(
                    rows,
                    al,
                    tile_f64,
                    { F64_NR / 8 },
                    F64_MR,
                    (k, a, b, c, ldc, acc, cols),
                    [1, 2, 3, 4, 5]
                )
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

/// Calls the full-height tile kernel monomorphised for `nv` (1..=3) of the BV vectors of the
/// packed B panel, and for the A layout.
macro_rules! by_cols {
    ($nv:expr, $al:expr, $f:ident, $bv:expr, $mr:expr, ($($arg:expr),*)) => {
        match $al {
            ALayout::Packed => by_cols!(@nv $nv, $f, $bv, $mr, A_PACKED, (1, $($arg),*)),
            ALayout::Rows(rs) => by_cols!(@nv $nv, $f, $bv, $mr, A_ROWS, (rs, $($arg),*)),
            ALayout::Cols(cs) => by_cols!(@nv $nv, $f, $bv, $mr, A_COLS, (cs, $($arg),*)),
        }
    };
    (@nv $nv:expr, $f:ident, $bv:expr, $mr:expr, $mode:expr, $args:tt) => {
        match $nv {
            1 => $f::<$mr, 1, $bv, $mr, $mode> $args,
            2 => $f::<$mr, 2, $bv, $mr, $mode> $args,
            _ => $f::<$mr, 3, $bv, $mr, $mode> $args,
        }
    };
}
use by_cols;

/// Generates the kernel body for one element type: `R` rows by `NV` vectors of a B panel `BV`
/// vectors wide, A read as packed panels of stride `AS` ≥ R (`MODE` A_PACKED) or in place
/// with row stride `a_rs` (A_ROWS) or column stride `a_rs` (A_COLS). The accumulator arrays have constant bounds, so LLVM unrolls
/// every loop and keeps them in registers. `cols` < NV·lanes masks the C loads and stores.
macro_rules! tile_kernel {
    ($name:ident, $t:ty, $lanes:expr, $mask:ty, $zero:ident, $load:ident, $set1:ident, $fma:ident,
     $add:ident, $store:ident, $maskz_load:ident, $mask_store:ident) => {
        /// # Safety
        /// See `MicroKernel::run_edge`; requires AVX-512F.
        #[target_feature(enable = "avx512f")]
        #[allow(clippy::too_many_arguments)]
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
            cols: usize,
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
            if cols >= NV * $lanes {
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
            } else {
                for (i, row) in acc.iter().enumerate() {
                    for (v, &r) in row.iter().enumerate() {
                        let valid = cols.saturating_sub(v * $lanes).min($lanes);
                        let mask = ((1u32 << valid) - 1) as $mask;
                        // SAFETY: the mask limits the access to columns < cols of row i < R,
                        // inside the caller's tile; masked-off lanes are not touched.
                        unsafe {
                            let cp = c.add(i * ldc + v * $lanes);
                            let out = if accumulate {
                                $add($maskz_load(mask, cp), r)
                            } else {
                                r
                            };
                            $mask_store(cp, mask, out);
                        }
                    }
                }
            }
        }
    };
}

tile_kernel!(
    tile_f32,
    f32,
    16,
    __mmask16,
    _mm512_setzero_ps,
    _mm512_loadu_ps,
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    _mm512_add_ps,
    _mm512_storeu_ps,
    _mm512_maskz_loadu_ps,
    _mm512_mask_storeu_ps
);
tile_kernel!(
    tile_f64,
    f64,
    8,
    __mmask8,
    _mm512_setzero_pd,
    _mm512_loadu_pd,
    _mm512_set1_pd,
    _mm512_fmadd_pd,
    _mm512_add_pd,
    _mm512_storeu_pd,
    _mm512_maskz_loadu_pd,
    _mm512_mask_storeu_pd
);
