//! Fills: a buffer's 32-bit words set to one pattern (zeros, constants, NaN poison).

use super::device::Context;
use super::runtime::{grid, GpuBuffer, WG};
use super::source::files;
use crate::Result;
use std::sync::Arc;

/// Sets the first `n` 32-bit words of `buf` to `pattern`.
pub(crate) fn fill_words(ctx: &Arc<Context>, buf: &GpuBuffer, n: u32, pattern: u32) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let k = ctx
        .runtime
        .kernel(ctx, "fill", "fill", || files::FILL.to_string())?;
    ctx.runtime
        .dispatch(ctx, &k, &[buf], &[n, pattern], grid(ctx, n as usize, WG))
}
