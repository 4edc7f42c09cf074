//! The weight gradient by Winograd F(4x4, 3x3) or F(2x2, 3x3), on the forward pass's
//! tiling (`Tiling::forward`). The forward pass is linear in U:
//! M[e] = U[e] V[e], so dL/dU[e] = dM[e] V[e]^T summed over tiles, where dM = A dY A^T
//! is the output transform's adjoint (F(2x2): A^T = [1 1 1 0; 0 1 -1 -1]); then, as
//! U = G g G^T, dL/dg = G^T dU G. Per image, dy is transposed once to [pixels][Cout], so
//! that dM is computed with output channels in SIMD lanes, laid out [E][tiles][Cout]; the GEMM
//! dU[e] [Cin][Cout] += V[e] [Cin][tiles] dM[e] [tiles][Cout] runs over a chunk's tiles
//! with 8 input x 32 output channels in 16 accumulators. Sums run over the images in
//! order, chunks in order, tiles in order: fixed, whatever the thread count.

use std::arch::x86_64::*;

use super::{f4, Tiling, LANES, SKEW};
use crate::ops::ConvShape;

/// Input channels per micro-tile (one broadcast each).
const CB: usize = 8;

/// The weight gradient of `images` into `dw` [Cout, Cin*9] (overwritten):
/// dw[co, c, i, j] = sum over images and output pixels q of dy[co, q] x[c, q + (i, j)].
pub(crate) fn weight_grad_group(
    x: &[f32],
    dy: &[f32],
    images: std::ops::Range<usize>,
    s: &ConvShape,
    dw: &mut [f32],
) {
    let t = Tiling::forward(s);
    let (m, e_len) = (t.m, t.e());
    let (ho, wo) = (s.h_out(), s.w_out());
    let cop = s.c_out.next_multiple_of(LANES);
    let cinp = s.c_in.next_multiple_of(CB);
    // One image's dy, transposed and zero-padded to whole tiles and groups: [hy][wy][cop].
    let (hy, wy) = (m * t.th.next_multiple_of(t.group), m * t.tw);
    let in_len = s.c_in * s.h * s.w;
    let (vs, ds) = (t.estride(cinp), t.lanes * cop + SKEW);
    let key = ConvShape { n: 0, ..*s };
    let mut scratch = SCRATCH
        .take()
        .filter(|sc| sc.key == key)
        .unwrap_or_else(|| Scratch {
            key,
            pad: vec![0f32; s.c_in * t.plane() + f4::READ_PAST],
            v: vec![0f32; e_len * vs],
            dyt: vec![0f32; hy * wy * cop],
            dm: vec![0f32; e_len * ds],
            du: vec![0f32; e_len * cinp * cop],
        });
    let Scratch {
        pad,
        v,
        dyt,
        dm,
        du,
        ..
    } = &mut scratch;
    // dU is the group's sum: it starts from zero. The other buffers are written in the
    // same places by every image of this shape, and their zeros stay zero.
    du.fill(0.0);
    for n in images {
        t.pad_image(&x[n * in_len..][..in_len], s, pad);
        let dyn_ = &dy[n * s.c_out * ho * wo..][..s.c_out * ho * wo];
        // SAFETY: `applies` checked AVX-512F; see `transpose_dy` for the bounds.
        unsafe { transpose_dy(dyn_, s.c_out, (ho, wo), (wy, cop), dyt) };
        for (ty0, groups) in t.chunks() {
            // The chunk's tiles, whole groups: those past HO have V = 0 and dM = 0.
            let tiles = groups.len() * t.group * t.tw;
            t.transform_inputs(pad, s, (ty0, &groups), v, cinp);
            // SAFETY: `applies` checked AVX-512F (`Kernel::selected`); the tiles' m x m
            // blocks lie inside dyt (hy, wy) and their dM rows inside dm (tiles <= lanes).
            unsafe {
                if m == 4 {
                    f4::grad_tiles(dyt, &t, ty0, tiles, (wy, cop, ds), dm)
                } else {
                    grad_tiles(dyt, &t, ty0, tiles, (wy, cop, ds), dm)
                }
            }
            for e in 0..e_len {
                let ve = &v[e * vs..][..cinp * t.lanes];
                let dme = &dm[e * ds..][..t.lanes * cop];
                let due = &mut du[e * cinp * cop..][..cinp * cop];
                for c0 in (0..cinp).step_by(CB) {
                    let mut co0 = 0;
                    while co0 < cop {
                        let two = co0 + 2 * LANES <= cop;
                        // SAFETY: as above for AVX-512F; the tile reads rows c0..c0 + CB
                        // <= cinp of ve and `tiles` <= lanes rows of dme, and reads and
                        // writes columns co0..co0 + 16 NB <= cop of due's rows.
                        unsafe {
                            if two {
                                wgrad_tile::<2>(ve, dme, due, (c0, co0), tiles, (t.lanes, cop));
                            } else {
                                wgrad_tile::<1>(ve, dme, due, (c0, co0), tiles, (t.lanes, cop));
                            }
                        }
                        co0 += if two { 2 * LANES } else { LANES };
                    }
                }
            }
        }
    }
    let gt: &[[f64; 6]; 3] = if m == 4 { &f4::GT } else { &GT };
    untransform_planes(du, gt, m + 2, (s.c_in, cinp, s.c_out, cop), dw);
    SCRATCH.set(Some(scratch));
}

