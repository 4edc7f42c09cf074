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
        // One fill of the whole panel: a fill per k of the few padding lanes would be a
        // library call per k.
        dst.fill([T::ZERO; MR]);
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
    } else if a.rs == 1 && rows == MR {
        // Column-major A (a transposed view): each column of the panel is one contiguous
        // copy of MR elements, of a size known here (so moves, not a memcpy call per k).
        for (p, d) in dst.iter_mut().enumerate() {
            let start = i0 + (p0 + p) * a.cs;
            *d = a.data[start..start + MR]
                .try_into()
                .expect("a slice of MR elements");
        }
    } else if a.rs == 1 {
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
        dst.fill([T::ZERO; NR]);
    }
    if b.cs == 1 && cols == NR {
        // Row-major B, full panel: each row is one copy of NR elements, of a known size.
        for (p, d) in dst.iter_mut().enumerate() {
            let start = (p0 + p) * b.rs + j0;
            *d = b.data[start..start + NR]
                .try_into()
                .expect("a slice of NR elements");
        }
    } else if b.cs == 1 {
        // Row-major B: each row of the panel is one contiguous copy.
        for (p, d) in dst.iter_mut().enumerate() {
            let start = (p0 + p) * b.rs + j0;
            d[..cols].copy_from_slice(&b.data[start..start + cols]);
        }
    } else if b.rs == 1 {
        // Column-major B (Kᵀ in Q·Kᵀ, colᵀ in a weight gradient): each column is
        // contiguous in p. Transposed in 8 x 8 blocks, 8 rows of the panel at a time, so
        // that the rows being written (8 NR-wide rows) and the columns' cache lines being
        // read stay in L1; a whole column at a time wrote to every row of the panel
        // (kc NR floats, 96 KiB at kc 384: past L1) once per column.
        const BLK: usize = 8;
        let col = |j: usize| (j0 + j) * b.cs + p0;
        let (full_p, full_j) = (kc / BLK * BLK, cols / BLK * BLK);
        for pb in (0..full_p).step_by(BLK) {
            let rows = &mut dst[pb..pb + BLK];
            for jb in (0..full_j).step_by(BLK) {
                transpose8(&b.data[col(jb) + pb..], b.cs, rows, jb);
            }
            for j in full_j..cols {
                let start = col(j) + pb;
                for (row, &x) in rows.iter_mut().zip(&b.data[start..start + BLK]) {
                    row[j] = x;
                }
            }
        }
        for j in 0..cols {
            let start = col(j);
            for (d, &x) in dst[full_p..]
                .iter_mut()
                .zip(&b.data[start + full_p..start + kc])
            {
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

/// rows[p][jb + j] = src[j cs + p] for p, j < 8: one 8 x 8 block of a transpose. f32
/// with AVX goes by 24 in-register shuffles (Intel's optimization manual, 8x8
/// transpose); the scalar loop compiles to a load and a store per element.
fn transpose8<T: Element, const NR: usize>(src: &[T], cs: usize, rows: &mut [[T; NR]], jb: usize) {
    assert!(rows.len() >= 8 && jb + 8 <= NR && src.len() >= 7 * cs + 8);
    #[cfg(all(target_arch = "x86_64", target_feature = "avx"))]
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
        // SAFETY: T is f32 (checked just above), so the casts only rename the type; the
        // eight loads of 8 from src + j cs and the eight stores of 8 at rows[p][jb..] lie
        // inside the slices (asserted above); AVX is enabled at compile time.
        unsafe {
            let rows = rows.as_mut_ptr() as *mut f32;
            transpose8_avx(src.as_ptr() as *const f32, cs, rows.add(jb), NR);
        }
        return;
    }
    for (p, row) in rows.iter_mut().take(8).enumerate() {
        for (j, x) in row[jb..jb + 8].iter_mut().enumerate() {
            *x = src[j * cs + p];
        }
    }
}

/// [`transpose8`] for f32: dst[p ld + j] = src[j cs + p].
#[cfg(all(target_arch = "x86_64", target_feature = "avx"))]
unsafe fn transpose8_avx(src: *const f32, cs: usize, dst: *mut f32, ld: usize) {
    use std::arch::x86_64::*;
    let r: [__m256; 8] = std::array::from_fn(|j| _mm256_loadu_ps(src.add(j * cs)));
    // Pairs of rows interleaved, then pairs of pairs, then the 128-bit halves swapped.
    let t = [
        _mm256_unpacklo_ps(r[0], r[1]),
        _mm256_unpackhi_ps(r[0], r[1]),
        _mm256_unpacklo_ps(r[2], r[3]),
        _mm256_unpackhi_ps(r[2], r[3]),
        _mm256_unpacklo_ps(r[4], r[5]),
        _mm256_unpackhi_ps(r[4], r[5]),
        _mm256_unpacklo_ps(r[6], r[7]),
        _mm256_unpackhi_ps(r[6], r[7]),
    ];
    let u = [
        _mm256_shuffle_ps::<0x44>(t[0], t[2]),
        _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
        _mm256_shuffle_ps::<0x44>(t[1], t[3]),
        _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
        _mm256_shuffle_ps::<0x44>(t[4], t[6]),
        _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
        _mm256_shuffle_ps::<0x44>(t[5], t[7]),
        _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
    ];
    for p in 0..4 {
        let lo = _mm256_permute2f128_ps::<0x20>(u[p], u[p + 4]);
        let hi = _mm256_permute2f128_ps::<0x31>(u[p], u[p + 4]);
        _mm256_storeu_ps(dst.add(p * ld), lo);
        _mm256_storeu_ps(dst.add((p + 4) * ld), hi);
    }
}

/// One image's im2col matrix, never materialised (implicit GEMM): row r = (c, i, j) is a
/// kernel tap, column q = (oh, ow) an output pixel, and element (r, q) is the input pixel
/// x[c, oh·sh + i − ph, ow·sw + j − pw], or 0 in the padding. Packing B panels straight
/// from the image saves writing and re-reading the whole matrix (9× the image for a
/// 3×3 kernel) once per image.
#[derive(Clone, Copy)]
pub(crate) struct Patches<'a, T> {
    /// The image [c_in, h, w].
    pub x: &'a [T],
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub ho: usize,
    pub wo: usize,
}

impl<T> Patches<'_, T> {
    /// Rows (taps) and columns (output pixels).
    pub fn dims(&self) -> (usize, usize) {
        (self.c_in * self.kh * self.kw, self.ho * self.wo)
    }

    /// The output columns [lo, hi) whose input column ow·sw + j − pw lies inside the row.
    fn valid_cols(&self, j: usize) -> (usize, usize) {
        let (sw, pw) = (self.stride.1, self.padding.1);
        let lo = pw.saturating_sub(j).div_ceil(sw).min(self.wo);
        let hi = (self.w + pw)
            .saturating_sub(j)
            .div_ceil(sw)
            .clamp(lo, self.wo);
        (lo, hi)
    }
}

