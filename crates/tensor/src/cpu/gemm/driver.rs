//! The Goto/BLIS loop nest around a micro-kernel: K blocking, packing, and the split over threads.
//!
//! Loop nest (Goto & van de Geijn 2008; BLIS's five loops, Van Zee & van de Geijn 2015), in
//! this crate's row-major terms, for a kernel with a wide NR (64 f32 = 4 zmm):
//!
//! ```text
//! for i3 in M step mc                       // bounds the packed-A buffer (L3-resident)
//!   pack A[i3.., all of K] -> Ã, cut in kc blocks   // once, shared by all tasks
//!                                           // (skipped for row-major A: see `direct_a`)
//!   par for each task (a range of MR row-panels × a range of NR column-panels of C):
//!     for p0 in K step kc                   // K blocks: a function of k only (determinism)
//!       pack B[p0.., chunk] -> B̃ (kc × ≤nc) // private to the task, stays in L2
//!       for each MR row-panel               // Ã micro-panel (MR × kc) stays in L1 ...
//!         for each NR column-panel          // ... while B̃ micro-panels stream from L2
//!           micro-kernel                    // C tile = or += Ã micro-panel · B̃ micro-panel
//! ```
//!
//! The two innermost loops are swapped relative to BLIS's usual order: with NR = 64, a B
//! micro-panel (kc × 64 floats = 256 B per k) would not fit in L1 at a useful kc, but the A
//! micro-panel (6 × kc) does, so A is the L1 operand and B the L2 one (as BLIS's column-major
//! "MR = 32" Skylake-X kernels do, transposed). The K loop sits inside each task so that a
//! call costs two fork-joins per M block (pack A, compute), not two per K block.
//!
//! Determinism: every element of C is produced by the same micro-kernel (fixed per process),
//! over the same K blocks (fixed by k), in the same order, starting from the same C; the task
//! partition only decides which thread computes a tile, never how. Edge tiles run the same
//! per-element arithmetic. So the bits do not depend on the thread count.

use rayon::prelude::*;
use std::mem::MaybeUninit;

use super::buffer::PackBuf;
use super::element::{Element, Slot};
use super::kernel::{ALayout, MicroKernel};
use super::pack::{pack_a_panel, pack_b_panel, pack_b_patches, Patches, Strided};

/// Below this many flops (2·m·n·k) a call stays on the calling thread: a rayon fork-join costs
/// a few microseconds, as much as the whole product.
const PAR_MIN_FLOP: usize = 1 << 21;

/// Packed-A blocks smaller than this (elements) are packed on the calling thread: a parallel
/// pack would cost a fork-join for a few microseconds of copying.
const PAR_MIN_PACK: usize = 1 << 16;

/// Most bytes of packed A per M block (all of K at once): keeps Ã in L3 and bounds memory.
const A_PACK_BYTES: usize = 8 << 20;

/// One validated GEMM call: C (m×n, row stride ldc) = or += A (m×k) · B (k×n).
pub(crate) struct Problem<'a, T> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: Strided<'a, T>,
    pub b: BSource<'a, T>,
    pub ldc: usize,
    pub accumulate: bool,
}