/// One thread's working memory for `weight_grad_group`, kept for the next group of the
/// same shape (a call's groups share it: allocating and zeroing ~1 MB per group of four
/// images was a few percent of a training step).
struct Scratch {
    /// The shape it was made for (batch size 0: any batch).
    key: ConvShape,
    /// The image, zero-padded: [Cin][hp][wp] (only the interior is ever written).
    pad: Vec<f32>,
    /// V of a chunk's tiles (rows past Cin stay zero).
    v: Vec<f32>,
    /// dy transposed to [hy][wy][cop] (the padding stays zero).
    dyt: Vec<f32>,
    /// dM of a chunk's tiles.
    dm: Vec<f32>,
    /// dU summed over the group: [E][cinp][cop].
    du: Vec<f32>,
}

thread_local! {
    /// Taken while a group runs, so a nested call (none today) would make its own.
    static SCRATCH: std::cell::Cell<Option<Scratch>> = const { std::cell::Cell::new(None) };
}

/// G^T for F(2x2, 3x3), padded to 6 columns.
const GT: [[f64; 6]; 3] = [
    [1.0, 0.5, 0.5, 0.0, 0.0, 0.0],
    [0.0, 0.5, -0.5, 0.0, 0.0, 0.0],
    [0.0, 0.5, 0.5, 1.0, 0.0, 0.0],
];

