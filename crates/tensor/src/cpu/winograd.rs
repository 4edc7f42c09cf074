//! Winograd F(2x2, 3x3) convolution for f32 on AVX-512 (Lavin & Gray 2016, "Fast
//! Algorithms for Convolutional Neural Networks", sec. 4): 3x3 stride-1 convolutions,
//! the U-Net's, and their input gradients, which are themselves 3x3 stride-1
//! convolutions. A 2x2 block of outputs takes 16 multiplies per (input, output) channel
//! pair where the direct kernel takes 36, so 2.25x fewer; the transforms in and out are
//! additions only and cost a few percent at 32-128 channels.
//!
//! Per image, in chunks of a few tile rows that stay in L2:
//! - input: each 4x4 patch d (stride 2 over the padded image) goes to V = B^T d B, laid
//!   out [16][Cin][tiles] (one row of tiles per transformed element, tiles in SIMD lanes);
//! - weights, once per call: U = G g G^T, [16][Cout blocks][Cin][8];
//! - 16 independent GEMMs M[e] = U[e] V[e], [Cout][tiles], by a micro-kernel shaped like
//!   the direct conv's (8 output channels x 32 tiles, 16 accumulators);
//! - output: Y = A^T M A, the 2x2 block, plus the bias.
//!
//! Narrow images put several tile rows in one vector (2 at 8 tiles a row, 4 at 4), so
//! the transforms use whole vectors down to 8x8 images.
//!
//! Every output is the same chain of operations whatever the thread count (threads split
//! images only). Rounding differs from the direct sum by a few ulp of the operands'
//! magnitude: the transforms' entries are 0, ±1 and ±1/2.

use crate::ops::ConvShape;

/// Elements of a transformed 4x4 tile.
const E: usize = 16;
/// f32 lanes of a zmm register: tiles per vector.
const LANES: usize = 16;
/// Output channels per micro-tile (one broadcast each).
const MB: usize = 8;
/// Tiles per chunk, at most: V (16 x Cin x 64 floats, 512 KiB at Cin 128) and M stay in
/// the 1 MiB L2 between the transform that writes them and the GEMM that reads them.
const CHUNK: usize = 32;

/// Whether the Winograd kernel serves `s` on this CPU: f32 3x3 stride-1 convolutions
/// (any padding), when the AVX-512 GEMM kernel is in use (`KUOSAN_GEMM_KERNEL` forcing
/// another turns this off too).
pub(crate) fn applies(s: &ConvShape) -> bool {
    s.stride == (1, 1)
        && (s.kh, s.kw) == (3, 3)
        && s.h + 2 * s.padding.0 >= 3
        && s.w + 2 * s.padding.1 >= 3
        && super::gemm::Kernel::selected() == super::gemm::Kernel::Avx512
}

/// What every image of one call shares: the transformed weights and the tiling.
pub(crate) struct Prepared {
    /// U = G g G^T: [E][blocks][Cin][MB], zero past Cout.
    u: Vec<f32>,
    /// Output-channel blocks of MB.
    blocks: usize,
    /// Tile rows and columns: ceil(HO / 2), ceil(WO / 2).
    th: usize,
    tw: usize,
    /// Tile rows per vector: 16 / tw where tw is 4 or 8, else 1 (a row takes
    /// ceil(tw / 16) vectors).
    group: usize,
    /// The padded plane, 2 th' + 2 by 2 tw16 + 2 (th' rounded up to whole groups, tw16
    /// to whole vectors): every vector's 4x4 patches lie inside, and what lies past the
    /// padded image is zero.
    hp: usize,
    wp: usize,
    /// Tile rows per chunk (whole groups), and the chunk's tiles in whole vectors.
    rows: usize,
    lanes: usize,
}

