//! Portable micro-kernel (any CPU, f32 and f64): plain loops the compiler can auto-vectorise.

use super::driver::{gemm, Problem};
use super::element::Element;
use super::kernel::{ALayout, Blocking, MicroKernel};
use std::mem::MaybeUninit;

/// A 4×8 (f32) or 4×4 (f64) tile: the accumulators fill 8 of the 16 128-bit registers of the
/// x86-64 baseline (SSE2), leaving room for B and the broadcast, and NEON has 32. It
/// multiplies then adds (no fused multiply-add): `mul_add` would be a slow libm call on CPUs
/// without FMA, the ones that land here.
pub(crate) struct Portable;

/// f32 register tile (rows, columns).
pub(crate) const F32_TILE: (usize, usize) = (4, 8);
/// f64 register tile (rows, columns).
pub(crate) const F64_TILE: (usize, usize) = (4, 4);

/// Blocking for both types: A micro-panel 4 × 256 elements in L1, B chunk 256 × 256 elements
/// (256-512 KiB) in L2.
pub(crate) const BLOCKING: Blocking = Blocking {
    kc: 256,
    nc: 256,
    mc: 1200,
};

impl<T: Element, const MR: usize, const NR: usize> MicroKernel<T, MR, NR> for Portable {
    const BLOCKING: Blocking = BLOCKING;

    unsafe fn run(
        k: usize,
        a: *const T,
        al: ALayout,
        b: *const T,
        c: *mut T,
        ldc: usize,
        accumulate: bool,
    ) {
        let (row_step, k_step) = match al {
            ALayout::Packed => (1, MR),
            ALayout::Rows(rs) => (rs, 1),
            ALayout::Cols(cs) => (1, cs),
        };
        // SAFETY: the caller guarantees k·NR readable elements at `b`.
        let b = unsafe { std::slice::from_raw_parts(b, k * NR) };
        let mut acc = [[T::ZERO; NR]; MR];
        for (p, bp) in b.chunks_exact(NR).enumerate() {
            for (i, row) in acc.iter_mut().enumerate() {
                // SAFETY: A(i, p) for i < MR, p < k is readable (caller's contract).
                let ai = unsafe { *a.add(i * row_step + p * k_step) };
                for (r, &bj) in row.iter_mut().zip(bp) {
                    *r = *r + ai * bj;
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (j, &r) in row.iter().enumerate() {
                // SAFETY: (i, j) is inside the MR×NR tile at `c` that the caller owns.
                unsafe {
                    let cp = c.add(i * ldc + j);
                    *cp = if accumulate { *cp + r } else { r };
                }
            }
        }
    }
}

pub(crate) fn sgemm(p: &Problem<'_, f32>, c: &mut [MaybeUninit<f32>], parallel: bool) {
    gemm::<f32, { F32_TILE.0 }, { F32_TILE.1 }, Portable>(p, c, parallel);
}

pub(crate) fn dgemm(p: &Problem<'_, f64>, c: &mut [MaybeUninit<f64>], parallel: bool) {
    gemm::<f64, { F64_TILE.0 }, { F64_TILE.1 }, Portable>(p, c, parallel);
}