/// [`pack_b_panel`] for an implicit im2col matrix: rows `p0..p0 + kc`, columns
/// `j0..j0 + cols`, read from the image one output-row segment at a time.
pub(crate) fn pack_b_patches<T: Element, const NR: usize>(
    dst: &mut [T],
    b: &Patches<'_, T>,
    p0: usize,
    kc: usize,
    j0: usize,
    cols: usize,
) {
    let (dst, _) = dst[..NR * kc].as_chunks_mut::<NR>();
    let ((sh, sw), (ph, pw)) = (b.stride, b.padding);
    for (p, d) in dst.iter_mut().enumerate() {
        let r = p0 + p;
        let (c, i, j) = (r / (b.kh * b.kw), (r / b.kw) % b.kh, r % b.kw);
        let plane = &b.x[c * b.h * b.w..(c + 1) * b.h * b.w];
        let (lo, hi) = b.valid_cols(j);
        let (mut q, end) = (j0, j0 + cols);
        while q < end {
            let (oh, ow0) = (q / b.wo, q % b.wo);
            let ow1 = b.wo.min(ow0 + (end - q));
            let seg = &mut d[q - j0..q - j0 + (ow1 - ow0)];
            let ih = (oh * sh + i) as isize - ph as isize;
            if ih < 0 || ih >= b.h as isize {
                seg.fill(T::ZERO);
            } else {
                let src = &plane[ih as usize * b.w..(ih as usize + 1) * b.w];
                // Valid outputs of this segment: [a, e).
                let a = lo.clamp(ow0, ow1);
                let e = hi.clamp(a, ow1);
                seg[..a - ow0].fill(T::ZERO);
                seg[e - ow0..].fill(T::ZERO);
                if sw == 1 && e > a {
                    // (With no valid output, a + j may be below pw: no copy at all.)
                    let start = a + j - pw;
                    seg[a - ow0..e - ow0].copy_from_slice(&src[start..start + (e - a)]);
                } else {
                    for ow in a..e {
                        seg[ow - ow0] = src[ow * sw + j - pw];
                    }
                }
            }
            q += ow1 - ow0;
        }
        d[cols..].fill(T::ZERO);
    }
}
