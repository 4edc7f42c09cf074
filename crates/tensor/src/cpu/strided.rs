//! Walking several strided operands of one shape together (PyTorch's TensorIterator in
//! miniature): axes are coalesced where every operand allows it, and the work becomes
//! rows of the innermost axis, each with a tight loop over per-operand strides.

use crate::layout::Coalesced;
use crate::Layout;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Elements a rayon task handles: big enough to amortise scheduling, small enough to
/// balance two cores. Fixed, so the split never depends on the thread count.
pub(crate) const TASK_ELEMS: usize = 1 << 15;

/// `N` operands of one shape, coalesced into `rows` rows of `len` elements.
pub(crate) struct Plan<const N: usize> {
    /// Outer axes (after coalescing), outermost first.
    outer: Vec<usize>,
    /// Per outer axis, the stride of each operand.
    outer_strides: Vec<[usize; N]>,
    base: [usize; N],
    /// Length and per-operand strides of the innermost axis.
    pub len: usize,
    pub inner: [usize; N],
}

impl<const N: usize> Plan<N> {
    /// Plans a walk over layouts that all have the same shape.
    pub fn new(layouts: [&Layout; N]) -> Self {
        let c = Coalesced::new(layouts);
        let mut axes: Vec<(usize, [usize; N])> = c.dims.into_iter().zip(c.strides).collect();
        let (len, inner) = axes.pop().unwrap_or((1, [0; N]));
        Plan {
            outer: axes.iter().map(|a| a.0).collect(),
            outer_strides: axes.iter().map(|a| a.1).collect(),
            base: c.offsets,
            len,
            inner,
        }
    }

    pub fn rows(&self) -> usize {
        if self.len == 0 {
            0
        } else {
            self.outer.iter().product()
        }
    }

    /// The storage offsets where row `r` starts, for each operand.
    #[inline]
    pub fn row_offsets(&self, mut r: usize) -> [usize; N] {
        let mut off = self.base;
        for (d, s) in self.outer.iter().zip(&self.outer_strides).rev() {
            let i = r % d;
            r /= d;
            for k in 0..N {
                off[k] += i * s[k];
            }
        }
        off
    }

    /// The rows from `first` on, in order, each as its operands' offsets: `first` is
    /// located by division as in [`row_offsets`](Self::row_offsets), the rest by stepping
    /// an index (an add per row instead of a division per outer axis per row).
    pub fn rows_from(&self, first: usize) -> RowWalk<'_, N> {
        let mut idx = vec![0; self.outer.len()];
        let mut off = self.base;
        let mut r = first;
        for ((i, d), st) in idx
            .iter_mut()
            .zip(&self.outer)
            .zip(&self.outer_strides)
            .rev()
        {
            *i = r % d;
            r /= d;
            (0..N).for_each(|k| off[k] += *i * st[k]);
        }
        RowWalk {
            plan: self,
            idx,
            off,
        }
    }

    /// Fills the contiguous `out` (rows * len elements) row by row, in parallel over fixed
    /// blocks of rows: `f(out_row, offsets_of_row)`. A row longer than a task (a
    /// contiguous tensor coalesces into one row) is cut into task-sized pieces, each
    /// given the operands' offsets at its first element, so those run in parallel too.
    pub fn for_each_row<T: Send>(&self, out: &mut [T], f: impl Fn(&mut [T], [usize; N]) + Sync) {
        let len = self.len.max(1);
        if len > TASK_ELEMS {
            for (r, row) in out.chunks_mut(len).enumerate() {
                let base = self.row_offsets(r);
                row.par_chunks_mut(TASK_ELEMS)
                    .enumerate()
                    .for_each(|(i, piece)| {
                        let at = i * TASK_ELEMS;
                        f(piece, std::array::from_fn(|k| base[k] + at * self.inner[k]));
                    });
            }
            return;
        }
        let rows_per_task = (TASK_ELEMS / len).max(1);
        out.par_chunks_mut(rows_per_task * len)
            .enumerate()
            .for_each(|(t, chunk)| {
                let mut walk = self.rows_from(t * rows_per_task);
                for row in chunk.chunks_mut(len) {
                    f(row, walk.next_row());
                }
            });
    }

    /// A new contiguous vector of rows * len elements filled by [`for_each_row`]
    /// (`Plan::for_each_row`), without zeroing it first: a fresh output is written once,
    /// not twice (zeroing an 8 MiB activation costs as much as a SiLU over it).
    ///
    /// # Safety
    /// `f` must write every element of each row slice it is given; the elements start
    /// uninitialised and the vector is handed out as initialised.
    pub unsafe fn collect_rows<T: Send>(
        &self,
        f: impl Fn(&mut [MaybeUninit<T>], [usize; N]) + Sync,
    ) -> Vec<T> {
        let n = self.rows() * self.len;
        let mut out = Vec::with_capacity(n);
        self.for_each_row(&mut out.spare_capacity_mut()[..n], f);
        // SAFETY: for_each_row hands each of the n elements to exactly one call of f, and
        // the caller's f writes every element it is handed.
        unsafe { out.set_len(n) };
        out
    }
}

/// Walks a plan's rows in order (see [`Plan::rows_from`]).
pub(crate) struct RowWalk<'a, const N: usize> {
    plan: &'a Plan<N>,
    /// Index of the current row along each outer axis.
    idx: Vec<usize>,
    off: [usize; N],
}

impl<const N: usize> RowWalk<'_, N> {
    /// The current row's offsets; then steps to the next row (an odometer over the
    /// outer axes, innermost fastest). Call at most once per remaining row.
    #[inline]
    pub fn next_row(&mut self) -> [usize; N] {
        let here = self.off;
        let p = self.plan;
        for a in (0..self.idx.len()).rev() {
            self.idx[a] += 1;
            let st = &p.outer_strides[a];
            if self.idx[a] < p.outer[a] {
                (0..N).for_each(|k| self.off[k] += st[k]);
                break;
            }
            // Wrapped: back to 0 along this axis, carry into the next outer one.
            (0..N).for_each(|k| self.off[k] -= (p.outer[a] - 1) * st[k]);
            self.idx[a] = 0;
        }
        here
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Shape;

    #[test]
    fn coalesces_contiguous_and_keeps_broadcast_rows() {
        let a = Layout::contiguous([4, 5, 6]);
        let p = Plan::new([&a, &a]);
        assert_eq!((p.rows(), p.len, p.inner), (1, 120, [1, 1]));
        // A [5, 1] operand broadcast against [4, 5, 6]: rows of 6 with stride 0.
        let b = Layout::contiguous([5, 1])
            .broadcast_as(&Shape::from([4, 5, 6]))
            .unwrap();
        let p = Plan::new([&a, &b]);
        assert_eq!((p.rows(), p.len, p.inner), (20, 6, [1, 0]));
        assert_eq!(p.row_offsets(7), [42, 2]);
        // Walking the rows from any start gives row_offsets' answers, row after row.
        for first in [0, 1, 5, 19] {
            let mut walk = p.rows_from(first);
            for r in first..p.rows() {
                assert_eq!(walk.next_row(), p.row_offsets(r), "row {r} from {first}");
            }
        }
        let t = Layout::contiguous([3, 2]).permute(&[1, 0]).unwrap();
        let p = Plan::new([&t]);
        assert_eq!((p.rows(), p.len, p.inner), (2, 3, [2]));
        assert_eq!(Plan::new([&Layout::contiguous([2, 0])]).rows(), 0);
        let s = Layout::contiguous(());
        assert_eq!((Plan::new([&s]).rows(), Plan::new([&s]).len), (1, 1));
    }
}
