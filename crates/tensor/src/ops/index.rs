//! Ops that gather and place elements: embedding lookup (with scatter-add backward),
//! concatenation, and nearest-neighbour upsampling.

use crate::autograd::record;
use crate::backend::BackendStorage;
use crate::cpu::CpuStorage;
use crate::op::Op;
use crate::ops::binary::same_dtype_device;
use crate::shape::Dim;
use crate::storage::Storage;
use crate::tensor::read_storages;
use crate::{DType, Device, Error, Result, Tensor};

/// `cat` of contiguous CPU tensors (checked to agree but on axis d) in one pass, or None
/// where one is strided or on a GPU.
fn cat_contiguous_cpu(ts: &[&Tensor], d: usize) -> Option<Storage> {
    if !ts
        .iter()
        .all(|t| t.is_contiguous() && matches!(t.device(), Device::Cpu))
    {
        return None;
    }
    let outer: usize = ts[0].dims()[..d].iter().product();
    // One read lock per distinct storage: `cat(&[x, x])` (guidance doubling a batch)
    // names one storage twice.
    let guards = read_storages(ts);
    let mut parts = Vec::with_capacity(ts.len());
    for (i, t) in ts.iter().enumerate() {
        let Storage::Cpu(c) = guards.get(i) else {
            return None;
        };
        parts.push((c, t.layout().offset(), t.dims()[d..].iter().product()));
    }
    Some(Storage::Cpu(CpuStorage::cat(&parts, outer, ts[0].dtype())))
}

impl Tensor {
    /// Rows of the table `self` [V, D] at u32 `ids` of any shape -> [.., D]. An id >= V
    /// is an error.
    pub fn embedding(&self, ids: &Tensor) -> Result<Tensor> {
        if self.rank() != 2 {
            return Err(Error::shape(
                "embedding",
                format!("the table must be [V, D], got shape {}", self.shape()),
            ));
        }
        if ids.dtype() != DType::U32 {
            return Err(Error::dtype(
                "embedding",
                format!("ids must be u32, got {}", ids.dtype()),
            ));
        }
        if ids.device() != self.device() {
            return Err(Error::device(
                "embedding",
                format!(
                    "ids are on {}, the table on {}",
                    ids.device(),
                    self.device()
                ),
            ));
        }
        let (ids, w) = (ids.contiguous()?, self.contiguous()?);
        let s = {
            let g = crate::tensor::read_storages(&[&ids, &w]);
            g.get(0).embedding(ids.layout(), (g.get(1), w.layout()))?
        };
        let shape = [ids.dims(), &[self.dims()[1]]].concat();
        let rec = record(&[&w], || Op::Embedding {
            ids: ids.clone(),
            w: w.clone(),
        });
        Ok(Tensor::from_storage(s, shape, rec))
    }

    /// Joins tensors along `dim`; all other axes must match.
    pub fn cat(ts: &[&Tensor], dim: impl Dim) -> Result<Tensor> {
        let first = *ts
            .first()
            .ok_or_else(|| Error::arg("cat", "needs at least one tensor"))?;
        same_dtype_device("cat", ts)?;
        let d = dim.index(first.rank(), "cat")?;
        for t in &ts[1..] {
            let same_rest = t.rank() == first.rank()
                && t.dims()
                    .iter()
                    .zip(first.dims())
                    .enumerate()
                    .all(|(i, (a, b))| i == d || a == b);
            if !same_rest {
                return Err(Error::shapes(
                    "cat",
                    first.shape(),
                    t.shape(),
                    &format!("all axes but {d} must match"),
                ));
            }
        }
        let mut dims = first.dims().to_vec();
        dims[d] = ts.iter().map(|t| t.dims()[d]).sum();
        let out = match cat_contiguous_cpu(ts, d) {
            Some(out) => out,
            None => {
                let mut out = Tensor::full_storage(
                    0.0,
                    dims.iter().product(),
                    first.dtype(),
                    first.device(),
                )?;
                let full = crate::Layout::contiguous(dims.clone());
                let mut start = 0;
                for t in ts {
                    let len = t.dims()[d];
                    let dst = full.narrow(d, start, len)?;
                    out.copy_into(&dst, (&t.storage(), t.layout()))?;
                    start += len;
                }
                out
            }
        };
        let rec = record(ts, || Op::Cat(ts.iter().map(|&t| t.clone()).collect(), d));
        Ok(Tensor::from_storage(out, dims, rec))
    }

    /// Nearest-neighbour upsampling of [N, C, H, W] by an integer `factor` (each pixel
    /// becomes a factor x factor block), as F.interpolate(mode="nearest").
    pub fn upsample_nearest2d(&self, factor: usize) -> Result<Tensor> {
        let &[n, c, h, w] = self.dims() else {
            return Err(Error::shape(
                "upsample_nearest2d",
                format!("expects [N, C, H, W], got shape {}", self.shape()),
            ));
        };
        if factor == 0 {
            return Err(Error::arg("upsample_nearest2d", "factor must be positive"));
        }
        let x = self.contiguous()?;
        let s = x.storage().upsample_nearest2d(x.layout(), factor)?;
        let rec = record(&[&x], || Op::UpsampleNearest2d(x.clone(), factor));
        Ok(Tensor::from_storage(s, [n, c, h * factor, w * factor], rec))
    }
}

/// dL/dtable of an embedding: dy [.., D] scatter-added into zeros [vocab, D] (untracked).
pub(crate) fn embedding_backward(ids: &Tensor, dy: &Tensor, vocab: usize) -> Result<Tensor> {
    let dy = dy.contiguous()?;
    let d = *dy.dims().last().expect("embedding output has rank >= 1");
    let s = {
        let g = crate::tensor::read_storages(&[ids, &dy]);
        g.get(0)
            .embedding_backward(ids.layout(), (g.get(1), dy.layout()), vocab)?
    };
    Ok(Tensor::from_storage(s, [vocab, d], None))
}
