//! Winograd convolution for f32 on AVX-512 (Lavin & Gray 2016, "Fast Algorithms for
//! Convolutional Neural Networks", sec. 4), for 3x3 stride-1 convolutions, the U-Net's:
//! the forward pass and the input gradient (itself a 3x3 stride-1 convolution) in
//! `forward`, the weight gradient in `weight_grad`. F(m x m, 3x3) computes an m x m block
//! of outputs from an (m + 2) x (m + 2) input patch with (m + 2)^2 multiplies per (input,
//! output) channel pair where the direct kernel takes 9 m^2: F(2x2, 3x3) 16 for 36
//! (2.25x fewer), F(4x4, 3x3) 36 for 144 (4x fewer; `f4`). Both passes take F(4x4)
//! where its tiles fill whole vectors and F(2x2) elsewhere (8x8 images: 4 tiles).
//!
//! Both cut each image into m x m output tiles, taken in chunks of a few tile rows whose
//! transforms stay in L2, and transform each tile's input patch d (stride m over the
//! padded image) to V = B^T d B, laid out [E][Cin][tiles]: one row of tiles per
//! transformed element, tiles in SIMD lanes. Narrow images put several tile rows in one
//! vector (2 at 8 tiles a row, 4 at 4), so the transforms use whole vectors.
//!
//! Every result is the same chain of operations whatever the thread count (threads
//! split images). Rounding differs from the direct sums by a few ulp of the operands'
//! magnitude for F(2x2) (the transforms' entries are 0, ±1 and ±1/2) and by more for
//! F(4x4), whose entries reach 8 and 1/24: up to ~6e-6 of the terms' magnitude (the sum
//! of |w x|) in the tests.

mod f4;
mod forward;
mod weight_grad;

pub(crate) use forward::{conv_image, Prepared};
pub(crate) use weight_grad::weight_grad_group;

use crate::ops::ConvShape;

/// Elements of a transformed F(2x2, 3x3) tile (4x4).
const E: usize = 16;
/// f32 lanes of a zmm register: tiles per vector.
const LANES: usize = 16;
/// Tiles per chunk, at most: a chunk's transforms (16 x Cin x 32 floats for V, 256 KiB
/// at Cin 128) stay in the 1 MiB L2 between the pass that writes them and the GEMM that
/// reads them.
const CHUNK: usize = 32;
/// Floats between consecutive transformed elements' blocks beyond their contents: the
/// blocks are 4 or 8 KiB, and 16 streams a power of two apart would share one L1 set
/// (8 ways); a cache line of skew spreads them (measured: the transforms ran at a third
/// of their arithmetic rate without it).
const SKEW: usize = LANES;

/// Whether the Winograd kernels serve `s` on this CPU: f32 3x3 stride-1 convolutions
/// (any padding), when the AVX-512 GEMM kernel is in use (`KUOSAN_GEMM_KERNEL` forcing
/// another turns this off too).
pub(crate) fn applies(s: &ConvShape) -> bool {
    s.stride == (1, 1)
        && (s.kh, s.kw) == (3, 3)
        && s.h + 2 * s.padding.0 >= 3
        && s.w + 2 * s.padding.1 >= 3
        && super::gemm::Kernel::selected() == super::gemm::Kernel::Avx512
}

/// How an image is cut into tiles and chunks, and its padded copy.
pub(crate) struct Tiling {
    /// Output tile side m: 2 for F(2x2, 3x3), 4 for F(4x4, 3x3).
    m: usize,
    /// Tile rows and columns: ceil(HO / m), ceil(WO / m).
    th: usize,
    tw: usize,
    /// Tile rows per vector: 16 / tw where tw is 4 or 8, else 1 (a row takes
    /// ceil(tw / 16) vectors).
    group: usize,
    /// The padded plane, m th' + 2 by m tw16 + 2 (th' rounded up to whole groups, tw16
    /// to whole vectors): every vector's patches lie inside, and what lies past the
    /// padded image is zero.
    hp: usize,
    wp: usize,
    /// Tile rows per chunk (whole groups), and the chunk's tiles in whole vectors.
    rows: usize,
    lanes: usize,
}

impl Tiling {
    /// F(4x4, 3x3) where tiles of 4 fill whole vectors (4 or 8 tiles a row, or 16 and
    /// more), else F(2x2, 3x3).
    fn forward(s: &ConvShape) -> Tiling {
        let tw4 = s.w_out().div_ceil(4);
        let m = if tw4 == 4 || tw4 == 8 || tw4 >= LANES {
            4
        } else {
            2
        };
        Tiling::with_tile(s, m)
    }

