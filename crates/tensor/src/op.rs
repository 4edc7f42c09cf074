//! The ops autograd records, and the gradient table: one backward rule per op, written
//! with tensor ops so it runs on whichever device the tensors live on.

use crate::ops::{AttnShape, BinaryOp, ConvShape, NormShape, ReduceOp, UnaryOp};
use crate::{Result, Tensor};

/// How a tracked tensor was made: the op, its inputs, and what its backward needs.
pub(crate) enum Op {
    Unary(Tensor, UnaryOp),
    /// a * act(g) over the halves of the (contiguous) input's last axis.
    Glu(Tensor, UnaryOp),
    /// x * mul + add (the add needs no gradient).
    Affine(Tensor, f64),
    Powf(Tensor, f64),
    /// lhs op rhs with NumPy broadcasting of the (unbroadcast) inputs.
    Binary(Tensor, Tensor, BinaryOp),
    /// cond ? on_true : on_false, broadcast.
    Where(Tensor, Tensor, Tensor),
    /// A reduction over sorted axes, keeping them (size 1).
    Reduce(Tensor, ReduceOp, Vec<usize>),
    Matmul(Tensor, Tensor),
    Conv2d {
        x: Tensor,
        w: Tensor,
        bias: Option<Tensor>,
        shape: ConvShape,
    },
    /// group_norm / layer_norm with the saved statistics.
    Norm {
        x: Tensor,
        w: Option<Tensor>,
        b: Option<Tensor>,
        mean: Tensor,
        rstd: Tensor,
        shape: NormShape,
    },
    /// Softmax over the last axis (the output is the node itself).
    Softmax(Tensor),
    Attention {
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: Option<Tensor>,
        lse: Tensor,
        shape: AttnShape,
    },
    Embedding {
        ids: Tensor,
        w: Tensor,
    },
    Cat(Vec<Tensor>, usize),
    UpsampleNearest2d(Tensor, usize),
    Reshape(Tensor),
    Permute(Tensor, Vec<usize>),
    /// narrow(axis, start)
    Narrow(Tensor, usize, usize),
    BroadcastAs(Tensor),
    Copy(Tensor),
    ToDType(Tensor),
    ToDevice(Tensor),
}

impl Op {
    /// Every tensor the op holds (inputs and saved values), given up so that dropping a
    /// long graph can be done with a loop instead of recursion.
    pub(crate) fn into_tensors(self) -> Vec<Tensor> {
        use Op::*;
        match self {
            Unary(x, _)
            | Glu(x, _)
            | Affine(x, _)
            | Powf(x, _)
            | Reduce(x, _, _)
            | Softmax(x)
            | UpsampleNearest2d(x, _) => vec![x],
            Reshape(x)
            | Permute(x, _)
            | Narrow(x, _, _)
            | BroadcastAs(x)
            | Copy(x)
            | ToDType(x)
            | ToDevice(x) => vec![x],
            Binary(a, b, _) | Matmul(a, b) => vec![a, b],
            Where(c, a, b) => vec![c, a, b],
            Conv2d { x, w, bias, .. } => [Some(x), Some(w), bias].into_iter().flatten().collect(),
            Norm {
                x,
                w,
                b,
                mean,
                rstd,
                ..
            } => [Some(x), w, b, Some(mean), Some(rstd)]
                .into_iter()
                .flatten()
                .collect(),
            Attention {
                q, k, v, mask, lse, ..
            } => [Some(q), Some(k), Some(v), mask, Some(lse)]
                .into_iter()
                .flatten()
                .collect(),
            Embedding { ids, w } => vec![ids, w],
            Cat(xs, _) => xs,
        }
    }

