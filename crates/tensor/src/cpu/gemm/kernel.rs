//! The micro-kernel contract shared by the driver and the per-ISA kernels, and their blocking.

use super::element::Element;

/// Cache blocking for one micro-kernel, in the Goto / BLIS sense (Goto & van de Geijn, "Anatomy
/// of High-Performance Matrix Multiplication", TOMS 2008; Van Zee & van de Geijn, "BLIS", TOMS
/// 2015). See `driver.rs` for the loop nest these parameters drive.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Blocking {
    /// Upper bound on the depth of one packed block. K is cut into `ceil(k / kc)` equal blocks,
    /// a function of k alone, which is what makes results independent of the thread count.
    pub kc: usize,
    /// Upper bound on the width of the B chunk one task packs and keeps in L2 (multiple of NR).
    pub nc: usize,
    /// Upper bound on the rows of A packed at once: bounds the shared packed-A buffer.
    pub mc: usize,
}

/// How a micro-kernel finds A(i, p) from its `a` pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ALayout {
    /// A packed micro-panel: `a[p*MR + i]`.
    Packed,
    /// The caller's row-major A, read in place: `a[i*rs + p]` (see `driver::direct_a`).
    Rows(usize),
    /// The caller's column-major A (a transposed view), read in place: `a[p*cs + i]`,
    /// the packed layout with the caller's column stride in place of MR.
    Cols(usize),
}

/// How a tile kernel's `MODE` reads A (the monomorphised form of [`ALayout`]).
pub(crate) const A_PACKED: u8 = 0;
pub(crate) const A_ROWS: u8 = 1;
pub(crate) const A_COLS: u8 = 2;

/// Largest register tile any kernel uses (elements): the size of the stack tile for edges.
pub(crate) const MAX_TILE: usize = 16 * 64;

/// An MR×NR register-tile kernel over packed panels. MR and NR are const parameters of the
/// trait (not associated consts) so the driver and packing can be monomorphised on them.
///
/// Every element of C is computed the same way whichever entry point (and, for edge kernels,
/// whichever row count) is used: `acc = 0; for p in 0..k { acc = a·b + acc }`, then `C = acc`
/// or `C = C + acc`. So edge tiles agree bitwise with interior tiles of the same kernel.
pub(crate) trait MicroKernel<T: Element, const MR: usize, const NR: usize> {
    const BLOCKING: Blocking;

    /// Computes `acc = Σ_p A(i, p) · b[p*NR + j]` for p in 0..k (A located by `al`) as one
    /// multiply-add chain per element, in increasing p, starting from zero; then stores
    /// `C = acc` (`accumulate == false`) or `C = C + acc` (`accumulate == true`) into the MR×NR
    /// tile at `c` with row stride `ldc`.
    ///
    /// # Safety
    /// `a` must be valid for reading the MR×k elements `al` locates, `b` for `k*NR`; `c` must
    /// be valid for reading and writing the MR×NR tile with row stride `ldc`, and no other
    /// thread may access that tile meanwhile. The CPU must support the kernel's features (see `dispatch`).
    #[allow(clippy::too_many_arguments)]
    unsafe fn run(
        k: usize,
        a: *const T,
        al: ALayout,
        b: *const T,
        c: *mut T,
        ldc: usize,
        accumulate: bool,
    );

    /// As [`run`](Self::run), but only the top-left `rows`×`cols` of the tile (1 ≤ rows ≤ MR,
    /// 1 ≤ cols ≤ NR) are read and written; the panels are still full (zero-padded). The
    /// default computes into a stack tile and copies the valid part in and out.
    ///
    /// # Safety
    /// As for `run`, except that only the `rows`×`cols` part of the tile at `c` must be valid;
    /// with `ALayout::Rows` or `ALayout::Cols`, rows must be MR (the driver packs partial
    /// row-panels).
    #[allow(clippy::too_many_arguments)]
    unsafe fn run_edge(
        k: usize,
        a: *const T,
        al: ALayout,
        b: *const T,
        c: *mut T,
        ldc: usize,
        accumulate: bool,
        rows: usize,
        cols: usize,
    ) {
        // SAFETY: forwarded contract.
        unsafe { edge_via_tile::<T, MR, NR, Self>(k, a, al, b, c, ldc, accumulate, rows, cols) }
    }
}

/// Edge tile through a stack tile: the kernel's full `run` into a zeroed MR×NR buffer, with the
/// valid `rows`×`cols` of C copied in (when accumulating) and out. For those elements this is
/// the same arithmetic as `run` in place.
///
/// # Safety
/// As for [`MicroKernel::run_edge`].
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn edge_via_tile<T: Element, const MR: usize, const NR: usize, K>(
    k: usize,
    a: *const T,
    al: ALayout,
    b: *const T,
    c: *mut T,
    ldc: usize,
    accumulate: bool,
    rows: usize,
    cols: usize,
) where
    K: MicroKernel<T, MR, NR> + ?Sized,
{
    const { assert!(MR * NR <= MAX_TILE) };
    let mut tile = [T::ZERO; MAX_TILE];
    if accumulate {
        for i in 0..rows {
            for j in 0..cols {
                // SAFETY: (i, j) with i < rows, j < cols is inside the caller's tile.
                tile[i * NR + j] = unsafe { *c.add(i * ldc + j) };
            }
        }
    }
    // SAFETY: the panels are full (caller's contract); `tile` holds MR×NR at stride NR.
    unsafe { K::run(k, a, al, b, tile.as_mut_ptr(), NR, accumulate) };
    for i in 0..rows {
        for j in 0..cols {
            // SAFETY: as above.
            unsafe { *c.add(i * ldc + j) = tile[i * NR + j] };
        }
    }
}

/// Calls the tile kernel monomorphised for exactly `rows` rows (listed counts, else MR) and
/// for the A layout: an edge panel then costs its real rows, not MR, and each element's
/// arithmetic is unchanged.
#[cfg(target_arch = "x86_64")]
macro_rules! by_rows {
    ($rows:expr, $al:expr, $f:ident, $nv:expr, $mr:expr, ($($arg:expr),*), [$($r:literal),*]) => {
        match $al {
            $crate::cpu::gemm::kernel::ALayout::Packed => by_rows!(@rows $rows, $f, $nv, $mr, { $crate::cpu::gemm::kernel::A_PACKED }, (1, $($arg),*), [$($r),*]),
            $crate::cpu::gemm::kernel::ALayout::Rows(rs) => by_rows!(@rows $rows, $f, $nv, $mr, { $crate::cpu::gemm::kernel::A_ROWS }, (rs, $($arg),*), [$($r),*]),
            $crate::cpu::gemm::kernel::ALayout::Cols(cs) => by_rows!(@rows $rows, $f, $nv, $mr, { $crate::cpu::gemm::kernel::A_COLS }, (cs, $($arg),*), [$($r),*]),
        }
    };
    (@rows $rows:expr, $f:ident, $nv:expr, $mr:expr, $mode:expr, $args:tt, [$($r:literal),*]) => {
        match $rows {
            $($r => $f::<$r, $nv, $nv, $mr, $mode> $args,)*
            _ => $f::<$mr, $nv, $nv, $mr, $mode> $args,
        }
    };
}
#[cfg(target_arch = "x86_64")]
pub(crate) use by_rows;
