//! GPU matmul and convolutions as tiled GEMMs (`kernels/gemm.wgsl`).

use super::storage::GpuStorage;
use crate::ops::ConvShape;
use crate::{Error, Layout, Result};

fn pending(op: &'static str) -> Error {
    Error::device(
        op,
        "this GPU kernel is being written; run the op on the CPU",
    )
}

/// [batch.., M, K] x [batch.., K, N] with broadcast (stride-0) batch axes and any strides.
pub(crate) fn matmul(
    _a: &GpuStorage,
    _la: &Layout,
    _b: &GpuStorage,
    _lb: &Layout,
) -> Result<GpuStorage> {
    Err(pending("matmul"))
}

/// y = conv2d(x, w) + bias, NCHW / OIHW.
pub(crate) fn conv2d(
    _x: &GpuStorage,
    _xl: &Layout,
    _w: &GpuStorage,
    _wl: &Layout,
    _bias: Option<(&GpuStorage, &Layout)>,
    _s: &ConvShape,
) -> Result<GpuStorage> {
    Err(pending("conv2d"))
}

/// dx from dy [N, Cout, HO, WO] and w.
pub(crate) fn conv2d_backward_input(
    _dy: &GpuStorage,
    _dl: &Layout,
    _w: &GpuStorage,
    _wl: &Layout,
    _s: &ConvShape,
) -> Result<GpuStorage> {
    Err(pending("conv2d_backward_input"))
}

/// dw from x and dy.
pub(crate) fn conv2d_backward_weight(
    _x: &GpuStorage,
    _xl: &Layout,
    _dy: &GpuStorage,
    _dl: &Layout,
    _s: &ConvShape,
) -> Result<GpuStorage> {
    Err(pending("conv2d_backward_weight"))
}
