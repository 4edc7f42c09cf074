//! Blocked GEMM for f32 and f64: AVX-512 / AVX2 FMA micro-kernels chosen at run time, a
//! portable fallback, Goto/BLIS packing and blocking, deterministic rayon parallelism.
//!
//! Files: `driver.rs` (loop nest, threading), `pack.rs` (packing), `buffer.rs` and
//! `element.rs` (reused aligned pack buffers), `kernel.rs` (the micro-kernel contract),
//! `avx512.rs` / `avx2.rs` / `generic.rs` (micro-kernels), `dispatch.rs` (kernel choice).

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod buffer;
mod dispatch;
mod driver;
mod element;
mod generic;
mod kernel;
mod pack;
#[cfg(test)]
mod tests;

pub use dispatch::{Kernel, KERNEL_ENV};

use driver::{BSource, Problem};
use element::Element;
pub(crate) use pack::Patches;
use pack::Strided;
use std::mem::MaybeUninit;

/// C = A·B (accumulate = false) or C += A·B (accumulate = true).
/// A is m×k with element (i,p) at a[i*rsa + p*csa]; B is k×n with (p,j) at b[p*rsb + j*csb];
/// C is m×n row-major with row stride ldc >= n: (i,j) at c[i*ldc + j]. Strides may be 0 (broadcast)
/// or arbitrary (transposed views), so packing must read through them.
/// `parallel`: split the work over the current rayon pool (rayon::current_num_threads()); false = run on this thread only
/// (callers that already parallelise over a batch pass false).
///
/// The result is bitwise identical for any thread count and either value of `parallel` (the
/// kernel is fixed per process, see [`Kernel::selected`]). k == 0 sets C to zero (or leaves it
/// unchanged when accumulating); m == 0 or n == 0 does nothing. Panics only on invalid input:
/// ldc < n, or a slice too short for the shape and strides given.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    rsa: usize,
    csa: usize,
    b: &[f32],
    rsb: usize,
    csb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    parallel: bool,
) {
    sgemm_with(
        Kernel::selected(),
        m,
        n,
        k,
        a,
        rsa,
        csa,
        b,
        rsb,
        csb,
        c,
        ldc,
        accumulate,
        parallel,
    );
}

/// [`sgemm`] for f64.
#[allow(clippy::too_many_arguments)]
pub fn dgemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f64],
    rsa: usize,
    csa: usize,
    b: &[f64],
    rsb: usize,
    csb: usize,
    c: &mut [f64],
    ldc: usize,
    accumulate: bool,
    parallel: bool,
) {
    dgemm_with(
        Kernel::selected(),
        m,
        n,
        k,
        a,
        rsa,
        csa,
        b,
        rsb,
        csb,
        c,
        ldc,
        accumulate,
        parallel,
    );
}

/// [`sgemm`] with an explicit kernel (tests, benchmarks). Panics if `kernel` is not supported
/// by this CPU ([`Kernel::is_supported`]).
#[allow(clippy::too_many_arguments)]
pub fn sgemm_with(
    kernel: Kernel,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    rsa: usize,
    csa: usize,
    b: &[f32],
    rsb: usize,
    csb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    parallel: bool,
) {
    // The kernels only ever store initialised values into C.
    let c = as_uninit(c);
    let Some(p) = prepare(
        kernel,
        m,
        n,
        k,
        (a, rsa, csa),
        (b, rsb, csb),
        c,
        ldc,
        accumulate,
    ) else {
        return;
    };
    f32::run(kernel, &p, c, parallel);
}

/// [`dgemm`] with an explicit kernel (tests, benchmarks). Panics if `kernel` is not supported
/// by this CPU ([`Kernel::is_supported`]).
#[allow(clippy::too_many_arguments)]
pub fn dgemm_with(
    kernel: Kernel,
    m: usize,
    n: usize,
    k: usize,
    a: &[f64],
    rsa: usize,
    csa: usize,
    b: &[f64],
    rsb: usize,
    csb: usize,
    c: &mut [f64],
    ldc: usize,
    accumulate: bool,
    parallel: bool,
) {
    // The kernels only ever store initialised values into C.
    let c = as_uninit(c);
    let Some(p) = prepare(
        kernel,
        m,
        n,
        k,
        (a, rsa, csa),
        (b, rsb, csb),
        c,
        ldc,
        accumulate,
    ) else {
        return;
    };
    f64::run(kernel, &p, c, parallel);
}

/// A dtype's micro-kernels, by [`Kernel`].
pub(crate) trait Dispatch: Element {
    /// C may be uninitialised unless `p.accumulate`.
    fn run(kernel: Kernel, p: &Problem<'_, Self>, c: &mut [MaybeUninit<Self>], parallel: bool);
}

impl Dispatch for f32 {
    fn run(kernel: Kernel, p: &Problem<'_, f32>, c: &mut [MaybeUninit<f32>], parallel: bool) {
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => avx512::sgemm(p, c, parallel),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => avx2::sgemm(p, c, parallel),
            _ => generic::sgemm(p, c, parallel),
        }
    }
}

impl Dispatch for f64 {
    fn run(kernel: Kernel, p: &Problem<'_, f64>, c: &mut [MaybeUninit<f64>], parallel: bool) {
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => avx512::dgemm(p, c, parallel),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => avx2::dgemm(p, c, parallel),
            _ => generic::dgemm(p, c, parallel),
        }
    }
}