    fn with_tile(s: &ConvShape, m: usize) -> Tiling {
        let (th, tw) = (s.h_out().div_ceil(m), s.w_out().div_ceil(m));
        let group = if tw == 4 || tw == 8 { LANES / tw } else { 1 };
        let rows = (CHUNK / tw).clamp(1, th).next_multiple_of(group);
        Tiling {
            m,
            th,
            tw,
            group,
            hp: m * th.next_multiple_of(group) + 2,
            wp: m * tw.next_multiple_of(LANES) + 2,
            rows,
            lanes: (rows * tw).next_multiple_of(LANES),
        }
    }

    /// Elements of a transformed tile: (m + 2)^2.
    fn e(&self) -> usize {
        (self.m + 2) * (self.m + 2)
    }

    /// Floats from one transformed element's block of `rows` rows of tiles to the next.
    fn estride(&self, rows: usize) -> usize {
        rows * self.lanes + SKEW
    }

    /// Floats of one channel's padded plane.
    fn plane(&self) -> usize {
        self.hp * self.wp
    }

    /// Copies xn [Cin, H, W] into the interior of `pad` [Cin][hp][wp]. Only the interior
    /// is written, image after image: the rest keeps the zeros it started with. Rows go
    /// by masked vector moves: a `memcpy` call per row of 16 or 32 floats cost ~2% of a
    /// training step.
    fn pad_image(&self, xn: &[f32], s: &ConvShape, pad: &mut [f32]) {
        let (ph, pw) = s.padding;
        assert!(xn.len() >= s.c_in * s.h * s.w && pad.len() >= s.c_in * self.plane());
        assert!(s.h + ph <= self.hp && s.w + pw <= self.wp);
        for c in 0..s.c_in {
            for ih in 0..s.h {
                let dst = (c * self.hp + ih + ph) * self.wp + pw;
                let src = (c * s.h + ih) * s.w;
                // SAFETY: `applies` checked AVX-512F (`Kernel::selected`); the row's w
                // floats lie inside xn and, from `dst`, inside the plane's row (asserted
                // above: pw + w <= wp).
                unsafe { copy_row(xn[src..].as_ptr(), pad[dst..].as_mut_ptr(), s.w) };
            }
        }
    }

    /// Each chunk's first tile row and its groups' first tile rows (the last group may
    /// reach past th, into zeros).
    fn chunks(
        &self,
    ) -> impl Iterator<Item = (usize, std::iter::StepBy<std::ops::Range<usize>>)> + '_ {
        (0..self.th).step_by(self.rows).map(|ty0| {
            (
                ty0,
                (ty0..(ty0 + self.rows).min(self.th)).step_by(self.group),
            )
        })
    }

    /// V[e][c][..] for every input channel of a chunk: `v` is [E][rows][lanes] with
    /// `rows` >= Cin rows per element, `estride(rows)` apart. Reads run up to 4 floats
    /// past the last plane (F(4x4)'s loads): the caller's buffer has them.
    fn transform_inputs(
        &self,
        pad: &[f32],
        s: &ConvShape,
        chunk: (usize, &std::iter::StepBy<std::ops::Range<usize>>),
        v: &mut [f32],
        rows: usize,
    ) {
        let (ty0, groups) = chunk;
        let plane = self.plane();
        assert!(v.len() >= self.e() * self.estride(rows) && rows >= s.c_in);
        assert!(pad.len() >= s.c_in * plane + if self.m == 4 { f4::READ_PAST } else { 0 });
        for c in 0..s.c_in {
            for ty in groups.clone() {
                let at = c * self.lanes + (ty - ty0) * self.tw;
                let vp = v[at..].as_mut_ptr();
                let pp = pad[c * plane..].as_ptr();
                // SAFETY: `applies` checked AVX-512F (`Kernel::selected`); the group's
                // patches lie inside the plane (hp, wp; F(4x4)'s loads run at most
                // READ_PAST floats past it, inside `pad`), and its stores go to
                // V[e][c][(ty - ty0) tw..] for group * tw <= lanes tiles, inside v.
                unsafe {
                    if self.m == 4 {
                        f4::input_tiles(pp, self, ty, vp, self.estride(rows))
                    } else {
                        input_tiles(&pad[c * plane..][..plane], self, ty, vp, self.estride(rows))
                    }
                }
            }
        }
    }
}

/// The 16 floats of `row` from `at`, or where `group` is 4 the 8 from `at` then the 8
/// from `at + next` (the same columns one tile row = 2 padded rows down, twice over:
/// a vector holds four tile rows of 4 tiles).
#[target_feature(enable = "avx512f")]
unsafe fn load_row(
    plane: *const f32,
    at: usize,
    group: usize,
    next: usize,
) -> [std::arch::x86_64::__m512; 2] {
    use std::arch::x86_64::*;
    let p = plane.add(at);
    match group {
        1 => [_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(LANES))],
        2 => [_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(next))],
        _ => {
            let two = |q: *const f32| {
                let lo = _mm512_castps256_ps512(_mm256_loadu_ps(q));
                let hi = _mm256_castps_pd(_mm256_loadu_ps(q.add(next)));
                _mm512_castpd_ps(_mm512_insertf64x4::<1>(_mm512_castps_pd(lo), hi))
            };
            [two(p), two(p.add(2 * next))]
        }
    }
}

