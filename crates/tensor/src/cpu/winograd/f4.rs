//! F(4x4, 3x3)'s transforms (Lavin & Gray 2016, sec. 4, interpolation points 0, ±1,
//! ±2 and infinity): a 4x4 block of outputs from a 6x6 input patch (stride 4), 36
//! multiplies per channel pair where the direct kernel takes 144. U = G g G^T for the
//! weights, V = B^T d B for the inputs, Y = A^T M A for the outputs, with
//!
//! B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0;
//!        0 4 0 -5 0 1],
//! G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1],
//! A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1].
//!
//! Tiles lie in SIMD lanes as for F(2x2) (see `Tiling`): 16 tiles of a row, or 2 rows of
//! 8, or 4 rows of 4.

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

use super::{lane_mask, Tiling, LANES};

/// Elements of a transformed tile (6x6).
pub(super) const E4: usize = 36;
/// Floats the input transform may read past the last padded plane (loads it never uses):
/// the scratch leaves them after the planes.
pub(super) const READ_PAST: usize = 4;

/// G g G^T for one 3x3 kernel g (row-major), computed in f64 and rounded once.
pub(super) fn transform_weight(g: &[f32]) -> [f32; E4] {
    let col = |a: f64, b: f64, c: f64| {
        [
            a / 4.0,
            -(a + b + c) / 6.0,
            -(a - b + c) / 6.0,
            (a + 2.0 * b + 4.0 * c) / 24.0,
            (a - 2.0 * b + 4.0 * c) / 24.0,
            c,
        ]
    };
    let mut out = [0f32; E4];
    super::sandwich(g, col, &mut out);
    out
}

/// B^T d for one column d of 6 (lanes: tiles).
#[inline(always)]
unsafe fn bt(d: [__m512; 6]) -> [__m512; 6] {
    let (two, four, five) = (
        _mm512_set1_ps(2.0),
        _mm512_set1_ps(4.0),
        _mm512_set1_ps(5.0),
    );
    let a = _mm512_sub_ps(d[4], d[2]);
    let b = _mm512_sub_ps(d[3], d[1]);
    [
        // 4 d0 - 5 d2 + d4
        _mm512_fmadd_ps(four, d[0], _mm512_fnmadd_ps(five, d[2], d[4])),
        // -4 (d1 + d2) + d3 + d4
        _mm512_fnmadd_ps(four, _mm512_add_ps(d[1], d[2]), _mm512_add_ps(d[3], d[4])),
        // 4 (d1 - d2) - d3 + d4
        _mm512_fmadd_ps(four, _mm512_sub_ps(d[1], d[2]), _mm512_sub_ps(d[4], d[3])),
        // 2 (d3 - d1) - d2 + d4, and its mirror
        _mm512_fmadd_ps(two, b, a),
        _mm512_fnmadd_ps(two, b, a),
        // 4 d1 - 5 d3 + d5
        _mm512_fmadd_ps(four, d[1], _mm512_fnmadd_ps(five, d[3], d[5])),
    ]
}

/// A^T m for one column m of 6 (lanes: tiles).
#[inline(always)]
unsafe fn at(m: [__m512; 6]) -> [__m512; 4] {
    let s12 = _mm512_add_ps(m[1], m[2]);
    let d12 = _mm512_sub_ps(m[1], m[2]);
    let s34 = _mm512_add_ps(m[3], m[4]);
    let d34 = _mm512_sub_ps(m[3], m[4]);
    [
        _mm512_add_ps(_mm512_add_ps(m[0], s12), s34),
        _mm512_fmadd_ps(_mm512_set1_ps(2.0), d34, d12),
        _mm512_fmadd_ps(_mm512_set1_ps(4.0), s34, s12),
        _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0), d34, d12), m[5]),
    ]
}

/// Tiles per lane row: lane l is tile (ty + l / per_row, tx0 + l % per_row).
fn per_row(p: &Tiling) -> usize {
    if p.group == 1 {
        LANES
    } else {
        p.tw
    }
}

