//! `BackendStorage`: the one trait a device's storage implements. Each method is one op
//! family; tensors handle shapes, views and autograd, and hand the backend storage plus
//! layouts that are already checked.

use crate::ops::{AdamWStep, AttnShape, BinaryOp, ConvShape, NormShape, ReduceOp, UnaryOp};
use crate::{DType, Layout, Result};

/// A storage and its layout: how the backend receives an operand.
pub type Operand<'a, S> = (&'a S, &'a Layout);

/// The ops a device provides. Every output is a new, contiguous storage.
///
/// Layout contract: elementwise ops, reductions, matmul and copies read any strided
/// layout; the fused ops (glu, conv, norms, softmax, attention, embedding, upsample) receive
/// contiguous layouts (the tensor layer makes them so) and may read
/// `layout.contiguous_range()` directly.
pub trait BackendStorage: Sized {
    fn dtype(&self) -> DType;

    /// A contiguous copy of a strided view.
    fn copy_strided(&self, l: &Layout) -> Result<Self>;
    /// Writes the strided view `src` into `self` at the (strided) destination layout `dst`,
    /// which has the same shape. Used by concat and in-place assignment.
    fn copy_into(&mut self, dst: &Layout, src: Operand<Self>) -> Result<()>;
    /// Converts to another dtype (contiguous output).
    fn to_dtype(&self, l: &Layout, dtype: DType) -> Result<Self>;

    /// y = f(x), or f'(x) when `derivative` (what the backward rule multiplies by).
    fn unary(&self, l: &Layout, op: UnaryOp, derivative: bool) -> Result<Self>;
    /// y = a * act(g) for the halves a, g of the contiguous x's last axis [.., 2N] -> [.., N].
    fn glu(&self, l: &Layout, act: UnaryOp) -> Result<Self>;
    /// Backward of `glu`: `self` is x [.., 2N], dy [.., N] (contiguous) -> dx [.., 2N].
    fn glu_backward(&self, l: &Layout, dy: Operand<Self>, act: UnaryOp) -> Result<Self>;
    /// y = x * mul + add.
    fn affine(&self, l: &Layout, mul: f64, add: f64) -> Result<Self>;
    /// y = x ^ e.
    fn powf(&self, l: &Layout, e: f64) -> Result<Self>;
    /// y = lhs op rhs; both layouts are already broadcast to the output shape.
    fn binary(&self, l: &Layout, rhs: Operand<Self>, op: BinaryOp) -> Result<Self>;
    /// y = cond != 0 ? t : f (`self` is the condition, any dtype); layouts broadcast.
    fn where_cond(&self, l: &Layout, t: Operand<Self>, f: Operand<Self>) -> Result<Self>;
    /// Reduces over the sorted axes `dims`; the output keeps them with size 1.
    fn reduce(&self, l: &Layout, op: ReduceOp, dims: &[usize]) -> Result<Self>;

    /// [batch.., M, K] x [batch.., K, N] -> [batch.., M, N]; batch dims already broadcast
    /// (possibly stride 0) and equal.
    fn matmul(&self, l: &Layout, rhs: Operand<Self>) -> Result<Self>;

    /// conv2d x: [N, Cin, H, W], w: [Cout, Cin, KH, KW], bias: [Cout] -> [N, Cout, HO, WO].
    fn conv2d(
        &self,
        l: &Layout,
        w: Operand<Self>,
        bias: Option<Operand<Self>>,
        s: &ConvShape,
    ) -> Result<Self>;
    /// Gradient of conv2d wrt its input: `self` is dy [N, Cout, HO, WO] -> dx [N, Cin, H, W].
    fn conv2d_backward_input(&self, l: &Layout, w: Operand<Self>, s: &ConvShape) -> Result<Self>;
    /// Gradient of conv2d wrt its weight: `self` is x, `dy` the output grad -> dw.
    fn conv2d_backward_weight(&self, l: &Layout, dy: Operand<Self>, s: &ConvShape) -> Result<Self>;

    /// Normalises each (row, group) of x seen as [rows, groups, group_len, inner] over its
    /// last two axes, then y = xhat * w + b with w, b indexed by channel (group, part of
    /// group_len, see NormShape). Returns (y, mean, rstd), the stats as [rows, groups].
    fn norm(
        &self,
        l: &Layout,
        w: Option<Operand<Self>>,
        b: Option<Operand<Self>>,
        s: &NormShape,
    ) -> Result<(Self, Self, Self)>;
    /// Backward of `norm`: `self` is x, `stats` the saved (mean, rstd); returns (dx, dw,
    /// db). The bias is read only to recompute a fused SiLU's input.
    #[allow(clippy::too_many_arguments)]
    fn norm_backward(
        &self,
        l: &Layout,
        dy: Operand<Self>,
        w: Option<Operand<Self>>,
        b: Option<Operand<Self>>,
        stats: (&Self, &Self),
        s: &NormShape,
    ) -> Result<(Self, Self, Self)>;

    /// Softmax over the last axis.
    fn softmax_last(&self, l: &Layout) -> Result<Self>;

    /// Fused scaled dot-product attention on q: [B, H, L, D], k: [B, H, S, D],
    /// v: [B, H, S, DV], key mask [B, S] (nonzero = attend). Returns (out [B, H, L, DV],
    /// logsumexp [B, H, L]) where a fully masked row has out 0 and lse -inf. q, k, v (and
    /// out, dout and the gradients) are contiguous, or with `s.seq_major` the [B, H, L, D]
    /// views of contiguous [B, L, H, D] storage, and the outputs come back in that order.
    fn attention(
        &self,
        q: &Layout,
        k: Operand<Self>,
        v: Operand<Self>,
        mask: Option<Operand<Self>>,
        s: &AttnShape,
    ) -> Result<(Self, Self)>;
    /// Backward of `attention`: `self` is q; returns (dq, dk, dv).
    #[allow(clippy::too_many_arguments)]
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
    ) -> Result<(Self, Self, Self)>;

    /// Rows of `w` [V, D] picked by u32 ids (`self`), any shape -> [.., D].
    fn embedding(&self, l: &Layout, w: Operand<Self>) -> Result<Self>;
    /// Scatter-add of dy [n_ids, D] into a zero [vocab, D] at the ids (`self`).
    fn embedding_backward(&self, l: &Layout, dy: Operand<Self>, vocab: usize) -> Result<Self>;

    /// Nearest-neighbour upsampling of [N, C, H, W] by an integer factor.
    fn upsample_nearest2d(&self, l: &Layout, factor: usize) -> Result<Self>;

    /// One fused AdamW step in place on whole contiguous `param`, `m`, `v` (see
    /// `ops::adamw_step`), reading the (strided) gradient.
    fn adamw_step(
        param: &mut Self,
        m: &mut Self,
        v: &mut Self,
        grad: Operand<Self>,
        h: &AdamWStep,
    ) -> Result<()>;
}