impl Prepared {
    pub(crate) fn new(w: &[f32], s: &ConvShape) -> Prepared {
        let blocks = s.c_out.div_ceil(MB);
        let mut u = vec![0f32; E * blocks * s.c_in * MB];
        for co in 0..s.c_out {
            for c in 0..s.c_in {
                let t = transform_weight(&w[(co * s.c_in + c) * 9..][..9]);
                for (e, &v) in t.iter().enumerate() {
                    u[((e * blocks + co / MB) * s.c_in + c) * MB + co % MB] = v;
                }
            }
        }
        let (th, tw) = (s.h_out().div_ceil(2), s.w_out().div_ceil(2));
        let group = if tw == 4 || tw == 8 { LANES / tw } else { 1 };
        let rows = (CHUNK / tw).clamp(1, th).next_multiple_of(group);
        Prepared {
            u,
            blocks,
            th,
            tw,
            group,
            hp: 2 * th.next_multiple_of(group) + 2,
            wp: 2 * tw.next_multiple_of(LANES) + 2,
            rows,
            lanes: (rows * tw).next_multiple_of(LANES),
        }
    }

    /// Scratch one image needs: the padded image, V and M of one chunk, and a vector of
    /// slack after M; zero when handed out the first time (`per_image` does so).
    pub(crate) fn scratch(&self, s: &ConvShape) -> usize {
        s.c_in * self.hp * self.wp + E * (s.c_in + self.blocks * MB) * self.lanes + LANES
    }
}

/// G g G^T for one 3x3 kernel g (row-major), G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2;
/// 0 0 1], computed in f64 and rounded once.
fn transform_weight(g: &[f32]) -> [f32; E] {
    let col = |a: f64, b: f64, c: f64| [a, (a + b + c) / 2.0, (a - b + c) / 2.0, c];
    let g: [f64; 9] = std::array::from_fn(|i| g[i] as f64);
    // Gg: 4 rows of 3, one column of g at a time.
    let gg: [[f64; 4]; 3] = std::array::from_fn(|j| col(g[j], g[3 + j], g[6 + j]));
    let mut out = [0f32; E];
    for i in 0..4 {
        let row = col(gg[0][i], gg[1][i], gg[2][i]);
        for j in 0..4 {
            out[i * 4 + j] = row[j] as f32;
        }
    }
    out
}