/// dw[co][c] = G^T dU[.][c][co] G for every channel pair, from du [n x n][cinp][cop]
/// (n = m + 2): as the map is linear, by whole planes of channel pairs, in blocks that
/// stay in L1 and in f64, rounded once. (Gathering each pair's n^2 values from n^2
/// planes 16 KiB apart missed L1 at every load and, at F(4x4), cost more than the
/// weight gradient's GEMMs on 16x16 images.)
fn untransform_planes(
    du: &[f32],
    gt: &[[f64; 6]; 3],
    n: usize,
    (c_in, cinp, c_out, cop): (usize, usize, usize, usize),
    dw: &mut [f32],
) {
    const BLOCK: usize = 128;
    let plane = cinp * cop;
    // w1[k][j][q] = sum over i of G^T[k][i] dU[i][j][q]; then out[k * 3 + l][q] = sum over
    // j of G^T[l][j] w1[k][j].
    let mut w1 = vec![0f64; 3 * n * BLOCK];
    let mut out = vec![0f64; 9 * BLOCK];
    for q0 in (0..plane).step_by(BLOCK) {
        let len = BLOCK.min(plane - q0);
        for k in 0..3 {
            for j in 0..n {
                let w = &mut w1[(k * n + j) * BLOCK..][..len];
                w.fill(0.0);
                for (i, &g) in gt[k][..n].iter().enumerate().filter(|(_, g)| **g != 0.0) {
                    let d = &du[(i * n + j) * plane + q0..][..len];
                    w.iter_mut().zip(d).for_each(|(w, &d)| *w += g * d as f64);
                }
            }
        }
        for k in 0..3 {
            for l in 0..3 {
                let o = &mut out[(k * 3 + l) * BLOCK..][..len];
                o.fill(0.0);
                for (j, &g) in gt[l][..n].iter().enumerate().filter(|(_, g)| **g != 0.0) {
                    let w = &w1[(k * n + j) * BLOCK..][..len];
                    o.iter_mut().zip(w).for_each(|(o, &w)| *o += g * w);
                }
            }
        }
        // Each pair's 9 taps stored together (they are adjacent in dw), walking (c, co)
        // along the block without a division per element: a store per tap, each 9 Cin
        // floats from the last, and a `div` per element cost more than the sums above.
        let (mut c, mut co) = (q0 / cop, q0 % cop);
        for dq in 0..len {
            if c < c_in && co < c_out {
                let taps = &mut dw[(co * c_in + c) * 9..][..9];
                for (kl, t) in taps.iter_mut().enumerate() {
                    *t = out[kl * BLOCK + dq] as f32;
                }
            }
            co += 1;
            if co == cop {
                (c, co) = (c + 1, 0);
            }
        }
    }
}

/// dyt[(oh wy + ow) cop + co] = dyn[co][oh][ow] for one image's dyn [Cout, HO, WO]: in
/// blocks of 16 channels x 16 pixels of a row, loaded (masked at the tails) and
/// transposed in registers, where one scalar store per element, each to another cache
/// line, cost as much as the transform it feeds.
#[target_feature(enable = "avx512f")]
unsafe fn transpose_dy(
    dyn_: &[f32],
    c_out: usize,
    (ho, wo): (usize, usize),
    (wy, cop): (usize, usize),
    dyt: &mut [f32],
) {
    assert!(dyn_.len() >= c_out * ho * wo && dyt.len() >= ((ho - 1) * wy + wo) * cop);
    assert!(wo <= wy && c_out <= cop && cop % LANES == 0);
    for co0 in (0..c_out).step_by(LANES) {
        for oh in 0..ho {
            for ow0 in (0..wo).step_by(LANES) {
                let mask = super::lane_mask(wo - ow0);
                let rows: [__m512; LANES] = std::array::from_fn(|r| {
                    if co0 + r < c_out {
                        let at = ((co0 + r) * ho + oh) * wo + ow0;
                        _mm512_maskz_loadu_ps(mask, dyn_.as_ptr().add(at))
                    } else {
                        _mm512_setzero_ps()
                    }
                });
                let cols = transpose16(rows);
                for (q, col) in cols.iter().enumerate().take(wo - ow0) {
                    let at = (oh * wy + ow0 + q) * cop + co0;
                    _mm512_storeu_ps(dyt.as_mut_ptr().add(at), *col);
                }
            }
        }
    }
}

