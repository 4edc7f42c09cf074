//! Direct convolution for f32 on AVX-512 (stride 1, any kernel size and padding): no
//! im2col and no packing per image. The U-Net's convolutions have 32-64 output channels,
//! too few to amortise packing a [Cin*KH*KW, HO*WO] panel per image (it cost as much as
//! the multiply-adds); here the image is padded once and read in place.
//!
//! A tile is R = 8 consecutive output pixels of one row × 16 or 32 output channels (one
//! or two zmm registers per pixel). For every tap (c, i, j) in order, the tile broadcasts
//! its R input pixels, which sit side by side in the padded row, and multiplies them into
//! the tap's weight vectors (the weights reordered once per call to [blocks][taps][16]),
//! as a GEMM micro-kernel whose A operand is read straight from the image (the layout
//! oneDNN's direct convolutions use, Georganas et al. 2018, here on plain NCHW). Each
//! output is one chain of FMAs over the taps in a fixed order: the result does not depend
//! on the thread count.

use crate::ops::ConvShape;

/// f32 lanes of a zmm register: output channels per block.
const LANES: usize = 16;
/// Output pixels per tile: 8 × 2 blocks = 16 accumulators, and every U-Net width (32,
/// 16, 8) is a multiple.
const R: usize = 8;

/// Whether the direct kernel serves `s` on this CPU: f32 stride-1 convolutions with a
/// spatial kernel, when the AVX-512 GEMM kernel is in use (`KUOSAN_GEMM_KERNEL` forcing
/// another kernel turns this off too, so one setting picks the code path).
pub(crate) fn applies(s: &ConvShape) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        s.stride == (1, 1)
            && (s.kh, s.kw) != (1, 1)
            && s.h_out() > 0
            && s.w_out() > 0
            && super::gemm::Kernel::selected() == super::gemm::Kernel::Avx512
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = s;
        false
    }
}

/// What every image of one call shares: reordered weights and tap offsets.
pub(crate) struct Prepared {
    /// [blocks][taps][LANES]: block b holds output channels b*16.., zero past Cout.
    w: Vec<f32>,
    /// Per tap (c, i, j): its offset in the padded image, (c * HP + i) * WP + j.
    taps: Vec<usize>,
    blocks: usize,
    hp: usize,
    wp: usize,
}

impl Prepared {
    pub(crate) fn new(w: &[f32], s: &ConvShape) -> Prepared {
        let k = s.c_in * s.kh * s.kw;
        let blocks = s.c_out.div_ceil(LANES);
        let mut wr = vec![0f32; blocks * k * LANES];
        for co in 0..s.c_out {
            let (b, l) = (co / LANES, co % LANES);
            for r in 0..k {
                wr[(b * k + r) * LANES + l] = w[co * k + r];
            }
        }
        let (hp, wp) = (s.h + 2 * s.padding.0, s.w + 2 * s.padding.1);
        let mut taps = Vec::with_capacity(k);
        for c in 0..s.c_in {
            for i in 0..s.kh {
                for j in 0..s.kw {
                    taps.push((c * hp + i) * wp + j);
                }
            }
        }
        Prepared {
            w: wr,
            taps,
            blocks,
            hp,
            wp,
        }
    }

    /// Scratch one image needs: the padded image plus R of slack, which the last tile of
    /// a row may read past its end (into outputs that are never stored).
    pub(crate) fn scratch(&self, s: &ConvShape) -> usize {
        s.c_in * self.hp * self.wp + R + s.kw
    }
}

/// yn [Cout, HO, WO] = conv(xn [Cin, H, W]) + bias for one image; `pad` is scratch of
/// `Prepared::scratch` elements, zero outside the interior (as `per_image` hands it out
/// and this function leaves it).
pub(crate) fn conv_image(
    p: &Prepared,
    xn: &[f32],
    bias: Option<&[f32]>,
    s: &ConvShape,
    yn: &mut [f32],
    pad: &mut [f32],
) {
    let (ph, pw) = s.padding;
    // Only the interior is written, image after image: the border and slack keep the
    // zeros the scratch buffer starts with.
    for c in 0..s.c_in {
        for ih in 0..s.h {
            let dst = (c * p.hp + ih + ph) * p.wp + pw;
            pad[dst..dst + s.w].copy_from_slice(&xn[(c * s.h + ih) * s.w..][..s.w]);
        }
    }
    let (ho, wo) = (s.h_out(), s.w_out());
    let k = p.taps.len();
    let mut b0 = 0;
    while b0 < p.blocks {
        let two = b0 + 1 < p.blocks;
        for oh in 0..ho {
            for ow0 in (0..wo).step_by(R) {
                let mut tile = [[0f32; 2 * LANES]; R];
                let origin = oh * p.wp + ow0;
                let w = &p.w[b0 * k * LANES..];
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `applies` checked AVX-512F. Reads: every tap offset plus origin
                // plus q < R lies inside `pad` (the padded image plus R + kw slack), and
                // w holds k * LANES (two blocks: 2 * k * LANES) weights from block b0.
                unsafe {
                    if two {
                        tile_avx512::<2>(pad, origin, &p.taps, w, &mut tile);
                    } else {
                        tile_avx512::<1>(pad, origin, &p.taps, w, &mut tile);
                    }
                }
                #[cfg(not(target_arch = "x86_64"))]
                let _ = (w, origin);
                // Store the valid pixels and channels, transposed to [Cout, HO, WO].
                let nb = if two { 2 } else { 1 };
                let pixels = R.min(wo - ow0);
                for (lane, co) in (b0 * LANES..(b0 + nb) * LANES)
                    .enumerate()
                    .take_while(|&(_, co)| co < s.c_out)
                {
                    let bv = bias.map_or(0.0, |b| b[co]);
                    let row = &mut yn[(co * ho + oh) * wo + ow0..][..pixels];
                    for (q, y) in row.iter_mut().enumerate() {
                        *y = tile[q][lane] + bv;
                    }
                }
            }
        }
        b0 += 2;
    }
}

/// One tile: for each tap r, tile[q][b*16..] += pad[origin + taps[r] + q] * w[b][r][..].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512<const B: usize>(
    pad: &[f32],
    origin: usize,
    taps: &[usize],
    w: &[f32],
    tile: &mut [[f32; 2 * LANES]; R],
) {
    use std::arch::x86_64::*;
    let k = taps.len();
    debug_assert!(w.len() >= B * k * LANES);
    let base = pad.as_ptr().add(origin);
    let wp = w.as_ptr();
    let mut acc = [[_mm512_setzero_ps(); B]; R];
    for (r, &off) in taps.iter().enumerate() {
        let mut wv = [_mm512_setzero_ps(); B];
        for (b, v) in wv.iter_mut().enumerate() {
            *v = _mm512_loadu_ps(wp.add((b * k + r) * LANES));
        }
        let px = base.add(off);
        for (q, a) in acc.iter_mut().enumerate() {
            let x = _mm512_set1_ps(*px.add(q));
            for b in 0..B {
                a[b] = _mm512_fmadd_ps(x, wv[b], a[b]);
            }
        }
    }
    for (q, a) in acc.iter().enumerate() {
        for (b, v) in a.iter().enumerate() {
            _mm512_storeu_ps(tile[q].as_mut_ptr().add(b * LANES), *v);
        }
    }
}