/// Where B comes from: a strided matrix, or a convolution's implicit im2col matrix.
#[derive(Clone, Copy)]
pub(crate) enum BSource<'a, T> {
    Strided(Strided<'a, T>),
    Patches(Patches<'a, T>),
}

/// The C base pointer, shared by tasks that write disjoint tiles.
#[derive(Clone, Copy)]
struct CPtr<T>(*mut T);

// SAFETY: the pointer is only dereferenced by `run_task`, and distinct tasks own disjoint sets
// of (row-panel, column-panel) tiles, so no element is accessed from two threads at once.
unsafe impl<T: Send> Send for CPtr<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for CPtr<T> {}

/// How K is cut: `count` blocks of `kc` (the last may be shorter), a function of k alone.
#[derive(Clone, Copy)]
struct KBlocks {
    count: usize,
    kc: usize,
    k: usize,
}

impl KBlocks {
    fn new(k: usize, kc_max: usize) -> Self {
        // Equal-sized blocks avoid a thin last block (k = 385 is 193 + 192, not 384 + 1).
        let count = k.div_ceil(kc_max);
        Self {
            count,
            kc: k.div_ceil(count),
            k,
        }
    }

    /// (first row of B / column of A, depth) of block `kb`.
    fn block(&self, kb: usize) -> (usize, usize) {
        let p0 = kb * self.kc;
        (p0, self.kc.min(self.k - p0))
    }
}

/// Runs the blocked product with kernel `K`. `p.m`, `p.n`, `p.k` are > 0 and `c` covers the
/// m×n tile at row stride ldc (checked by the caller). C may start uninitialised unless
/// `p.accumulate`: the first K block stores the tiles without reading them.
pub(crate) fn gemm<T: Element, const MR: usize, const NR: usize, K: MicroKernel<T, MR, NR>>(
    p: &Problem<'_, T>,
    c: &mut [MaybeUninit<T>],
    parallel: bool,
) {
    let (m, n, k) = (p.m, p.n, p.k);
    let bl = K::BLOCKING;
    let flop = m.saturating_mul(n).saturating_mul(k).saturating_mul(2);
    let threads = if parallel && flop >= PAR_MIN_FLOP {
        rayon::current_num_threads().max(1)
    } else {
        1
    };

    let kb = KBlocks::new(k, bl.kc);
    let direct = direct_a(p);
    // M blocks bound the packed A: at most `mc` rows and A_PACK_BYTES, cut into equal whole
    // panels. A read in place needs no bound (blocking M would only re-pack B more often).
    let mc_max = if direct {
        m
    } else {
        bl.mc
            .min(A_PACK_BYTES / std::mem::size_of::<T>() / k)
            .max(MR)
    };
    let m_blocks = m.div_ceil(mc_max);
    let mc = m.div_ceil(m_blocks).next_multiple_of(MR);
    let n_panels = n.div_ceil(NR);

    let mut a_buf = PackBuf::<T>::take(Slot::A);
    let cptr = CPtr(c.as_mut_ptr().cast::<T>());
    for i3 in (0..m).step_by(mc) {
        let mb = mc.min(m - i3);
        let m_panels = mb.div_ceil(MR);
        let a_pack = if direct {
            None
        } else {
            let a_pack = a_buf.slice(m_panels * MR * k);
            pack_a_block::<T, MR>(p, a_pack, i3, mb, kb, threads);
            Some(&*a_pack)
        };

        let (m_chunks, n_chunks) = plan(m_panels, n_panels, (bl.nc / NR).max(1), threads);
        let task = |t: usize| {
            let share = Share {
                i3,
                mb,
                panels_m: split(m_panels, m_chunks, t / n_chunks),
                panels_n: split(n_panels, n_chunks, t % n_chunks),
            };
            run_task::<T, MR, NR, K>(p, a_pack, kb, &share, cptr);
        };
        if threads > 1 && m_chunks * n_chunks > 1 {
            (0..m_chunks * n_chunks).into_par_iter().for_each(task);
        } else {
            (0..m_chunks * n_chunks).for_each(task);
        }
    }
}

/// Whether the kernels read A in place instead of packing it. Packing exists to give the
/// micro-kernel unit-stride, TLB- and cache-friendly streams (Goto & van de Geijn 2008); a
/// row-major A already gives each of the MR rows a unit-stride stream along K, so packing it
/// only pays off when a micro-panel is reused across many B panels, which then amortise the
/// copy. Measured on Zen 4, reading a row-major A in place was as fast or faster for every
/// benchmark shape (square 512-2048, conv, attention), and much faster when N is small
/// (attention's P·V, 1024×64×1024: +15%), so it is used whenever A is row-major. A
/// column-major A (a transposed view: a weight gradient's dY^T, attention's P^T) gives each
/// k a run of MR contiguous elements, the packed layout with the column stride for MR: read
/// in place where that stride is at most `A_COLS_BYTES` (with A transposed: 256×64×4096
/// +28%, 512³ +18%, attention's 64×16×64 +28%; at 1024³, a 4 KiB stride, each k touches
/// another page, and packing was 18% faster). The choice depends on strides only, and every
/// path does the same arithmetic.
fn direct_a<T>(p: &Problem<'_, T>) -> bool {
    p.a.cs == 1 || (p.a.rs == 1 && p.a.cs > 0 && p.a.cs * std::mem::size_of::<T>() <= A_COLS_BYTES)
}

/// Largest column stride (bytes) at which a column-major A is read in place.
const A_COLS_BYTES: usize = 2048;

/// Packs rows `i3..i3 + mb` of A, all of K, as K block after K block, each a sequence of
/// MR × kc micro-panels (block `b` starts at element m_panels·MR·p0).
fn pack_a_block<T: Element, const MR: usize>(
    p: &Problem<'_, T>,
    mut dst: &mut [T],
    i3: usize,
    mb: usize,
    kb: KBlocks,
    threads: usize,
) {
    let m_panels = mb.div_ceil(MR);
    let mut units = Vec::with_capacity(kb.count * m_panels);
    for b in 0..kb.count {
        let (p0, kcb) = kb.block(b);
        let (block, rest) = std::mem::take(&mut dst).split_at_mut(m_panels * MR * kcb);
        dst = rest;
        for (q, panel) in block.chunks_mut(MR * kcb).enumerate() {
            units.push((p0, kcb, q, panel));
        }
    }
    let pack = |(p0, kcb, q, panel): (usize, usize, usize, &mut [T])| {
        let i0 = i3 + q * MR;
        pack_a_panel::<T, MR>(panel, p.a, i0, MR.min(i3 + mb - i0), p0, kcb);
    };
    if threads > 1 && mb * kb.k >= PAR_MIN_PACK {
        units.into_par_iter().for_each(pack);
    } else {
        units.into_iter().for_each(pack);
    }
}

/// Tasks per thread to aim for. These machines are shared: when another process takes a core
/// for a while, a split into exactly one task per thread waits for the slowest, while a finer
/// split lets rayon's work stealing move the remaining tasks to the threads that run.
const TASKS_PER_THREAD: usize = 4;

/// Fewest row-panels in an M chunk beyond one chunk per thread: each M chunk re-packs the
/// same B, which costs ~1/rows of the multiply-adds, so an M chunk keeps at least 8 × MR
/// rows unless that would leave a thread idle.
const MIN_M_CHUNK_PANELS: usize = 8;

/// Chooses how many chunks to cut the row-panels and column-panels into. Column chunks come
/// first (each task packs its own B chunk, so splitting N duplicates nothing) and are at most
/// `nc_panels` wide so a chunk stays in L2; with several threads there are up to
/// `TASKS_PER_THREAD` per thread, and rows are split too only when N is too narrow for that.
fn plan(m_panels: usize, n_panels: usize, nc_panels: usize, threads: usize) -> (usize, usize) {
    let n_chunks = n_panels.div_ceil(nc_panels);
    if threads == 1 {
        return (1, n_chunks);
    }
    let target = TASKS_PER_THREAD * threads;
    let n_chunks = n_chunks.max(target.min(n_panels));
    let m_chunks = if n_chunks >= target {
        1
    } else {
        // At least one chunk per thread where there are panels for it: a narrow product
        // with a long K (a linear layer's weight gradient, 64 x 64 over 4096 rows) would
        // otherwise run on one thread, and re-packing its B costs ~1/(6 rows) of the work.
        target
            .div_ceil(n_chunks)
            .min((m_panels / MIN_M_CHUNK_PANELS).max(threads.min(m_panels)))
            .max(1)
    };
    (m_chunks, n_chunks)
}

/// The `i`-th of `parts` near-equal contiguous ranges of `0..len`.
fn split(len: usize, parts: usize, i: usize) -> std::ops::Range<usize> {
    (len * i / parts)..(len * (i + 1) / parts)
}

/// One task's tiles: row-panels `panels_m` × column-panels `panels_n` of the M block at `i3`.
struct Share {
    i3: usize,
    mb: usize,
    panels_m: std::ops::Range<usize>,
    panels_n: std::ops::Range<usize>,
}

/// B's rows `p0..p0 + kcb` where they already are a packed panel: a row-major B exactly
/// NR wide (a linear layer's weight gradient dYᵀ·X with 64 input features, over 4096
/// tokens) is laid out as its one packed panel, [kcb][NR], so the kernels read it in
/// place; packing it copied all of B once per task (twice per call on 2 threads). The
/// same elements, so the same arithmetic.
fn b_in_place<'a, T: Element, const NR: usize>(
    p: &Problem<'a, T>,
    p0: usize,
    kcb: usize,
) -> Option<&'a [T]> {
    match p.b {
        BSource::Strided(b) if b.cs == 1 && b.rs == NR && p.n == NR => {
            Some(&b.data[p0 * NR..][..kcb * NR])
        }
        _ => None,
    }
}