/// The transpose of a 16x16 block held as 16 row vectors: out[j][i] = rows[i][j], by
/// the four rounds of 32-, 64-, 128- and 256-bit interleaves.
#[target_feature(enable = "avx512f")]
unsafe fn transpose16(r: [__m512; LANES]) -> [__m512; LANES] {
    // Round 1: 32-bit interleave of row pairs (2i, 2i + 1).
    let t: [__m512; LANES] = std::array::from_fn(|k| {
        let (a, b) = (r[k / 2 * 2], r[k / 2 * 2 + 1]);
        if k % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    // Round 2: 64-bit interleave of pairs (4i + j, 4i + j + 2).
    let u: [__m512; LANES] = std::array::from_fn(|k| {
        let base = k / 4 * 4 + (k % 4) / 2;
        let (a, b) = (_mm512_castps_pd(t[base]), _mm512_castps_pd(t[base + 2]));
        _mm512_castpd_ps(if k % 2 == 0 {
            _mm512_unpacklo_pd(a, b)
        } else {
            _mm512_unpackhi_pd(a, b)
        })
    });
    // Rounds 3 and 4: 128-bit lanes, across groups of four rows and then of eight.
    let v: [__m512; LANES] = std::array::from_fn(|k| {
        let base = k / 8 * 8 + k % 4;
        let (a, b) = (u[base], u[base + 4]);
        if (k / 4) % 2 == 0 {
            _mm512_shuffle_f32x4::<0x88>(a, b)
        } else {
            _mm512_shuffle_f32x4::<0xdd>(a, b)
        }
    });
    std::array::from_fn(|k| {
        let (a, b) = (v[k % 8], v[k % 8 + 8]);
        if k < 8 {
            _mm512_shuffle_f32x4::<0x88>(a, b)
        } else {
            _mm512_shuffle_f32x4::<0xdd>(a, b)
        }
    })
}

/// dM[e][k][..] = (A dY A^T)[e] for the chunk's tiles k < `tiles` (tile row ty0 + k / tw,
/// column k % tw), A = [1 0; 1 1; 1 -1; 0 -1], 16 output channels a vector, from dyt
/// [hy][wy][cop]; dm is [16][lanes][cop], blocks of e `ds` apart.
#[target_feature(enable = "avx512f")]
unsafe fn grad_tiles(
    dyt: &[f32],
    t: &Tiling,
    ty0: usize,
    tiles: usize,
    (wy, cop, ds): (usize, usize, usize),
    dm: &mut [f32],
) {
    debug_assert!(dm.len() >= 15 * ds + t.lanes * cop && tiles <= t.lanes);
    // [y0, y1] -> [y0, y0 + y1, y0 - y1, -y1]: A applied to a column of two.
    let a = |y0: __m512, y1: __m512| {
        [
            y0,
            _mm512_add_ps(y0, y1),
            _mm512_sub_ps(y0, y1),
            _mm512_sub_ps(_mm512_setzero_ps(), y1),
        ]
    };
    for k in 0..tiles {
        let (ty, tx) = (ty0 + k / t.tw, k % t.tw);
        let base = (2 * ty * wy + 2 * tx) * cop;
        debug_assert!(base + (wy + 1) * cop + cop <= dyt.len());
        for j in (0..cop).step_by(LANES) {
            let ld = |o: usize| _mm512_loadu_ps(dyt.as_ptr().add(base + o + j));
            // A dY: four rows of two (the block's columns b).
            let c0 = a(ld(0), ld(wy * cop));
            let c1 = a(ld(cop), ld((wy + 1) * cop));
            for i in 0..4 {
                for (jj, &val) in a(c0[i], c1[i]).iter().enumerate() {
                    let at = (i * 4 + jj) * ds + k * cop + j;
                    _mm512_storeu_ps(dm.as_mut_ptr().add(at), val);
                }
            }
        }
    }
}

/// due[c0 + i][co0..co0 + 16 NB] += sum over tiles k of ve[c0 + i][k] * dme[k][co0..]:
/// CB x NB accumulators, one broadcast of V per input channel and NB loads of dM per tile.
#[target_feature(enable = "avx512f")]
unsafe fn wgrad_tile<const NB: usize>(
    ve: &[f32],
    dme: &[f32],
    due: &mut [f32],
    (c0, co0): (usize, usize),
    tiles: usize,
    (lanes, cop): (usize, usize),
) {
    debug_assert!(ve.len() >= (c0 + CB) * lanes && dme.len() >= tiles * cop);
    debug_assert!(due.len() >= (c0 + CB) * cop && co0 + NB * LANES <= cop);
    let dp = due.as_mut_ptr().add(c0 * cop + co0);
    let mut acc = [[_mm512_setzero_ps(); NB]; CB];
    for (i, a) in acc.iter_mut().enumerate() {
        for (n, v) in a.iter_mut().enumerate() {
            *v = _mm512_loadu_ps(dp.add(i * cop + n * LANES));
        }
    }
    let (vp, gp) = (ve.as_ptr().add(c0 * lanes), dme.as_ptr().add(co0));
    for k in 0..tiles {
        let mut g = [_mm512_setzero_ps(); NB];
        for (n, v) in g.iter_mut().enumerate() {
            *v = _mm512_loadu_ps(gp.add(k * cop + n * LANES));
        }
        for (i, a) in acc.iter_mut().enumerate() {
            let x = _mm512_set1_ps(*vp.add(i * lanes + k));
            for n in 0..NB {
                a[n] = _mm512_fmadd_ps(x, g[n], a[n]);
            }
        }
    }
    for (i, a) in acc.iter().enumerate() {
        for (n, v) in a.iter().enumerate() {
            _mm512_storeu_ps(dp.add(i * cop + n * LANES), *v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// transpose16 transposes: out[j][i] = in[i][j] for distinct values.
    #[test]
    fn sixteen_by_sixteen_transpose() {
        if !is_x86_feature_detected!("avx512f") {
            eprintln!("no AVX-512 here: nothing to check");
            return;
        }
        let m: Vec<f32> = (0..256).map(|i| i as f32).collect();
        // SAFETY: AVX-512F detected above; every load reads 16 of the 256 floats.
        let out = unsafe {
            let rows = std::array::from_fn(|i| _mm512_loadu_ps(m.as_ptr().add(16 * i)));
            transpose16(rows)
        };
        for (j, col) in out.iter().enumerate() {
            let mut got = [0f32; 16];
            // SAFETY: as above; got holds 16 floats.
            unsafe { _mm512_storeu_ps(got.as_mut_ptr(), *col) };
            for (i, &g) in got.iter().enumerate() {
                assert_eq!(g, m[16 * i + j], "out[{j}][{i}]");
            }
        }
    }

    /// G^T u G is the adjoint of g -> G g G^T: <G g G^T, u> = <g, G^T u G> for any g, u,
    /// for F(2x2) and F(4x4), with the pair's values in planes of several channel pairs.
    #[test]
    fn untransform_is_the_weight_transforms_adjoint() {
        let g: [f32; 9] = std::array::from_fn(|i| (i as f32 * 0.37).sin());
        let f2 = super::super::forward::transform_weight(&g);
        let f4 = f4::transform_weight(&g);
        for (n, gu, gt) in [(4, &f2[..], &GT), (6, &f4[..], &f4::GT)] {
            // Two input x three output channels (padded to 2 x 4); the pair (1, 2).
            let (c_in, cinp, c_out, cop) = (2, 2, 3, 4);
            let u: Vec<f32> = (0..n * n).map(|i| (i as f32 * 0.71).cos()).collect();
            let mut du = vec![0f32; n * n * cinp * cop];
            for (e, &v) in u.iter().enumerate() {
                du[e * cinp * cop + cop + 2] = v;
            }
            let mut dw = vec![f32::NAN; c_out * c_in * 9];
            untransform_planes(&du, gt, n, (c_in, cinp, c_out, cop), &mut dw);
            let lhs: f64 = gu.iter().zip(&u).map(|(&a, &b)| a as f64 * b as f64).sum();
            let ut = &dw[(2 * c_in + 1) * 9..][..9];
            let rhs: f64 = g.iter().zip(ut).map(|(&a, &b)| a as f64 * b as f64).sum();
            assert!(
                (lhs - rhs).abs() < 1e-5,
                "F({0}x{0}): {lhs} vs {rhs}",
                n - 2
            );
            // Every other pair's gradient is zero.
            let others = dw.iter().enumerate().filter(|(i, _)| i / 9 != 2 * c_in + 1);
            assert!(others.clone().all(|(_, &v)| v == 0.0), "F({0}x{0})", n - 2);
        }
    }
}