/// yn [Cout, HO, WO] = conv(xn [Cin, H, W]) + bias for one image; `scratch` holds
/// `Prepared::scratch` elements and is zero outside the padded image's interior (as
/// `per_image` hands it out and this function leaves it).
pub(crate) fn conv_image(
    p: &Prepared,
    xn: &[f32],
    bias: Option<&[f32]>,
    s: &ConvShape,
    yn: &mut [f32],
    scratch: &mut [f32],
) {
    let (ph, pw) = s.padding;
    let plane = p.hp * p.wp;
    let cpad = p.blocks * MB;
    let (pad, rest) = scratch.split_at_mut(s.c_in * plane);
    let (v, rest) = rest.split_at_mut(E * s.c_in * p.lanes);
    let m = &mut rest[..E * cpad * p.lanes + LANES];
    // Only the interior is written, image after image: the rest keeps its zeros.
    for c in 0..s.c_in {
        for ih in 0..s.h {
            let dst = (c * p.hp + ih + ph) * p.wp + pw;
            pad[dst..dst + s.w].copy_from_slice(&xn[(c * s.h + ih) * s.w..][..s.w]);
        }
    }
    let (ho, wo) = (s.h_out(), s.w_out());
    for ty0 in (0..p.th).step_by(p.rows) {
        // The chunk's tile rows, in groups (the last may reach past th, into zeros).
        let groups = (ty0..(ty0 + p.rows).min(p.th)).step_by(p.group);
        for c in 0..s.c_in {
            let pc = &pad[c * plane..][..plane];
            for ty in groups.clone() {
                let at = c * p.lanes + (ty - ty0) * p.tw;
                // SAFETY: `applies` checked AVX-512F (`Kernel::selected`); the group's
                // patches lie inside the plane (hp, wp), and its stores go to
                // V[e][c][(ty - ty0) tw..] for group * tw <= lanes tiles.
                unsafe { input_tiles(pc, p, ty, v[at..].as_mut_ptr(), s.c_in * p.lanes) };
            }
        }
        // M[e] [cpad][lanes] = U[e] [cpad][Cin] x V[e] [Cin][lanes].
        for e in 0..E {
            let ve = &v[e * s.c_in * p.lanes..][..s.c_in * p.lanes];
            for b in 0..p.blocks {
                let ub = &p.u[(e * p.blocks + b) * s.c_in * MB..][..s.c_in * MB];
                let mb = &mut m[(e * cpad + b * MB) * p.lanes..][..MB * p.lanes];
                let mut g = 0;
                while g < p.lanes {
                    let two = g + 2 * LANES <= p.lanes;
                    // SAFETY: as above for AVX-512F. ve holds Cin rows of `lanes` floats,
                    // ub Cin groups of MB, mb MB rows of `lanes`; the tile reads and
                    // writes columns g..g + 16 NB <= lanes of them.
                    unsafe {
                        if two {
                            gemm_tile::<2>(ve, ub, mb, p.lanes, g, s.c_in);
                        } else {
                            gemm_tile::<1>(ve, ub, mb, p.lanes, g, s.c_in);
                        }
                    }
                    g += if two { 2 * LANES } else { LANES };
                }
            }
        }
        for co in 0..s.c_out {
            let bv = bias.map_or(0.0, |b| b[co]);
            let yc = &mut yn[co * ho * wo..][..ho * wo];
            for ty in groups.clone() {
                let at = co * p.lanes + (ty - ty0) * p.tw;
                // SAFETY: as above for AVX-512F; reads of M[e][co][(ty - ty0) tw..] run
                // at most 16 lanes past the group's tiles, into M's next row or its
                // slack; stores are masked to the pixels of yc's rows below HO.
                unsafe { output_tiles(m[at..].as_ptr(), cpad * p.lanes, p, ty, bv, (ho, wo), yc) };
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
unsafe fn input_tiles(plane: &[f32], p: &Prepared, ty: usize, v: *mut f32, estride: usize) {
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

/// The first n (<= 16, more is 16) lanes.
#[inline(always)]
fn lane_mask(n: usize) -> u16 {
    if n >= LANES {
        u16::MAX
    } else {
        (1u16 << n) - 1
    }
}

/// The outputs of one channel for one group of tile rows from `ty`: Y = A^T M A + bias,
/// A^T = [1 1 1 0; 0 1 -1 -1], 16 tiles a vector, the 2x2 blocks' two columns
/// interleaved by permutes into rows of yc [HO, WO]. `m` points at the group's first
/// tile in M[0][co]; rows of different e lie `estride` apart (reads run up to 16 lanes
/// past the group's tiles, into M's next row or slack).
#[target_feature(enable = "avx512f")]
unsafe fn output_tiles(
    m: *const f32,
    estride: usize,
    p: &Prepared,
    ty: usize,
    bias: f32,
    (ho, wo): (usize, usize),
    yc: &mut [f32],
) {
    use std::arch::x86_64::*;
    let lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let b = _mm512_set1_ps(bias);
    debug_assert!(yc.len() == ho * wo);
    let out = yc.as_mut_ptr();
    let step = if p.group == 1 { LANES } else { p.tw };
    for tx0 in (0..p.tw).step_by(step) {
        let t: [__m512; E] = std::array::from_fn(|e| _mm512_loadu_ps(m.add(e * estride + tx0)));
        // A^T M: two rows of four; then (A^T M) A, two columns each.
        let r0: [__m512; 4] =
            std::array::from_fn(|j| _mm512_add_ps(_mm512_add_ps(t[j], t[4 + j]), t[8 + j]));
        let r1: [__m512; 4] =
            std::array::from_fn(|j| _mm512_sub_ps(_mm512_sub_ps(t[4 + j], t[8 + j]), t[12 + j]));
        for (a, r) in [r0, r1].iter().enumerate() {
            let y0 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(r[0], r[1]), r[2]), b);
            let y1 = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(r[1], r[2]), r[3]), b);
            // 32 output pixels: the tiles' columns 2 tx and 2 tx + 1 side by side.
            let (ylo, yhi) = (
                _mm512_permutex2var_ps(y0, lo, y1),
                _mm512_permutex2var_ps(y0, hi, y1),
            );
            // Stores `val`'s lanes from `first` to output row `oh` from column `col`,
            // as many as the row has (masked; nothing past HO).
            let store = |val: __m512, oh: usize, col: usize, first: usize| {
                if oh < ho {
                    let n = (wo - col).min(LANES - first);
                    let mask = lane_mask(first + n) & !lane_mask(first);
                    // Lane `first` lands on column `col`: the base lies `first` floats
                    // before it, inside yc (the row is not the first: oh >= 2 whenever
                    // first > 0, and wo >= 7 then).
                    _mm512_mask_storeu_ps(out.add(oh * wo + col - first), mask, val);
                }
            };
            let oh = 2 * ty + a;
            match p.group {
                1 => {
                    store(ylo, oh, 2 * tx0, 0);
                    if 2 * tx0 + LANES < wo {
                        store(yhi, oh, 2 * tx0 + LANES, 0);
                    }
                }
                2 => {
                    store(ylo, oh, 0, 0);
                    store(yhi, oh + 2, 0, 0);
                }
                _ => {
                    store(ylo, oh, 0, 0);
                    store(ylo, oh + 2, 0, 8);
                    store(yhi, oh + 4, 0, 0);
                    store(yhi, oh + 6, 0, 8);
                }
            }
        }
    }
}

/// mb[i][g..g + 16 NB] = sum over c of ub[c][i] * ve[c][g..g + 16 NB] for the MB rows i:
/// MB x NB accumulators, one broadcast of U and NB loads of V per input channel.
#[target_feature(enable = "avx512f")]
unsafe fn gemm_tile<const NB: usize>(
    ve: &[f32],
    ub: &[f32],
    mb: &mut [f32],
    lanes: usize,
    g: usize,
    c_in: usize,
) {
    use std::arch::x86_64::*;
    debug_assert!(ve.len() >= c_in * lanes && ub.len() >= c_in * MB);
    debug_assert!(mb.len() >= MB * lanes && g + NB * LANES <= lanes);
    let (vp, up) = (ve.as_ptr().add(g), ub.as_ptr());
    let mut acc = [[_mm512_setzero_ps(); NB]; MB];
    for c in 0..c_in {
        let mut x = [_mm512_setzero_ps(); NB];
        for (n, xv) in x.iter_mut().enumerate() {
            *xv = _mm512_loadu_ps(vp.add(c * lanes + n * LANES));
        }
        let uc = up.add(c * MB);
        for (i, a) in acc.iter_mut().enumerate() {
            let u = _mm512_set1_ps(*uc.add(i));
            for n in 0..NB {
                a[n] = _mm512_fmadd_ps(u, x[n], a[n]);
            }
        }
    }
    let mp = mb.as_mut_ptr().add(g);
    for (i, a) in acc.iter().enumerate() {
        for (n, v) in a.iter().enumerate() {
            _mm512_storeu_ps(mp.add(i * lanes + n * LANES), *v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// U = G g G^T by hand for a kernel with one tap set: g = e_(1,1) (the centre) gives
    /// the outer product of G's middle column, [0 1/2 -1/2 0].
    #[test]
    fn weight_transform_of_the_centre_tap() {
        let mut g = [0f32; 9];
        g[4] = 1.0;
        let u = transform_weight(&g);
        let col = [0.0, 0.5, -0.5, 0.0];
        for i in 0..4 {
            for j in 0..4 {
                assert_eq!(u[i * 4 + j], col[i] * col[j], "({i}, {j})");
            }
        }
    }
}
