//! `Layout`: how a shape maps onto storage (strides in elements and an offset), the views
//! that change only the layout (permute, narrow, broadcast, reshape where possible), and
//! iteration over the storage offsets of a strided tensor.

use crate::shape::Dim;
use crate::{Error, Result, Shape};

/// Shape + strides + offset, all in elements. Strides are non-negative; a stride of 0
/// repeats an element (broadcasting).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    shape: Shape,
    strides: Vec<usize>,
    offset: usize,
}

impl Layout {
    /// A row-major layout starting at offset 0.
    pub fn contiguous(shape: impl Into<Shape>) -> Self {
        let shape = shape.into();
        let strides = shape.contiguous_strides();
        Layout {
            shape,
            strides,
            offset: 0,
        }
    }
    /// A layout from its parts; the caller guarantees the view fits its storage.
    pub fn new(shape: impl Into<Shape>, strides: Vec<usize>, offset: usize) -> Self {
        let shape = shape.into();
        assert_eq!(shape.rank(), strides.len(), "one stride per axis");
        Layout {
            shape,
            strides,
            offset,
        }
    }
    pub fn shape(&self) -> &Shape {
        &self.shape
    }
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }
    pub fn offset(&self) -> usize {
        self.offset
    }
    pub fn elem_count(&self) -> usize {
        self.shape.elem_count()
    }

    /// Row-major with no gaps (axes of size 1 may carry any stride).
    pub fn is_contiguous(&self) -> bool {
        let mut acc = 1;
        for (&d, &s) in self.dims().iter().zip(&self.strides).rev() {
            if d != 1 && s != acc {
                return false;
            }
            acc *= d;
        }
        true
    }

    /// The storage range when the layout is contiguous.
    pub fn contiguous_range(&self) -> Option<std::ops::Range<usize>> {
        self.is_contiguous()
            .then(|| self.offset..self.offset + self.elem_count())
    }

    /// The largest storage offset touched, plus one (0 for an empty tensor): what the
    /// storage must hold for this view to be valid.
    pub fn required_len(&self) -> usize {
        if self.elem_count() == 0 {
            return 0;
        }
        self.offset
            + self
                .dims()
                .iter()
                .zip(&self.strides)
                .map(|(&d, &s)| (d - 1) * s)
                .sum::<usize>()
            + 1
    }

    /// Reorders axes: output axis i is input axis `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> Result<Layout> {
        let rank = self.shape.rank();
        let mut seen = vec![false; rank];
        if perm.len() != rank
            || perm
                .iter()
                .any(|&p| p >= rank || std::mem::replace(&mut seen[p], true))
        {
            return Err(Error::arg(
                "permute",
                format!(
                    "{perm:?} is not a permutation of the {rank} axes of a tensor of shape {}",
                    self.shape
                ),
            ));
        }
        Ok(Layout {
            shape: Shape::new(perm.iter().map(|&p| self.dims()[p]).collect::<Vec<_>>()),
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
            offset: self.offset,
        })
    }

    /// Keeps `len` entries of axis `dim` starting at `start`.
    pub fn narrow(&self, dim: impl Dim, start: usize, len: usize) -> Result<Layout> {
        let d = dim.index(self.shape.rank(), "narrow")?;
        let size = self.dims()[d];
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::arg(
                "narrow",
                format!(
                    "range {start}..{} is outside axis {d} of size {size} (shape {})",
                    start + len,
                    self.shape
                ),
            ));
        }
        let mut dims = self.dims().to_vec();
        dims[d] = len;
        Ok(Layout {
            shape: dims.into(),
            strides: self.strides.clone(),
            offset: self.offset + start * self.strides[d],
        })
    }

    /// Views the tensor as `shape` by NumPy broadcasting: new leading axes and size-1 axes
    /// get stride 0.
    pub fn broadcast_as(&self, shape: &Shape) -> Result<Layout> {
        let (rank, own) = (shape.rank(), self.shape.rank());
        let fail = || Error::shapes("broadcast_as", &self.shape, shape, "not broadcastable");
        if own > rank {
            return Err(fail());
        }
        let lead = rank - own;
        let mut strides = vec![0; rank];
        for i in 0..own {
            let (from, to) = (self.dims()[i], shape.dims()[lead + i]);
            strides[lead + i] = if from == to {
                self.strides[i]
            } else if from == 1 {
                0
            } else {
                return Err(fail());
            };
        }
        Ok(Layout {
            shape: shape.clone(),
            strides,
            offset: self.offset,
        })
    }

    /// The same storage seen as `shape`, when that needs no copy (PyTorch's `view` rule:
    /// each run of merged/split axes must be contiguous within itself). None: copy first.
    pub fn reshape(&self, shape: &Shape) -> Option<Layout> {
        debug_assert_eq!(shape.elem_count(), self.elem_count());
        if self.is_contiguous() {
            return Some(Layout {
                shape: shape.clone(),
                strides: shape.contiguous_strides(),
                offset: self.offset,
            });
        }
        if self.elem_count() == 0 {
            return Some(Layout::contiguous(shape.clone()));
        }
        // PyTorch's computeStride: walk the old axes from the back in chunks whose
        // elements are evenly spaced, and lay the new axes over each chunk.
        let (old, old_strides, new) = (self.dims(), &self.strides, shape.dims());
        let mut strides = vec![0; new.len()];
        let mut view_d = new.len() as isize - 1;
        let mut chunk_stride = *old_strides.last()?;
        let (mut tensor_numel, mut view_numel) = (1, 1);
        for d in (0..old.len()).rev() {
            tensor_numel *= old[d];
            let chunk_ends =
                d == 0 || (old[d - 1] != 1 && old_strides[d - 1] != tensor_numel * chunk_stride);
            if chunk_ends {
                while view_d >= 0 && (view_numel < tensor_numel || new[view_d as usize] == 1) {
                    strides[view_d as usize] = view_numel * chunk_stride;
                    view_numel *= new[view_d as usize];
                    view_d -= 1;
                }
                if view_numel != tensor_numel {
                    return None;
                }
                if d > 0 {
                    chunk_stride = old_strides[d - 1];
                    tensor_numel = 1;
                    view_numel = 1;
                }
            }
        }
        (view_d == -1).then(|| Layout {
            shape: shape.clone(),
            strides,
            offset: self.offset,
        })
    }

    /// Storage offsets of every element in row-major order.
    pub fn offsets(&self) -> StridedOffsets<'_> {
        StridedOffsets::new(self)
    }

    /// The layout split into equal contiguous runs: `(offset of each run, run length)`.
    /// Kernels loop over runs so a transposed or sliced tensor still gets tight inner loops.
    pub fn runs(&self) -> (Vec<usize>, usize) {
        // Merge trailing axes while they are contiguous with each other.
        let dims = self.dims();
        let mut run = 1;
        let mut k = dims.len();
        while k > 0 && (dims[k - 1] == 1 || self.strides[k - 1] == run) {
            run *= dims[k - 1];
            k -= 1;
        }
        let outer = Layout {
            shape: Shape::new(dims[..k].to_vec()),
            strides: self.strides[..k].to_vec(),
            offset: self.offset,
        };
        (outer.offsets().collect(), run)
    }
}

