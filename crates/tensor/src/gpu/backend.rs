//! `BackendStorage` for `GpuStorage`: each op family handed to its kernel module.

use super::storage::GpuStorage;
use super::{attention, elementwise, gemm, index, norm, optim, reduce};
use crate::backend::{BackendStorage, Operand};
use crate::ops::{AdamWStep, AttnShape, BinaryOp, ConvShape, NormShape, ReduceOp, UnaryOp};
use crate::{DType, Error, Layout, Result};

/// Ops that compute in f32 refuse other dtypes with the op's name.
fn f32_only(op: &'static str, s: &GpuStorage) -> Result<()> {
    if s.dtype == DType::F32 {
        Ok(())
    } else {
        Err(Error::unsupported_dtype(op, s.dtype))
    }
}

impl BackendStorage for GpuStorage {
    fn dtype(&self) -> DType {
        self.dtype
    }

    fn copy_strided(&self, l: &Layout) -> Result<Self> {
        elementwise::map(self, l, self.dtype, "x", "copy")
    }

    fn copy_into(&mut self, dst: &Layout, src: Operand<Self>) -> Result<()> {
        if src.0.dtype != self.dtype {
            return Err(Error::dtype(
                "copy_into",
                format!("cannot copy {} into {}", src.0.dtype, self.dtype),
            ));
        }
        elementwise::scatter(self, dst, src.0, src.1)
    }

    fn to_dtype(&self, l: &Layout, dtype: DType) -> Result<Self> {
        let expr = match dtype {
            DType::F32 => "f32(x)",
            DType::U32 => "u32(x)",
            DType::F16 => "f16(x)",
            other => return Err(Error::unsupported_dtype("to_dtype", other)),
        };
        elementwise::map(self, l, dtype, expr, "to_dtype")
    }

    fn unary(&self, l: &Layout, op: UnaryOp, derivative: bool) -> Result<Self> {
        elementwise::compute(self, l, op.wgsl(derivative), &[], op.name())
    }

    fn glu(&self, l: &Layout, act: UnaryOp) -> Result<Self> {
        f32_only("glu", self)?;
        elementwise::glu(self, l, act)
    }

    fn glu_backward(&self, l: &Layout, dy: Operand<Self>, act: UnaryOp) -> Result<Self> {
        f32_only("glu_backward", self)?;
        elementwise::glu_backward(self, l, dy, act)
    }

    fn affine(&self, l: &Layout, mul: f64, add: f64) -> Result<Self> {
        elementwise::compute(
            self,
            l,
            "x * scalar(0u) + scalar(1u)",
            &[mul as f32, add as f32],
            "affine",
        )
    }

    fn powf(&self, l: &Layout, e: f64) -> Result<Self> {
        elementwise::compute(self, l, "powf_(x, scalar(0u))", &[e as f32], "powf")
    }

    fn binary(&self, l: &Layout, rhs: Operand<Self>, op: BinaryOp) -> Result<Self> {
        elementwise::zip(self, l, rhs.0, rhs.1, op.wgsl(), op.name())
    }

    fn where_cond(&self, l: &Layout, t: Operand<Self>, f: Operand<Self>) -> Result<Self> {
        elementwise::float_only("where_cond", t.0)?;
        elementwise::select(self, l, t.0, t.1, f.0, f.1)
    }

    fn reduce(&self, l: &Layout, op: ReduceOp, dims: &[usize]) -> Result<Self> {
        f32_only(op.name(), self)?;
        reduce::reduce(self, l, op, dims)
    }

    fn matmul(&self, l: &Layout, rhs: Operand<Self>) -> Result<Self> {
        f32_only("matmul", self)?;
        gemm::matmul(self, l, rhs.0, rhs.1)
    }

    fn conv2d(
        &self,
        l: &Layout,
        w: Operand<Self>,
        bias: Option<Operand<Self>>,
        s: &ConvShape,
    ) -> Result<Self> {
        f32_only("conv2d", self)?;
        gemm::conv2d(self, l, w.0, w.1, bias, s)
    }