    /// The tensors gradients flow back into.
    pub(crate) fn inputs(&self) -> Vec<&Tensor> {
        use Op::*;
        match self {
            Unary(x, _)
            | Glu(x, _)
            | Affine(x, _)
            | Powf(x, _)
            | Reduce(x, _, _)
            | Softmax(x)
            | UpsampleNearest2d(x, _) => vec![x],
            Reshape(x)
            | Permute(x, _)
            | Narrow(x, _, _)
            | BroadcastAs(x)
            | Copy(x)
            | ToDType(x)
            | ToDevice(x) => vec![x],
            Binary(a, b, _) | Matmul(a, b) => vec![a, b],
            Where(_, a, b) => vec![a, b],
            Conv2d { x, w, bias, .. } => [Some(x), Some(w), bias.as_ref()]
                .into_iter()
                .flatten()
                .collect(),
            Norm { x, w, b, .. } => [Some(x), w.as_ref(), b.as_ref()]
                .into_iter()
                .flatten()
                .collect(),
            Attention { q, k, v, .. } => vec![q, k, v],
            Embedding { w, .. } => vec![w],
            Cat(xs, _) => xs.iter().collect(),
        }
    }

    /// The gradient table: given the node `out` made by this op and dL/d(out) `g`,
    /// returns dL/d(input) for the inputs that need it.
    pub(crate) fn backward(&self, out: &Tensor, g: &Tensor) -> Result<Vec<(Tensor, Tensor)>> {
        use Op::*;
        let mut grads = Vec::new();
        let mut put = |x: &Tensor, gx: Result<Tensor>| -> Result<()> {
            if x.requires_grad() {
                grads.push((x.clone(), gx?));
            }
            Ok(())
        };
        match self {
            // d f(x) = f'(x) dx, with f' declared beside f in ops/unary.rs.
            Unary(x, op) => put(x, g.mul(&x.unary_derivative(*op)?))?,
            // y = a act(g): da = dy act(g), dg = dy a act'(g), in one fused pass.
            Glu(x, act) => put(x, crate::ops::glu_backward(x, g, *act))?,
            Affine(x, mul) => put(x, g.affine(*mul, 0.0))?,
            // d x^e = e x^(e-1) dx
            Powf(x, e) => put(x, g.mul(&x.powf(e - 1.0)?.affine(*e, 0.0)?))?,
            Binary(a, b, op) => {
                let (ga, gb) = match op {
                    BinaryOp::Add => (g.clone(), g.clone()),
                    BinaryOp::Sub => (g.clone(), g.neg()?),
                    BinaryOp::Mul => (g.mul(b)?, g.mul(a)?),
                    // d(a/b) = da/b - a/b^2 db
                    BinaryOp::Div => (g.div(b)?, g.mul(out)?.div(b)?.neg()?),
                    // The larger operand takes the gradient; ties go to lhs (as torch.maximum
                    // splits them, we pick one side so the sum stays g).
                    BinaryOp::Maximum | BinaryOp::Minimum => {
                        let cmp = if *op == BinaryOp::Maximum {
                            a.ge(b)?
                        } else {
                            a.le(b)?
                        };
                        let ga = g.mul(&cmp)?;
                        (ga.clone(), g.sub(&ga)?)
                    }
                    cmp => unreachable!("comparison {cmp:?} is never recorded"),
                };
                put(a, ga.sum_to(a.shape()))?;
                put(b, gb.sum_to(b.shape()))?;
            }
            Where(cond, a, b) => {
                let zero = g.zeros_like()?;
                put(a, cond.where_cond(g, &zero)?.sum_to(a.shape()))?;
                put(b, cond.where_cond(&zero, g)?.sum_to(b.shape()))?;
            }
            Reduce(x, op, dims) => {
                let gx = match op {
                    ReduceOp::Sum => g.broadcast_as(x.shape()),
                    // Ties share the gradient equally, as torch.amax.
                    ReduceOp::Max | ReduceOp::Min => {
                        let hit = x.eq(&out.broadcast_as(x.shape())?)?;
                        let count = hit.sum_keepdim(dims)?;
                        hit.mul(&g.div(&count)?.broadcast_as(x.shape())?)
                    }
                };
                put(x, gx)?;
            }
            // C = A B: dA = dC B^T, dB = A^T dC, summed over broadcast batch axes.
            Matmul(a, b) => {
                put(
                    a,
                    g.matmul(&b.transpose(-1, -2)?)
                        .and_then(|t| t.sum_to(a.shape())),
                )?;
                put(
                    b,
                    a.transpose(-1, -2)?
                        .matmul(g)
                        .and_then(|t| t.sum_to(b.shape())),
                )?;
            }
            Conv2d { x, w, bias, shape } => {
                put(x, crate::ops::conv2d_backward_input(g, w, shape))?;
                put(w, crate::ops::conv2d_backward_weight(x, g, shape))?;
                if let Some(b) = bias {
                    put(b, g.sum(&[0, 2, 3], false))?;
                }
            }
            Norm {
                x,
                w,
                b,
                mean,
                rstd,
                shape,
            } => {
                let (dx, dw, db) =
                    crate::ops::norm_backward(x, g, w.as_ref(), b.as_ref(), (mean, rstd), shape)?;
                put(x, Ok(dx))?;
                if let Some(w) = w {
                    put(w, dw.reshape(w.shape()))?;
                }
                if let Some(b) = b {
                    put(b, db.reshape(b.shape()))?;
                }
            }
            // y = softmax(x): dx = y * (g - sum(g * y))
            Softmax(x) => {
                let gy = g.mul(out)?;
                put(x, gy.sub(&out.mul(&gy.sum_keepdim(&[x.rank() - 1])?)?))?;
            }
            Attention {
                q,
                k,
                v,
                mask,
                lse,
                shape,
            } => {
                let (dq, dk, dv) =
                    crate::ops::attention_backward(q, k, v, mask.as_ref(), out, lse, g, shape)?;
                put(q, Ok(dq))?;
                put(k, Ok(dk))?;
                put(v, Ok(dv))?;
            }
            Embedding { ids, w } => put(w, crate::ops::embedding_backward(ids, g, w.dim(0)?))?,
            Cat(xs, axis) => {
                let mut start = 0;
                for x in xs {
                    let len = x.dims()[*axis];
                    put(x, g.narrow(*axis, start, len))?;
                    start += len;
                }
            }
            // Each input pixel fed factor x factor outputs: sum them back.
            UpsampleNearest2d(x, f) => {
                let [n, c, h, w] = x.dims().try_into().expect("checked at the op");
                put(
                    x,
                    g.reshape([n, c, h, *f, w, *f])
                        .and_then(|t| t.sum(&[3, 5], false)),
                )?;
            }
            Reshape(x) => put(x, g.reshape(x.shape()))?,
            Permute(x, perm) => {
                let mut inverse = vec![0; perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    inverse[p] = i;
                }
                put(x, g.permute(&inverse))?;
            }
            // The slice's gradient, padded with zeros back to the input's extent.
            Narrow(x, axis, start) => {
                let (axis, start) = (*axis, *start);
                let zeros = |len: usize| {
                    let mut dims = x.dims().to_vec();
                    dims[axis] = len;
                    Tensor::zeros(dims, g.dtype(), g.device())
                };
                let after = x.dims()[axis] - start - g.dims()[axis];
                let mut parts = Vec::new();
                if start > 0 {
                    parts.push(zeros(start)?);
                }
                parts.push(g.clone());
                if after > 0 {
                    parts.push(zeros(after)?);
                }
                put(x, Tensor::cat(&parts.iter().collect::<Vec<_>>(), axis))?;
            }
            BroadcastAs(x) => put(x, g.sum_to(x.shape()))?,
            Copy(x) => put(x, Ok(g.clone()))?,
            ToDType(x) => put(x, g.to_dtype(x.dtype()))?,
            ToDevice(x) => put(x, g.to_device(x.device()))?,
        }
        Ok(grads)
    }
}