/// C (m × HO·WO, row stride ldc) = or += A (m × Cin·KH·KW, strides (rsa, csa)) · the
/// im2col matrix of one image, packed straight from the image (see [`Patches`]): a
/// convolution without the im2col buffer. Same blocking, kernels and determinism as
/// [`sgemm`] / [`dgemm`].
pub(crate) fn gemm_patches<T: Dispatch>(
    m: usize,
    a: (&[T], usize, usize),
    b: Patches<'_, T>,
    c: &mut [T],
    ldc: usize,
    accumulate: bool,
    parallel: bool,
) {
    let kernel = Kernel::selected();
    let c = as_uninit(c);
    if let Some(p) = prepare_patches(kernel, m, a, b, c, ldc, accumulate) {
        T::run(kernel, &p, c, parallel);
    }
}

/// C (m×n, row stride n) = A·B into C that may be uninitialised (a fresh output: no
/// zero-fill first), with the default kernel; every element of C is written. Strides and
/// `parallel` as for [`sgemm`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_write<T: Dispatch>(
    m: usize,
    n: usize,
    k: usize,
    a: (&[T], usize, usize),
    b: (&[T], usize, usize),
    c: &mut [MaybeUninit<T>],
    parallel: bool,
) {
    let kernel = Kernel::selected();
    // Not accumulating: the kernels store C's tiles without reading them.
    if let Some(p) = prepare(kernel, m, n, k, a, b, c, n, false) {
        T::run(kernel, &p, c, parallel);
    }
}

/// `c` seen as possibly uninitialised. Sound to hand to the kernels: they store only
/// initialised values, so `c` stays initialised for its owner.
fn as_uninit<T>(c: &mut [T]) -> &mut [MaybeUninit<T>] {
    // SAFETY: MaybeUninit<T> has T's size and alignment, and nothing writes an
    // uninitialised value through the result.
    unsafe { &mut *(c as *mut [T] as *mut [MaybeUninit<T>]) }
}

/// [`prepare`] with an implicit im2col B: the image must hold c_in·h·w elements.
fn prepare_patches<'a, T: Element>(
    kernel: Kernel,
    m: usize,
    a: (&'a [T], usize, usize),
    b: Patches<'a, T>,
    c: &mut [MaybeUninit<T>],
    ldc: usize,
    accumulate: bool,
) -> Option<Problem<'a, T>> {
    assert!(
        b.x.len() >= b.c_in * b.h * b.w,
        "gemm: image slice too short for {}x{}x{}",
        b.c_in,
        b.h,
        b.w
    );
    let (k, n) = b.dims();
    // Validate A, C and the degenerate shapes as for a strided B of the same size: the
    // image with zero strides stands in (`prepare` checks only B's extent, 1 here).
    let mut p = prepare(kernel, m, n, k, a, (b.x, 0, 0), c, ldc, accumulate)?;
    p.b = BSource::Patches(b);
    Some(p)
}

/// Index one past the last element of a rows×cols strided view (0 if empty), or None on
/// overflow.
fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return Some(0);
    }
    (rows - 1)
        .checked_mul(rs)?
        .checked_add((cols - 1).checked_mul(cs)?)?
        .checked_add(1)
}

/// Validates a call and handles the degenerate shapes; returns the problem for the driver
/// when there is a product to compute.
#[allow(clippy::too_many_arguments)]
fn prepare<'a, T: Element>(
    kernel: Kernel,
    m: usize,
    n: usize,
    k: usize,
    (a, rsa, csa): (&'a [T], usize, usize),
    (b, rsb, csb): (&'a [T], usize, usize),
    c: &mut [MaybeUninit<T>],
    ldc: usize,
    accumulate: bool,
) -> Option<Problem<'a, T>> {
    assert!(
        kernel.is_supported(),
        "GEMM kernel {} is not supported by this CPU",
        kernel.name()
    );
    if m == 0 || n == 0 {
        return None;
    }
    // The kernels read A (in place, when row-major) and write C through raw pointers, so the
    // bounds are always checked, not only in debug builds: O(1), and only invalid input fails.
    assert!(ldc >= n, "gemm: ldc ({ldc}) < n ({n})");
    assert!(
        extent(m, n, ldc, 1).is_some_and(|e| e <= c.len()),
        "gemm: C slice too short for {m}×{n} with ldc {ldc}"
    );
    if k == 0 {
        if !accumulate {
            c.chunks_mut(ldc).take(m).for_each(|row| {
                row[..n].iter_mut().for_each(|x| {
                    x.write(T::ZERO);
                });
            });
        }
        return None;
    }
    debug_assert!(
        extent(m, k, rsa, csa).is_some_and(|e| e <= a.len()),
        "gemm: A slice too short"
    );
    debug_assert!(
        extent(k, n, rsb, csb).is_some_and(|e| e <= b.len()),
        "gemm: B slice too short"
    );
    Some(Problem {
        m,
        n,
        k,
        a: Strided {
            data: a,
            rs: rsa,
            cs: csa,
        },
        b: BSource::Strided(Strided {
            data: b,
            rs: rsb,
            cs: csb,
        }),
        ldc,
        accumulate,
    })
}
