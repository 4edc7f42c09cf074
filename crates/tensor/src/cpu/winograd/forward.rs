//! The forward pass by Winograd F(4x4, 3x3) or F(2x2, 3x3) (`Tiling::forward` picks):
//! the weights transformed once per call to U = G g G^T, laid out [E][Cout blocks][Cin][8];
//! per chunk of tiles, E independent GEMMs M[e] = U[e] V[e], [Cout][tiles], by a
//! micro-kernel shaped like the direct conv's (8 output channels x 32 tiles, 16
//! accumulators); then Y = A^T M A, each output block, plus the bias.

use super::{f4, lane_mask, Tiling, E, LANES};
use crate::ops::ConvShape;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Output channels per micro-tile (one broadcast each).
const MB: usize = 8;

/// What every image of one call shares: the transformed weights and the tiling.
pub(crate) struct Prepared {
    /// U = G g G^T: [E][blocks][Cin][MB], zero past Cout (E = 16 or 36).
    u: Vec<f32>,
    /// Output-channel blocks of MB.
    blocks: usize,
    t: Tiling,
}

impl Prepared {
    /// Transforms the weights in two parallel passes: each kernel's U in order into
    /// [Cout][Cin][E], then each element's slab of the layout. (One serial pass that
    /// scattered each kernel's E values over the layout took ~4% of a training step at
    /// batch 16.)
    pub(crate) fn new(w: &[f32], s: &ConvShape) -> Prepared {
        let t = Tiling::forward(s);
        let (blocks, e_len) = (s.c_out.div_ceil(MB), t.e());
        let mut per = vec![0f32; s.c_out * s.c_in * e_len];
        per.par_chunks_mut(e_len)
            .zip(w.par_chunks(9))
            .for_each(|(ue, g)| {
                if t.m == 4 {
                    ue.copy_from_slice(&f4::transform_weight(g));
                } else {
                    ue.copy_from_slice(&transform_weight(g));
                }
            });
        let mut u = vec![0f32; e_len * blocks * s.c_in * MB];
        u.par_chunks_mut(blocks * s.c_in * MB)
            .enumerate()
            .for_each(|(e, slab)| {
                for co in 0..s.c_out {
                    for c in 0..s.c_in {
                        slab[((co / MB) * s.c_in + c) * MB + co % MB] =
                            per[(co * s.c_in + c) * e_len + e];
                    }
                }
            });
        Prepared { u, blocks, t }
    }

    /// Scratch one image needs: the padded image and the floats its transform may read
    /// past it, V and M of one chunk, and a vector of slack after M; zero when handed
    /// out the first time (`per_image` does so).
    pub(crate) fn scratch(&self, s: &ConvShape) -> usize {
        let t = &self.t;
        self.pad_len(s) + t.e() * (t.estride(s.c_in) + t.estride(self.blocks * MB)) + LANES
    }

    fn pad_len(&self, s: &ConvShape) -> usize {
        s.c_in * self.t.plane() + f4::READ_PAST
    }
}

/// G g G^T for one 3x3 kernel g (row-major), G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2;
/// 0 0 1], computed in f64 and rounded once.
pub(super) fn transform_weight(g: &[f32]) -> [f32; E] {
    let mut out = [0f32; E];
    let col = |a: f64, b: f64, c: f64| [a, (a + b + c) / 2.0, (a - b + c) / 2.0, c];
    super::sandwich(g, col, &mut out);
    out
}

/// yn [Cout, HO, WO] = conv(xn [Cin, H, W]) + bias for one image, every element of yn
/// written (so it may start uninitialised); `scratch` holds
/// `Prepared::scratch` elements and is zero outside the padded image's interior (as
/// `per_image` hands it out and this function leaves it).
pub(crate) fn conv_image(
    p: &Prepared,
    xn: &[f32],
    bias: Option<&[f32]>,
    s: &ConvShape,
    yn: &mut [MaybeUninit<f32>],
    scratch: &mut [f32],
) {
    let t = &p.t;
    let (cpad, e_len) = (p.blocks * MB, t.e());
    let (pad, rest) = scratch.split_at_mut(p.pad_len(s));
    let (vs, ms) = (t.estride(s.c_in), t.estride(cpad));
    let (v, rest) = rest.split_at_mut(e_len * vs);
    let m = &mut rest[..e_len * ms + LANES];
    t.pad_image(xn, s, pad);
    let (ho, wo) = (s.h_out(), s.w_out());
    for (ty0, groups) in t.chunks() {
        t.transform_inputs(pad, s, (ty0, &groups), v, s.c_in);
        // M[e] [cpad][lanes] = U[e] [cpad][Cin] x V[e] [Cin][lanes], blocks of e ms and
        // vs apart.
        for e in 0..e_len {
            let ve = &v[e * vs..][..s.c_in * t.lanes];
            for b in 0..p.blocks {
                let ub = &p.u[(e * p.blocks + b) * s.c_in * MB..][..s.c_in * MB];
                let mb = &mut m[e * ms + b * MB * t.lanes..][..MB * t.lanes];
                let mut g = 0;
                while g < t.lanes {
                    let two = g + 2 * LANES <= t.lanes;
                    // SAFETY: `applies` checked AVX-512F (`Kernel::selected`). ve holds
                    // Cin rows of `lanes` floats, ub Cin groups of MB, mb MB rows of
                    // `lanes`; the tile reads and writes columns g..g + 16 NB <= lanes.
                    unsafe {
                        if two {
                            gemm_tile::<2>(ve, ub, mb, t.lanes, g, s.c_in);
                        } else {
                            gemm_tile::<1>(ve, ub, mb, t.lanes, g, s.c_in);
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
                let at = co * t.lanes + (ty - ty0) * t.tw;
                // SAFETY: as above for AVX-512F; reads of M[e][co][(ty - ty0) tw..] run
                // at most 16 lanes past the group's tiles, into M's next row or its
                // slack; stores are masked to the pixels of yc's rows below HO.
                unsafe {
                    let mp = m[at..].as_ptr();
                    if t.m == 4 {
                        f4::output_tiles(mp, ms, t, ty, bv, (ho, wo), yc)
                    } else {
                        output_tiles(mp, ms, t, ty, bv, (ho, wo), yc)
                    }
                }
            }
        }
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
    p: &Tiling,
    ty: usize,
    bias: f32,
    (ho, wo): (usize, usize),
    yc: &mut [MaybeUninit<f32>],
) {
    use std::arch::x86_64::*;
    let lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let b = _mm512_set1_ps(bias);
    debug_assert!(yc.len() == ho * wo);
    let out = yc.as_mut_ptr() as *mut f32;
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
