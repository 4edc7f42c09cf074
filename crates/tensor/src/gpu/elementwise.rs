//! Elementwise GPU ops: unary maps, binary ops with broadcasting, select, strided copies
//! and casts, all one specialised kernel family (`kernels/elementwise.wgsl`).

use super::runtime::{grid, WG};
use super::source::{files, specialise};
use super::storage::{wgsl_type, GpuStorage};
use crate::backend::Operand;
use crate::layout::Coalesced;
use crate::ops::UnaryOp;
use crate::{DType, Error, Layout, Result};

/// Axes a kernel can walk (after coalescing).
const MAX_RANK: usize = 8;

/// Kernel parameters of a strided walk over layouts of one shape: `[n, rank, dims[8],
/// (offset, strides[8]) per operand, scalars]` (see elementwise.wgsl).
pub(crate) fn strided_params<const N: usize>(
    op: &'static str,
    layouts: [&Layout; N],
    scalars: &[f32],
) -> Result<Vec<u32>> {
    let c = Coalesced::new(layouts);
    if c.dims.len() > MAX_RANK {
        return Err(Error::shape(
            op,
            format!(
                "the GPU walks at most {MAX_RANK} strided axes; make the tensor contiguous first"
            ),
        ));
    }
    let n = layouts[0].elem_count();
    let mut p = vec![n as u32, c.dims.len() as u32];
    p.extend((0..MAX_RANK).map(|d| c.dims.get(d).copied().unwrap_or(1) as u32));
    for k in 0..N {
        p.push(c.offsets[k] as u32);
        p.extend((0..MAX_RANK).map(|d| c.strides.get(d).map_or(0, |s| s[k]) as u32));
    }
    p.extend(scalars.iter().map(|s| s.to_bits()));
    Ok(p)
}

/// The elementwise kernel variant `flag` with element types and an expression; `widen`
/// computes `expr` in f32 on f16 storage (read widened, written rounded).
fn kernel(
    x: &GpuStorage,
    flag: &str,
    operands: u32,
    (x_t, y_t): (&str, &str),
    expr: &str,
    widen: bool,
) -> Result<std::sync::Arc<super::runtime::Kernel>> {
    let ctx = &x.device.0;
    let key = format!("elementwise/{flag}/{x_t}/{y_t}/{expr}/{widen}");
    ctx.runtime.kernel(ctx, &key, "main", || {
        let flags: &[&str] = if flag.is_empty() { &[] } else { &[flag] };
        let (load, store) = if widen { ("f32", y_t) } else { ("", "") };
        let src = specialise(
            files::ELEMENTWISE,
            flags,
            &[
                ("X", x_t),
                ("Y", y_t),
                ("EXPR", expr),
                ("LOAD", load),
                ("STORE", store),
            ],
        );
        // Half-precision storage needs the f16 extension (the device has SHADER_F16).
        let enable = if x_t == "f16" || y_t == "f16" {
            "enable f16;\n"
        } else {
            ""
        };
        format!("{enable}const NUM_OPERANDS: u32 = {operands}u;\n{src}")
    })
}

/// y = expr(x) over a strided x, output contiguous of `out` dtype: copies and casts,
/// `expr` on the stored type.
pub(crate) fn map(
    x: &GpuStorage,
    l: &Layout,
    out: DType,
    expr: &str,
    op: &'static str,
) -> Result<GpuStorage> {
    map_with(x, l, out, expr, &[], false, op)
}

/// y = expr(x) computed in f32 for f32 or f16 storage (the output has x's dtype);
/// `expr` may use the scalars (`scalar(0u)`, `scalar(1u)`).
pub(crate) fn compute(
    x: &GpuStorage,
    l: &Layout,
    expr: &str,
    scalars: &[f32],
    op: &'static str,
) -> Result<GpuStorage> {
    float_only(op, x)?;
    map_with(x, l, x.dtype, expr, scalars, x.dtype == DType::F16, op)
}

/// Float ops take f32 or f16 (on devices with SHADER_F16) storage.
pub(crate) fn float_only(op: &'static str, s: &GpuStorage) -> Result<()> {
    match s.dtype {
        DType::F32 | DType::F16 => Ok(()),
        other => Err(Error::unsupported_dtype(op, other)),
    }
}

fn map_with(
    x: &GpuStorage,
    l: &Layout,
    out: DType,
    expr: &str,
    scalars: &[f32],
    widen: bool,
    op: &'static str,
) -> Result<GpuStorage> {
    let types = (
        wgsl_type(op, x.dtype, &x.device)?,
        wgsl_type(op, out, &x.device)?,
    );
    let n = l.elem_count();
    let y = GpuStorage::alloc(&x.device, n, out, op)?;
    if n > 0 {
        let k = kernel(x, "", 1, types, expr, widen)?;
        let p = strided_params(op, [l], scalars)?;
        let ctx = &x.device.0;
        ctx.runtime
            .dispatch(ctx, &k, &[&x.buf, &y.buf], &p, grid(ctx, n, WG))?;
    }
    Ok(y)
}

