//! GPU scaled dot-product attention, flash-style, and its backward (`kernels/attention.wgsl`).

use super::storage::GpuStorage;
use crate::ops::AttnShape;
use crate::{Error, Layout, Result};

type Operand<'a> = (&'a GpuStorage, &'a Layout);

fn pending(op: &'static str) -> Error {
    Error::device(
        op,
        "this GPU kernel is being written; run the op on the CPU",
    )
}

/// (out [B, H, L, DV], lse [B, H, L]).
pub(crate) fn attention(
    _q: Operand,
    _k: Operand,
    _v: Operand,
    _mask: Option<Operand>,
    _s: &AttnShape,
) -> Result<(GpuStorage, GpuStorage)> {
    Err(pending("attention"))
}

/// (dq, dk, dv).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_backward(
    _q: Operand,
    _k: Operand,
    _v: Operand,
    _mask: Option<Operand>,
    _out: Operand,
    _lse: &GpuStorage,
    _dout: Operand,
    _s: &AttnShape,
) -> Result<(GpuStorage, GpuStorage, GpuStorage)> {
    Err(pending("attention_backward"))
}
