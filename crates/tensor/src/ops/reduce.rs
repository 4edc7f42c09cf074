//! Reductions over axes (sum, mean, max, min) with keepdim, and `sum_to`, which undoes
//! broadcasting in backward rules.

use crate::autograd::record;
use crate::backend::BackendStorage;
use crate::op::Op;
use crate::shape::{resolve_dims, Dim};
use crate::{Result, Shape, Tensor};

/// Reductions a backend implements; mean is a scaled sum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    Max,
    Min,
}

impl ReduceOp {
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
        }
    }
}

impl Tensor {
    /// Reduces over `dims` (sorted, distinct axes), keeping them with size 1.
    pub(crate) fn reduce_keepdim(&self, op: ReduceOp, dims: &[usize]) -> Result<Tensor> {
        if dims.is_empty() {
            // NumPy's rule: reducing over no axes is the identity.
            return self.copy();
        }
        if op != ReduceOp::Sum && dims.iter().any(|&d| self.dims()[d] == 0) {
            return Err(crate::Error::shape(
                op.name(),
                format!(
                    "cannot take the {} of an empty axis (shape {})",
                    op.name(),
                    self.shape()
                ),
            ));
        }
        let s = self.storage().reduce(self.layout(), op, dims)?;
        let mut shape = self.dims().to_vec();
        for &d in dims {
            shape[d] = 1;
        }
        let rec = record(&[self], || Op::Reduce(self.clone(), op, dims.to_vec()));
        Ok(Tensor::from_storage(s, shape, rec))
    }

    fn reduce<D: Dim>(&self, op: ReduceOp, dims: &[D], keepdim: bool) -> Result<Tensor> {
        let dims = resolve_dims(dims, self.rank(), op.name())?;
        let out = self.reduce_keepdim(op, &dims)?;
        if keepdim {
            Ok(out)
        } else {
            let kept: Vec<usize> = self
                .dims()
                .iter()
                .enumerate()
                .filter(|(i, _)| !dims.contains(i))
                .map(|(_, &d)| d)
                .collect();
            out.reshape(kept)
        }
    }

    /// Sum over `dims` (negative counts from the end).
    pub fn sum<D: Dim>(&self, dims: &[D], keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Sum, dims, keepdim)
    }
    /// Mean over `dims`.
    pub fn mean<D: Dim>(&self, dims: &[D], keepdim: bool) -> Result<Tensor> {
        let idx = resolve_dims(dims, self.rank(), "mean")?;
        let n: usize = idx.iter().map(|&d| self.dims()[d]).product();
        self.reduce(ReduceOp::Sum, dims, keepdim)?
            .affine(1.0 / n as f64, 0.0)
    }
    /// Maximum over `dims`; its gradient is shared equally by tied maxima (torch.amax).
    pub fn max<D: Dim>(&self, dims: &[D], keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Max, dims, keepdim)
    }
    /// Minimum over `dims`.
    pub fn min<D: Dim>(&self, dims: &[D], keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Min, dims, keepdim)
    }
    /// Sum of every element, as a rank-0 tensor.
    pub fn sum_all(&self) -> Result<Tensor> {
        let all: Vec<usize> = (0..self.rank()).collect();
        self.sum(&all, false)
    }
    /// Mean of every element, as a rank-0 tensor.
    pub fn mean_all(&self) -> Result<Tensor> {
        let all: Vec<usize> = (0..self.rank()).collect();
        self.mean(&all, false)
    }

    /// Sum over sorted axes keeping them (for backward rules).
    pub(crate) fn sum_keepdim(&self, dims: &[usize]) -> Result<Tensor> {
        self.reduce_keepdim(ReduceOp::Sum, dims)
    }

    /// Sums a broadcast result back to `shape` (the inverse of broadcasting, used by
    /// backward rules): leading axes are summed away, axes of size 1 in `shape` summed
    /// with keepdim.
    pub fn sum_to(&self, shape: &Shape) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let lead = self.rank().checked_sub(shape.rank()).ok_or_else(|| {
            crate::Error::shapes(
                "sum_to",
                self.shape(),
                shape,
                "the target has more axes than the source",
            )
        })?;
        let dims: Vec<usize> = (0..self.rank())
            .filter(|&i| i < lead || (shape.dims()[i - lead] == 1 && self.dims()[i] != 1))
            .collect();
        self.sum_keepdim(&dims)?.reshape(shape)
    }
}