/// V[e][c][..] = (B^T d B)[e] for the tiles of one group of tile rows from `ty` of one
/// input channel's padded plane, B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]: 16
/// tiles a vector, the patches' even and odd columns split by two permutes per pair of
/// loads. `v` points at the group's first tile in V[0][c]; rows of different e lie
/// `estride` apart.
#[target_feature(enable = "avx512f")]
unsafe fn input_tiles(plane: &[f32], p: &Tiling, ty: usize, v: *mut f32, estride: usize) {
    use std::arch::x86_64::*;
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    debug_assert!(plane.len() >= (2 * (ty + p.group) + 2) * p.wp);
    // Next tile row: two padded rows down.
    let next = 2 * p.wp;
    let step = if p.group == 1 { LANES } else { p.tw };
    for tx0 in (0..p.tw).step_by(step) {
        let mask = if p.group == 1 {
            lane_mask(p.tw - tx0)
        } else {
            u16::MAX
        };
        // dB for the patch's 4 rows: h[r][j] over 16 tiles.
        let mut h = [[_mm512_setzero_ps(); 4]; 4];
        for (r, hr) in h.iter_mut().enumerate() {
            // Columns 2 tx .. 2 tx + 34 of the row (fewer for groups): inside, as
            // wp = 2 tw16 + 2.
            let at = (2 * ty + r) * p.wp + 2 * tx0;
            let [a0, a1] = load_row(plane.as_ptr(), at, p.group, next);
            let [b0, b1] = load_row(plane.as_ptr(), at + 2, p.group, next);
            let d0 = _mm512_permutex2var_ps(a0, even, a1);
            let d1 = _mm512_permutex2var_ps(a0, odd, a1);
            let d2 = _mm512_permutex2var_ps(b0, even, b1);
            let d3 = _mm512_permutex2var_ps(b0, odd, b1);
            *hr = [
                _mm512_sub_ps(d0, d2),
                _mm512_add_ps(d1, d2),
                _mm512_sub_ps(d2, d1),
                _mm512_sub_ps(d1, d3),
            ];
        }
        // B^T (dB): the same combinations down the rows, column j at a time.
        let [h0, h1, h2, h3] = h;
        for j in 0..4 {
            let col = [
                _mm512_sub_ps(h0[j], h2[j]),
                _mm512_add_ps(h1[j], h2[j]),
                _mm512_sub_ps(h2[j], h1[j]),
                _mm512_sub_ps(h1[j], h3[j]),
            ];
            for (i, &val) in col.iter().enumerate() {
                _mm512_mask_storeu_ps(v.add((i * 4 + j) * estride + tx0), mask, val);
            }
        }
    }
}

/// G g G^T for one 3x3 kernel g (row-major) into `out` (N x N, row-major), `col` being
/// G applied to one column of 3: computed in f64 and rounded once.
fn sandwich<const N: usize>(g: &[f32], col: impl Fn(f64, f64, f64) -> [f64; N], out: &mut [f32]) {
    let g: [f64; 9] = std::array::from_fn(|i| g[i] as f64);
    // Gg: N rows of 3, one column of g at a time.
    let gg: [[f64; N]; 3] = std::array::from_fn(|j| col(g[j], g[3 + j], g[6 + j]));
    for (i, out_row) in out.chunks_exact_mut(N).take(N).enumerate() {
        let row = col(gg[0][i], gg[1][i], gg[2][i]);
        for (o, r) in out_row.iter_mut().zip(row) {
            *o = r as f32;
        }
    }
}

/// Copies n floats from `src` to `dst`, 16 at a time (the last masked).
#[target_feature(enable = "avx512f")]
unsafe fn copy_row(src: *const f32, dst: *mut f32, n: usize) {
    use std::arch::x86_64::*;
    for i in (0..n).step_by(LANES) {
        let mask = lane_mask(n - i);
        let v = _mm512_maskz_loadu_ps(mask, src.add(i));
        _mm512_mask_storeu_ps(dst.add(i), mask, v);
    }
}

/// The first n (<= 16, more is 16) lanes.
#[inline(always)]
fn lane_mask(n: usize) -> u16 {
    if n >= LANES {
        u16::MAX
    } else {
        (1u16 << n) - 1
    }
}