/// y = expr(a, b) over two strided operands of one (broadcast) shape.
pub(crate) fn zip(
    a: &GpuStorage,
    la: &Layout,
    b: &GpuStorage,
    lb: &Layout,
    expr: &str,
    op: &'static str,
) -> Result<GpuStorage> {
    float_only(op, a)?;
    let t = wgsl_type(op, a.dtype, &a.device)?;
    let n = la.elem_count();
    let y = GpuStorage::alloc(&a.device, n, a.dtype, op)?;
    if n > 0 {
        let k = kernel(a, "BINARY", 2, (t, t), expr, a.dtype == DType::F16)?;
        let p = strided_params(op, [la, lb], &[])?;
        let ctx = &a.device.0;
        ctx.runtime
            .dispatch(ctx, &k, &[&a.buf, &b.buf, &y.buf], &p, grid(ctx, n, WG))?;
    }
    Ok(y)
}

/// y = c != 0 ? t : f, all three strided and of one (broadcast) shape.
pub(crate) fn select(
    c: &GpuStorage,
    lc: &Layout,
    t: &GpuStorage,
    lt: &Layout,
    f: &GpuStorage,
    lf: &Layout,
) -> Result<GpuStorage> {
    let (c_t, y_t) = (
        wgsl_type("where_cond", c.dtype, &c.device)?,
        wgsl_type("where_cond", t.dtype, &t.device)?,
    );
    let n = lc.elem_count();
    let y = GpuStorage::alloc(&t.device, n, t.dtype, "where_cond")?;
    if n > 0 {
        let k = kernel(c, "SELECT", 3, (c_t, y_t), "", false)?;
        let p = strided_params("where_cond", [lc, lt, lf], &[])?;
        let ctx = &t.device.0;
        ctx.runtime.dispatch(
            ctx,
            &k,
            &[&c.buf, &t.buf, &f.buf, &y.buf],
            &p,
            grid(ctx, n, WG),
        )?;
    }
    Ok(y)
}

/// dst[dst layout] = src[src layout] in place (same shape and dtype).
pub(crate) fn scatter(dst: &GpuStorage, ld: &Layout, src: &GpuStorage, ls: &Layout) -> Result<()> {
    let t = wgsl_type("copy_into", dst.dtype, &dst.device)?;
    let n = ld.elem_count();
    if n > 0 {
        let k = kernel(src, "SCATTER", 2, (t, t), "", false)?;
        let p = strided_params("copy_into", [ld, ls], &[])?;
        let ctx = &dst.device.0;
        ctx.runtime
            .dispatch(ctx, &k, &[&src.buf, &dst.buf], &p, grid(ctx, n, WG))?;
    }
    Ok(())
}

/// The GLU kernels (`GLU`, `GLU_BACKWARD` in elementwise.wgsl) for the activation `act`:
/// its value and derivative are the op's own WGSL expressions.
fn glu_kernel(
    x: &GpuStorage,
    backward: bool,
    act: UnaryOp,
) -> Result<std::sync::Arc<super::runtime::Kernel>> {
    let ctx = &x.device.0;
    let key = format!("elementwise/glu/{backward}/{}", act.name());
    ctx.runtime.kernel(ctx, &key, "main", || {
        // The backward reads two operands: BINARY's bindings (GLU_BACKWARD's main comes
        // before BINARY's in the file, so it is the one kept).
        let flags: &[&str] = if backward {
            &["GLU_BACKWARD", "BINARY"]
        } else {
            &["GLU"]
        };
        let src = specialise(
            files::ELEMENTWISE,
            flags,
            &[
                ("X", "f32"),
                ("Y", "f32"),
                ("EXPR", act.wgsl(false)),
                ("DEXPR", act.wgsl(true)),
                ("LOAD", ""),
                ("STORE", ""),
            ],
        );
        format!("const NUM_OPERANDS: u32 = 0u;\n{src}")
    })
}

/// y [rows, n] = a * act(g) for the halves of each row of x [rows, 2n].
pub(crate) fn glu(x: &GpuStorage, l: &Layout, act: UnaryOp) -> Result<GpuStorage> {
    let x = x.dense(l)?;
    let n = l.dims().last().copied().unwrap_or(0) / 2;
    let out = l.elem_count() / 2;
    let y = GpuStorage::alloc(&x.device, out, DType::F32, "glu")?;
    if out > 0 {
        let k = glu_kernel(&x, false, act)?;
        let ctx = &x.device.0;
        let p = [out as u32, n as u32];
        ctx.runtime
            .dispatch(ctx, &k, &[&x.buf, &y.buf], &p, grid(ctx, out, WG))?;
    }
    Ok(y)
}

/// dx [rows, 2n] = [dy act(g), dy a act'(g)] for x [rows, 2n] and dy [rows, n].
pub(crate) fn glu_backward(
    x: &GpuStorage,
    l: &Layout,
    dy: Operand<GpuStorage>,
    act: UnaryOp,
) -> Result<GpuStorage> {
    let (x, d) = (x.dense(l)?, dy.0.dense(dy.1)?);
    let n = l.dims().last().copied().unwrap_or(0) / 2;
    let out = l.elem_count() / 2;
    let dx = GpuStorage::alloc(&x.device, 2 * out, DType::F32, "glu_backward")?;
    if out > 0 {
        let k = glu_kernel(&x, true, act)?;
        let ctx = &x.device.0;
        let p = [out as u32, n as u32];
        ctx.runtime
            .dispatch(ctx, &k, &[&x.buf, &d.buf, &dx.buf], &p, grid(ctx, out, WG))?;
    }
    Ok(dx)
}