/// Several layouts of one shape walked together, with axes merged wherever every layout
/// allows (axis i folds into i+1 when each operand steps through i as a continuation of
/// i+1) and size-1 axes dropped. A contiguous layout becomes a single axis of stride 1.
pub(crate) struct Coalesced<const N: usize> {
    /// Axis sizes, outermost first (empty for one element; contains 0 when empty).
    pub dims: Vec<usize>,
    /// Per axis, each operand's stride.
    pub strides: Vec<[usize; N]>,
    /// Each operand's offset.
    pub offsets: [usize; N],
}

impl<const N: usize> Coalesced<N> {
    pub fn new(layouts: [&Layout; N]) -> Self {
        let dims = layouts[0].dims();
        debug_assert!(layouts.iter().all(|l| l.dims() == dims));
        let offsets = std::array::from_fn(|k| layouts[k].offset());
        if dims.contains(&0) {
            return Coalesced {
                dims: vec![0],
                strides: vec![[0; N]],
                offsets,
            };
        }
        let mut axes: Vec<(usize, [usize; N])> = Vec::new();
        for (i, &d) in dims.iter().enumerate() {
            if d == 1 {
                continue;
            }
            let strides = std::array::from_fn(|k| layouts[k].strides()[i]);
            if let Some((pd, ps)) = axes.last_mut() {
                if (0..N).all(|k| ps[k] == strides[k] * d) {
                    *pd *= d;
                    *ps = strides;
                    continue;
                }
            }
            axes.push((d, strides));
        }
        Coalesced {
            dims: axes.iter().map(|a| a.0).collect(),
            strides: axes.iter().map(|a| a.1).collect(),
            offsets,
        }
    }
}