/// V[e][c][..] = (B^T d B)[e] for the tiles of one group of tile rows from `ty` of one
/// input channel's padded plane (`plane` points at its start; reads run up to
/// READ_PAST floats past it). Column j of the 16 patches comes from 4 loads per patch
/// row (16 floats each: a row's 64 from 4 tx0, or 2 x 32 of two tile rows, or 4 x 16 of
/// four) by two permutes and a blend; columns 4 and 5 are columns 0 and 1 of loads 4
/// floats on. `v` points at the group's first tile in V[0][c]; rows of different e lie
/// `estride` apart.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn input_tiles(
    plane: *const f32,
    p: &Tiling,
    ty: usize,
    v: *mut f32,
    estride: usize,
) {
    // One tile row down: 4 padded rows.
    let next = 4 * p.wp;
    let (srcs, four_rows) = match p.group {
        1 => ([0, LANES, 2 * LANES, 3 * LANES], false),
        2 => ([0, LANES, next, next + LANES], false),
        _ => ([0, next, 2 * next, 3 * next], true),
    };
    // idx[j][l]: lane l's column j within a pair of loads (of one row of 32 floats, or
    // of two tile rows of 16); the same for the low and the high 8 lanes.
    let idx: [__m512i; 4] = std::array::from_fn(|j| {
        let l: [i32; 16] = std::array::from_fn(|l| {
            let l = (l % 8) as i32;
            if four_rows {
                16 * (l / 4) + 4 * (l % 4) + j as i32
            } else {
                4 * l + j as i32
            }
        });
        _mm512_loadu_si512(l.as_ptr().cast())
    });
    let step = per_row(p);
    for tx0 in (0..p.tw).step_by(step) {
        let mask = if p.group == 1 {
            lane_mask(p.tw - tx0)
        } else {
            u16::MAX
        };
        // h[r] = (d B)[r][..] for the patches' 6 rows, over 16 tiles.
        let mut h = [[_mm512_setzero_ps(); 6]; 6];
        for (r, hr) in h.iter_mut().enumerate() {
            let base = plane.add((4 * ty + r) * p.wp + 4 * tx0);
            let load = |off: usize| srcs.map(|s| _mm512_loadu_ps(base.add(s + off)));
            let (a, b) = (load(0), load(4));
            let d: [__m512; 6] = std::array::from_fn(|j| {
                let (x, k) = if j < 4 { (&a, j) } else { (&b, j - 4) };
                let lo = _mm512_permutex2var_ps(x[0], idx[k], x[1]);
                let hi = _mm512_permutex2var_ps(x[2], idx[k], x[3]);
                _mm512_mask_blend_ps(0xFF00, lo, hi)
            });
            *hr = bt(d);
        }
        // B^T (d B): the same transform down the rows, column j at a time.
        let columns: [[__m512; 6]; 6] = std::array::from_fn(|j| std::array::from_fn(|r| h[r][j]));
        for (j, &column) in columns.iter().enumerate() {
            for (i, &val) in bt(column).iter().enumerate() {
                _mm512_mask_storeu_ps(v.add((i * 6 + j) * estride + tx0), mask, val);
            }
        }
    }
}

/// The outputs of one channel for one group of tile rows from `ty`: Y = A^T M A + bias,
/// 16 tiles a vector; each output row's 4 vectors (the tiles' columns 0-3) are
/// interleaved by permutes into 4 runs of 16 pixels (4 tiles each), stored masked to
/// yc [HO, WO]. `m` points at the group's first tile in M[0][co]; rows of different e
/// lie `estride` apart (reads run up to 16 lanes past the group's tiles, into M's next
/// row or slack).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn output_tiles(
    m: *const f32,
    estride: usize,
    p: &Tiling,
    ty: usize,
    bias: f32,
    (ho, wo): (usize, usize),
    yc: &mut [MaybeUninit<f32>],
) {
    // Pairs of floats (lanes k of y_b, y_b+1), then pairs of pairs, as doubles.
    let pair_lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let pair_hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let quad_lo = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11);
    let quad_hi = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
    let b = _mm512_set1_ps(bias);
    debug_assert!(yc.len() == ho * wo);
    let out = yc.as_mut_ptr() as *mut f32;
    let per_row = per_row(p);
    for tx0 in (0..p.tw).step_by(per_row) {
        let t: [__m512; E4] = std::array::from_fn(|e| _mm512_loadu_ps(m.add(e * estride + tx0)));
        // A^T M: 4 rows of 6, a column at a time; then (A^T M) A, a row at a time.
        let cols: [[__m512; 4]; 6] =
            std::array::from_fn(|j| at(std::array::from_fn(|i| t[i * 6 + j])));
        let rows: [[__m512; 6]; 4] = std::array::from_fn(|a| std::array::from_fn(|j| cols[j][a]));
        for (a, &row) in rows.iter().enumerate() {
            let y = at(row).map(|v| _mm512_add_ps(v, b));
            let p01 = [
                _mm512_permutex2var_ps(y[0], pair_lo, y[1]),
                _mm512_permutex2var_ps(y[0], pair_hi, y[1]),
            ];
            let p23 = [
                _mm512_permutex2var_ps(y[2], pair_lo, y[3]),
                _mm512_permutex2var_ps(y[2], pair_hi, y[3]),
            ];
            for q in 0..4 {
                let (lo, hi) = (_mm512_castps_pd(p01[q / 2]), _mm512_castps_pd(p23[q / 2]));
                let idx = if q % 2 == 0 { quad_lo } else { quad_hi };
                // Lanes 4q..4q + 4's output row a: 16 pixels, 4 of each tile.
                let run = _mm512_castpd_ps(_mm512_permutex2var_pd(lo, idx, hi));
                let tile = 4 * q;
                let (oh, col) = (4 * (ty + tile / per_row) + a, 4 * (tx0 + tile % per_row));
                if oh < ho && col < wo {
                    let n = (wo - col).min(LANES);
                    _mm512_mask_storeu_ps(out.add(oh * wo + col), lane_mask(n), run);
                }
            }
        }
    }
}