fn run_task<T: Element, const MR: usize, const NR: usize, K: MicroKernel<T, MR, NR>>(
    p: &Problem<'_, T>,
    a_pack: Option<&[T]>,
    kb: KBlocks,
    share: &Share,
    c: CPtr<T>,
) {
    let m_panels = share.mb.div_ceil(MR);
    let mut b_buf = PackBuf::<T>::take(Slot::B);
    // Direct A: a partial last row-panel is still packed (the kernels' in-place path reads
    // whole MR-row panels), into this task's own small buffer.
    let mut edge_buf = PackBuf::<T>::take(Slot::Edge);
    for b in 0..kb.count {
        let (p0, kcb) = kb.block(b);
        // The first K block overwrites C unless the caller accumulates; later ones add to it.
        let accumulate = b > 0 || p.accumulate;
        let b_pack: &[T] = match b_in_place::<T, NR>(p, p0, kcb) {
            Some(rows) => rows,
            None => {
                let b_pack = b_buf.slice(share.panels_n.len() * NR * kcb);
                for (q, dst) in b_pack.chunks_mut(NR * kcb).enumerate() {
                    let j0 = (share.panels_n.start + q) * NR;
                    let cols = NR.min(p.n - j0);
                    match &p.b {
                        BSource::Strided(b) => pack_b_panel::<T, NR>(dst, *b, p0, kcb, j0, cols),
                        BSource::Patches(b) => pack_b_patches::<T, NR>(dst, b, p0, kcb, j0, cols),
                    }
                }
                b_pack
            }
        };
        let a_block = a_pack.map(|a| &a[m_panels * MR * p0..][..m_panels * MR * kcb]);

        for ip in share.panels_m.clone() {
            let row0 = share.i3 + ip * MR;
            let rows = MR.min(share.i3 + share.mb - row0);
            let (a, al) = match a_block {
                Some(a_block) => (a_block[ip * MR * kcb..].as_ptr(), ALayout::Packed),
                None if rows == MR => {
                    let start = row0 * p.a.rs + p0 * p.a.cs;
                    let al = if p.a.cs == 1 {
                        ALayout::Rows(p.a.rs)
                    } else {
                        ALayout::Cols(p.a.cs)
                    };
                    (p.a.data[start..].as_ptr(), al)
                }
                None => {
                    let panel = edge_buf.slice(MR * kcb);
                    pack_a_panel::<T, MR>(panel, p.a, row0, rows, p0, kcb);
                    (panel.as_ptr(), ALayout::Packed)
                }
            };
            for (q, b_panel) in b_pack.chunks(NR * kcb).enumerate() {
                let col0 = (share.panels_n.start + q) * NR;
                let cols = NR.min(p.n - col0);
                let b = b_panel.as_ptr();
                // SAFETY: `a` locates MR×kcb readable elements of A (a packed panel, or MR
                // whole rows of the caller's A, whose extent the caller checked); the B panel
                // holds kcb·NR elements; the rows×cols tile at
                // (row0, col0) lies inside C (validated by the caller) and belongs to this
                // task alone; the kernel was checked to be supported when it was chosen.
                unsafe {
                    let ct = c.0.add(row0 * p.ldc + col0);
                    if rows == MR && cols == NR {
                        K::run(kcb, a, al, b, ct, p.ldc, accumulate);
                    } else {
                        K::run_edge(kcb, a, al, b, ct, p.ldc, accumulate, rows, cols);
                    }
                }
            }
        }
    }
}
