//! Batched matmul on the CPU: one GEMM per batch entry, operands read through their
//! strides (a transposed view costs nothing), parallel over batches when there are many
//! and inside the GEMM otherwise. Either way each output element sees the same
//! operations, so the result does not depend on the thread count.

use super::gemm;
use crate::{Float, Layout};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// The GEMM of a compute dtype: C (m x n, row-major, row stride ldc) = A B, or += when
/// `accumulate`; A and B given as (data, row stride, column stride) (see `gemm::sgemm`).
pub(crate) trait Gemm: Float {
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        c: &mut [Self],
        ldc: usize,
        a: (&[Self], usize, usize),
        b: (&[Self], usize, usize),
        mnk: (usize, usize, usize),
        accumulate: bool,
        parallel: bool,
    );
    /// C = A B into a C that may be uninitialised (every element is written).
    fn gemm_write(
        c: &mut [MaybeUninit<Self>],
        a: (&[Self], usize, usize),
        b: (&[Self], usize, usize),
        mnk: (usize, usize, usize),
        parallel: bool,
    );
    /// C (m × HO·WO, row-major) = A (m × Cin·KH·KW) · one image's implicit im2col
    /// matrix (see `gemm::Patches`).
    fn gemm_patches(
        c: &mut [Self],
        a: (&[Self], usize, usize),
        b: gemm::Patches<'_, Self>,
        m: usize,
        parallel: bool,
    );
}

macro_rules! gemm_impl {
    ($t:ty, $f:path, $fp:path) => {
        impl Gemm for $t {
            fn gemm(
                c: &mut [$t],
                ldc: usize,
                a: (&[$t], usize, usize),
                b: (&[$t], usize, usize),
                (m, n, k): (usize, usize, usize),
                acc: bool,
                par: bool,
            ) {
                $f(m, n, k, a.0, a.1, a.2, b.0, b.1, b.2, c, ldc, acc, par)
            }
            fn gemm_write(
                c: &mut [MaybeUninit<$t>],
                a: (&[$t], usize, usize),
                b: (&[$t], usize, usize),
                (m, n, k): (usize, usize, usize),
                par: bool,
            ) {
                gemm::gemm_write(m, n, k, a, b, c, par)
            }
            fn gemm_patches(
                c: &mut [$t],
                a: (&[$t], usize, usize),
                b: gemm::Patches<'_, $t>,
                m: usize,
                par: bool,
            ) {
                let n = b.dims().1;
                $fp(m, a, b, c, n, false, par)
            }
        }
    };
}
gemm_impl!(f32, gemm::sgemm, gemm::gemm_patches);
gemm_impl!(f64, gemm::dgemm, gemm::gemm_patches);

/// `c = a b` (or `+=`) with a, b given as data and (row, column) strides.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_into<T: Gemm>(
    c: &mut [T],
    a: &[T],
    a_strides: (usize, usize),
    b: &[T],
    b_strides: (usize, usize),
    mnk: (usize, usize, usize),
    accumulate: bool,
    parallel: bool,
) {
    gemm_into_ld(
        c, mnk.1, a, a_strides, b, b_strides, mnk, accumulate, parallel,
    );
}

/// [`gemm_into`] with C's rows `ldc` apart (c covers (m - 1) ldc + n elements; the
/// elements between rows are left alone).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_into_ld<T: Gemm>(
    c: &mut [T],
    ldc: usize,
    a: &[T],
    a_strides: (usize, usize),
    b: &[T],
    b_strides: (usize, usize),
    mnk: (usize, usize, usize),
    accumulate: bool,
    parallel: bool,
) {
    T::gemm(
        c,
        ldc,
        (a, a_strides.0, a_strides.1),
        (b, b_strides.0, b_strides.1),
        mnk,
        accumulate,
        parallel,
    );
}

/// [batch.., m, k] x [batch.., k, n] with equal (possibly stride-0) batch axes.
pub(crate) fn matmul<T: Gemm>(a: &[T], la: &Layout, b: &[T], lb: &Layout) -> Vec<T> {
    let r = la.dims().len();
    let (m, k, n) = (la.dims()[r - 2], la.dims()[r - 1], lb.dims()[r - 1]);
    let batch = &la.dims()[..r - 2];
    let a_off: Vec<usize> = Layout::new(batch, la.strides()[..r - 2].to_vec(), la.offset())
        .offsets()
        .collect();
    let b_off: Vec<usize> = Layout::new(batch, lb.strides()[..r - 2].to_vec(), lb.offset())
        .offsets()
        .collect();
    let len = a_off.len() * m * n;
    if len == 0 {
        return Vec::new();
    }
    // The output is written once by the GEMMs, not zero-filled first (for a [5632, 64] x
    // [64, 256] product the fill cost a fifth of the call).
    let mut out = Vec::with_capacity(len);
    let sa = (la.strides()[r - 2], la.strides()[r - 1]);
    let sb = (lb.strides()[r - 2], lb.strides()[r - 1]);
    let one = |(c, (&oa, &ob)): (&mut [MaybeUninit<T>], (&usize, &usize)), parallel: bool| {
        T::gemm_write(
            c,
            (&a[oa..], sa.0, sa.1),
            (&b[ob..], sb.0, sb.1),
            (m, n, k),
            parallel,
        );
    };
    let slots = &mut out.spare_capacity_mut()[..len];
    if a_off.len() >= 2 * rayon::current_num_threads() {
        slots
            .par_chunks_mut(m * n)
            .zip(a_off.par_iter().zip(&b_off))
            .for_each(|job| one(job, false));
    } else {
        slots
            .chunks_mut(m * n)
            .zip(a_off.iter().zip(&b_off))
            .for_each(|job| one(job, true));
    }
    // SAFETY: the batch's chunks of m * n cover all len slots, and each GEMM writes every
    // element of its m x n chunk (k == 0 writes zeros).
    unsafe { out.set_len(len) };
    out
}