/// G^T = [1/4 -1/6 -1/6 1/24 1/24 0; 0 -1/6 1/6 1/12 -1/12 0; 0 -1/6 -1/6 1/6 1/6 1]:
/// the weight gradient's G^T dU G (`weight_grad::untransform_planes`), the adjoint of
/// `transform_weight`.
pub(super) const GT: [[f64; 6]; 3] = [
    [0.25, -1.0 / 6.0, -1.0 / 6.0, 1.0 / 24.0, 1.0 / 24.0, 0.0],
    [0.0, -1.0 / 6.0, 1.0 / 6.0, 1.0 / 12.0, -1.0 / 12.0, 0.0],
    [0.0, -1.0 / 6.0, -1.0 / 6.0, 1.0 / 6.0, 1.0 / 6.0, 1.0],
];

/// A y for one column y of 4 (lanes: output channels), A = (A^T)^T: the output
/// transform's adjoint.
#[inline(always)]
unsafe fn a(y: [__m512; 4]) -> [__m512; 6] {
    let s02 = _mm512_add_ps(y[0], y[2]);
    let s13 = _mm512_add_ps(y[1], y[3]);
    // y0 + 4 y2 and 2 y1 + 8 y3
    let t02 = _mm512_fmadd_ps(_mm512_set1_ps(4.0), y[2], y[0]);
    let t13 = _mm512_mul_ps(
        _mm512_set1_ps(2.0),
        _mm512_fmadd_ps(_mm512_set1_ps(4.0), y[3], y[1]),
    );
    [
        y[0],
        _mm512_add_ps(s02, s13),
        _mm512_sub_ps(s02, s13),
        _mm512_add_ps(t02, t13),
        _mm512_sub_ps(t02, t13),
        y[3],
    ]
}

/// dM[e][k][..] = (A dY A^T)[e] for the chunk's tiles k < `tiles` (tile row ty0 + k / tw,
/// column k % tw), 16 output channels a vector, from dyt [hy][wy][cop]; dm is
/// [36][lanes][cop], blocks of e `ds` apart.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn grad_tiles(
    dyt: &[f32],
    t: &Tiling,
    ty0: usize,
    tiles: usize,
    (wy, cop, ds): (usize, usize, usize),
    dm: &mut [f32],
) {
    debug_assert!(dm.len() >= (E4 - 1) * ds + t.lanes * cop && tiles <= t.lanes);
    for k in 0..tiles {
        let (ty, tx) = (ty0 + k / t.tw, k % t.tw);
        let base = (4 * ty * wy + 4 * tx) * cop;
        debug_assert!(base + (3 * wy + 3) * cop + cop <= dyt.len());
        for j in (0..cop).step_by(LANES) {
            let ld = |r: usize, c: usize| {
                _mm512_loadu_ps(dyt.as_ptr().add(base + (r * wy + c) * cop + j))
            };
            // A dY: 6 rows of 4, a column (of the block's 4) at a time.
            let cols: [[__m512; 6]; 4] =
                std::array::from_fn(|c| a(std::array::from_fn(|r| ld(r, c))));
            let rows: [[__m512; 4]; 6] =
                std::array::from_fn(|i| std::array::from_fn(|c| cols[c][i]));
            for (i, &row) in rows.iter().enumerate() {
                for (jj, &val) in a(row).iter().enumerate() {
                    let at = (i * 6 + jj) * ds + k * cop + j;
                    _mm512_storeu_ps(dm.as_mut_ptr().add(at), val);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// U = G g G^T by hand for the centre tap: the outer product of G's middle column,
    /// [0 -1/6 1/6 1/12 -1/12 0].
    #[test]
    fn weight_transform_of_the_centre_tap() {
        let mut g = [0f32; 9];
        g[4] = 1.0;
        let u = transform_weight(&g);
        let col = [0.0, -1.0 / 6.0, 1.0 / 6.0, 1.0 / 12.0, -1.0 / 12.0, 0.0];
        for i in 0..6 {
            for j in 0..6 {
                let want = (col[i] * col[j]) as f32;
                assert!((u[i * 6 + j] - want).abs() <= 1e-7, "({i}, {j})");
            }
        }
    }
}