    fn conv2d_backward_input(&self, l: &Layout, w: Operand<Self>, s: &ConvShape) -> Result<Self> {
        f32_only("conv2d_backward_input", self)?;
        gemm::conv2d_backward_input(self, l, w.0, w.1, s)
    }

    fn conv2d_backward_weight(&self, l: &Layout, dy: Operand<Self>, s: &ConvShape) -> Result<Self> {
        f32_only("conv2d_backward_weight", self)?;
        gemm::conv2d_backward_weight(self, l, dy.0, dy.1, s)
    }

    fn norm(
        &self,
        l: &Layout,
        w: Option<Operand<Self>>,
        b: Option<Operand<Self>>,
        s: &NormShape,
    ) -> Result<(Self, Self, Self)> {
        f32_only("norm", self)?;
        let w = w.map(|(w, wl)| w.dense(wl)).transpose()?;
        let b = b.map(|(b, bl)| b.dense(bl)).transpose()?;
        norm::norm(self, l, w.as_deref(), b.as_deref(), s)
    }

    fn norm_backward(
        &self,
        l: &Layout,
        dy: Operand<Self>,
        w: Option<Operand<Self>>,
        b: Option<Operand<Self>>,
        stats: (&Self, &Self),
        s: &NormShape,
    ) -> Result<(Self, Self, Self)> {
        f32_only("norm_backward", self)?;
        let w = w.map(|(w, wl)| w.dense(wl)).transpose()?;
        let b = b.map(|(b, bl)| b.dense(bl)).transpose()?;
        norm::norm_backward(self, l, dy, (w.as_deref(), b.as_deref()), stats, s)
    }

    fn softmax_last(&self, l: &Layout) -> Result<Self> {
        f32_only("softmax", self)?;
        reduce::softmax_last(self, l, l.dims().last().copied().unwrap_or(1))
    }

    fn attention(
        &self,
        q: &Layout,
        k: Operand<Self>,
        v: Operand<Self>,
        mask: Option<Operand<Self>>,
        s: &AttnShape,
    ) -> Result<(Self, Self)> {
        f32_only("attention", self)?;
        head_major("attention", s)?;
        attention::attention((self, q), k, v, mask, s)
    }

    fn attention_backward(
        &self,
        q: &Layout,
        k: Operand<Self>,
        v: Operand<Self>,
        mask: Option<Operand<Self>>,
        out: Operand<Self>,
        lse: &Self,
        dout: Operand<Self>,
        s: &AttnShape,
    ) -> Result<(Self, Self, Self)> {
        f32_only("attention_backward", self)?;
        head_major("attention_backward", s)?;
        attention::attention_backward((self, q), k, v, mask, out, lse, dout, s)
    }

    fn embedding(&self, l: &Layout, w: Operand<Self>) -> Result<Self> {
        f32_only("embedding", w.0)?;
        index::embedding(self, l, w.0, w.1)
    }

    fn embedding_backward(&self, l: &Layout, dy: Operand<Self>, vocab: usize) -> Result<Self> {
        f32_only("embedding_backward", dy.0)?;
        index::embedding_backward(self, l, dy.0, dy.1, vocab)
    }

    fn upsample_nearest2d(&self, l: &Layout, factor: usize) -> Result<Self> {
        f32_only("upsample_nearest2d", self)?;
        index::upsample_nearest2d(self, l, factor)
    }

    fn adamw_step(
        param: &mut Self,
        m: &mut Self,
        v: &mut Self,
        grad: Operand<Self>,
        h: &AdamWStep,
    ) -> Result<()> {
        f32_only("adamw_step", param)?;
        optim::adamw(param, m, v, grad, h)
    }
}

/// The GPU's attention kernels read and write head-major [B, H, L, D] operands.
fn head_major(op: &'static str, s: &AttnShape) -> Result<()> {
    if s.seq_major {
        return Err(Error::shape(
            op,
            "the GPU kernels take head-major [B, H, L, D] operands, not sequence-major ones",
        ));
    }
    Ok(())
}
