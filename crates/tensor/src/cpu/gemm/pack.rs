//! Packing of A and B panels into the contiguous, zero-padded layouts the micro-kernels read.
//!
//! As in Goto & van de Geijn (2008), packing turns arbitrary strides (transposed views,
//! stride-0 broadcasts) into unit-stride streams once per block, so the O(k) inner loop of the
//! micro-kernel never sees a stride. Each function has fast paths for the two unit-stride
//! layouts and a general strided path; all are plain safe indexing.

use super::element::Element;

/// Where an operand lives: element (r, c) at `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Strided<'a, T> {
    pub data: &'a [T],
    pub rs: usize,
    pub cs: usize,
}

/// Packs the MR-row micro-panel of A with rows `i0..i0 + rows` (rows <= MR) and columns
/// `p0..p0 + kc` into `dst` (length MR·kc) as `dst[p*MR + i]`, zero-filling rows >= `rows`.
pub(crate) fn pack_a_panel<T: Element, const MR: usize>(
    dst: &mut [T],
    a: Strided<'_, T>,
    i0: usize,
    rows: usize,
    p0: usize,
    kc: usize,
) {
    let (dst, _) = dst[..MR * kc].as_chunks_mut::<MR>();
    if rows < MR {
        dst.iter_mut().for_each(|d| d[rows..].fill(T::ZERO));
    }
    if a.cs == 1 && rows == MR {
        // Row-major A, full panel: read MR rows side by side, write each k-column once.
        let src: [&[T]; MR] = std::array::from_fn(|i| {
            let start = (i0 + i) * a.rs + p0;
            &a.data[start..start + kc]
        });
        for (p, d) in dst.iter_mut().enumerate() {
            for (x, s) in d.iter_mut().zip(&src) {
                *x = s[p];
            }
        }
    } else if a.cs == 1 {
        // Row-major A: each row is contiguous in p; scatter it down one lane of the panel.
        for i in 0..rows {
            let start = (i0 + i) * a.rs + p0;
            for (d, &x) in dst.iter_mut().zip(&a.data[start..start + kc]) {
                d[i] = x;
            }
        }
    } else if a.rs == 1 {
        // Column-major A (a transposed view): each column of the panel is one contiguous copy.
        for (p, d) in dst.iter_mut().enumerate() {
            let start = i0 + (p0 + p) * a.cs;
            d[..rows].copy_from_slice(&a.data[start..start + rows]);
        }
    } else {
        for (p, d) in dst.iter_mut().enumerate() {
            let col = (p0 + p) * a.cs;
            for (i, x) in d[..rows].iter_mut().enumerate() {
                *x = a.data[(i0 + i) * a.rs + col];
            }
        }
    }
}

/// Packs the NR-column micro-panel of B with rows `p0..p0 + kc` and columns `j0..j0 + cols`
/// (cols <= NR) into `dst` (length kc·NR) as `dst[p*NR + j]`, zero-filling columns >= `cols`.
pub(crate) fn pack_b_panel<T: Element, const NR: usize>(
    dst: &mut [T],
    b: Strided<'_, T>,
    p0: usize,
    kc: usize,
    j0: usize,
    cols: usize,
) {
    let (dst, _) = dst[..NR * kc].as_chunks_mut::<NR>();
    if cols < NR {
        dst.iter_mut().for_each(|d| d[cols..].fill(T::ZERO));
    }
    if b.cs == 1 {
        // Row-major B: each row of the panel is one contiguous copy.
        for (p, d) in dst.iter_mut().enumerate() {
            let start = (p0 + p) * b.rs + j0;
            d[..cols].copy_from_slice(&b.data[start..start + cols]);
        }
    } else if b.rs == 1 {
        // Column-major B (e.g. Kᵀ in Q·Kᵀ): each column is contiguous in p; scatter it.
        for j in 0..cols {
            let start = (j0 + j) * b.cs + p0;
            for (d, &x) in dst.iter_mut().zip(&b.data[start..start + kc]) {
                d[j] = x;
            }
        }
    } else {
        for (p, d) in dst.iter_mut().enumerate() {
            let row = (p0 + p) * b.rs;
            for (j, x) in d[..cols].iter_mut().enumerate() {
                *x = b.data[row + (j0 + j) * b.cs];
            }
        }
    }
}
