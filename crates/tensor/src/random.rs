//! Counter-based random numbers: Philox 4x32-10 (Salmon et al., "Parallel random numbers:
//! as easy as 1, 2, 3", SC 2011). Element i of a fill is a pure function of (seed, block
//! offset, i), so any thread split, and a GPU kernel running the same rounds, gives the
//! same stream; a generator's whole state is two integers that checkpoints can store.

use crate::normal::box_muller;
use crate::{DType, Device, Result, Shape, Tensor};
use rayon::prelude::*;

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9; // golden ratio
const W1: u32 = 0xBB67_AE85; // sqrt(3) - 1

/// One Philox 4x32 block: 10 rounds of the bijection keyed by `key` (Random123's
/// philox4x32_R with R = 10).
pub fn philox4x32_10(mut ctr: [u32; 4], mut key: [u32; 2]) -> [u32; 4] {
    for round in 0..10 {
        if round > 0 {
            key = [key[0].wrapping_add(W0), key[1].wrapping_add(W1)];
        }
        let p0 = u64::from(M0) * u64::from(ctr[0]);
        let p1 = u64::from(M1) * u64::from(ctr[2]);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        ctr = [hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0];
    }
    ctr
}

/// A Philox stream position: `seed` is the key, `offset` the next unused 128-bit block.
/// Each fill consumes ceil(n / 4) blocks and advances the offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Philox {
    pub seed: u64,
    pub offset: u64,
}

impl Philox {
    pub fn new(seed: u64) -> Self {
        Philox { seed, offset: 0 }
    }

    /// The 4 words of block `index`.
    pub fn block(&self, index: u64) -> [u32; 4] {
        philox4x32_10(
            [index as u32, (index >> 32) as u32, 0, 0],
            [self.seed as u32, (self.seed >> 32) as u32],
        )
    }

    /// Claims the blocks for `n` values; returns the first block's index.
    pub(crate) fn take(&mut self, n: usize) -> u64 {
        let start = self.offset;
        self.offset += n.div_ceil(4) as u64;
        start
    }

    /// `n` uniforms in [0, 1) with 24 random bits each: value i = (word_i >> 8) * 2^-24,
    /// word i being word i % 4 of block start + i / 4.
    pub fn uniform_f32(&mut self, n: usize) -> Vec<f32> {
        let start = self.take(n);
        self.fill(n, start, |b| b.map(uniform24))
    }

    /// `n` standard normals by Box-Muller (1958) on word pairs: block j gives values
    /// 4j..4j+4 from (w0, w1) and (w2, w3), each pair as r cos(theta), r sin(theta) with
    /// r = sqrt(-2 ln u1), u1 = ((a >> 8) + 1) 2^-24 in (0, 1] (so |z| <= 5.8), and
    /// theta = 2 pi (b >> 8) 2^-24, in the integer arithmetic of `normal.rs` (values on
    /// a 2^-20 grid, the same bits from the GPU kernel).
    pub fn normal_f32(&mut self, n: usize) -> Vec<f32> {
        let start = self.take(n);
        self.fill(n, start, |b| {
            let (z0, z1) = box_muller(b[0], b[1]);
            let (z2, z3) = box_muller(b[2], b[3]);
            [z0, z1, z2, z3]
        })
    }

    /// Values 0..n from blocks start.., computed in parallel in fixed chunks.
    fn fill(&self, n: usize, start: u64, f: impl Fn([u32; 4]) -> [f32; 4] + Sync) -> Vec<f32> {
        let mut out = vec![0f32; n];
        const CHUNK: usize = 1 << 14; // a multiple of 4, so chunks start on block boundaries
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(c, chunk)| {
                let first = start + (c * CHUNK / 4) as u64;
                for (j, quad) in chunk.chunks_mut(4).enumerate() {
                    let v = f(self.block(first + j as u64));
                    quad.copy_from_slice(&v[..quad.len()]);
                }
            });
        out
    }
}

#[inline]
fn uniform24(w: u32) -> f32 {
    (w >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
}

impl Tensor {
    /// Uniform [0, 1) values from the Philox stream `rng` (which advances), generated on
    /// `device`: the same bits on every device.
    pub fn rand(
        shape: impl Into<Shape>,
        dtype: DType,
        device: &Device,
        rng: &mut Philox,
    ) -> Result<Tensor> {
        Tensor::philox(shape.into(), dtype, device, rng, false)
    }

    /// Standard normal values from the Philox stream `rng` (which advances), generated on
    /// `device`: the same bits on every device.
    pub fn randn(
        shape: impl Into<Shape>,
        dtype: DType,
        device: &Device,
        rng: &mut Philox,
    ) -> Result<Tensor> {
        Tensor::philox(shape.into(), dtype, device, rng, true)
    }

    fn philox(
        shape: Shape,
        dtype: DType,
        device: &Device,
        rng: &mut Philox,
        normal: bool,
    ) -> Result<Tensor> {
        let n = shape.elem_count();
        let t = match device {
            Device::Cpu => {
                let v = if normal {
                    rng.normal_f32(n)
                } else {
                    rng.uniform_f32(n)
                };
                Tensor::from_vec(v, shape, device)?
            }
            Device::Gpu(g) => {
                let start = rng.take(n);
                let s = crate::gpu::random::fill(g, n, rng.seed, start, normal)?;
                Tensor::from_storage(crate::Storage::Gpu(s), shape, None)
            }
        };
        t.to_dtype(dtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors from Random123's kat_vectors (philox4x32, 10 rounds).
    #[test]
    fn philox_matches_random123() {
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn streams_continue_where_they_left_off() {
        let mut a = Philox::new(7);
        let whole = a.normal_f32(8);
        let mut b = Philox::new(7);
        let mut parts = b.normal_f32(4);
        parts.extend(b.normal_f32(4));
        assert_eq!(whole, parts);
        assert_eq!(a, b);
        // A partial block is skipped, not reused.
        let mut c = Philox::new(7);
        c.uniform_f32(3);
        assert_eq!(c.offset, 1);
    }

    #[test]
    fn normals_have_unit_moments() {
        let v = Philox::new(1).normal_f32(200_000);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "var {var}");
        let u = Philox::new(2).uniform_f32(200_000);
        assert!(u.iter().all(|&x| (0.0..1.0).contains(&x)));
        let um = u.iter().map(|&x| x as f64).sum::<f64>() / n;
        assert!((um - 0.5).abs() < 0.005, "uniform mean {um}");
    }
}