/// Iterator over the storage offsets of a layout in row-major order.
pub struct StridedOffsets<'a> {
    layout: &'a Layout,
    index: Vec<usize>,
    next: Option<usize>,
}

impl<'a> StridedOffsets<'a> {
    fn new(layout: &'a Layout) -> Self {
        let next = (layout.elem_count() > 0).then_some(layout.offset);
        StridedOffsets {
            layout,
            index: vec![0; layout.shape.rank()],
            next,
        }
    }
}

impl Iterator for StridedOffsets<'_> {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        let cur = self.next?;
        // Odometer step: bump the last axis, carrying into earlier ones.
        let mut off = cur;
        let mut done = true;
        for d in (0..self.index.len()).rev() {
            let (size, stride) = (self.layout.dims()[d], self.layout.strides[d]);
            if self.index[d] + 1 < size {
                self.index[d] += 1;
                off += stride;
                done = false;
                break;
            }
            off -= self.index[d] * stride;
            self.index[d] = 0;
        }
        self.next = (!done).then_some(off);
        Some(cur)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(l: &Layout) -> Vec<usize> {
        l.offsets().collect()
    }

    #[test]
    fn permute_and_narrow_walk_the_right_elements() {
        let l = Layout::contiguous([2, 3]);
        assert_eq!(offsets(&l.permute(&[1, 0]).unwrap()), [0, 3, 1, 4, 2, 5]);
        assert_eq!(offsets(&l.narrow(1, 1, 2).unwrap()), [1, 2, 4, 5]);
        assert!(l.permute(&[0, 0]).is_err());
        assert!(l.narrow(1, 2, 2).is_err());
        assert_eq!(offsets(&Layout::contiguous([0, 3])), Vec::<usize>::new());
        assert_eq!(offsets(&Layout::contiguous(())), [0]);
    }

    #[test]
    fn broadcast_uses_zero_strides() {
        let l = Layout::contiguous([3, 1])
            .broadcast_as(&Shape::from([2, 3, 2]))
            .unwrap();
        assert_eq!(l.strides(), [0, 1, 0]);
        assert_eq!(offsets(&l), [0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2]);
    }

    #[test]
    fn reshape_views_when_possible() {
        // [2, 3, 4] transposed to [2, 4, 3]: merging the last two axes needs a copy,
        // splitting the first does not.
        let t = Layout::contiguous([2, 3, 4]).permute(&[0, 2, 1]).unwrap();
        assert!(t.reshape(&Shape::from([2, 12])).is_none());
        let v = t.reshape(&Shape::from([2, 1, 4, 3, 1])).unwrap();
        assert_eq!(offsets(&v), offsets(&t));
        let n = Layout::contiguous([4, 6]).narrow(1, 0, 4).unwrap();
        let v = n.reshape(&Shape::from([2, 2, 2, 2])).unwrap();
        assert_eq!(offsets(&v), offsets(&n));
        assert!(n.reshape(&Shape::from([16])).is_none());
    }

    #[test]
    fn runs_merge_contiguous_trailing_axes() {
        let n = Layout::contiguous([3, 4, 5]).narrow(0, 1, 2).unwrap();
        assert_eq!(n.runs(), (vec![20], 40));
        let p = Layout::contiguous([3, 4, 5]).narrow(1, 1, 2).unwrap();
        assert_eq!(p.runs(), (vec![5, 25, 45], 10));
    }
}
