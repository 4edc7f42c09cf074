//! Views and copies: reshape, permute, transpose, narrow, squeeze/unsqueeze, broadcast,
//! contiguous, and dtype casts. Views share storage; only the layout changes.

use crate::autograd::record;
use crate::backend::BackendStorage;
use crate::op::Op;
use crate::shape::Dim;
use crate::{DType, Error, Result, Shape, Tensor};

impl Tensor {
    /// The same elements as `shape` (a view when the layout allows, else a copy).
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if shape.elem_count() != self.elem_count() {
            return Err(Error::shapes(
                "reshape",
                self.shape(),
                &shape,
                "element counts differ",
            ));
        }
        if shape == *self.shape() {
            return Ok(self.clone());
        }
        let src = match self.layout().reshape(&shape) {
            Some(_) => self.clone(),
            None => self.copy()?,
        };
        let layout = src
            .layout()
            .reshape(&shape)
            .expect("a contiguous layout reshapes");
        Ok(src.view(layout, record(&[&src], || Op::Reshape(src.clone()))))
    }

    /// Reorders axes: output axis i is input axis `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let layout = self.layout().permute(perm)?;
        Ok(self.view(
            layout,
            record(&[self], || Op::Permute(self.clone(), perm.to_vec())),
        ))
    }

    /// Swaps two axes.
    pub fn transpose(&self, d0: impl Dim, d1: impl Dim) -> Result<Tensor> {
        let (a, b) = (
            d0.index(self.rank(), "transpose")?,
            d1.index(self.rank(), "transpose")?,
        );
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// The transpose of a matrix (rank 2).
    pub fn t(&self) -> Result<Tensor> {
        if self.rank() != 2 {
            return Err(Error::shape(
                "t",
                format!("expects a matrix, got shape {}", self.shape()),
            ));
        }
        self.transpose(0, 1)
    }

    /// `len` entries of axis `dim` from `start` (a view).
    pub fn narrow(&self, dim: impl Dim, start: usize, len: usize) -> Result<Tensor> {
        let d = dim.index(self.rank(), "narrow")?;
        let layout = self.layout().narrow(d, start, len)?;
        Ok(self.view(
            layout,
            record(&[self], || Op::Narrow(self.clone(), d, start)),
        ))
    }

    /// Splits axis `dim` into pieces of `size` (the last may be shorter).
    pub fn chunk_by(&self, dim: impl Dim, size: usize) -> Result<Vec<Tensor>> {
        let d = dim.index(self.rank(), "chunk_by")?;
        if size == 0 {
            return Err(Error::arg("chunk_by", "chunk size must be positive"));
        }
        (0..self.dims()[d])
            .step_by(size)
            .map(|s| self.narrow(d, s, size.min(self.dims()[d] - s)))
            .collect()
    }

    /// Inserts an axis of size 1 at `dim` (0..=rank; negative counts from the end).
    pub fn unsqueeze(&self, dim: impl Dim) -> Result<Tensor> {
        let d = dim.index(self.rank() + 1, "unsqueeze")?;
        let mut dims = self.dims().to_vec();
        dims.insert(d, 1);
        self.reshape(dims)
    }

    /// Removes axis `dim`, which must have size 1.
    pub fn squeeze(&self, dim: impl Dim) -> Result<Tensor> {
        let d = dim.index(self.rank(), "squeeze")?;
        if self.dims()[d] != 1 {
            return Err(Error::shape(
                "squeeze",
                format!(
                    "axis {d} of shape {} has size {}, not 1",
                    self.shape(),
                    self.dims()[d]
                ),
            ));
        }
        let mut dims = self.dims().to_vec();
        dims.remove(d);
        self.reshape(dims)
    }

    /// Merges axes `start..` into one.
    pub fn flatten_from(&self, start: impl Dim) -> Result<Tensor> {
        let d = start.index(self.rank(), "flatten_from")?;
        let mut dims = self.dims()[..d].to_vec();
        dims.push(self.dims()[d..].iter().product());
        self.reshape(dims)
    }

    /// A view repeating size-1 axes (and new leading axes) to `shape`, as `expand`.
    pub fn broadcast_as(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if shape == *self.shape() {
            return Ok(self.clone());
        }
        let layout = self.layout().broadcast_as(&shape)?;
        Ok(self.view(layout, record(&[self], || Op::BroadcastAs(self.clone()))))
    }

    /// A tensor with a row-major layout: `self` if it already is one, else a copy.
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() {
            Ok(self.clone())
        } else {
            self.copy()
        }
    }

    /// A contiguous copy with its own storage.
    pub fn copy(&self) -> Result<Tensor> {
        let s = self.storage().copy_strided(self.layout())?;
        Ok(Tensor::from_storage(
            s,
            self.shape(),
            record(&[self], || Op::Copy(self.clone())),
        ))
    }

    /// The elements converted to `dtype` (round to nearest; to u32 truncates toward zero
    /// and saturates).
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let s = self.storage().to_dtype(self.layout(), dtype)?;
        let rec = if dtype.is_float() && self.dtype().is_float() {
            record(&[self], || Op::ToDType(self.clone()))
        } else {
            None
        };
        Ok(Tensor::from_storage(s, self.shape(), rec))
    }
}
