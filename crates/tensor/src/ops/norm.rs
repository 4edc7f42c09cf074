//! group_norm and layer_norm: one fused normalisation op (statistics, normalise, affine
//! and, for group_norm_silu, the SiLU that follows it in every ResNet block) in one
//! kernel call, with a fused backward.

use crate::autograd::record;
use crate::backend::BackendStorage;
use crate::op::Op;
use crate::ops::binary::same_dtype_device;
use crate::{Error, Result, Tensor};

/// x seen as [rows, groups, cpg, inner]: each (row, group) of cpg * inner contiguous
/// elements is normalised; the affine weight and bias are indexed by channel
/// `group * cpg + j`. group_norm: [N, G, C/G, H*W]; layer_norm: [rows, 1, D, 1].
/// `silu`: the output is silu(normalised * w + b).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NormShape {
    pub rows: usize,
    pub groups: usize,
    pub cpg: usize,
    pub inner: usize,
    pub eps: f64,
    pub silu: bool,
}

impl NormShape {
    /// Elements normalised together.
    pub fn group_len(&self) -> usize {
        self.cpg * self.inner
    }
    /// Channels the affine parameters cover.
    pub fn channels(&self) -> usize {
        self.groups * self.cpg
    }
}

impl Tensor {
    /// GroupNorm (Wu & He 2018) of x [N, C, *] over `groups` groups of channels, with
    /// optional per-channel weight and bias [C]: y = (x - mean) / sqrt(var + eps) * w + b,
    /// with the biased variance, as torch.nn.GroupNorm.
    pub fn group_norm(
        &self,
        groups: usize,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        self.group_norm_act(groups, weight, bias, eps, false)
    }

    /// silu(group_norm(x)) as one fused op: one pass over memory instead of two, and no
    /// stored pre-activation (the backward recomputes it).
    pub fn group_norm_silu(
        &self,
        groups: usize,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        self.group_norm_act(groups, weight, bias, eps, true)
    }

    fn group_norm_act(
        &self,
        groups: usize,
        w: Option<&Tensor>,
        b: Option<&Tensor>,
        eps: f64,
        silu: bool,
    ) -> Result<Tensor> {
        if self.rank() < 2 {
            return Err(Error::shape(
                "group_norm",
                format!("expects x [N, C, *], got shape {}", self.shape()),
            ));
        }
        let (n, c) = (self.dims()[0], self.dims()[1]);
        if groups == 0 || c % groups != 0 {
            return Err(Error::arg(
                "group_norm",
                format!("{c} channels do not split into {groups} groups"),
            ));
        }
        let inner = self.dims()[2..].iter().product();
        let shape = NormShape {
            rows: n,
            groups,
            cpg: c / groups,
            inner,
            eps,
            silu,
        };
        norm(self, w, b, shape, "group_norm")
    }

    /// LayerNorm (Ba et al. 2016) over the last axis, with optional weight and bias [D].
    pub fn layer_norm(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        let d = *self
            .dims()
            .last()
            .ok_or_else(|| Error::shape("layer_norm", "expects rank >= 1, got a scalar"))?;
        let shape = NormShape {
            rows: self.elem_count() / d.max(1),
            groups: 1,
            cpg: d,
            inner: 1,
            eps,
            silu: false,
        };
        norm(self, weight, bias, shape, "layer_norm")
    }
}

fn norm(
    x: &Tensor,
    w: Option<&Tensor>,
    b: Option<&Tensor>,
    shape: NormShape,
    op: &'static str,
) -> Result<Tensor> {
    let mut ts = vec![x];
    ts.extend(w);
    ts.extend(b);
    same_dtype_device(op, &ts)?;
    for p in [w, b].into_iter().flatten() {
        if p.dims() != [shape.channels()] {
            return Err(Error::shapes(
                op,
                x.shape(),
                p.shape(),
                &format!("weight and bias must be [{}]", shape.channels()),
            ));
        }
    }
    if shape.eps.is_nan() || shape.eps < 0.0 {
        return Err(Error::arg(op, format!("eps {} must be >= 0", shape.eps)));
    }
    let x = x.contiguous()?;
    let (w, b) = (
        w.map(Tensor::contiguous).transpose()?,
        b.map(Tensor::contiguous).transpose()?,
    );
    let (y, mean, rstd) = {
        let mut all = vec![&x];
        all.extend(w.as_ref());
        all.extend(b.as_ref());
        let g = crate::tensor::read_storages(&all);
        let wi = w.as_ref().map(|w| (g.get(1), w.layout()));
        let bi = b.as_ref().map(|b| (g.get(all.len() - 1), b.layout()));
        g.get(0).norm(x.layout(), wi, bi, &shape)?
    };
    let stats = [shape.rows, shape.groups];
    let (mean, rstd) = (
        Tensor::from_storage(mean, stats, None),
        Tensor::from_storage(rstd, stats, None),
    );
    let mut inputs = vec![&x];
    inputs.extend(w.as_ref());
    inputs.extend(b.as_ref());
    let rec = record(&inputs, || Op::Norm {
        x: x.clone(),
        w: w.clone(),
        b: b.clone(),
        mean,
        rstd,
        shape,
    });
    Ok(Tensor::from_storage(y, x.shape(), rec))
}

/// (dx, dw, db) of the normalisation from dL/dy (untracked). dw and db are [channels]
/// and are computed even without affine parameters (they are cheap sums). The bias is
/// needed only to recompute the pre-activation of a fused SiLU.
pub(crate) fn norm_backward(
    x: &Tensor,
    dy: &Tensor,
    w: Option<&Tensor>,
    b: Option<&Tensor>,
    stats: (&Tensor, &Tensor),
    shape: &NormShape,
) -> Result<(Tensor, Tensor, Tensor)> {
    let dy = dy.contiguous()?;
    let mut ts = vec![x, &dy, stats.0, stats.1];
    let wi = w.map(|w| {
        ts.push(w);
        ts.len() - 1
    });
    let bi = b.map(|b| {
        ts.push(b);
        ts.len() - 1
    });
    let (dx, dw, db) = {
        let g = crate::tensor::read_storages(&ts);
        let wo = wi.map(|i| (g.get(i), ts[i].layout()));
        let bo = bi.map(|i| (g.get(i), ts[i].layout()));
        g.get(0).norm_backward(
            x.layout(),
            (g.get(1), dy.layout()),
            wo,
            bo,
            (g.get(2), g.get(3)),
            shape,
        )?
    };
    let c = shape.channels();
    Ok((
        Tensor::from_storage(dx, x.shape(), None),
        Tensor::from_storage(dw, [c], None),
        Tensor::from_storage(db, [c], None),
    ))
}
