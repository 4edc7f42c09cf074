//! Philox uniform and normal fills on the GPU (`kernels/philox.wgsl`), bit-identical to
//! the CPU's.

use super::device::GpuDevice;
use super::runtime::{grid, WG};
use super::source::{files, specialise};
use super::storage::GpuStorage;
use crate::normal::{INV_TABLE, LN_TABLE};
use crate::{DType, Result};

/// `n` values from Philox blocks `start..` under key `seed`: uniforms in [0, 1), or
/// standard normals when `normal`.
pub(crate) fn fill(
    device: &GpuDevice,
    n: usize,
    seed: u64,
    start: u64,
    normal: bool,
) -> Result<GpuStorage> {
    let y = GpuStorage::alloc(device, n, DType::F32, "philox")?;
    if n == 0 {
        return Ok(y);
    }
    let ctx = &device.0;
    let k = ctx.runtime.kernel(ctx, "philox", "main", || {
        let table = |t: &[u32; 64]| {
            t.iter()
                .map(|v| format!("{v}u"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        specialise(
            files::PHILOX,
            &[],
            &[
                ("LN_TABLE", &table(&LN_TABLE)),
                ("INV_TABLE", &table(&INV_TABLE)),
            ],
        )
    })?;
    let p = [
        n as u32,
        start as u32,
        (start >> 32) as u32,
        seed as u32,
        (seed >> 32) as u32,
        normal as u32,
    ];
    ctx.runtime
        .dispatch(ctx, &k, &[&y.buf], &p, grid(ctx, n.div_ceil(4), WG))?;
    Ok(y)
}
