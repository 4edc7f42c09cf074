//! `Storage`: the closed set of device storages (candle's storage.rs). It implements
//! `BackendStorage` by handing each call to the storage of the right device, after
//! checking that every operand lives there.

use crate::backend::{BackendStorage, Operand};
use crate::cpu::CpuStorage;
use crate::gpu::GpuStorage;
use crate::ops::{AdamWStep, AttnShape, BinaryOp, ConvShape, NormShape, ReduceOp, UnaryOp};
use crate::profile;
use crate::widen::{half, narrow, Wide};
use crate::{DType, Device, Error, Layout, Result};

/// A tensor's elements on one device.
#[derive(Debug, Clone)]
pub enum Storage {
    Cpu(CpuStorage),
    Gpu(GpuStorage),
}

impl Storage {
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Gpu(s) => Device::Gpu(s.device.clone()),
        }
    }

    /// Elements stored.
    pub(crate) fn len(&self) -> usize {
        match self {
            Storage::Cpu(s) => s.len(),
            Storage::Gpu(s) => s.len,
        }
    }

    /// Half-precision dtype of an elementwise operand the CPU widens (the GPU's
    /// elementwise kernels widen f16 themselves).
    fn cpu_half(&self) -> Option<DType> {
        match self {
            Storage::Cpu(_) => half(self),
            Storage::Gpu(_) => None,
        }
    }
}

fn mismatch(found: &Storage, want: &str) -> Error {
    Error::device(
        "op",
        format!(
            "an operand is on {} while the op runs on the {want}: move it first",
            found.device()
        ),
    )
}

/// The CPU storage of an operand of a CPU op.
fn cpu<'a>(o: Operand<'a, Storage>) -> Result<Operand<'a, CpuStorage>> {
    match o.0 {
        Storage::Cpu(s) => Ok((s, o.1)),
        other => Err(mismatch(other, "cpu")),
    }
}

/// The GPU storage of an operand of a GPU op.
fn gpu<'a>(o: Operand<'a, Storage>) -> Result<Operand<'a, GpuStorage>> {
    match o.0 {
        Storage::Gpu(s) => Ok((s, o.1)),
        other => Err(mismatch(other, "gpu")),
    }
}

fn cpu_opt<'a>(o: Option<Operand<'a, Storage>>) -> Result<Option<Operand<'a, CpuStorage>>> {
    o.map(cpu).transpose()
}

fn gpu_opt<'a>(o: Option<Operand<'a, Storage>>) -> Result<Option<Operand<'a, GpuStorage>>> {
    o.map(gpu).transpose()
}

fn cpu_ref(s: &Storage) -> Result<&CpuStorage> {
    match s {
        Storage::Cpu(s) => Ok(s),
        other => Err(mismatch(other, "cpu")),
    }
}

fn gpu_ref(s: &Storage) -> Result<&GpuStorage> {
    match s {
        Storage::Gpu(s) => Ok(s),
        other => Err(mismatch(other, "gpu")),
    }
}

fn three<S>(r: Result<(S, S, S)>, wrap: fn(S) -> Storage) -> Result<(Storage, Storage, Storage)> {
    r.map(|(a, b, c)| (wrap(a), wrap(b), wrap(c)))
}

/// A conv call's profile key: N, Cin -> Cout, H x W, kernel, stride.
fn conv_key(s: &ConvShape) -> (usize, String, String, String, usize) {
    (
        s.n,
        format!("{}->{}", s.c_in, s.c_out),
        format!("{}x{}", s.h, s.w),
        format!("{}x{}", s.kh, s.kw),
        s.stride.0,
    )
}

impl BackendStorage for Storage {
    fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => s.dtype(),
            Storage::Gpu(s) => s.dtype(),
        }
    }
    fn copy_strided(&self, l: &Layout) -> Result<Self> {
        let _span = profile::span("copy_strided", || {
            format!("{:?}", l.shape().dims().to_vec())
        });
        match self {
            Storage::Cpu(s) => s.copy_strided(l).map(Storage::Cpu),
            Storage::Gpu(s) => s.copy_strided(l).map(Storage::Gpu),
        }
    }
    fn copy_into(&mut self, dst: &Layout, src: Operand<Self>) -> Result<()> {
        let _span = profile::span("copy_into", || format!("{:?}", dst.shape().dims().to_vec()));
        match self {
            Storage::Cpu(s) => s.copy_into(dst, cpu(src)?),
            Storage::Gpu(s) => s.copy_into(dst, gpu(src)?),
        }
    }
    fn to_dtype(&self, l: &Layout, dtype: DType) -> Result<Self> {
        let _span = profile::span("to_dtype", || {
            format!("{:?}", (l.shape().dims().to_vec(), dtype))
        });
        match self {
            Storage::Cpu(s) => s.to_dtype(l, dtype).map(Storage::Cpu),
            Storage::Gpu(s) => s.to_dtype(l, dtype).map(Storage::Gpu),
        }
    }
    fn unary(&self, l: &Layout, op: UnaryOp, derivative: bool) -> Result<Self> {
        let _span = profile::span("unary", || {
            format!("{:?}", (op, derivative, l.shape().dims().to_vec()))
        });
        if let Some(h) = self.cpu_half() {
            let x = Wide::new((self, l))?;
            return narrow(x.storage().unary(x.layout(), op, derivative)?, h);
        }
        match self {
            Storage::Cpu(s) => s.unary(l, op, derivative).map(Storage::Cpu),
            Storage::Gpu(s) => s.unary(l, op, derivative).map(Storage::Gpu),
        }
    }
    fn glu(&self, l: &Layout, act: UnaryOp) -> Result<Self> {
        let _span = profile::span("glu", || format!("{:?}", (act, l.shape().dims().to_vec())));
        if let Some(h) = half(self) {
            let x = Wide::new((self, l))?;
            return narrow(x.storage().glu(x.layout(), act)?, h);
        }
        match self {
            Storage::Cpu(s) => s.glu(l, act).map(Storage::Cpu),
            Storage::Gpu(s) => s.glu(l, act).map(Storage::Gpu),
        }
    }
    fn glu_backward(&self, l: &Layout, dy: Operand<Self>, act: UnaryOp) -> Result<Self> {
        let _span = profile::span("glu_backward", || {
            format!("{:?}", (act, l.shape().dims().to_vec()))
        });
        if let Some(h) = half(self) {
            let (x, dy) = (Wide::new((self, l))?, Wide::new(dy)?);
            return narrow(x.storage().glu_backward(x.layout(), dy.op(), act)?, h);
        }
        match self {
            Storage::Cpu(s) => s.glu_backward(l, cpu(dy)?, act).map(Storage::Cpu),
            Storage::Gpu(s) => s.glu_backward(l, gpu(dy)?, act).map(Storage::Gpu),
        }
    }
    fn affine(&self, l: &Layout, mul: f64, add: f64) -> Result<Self> {
        let _span = profile::span("affine", || format!("{:?}", l.shape().dims().to_vec()));
        if let Some(h) = self.cpu_half() {
            let x = Wide::new((self, l))?;
            return narrow(x.storage().affine(x.layout(), mul, add)?, h);
        }
        match self {
            Storage::Cpu(s) => s.affine(l, mul, add).map(Storage::Cpu),
            Storage::Gpu(s) => s.affine(l, mul, add).map(Storage::Gpu),
        }
    }
    fn powf(&self, l: &Layout, e: f64) -> Result<Self> {
        let _span = profile::span("powf", || format!("{:?}", l.shape().dims().to_vec()));
        if let Some(h) = self.cpu_half() {
            let x = Wide::new((self, l))?;
            return narrow(x.storage().powf(x.layout(), e)?, h);
        }
        match self {
            Storage::Cpu(s) => s.powf(l, e).map(Storage::Cpu),
            Storage::Gpu(s) => s.powf(l, e).map(Storage::Gpu),
        }
    }
    fn binary(&self, l: &Layout, rhs: Operand<Self>, op: BinaryOp) -> Result<Self> {
        let _span = profile::span("binary", || {
            format!(
                "{:?}",
                (op, l.shape().dims().to_vec(), rhs.1.shape().dims().to_vec())
            )
        });
        if let Some(h) = self.cpu_half() {
            let (x, y) = (Wide::new((self, l))?, Wide::new(rhs)?);
            return narrow(x.storage().binary(x.layout(), y.op(), op)?, h);
        }
        match self {
            Storage::Cpu(s) => s.binary(l, cpu(rhs)?, op).map(Storage::Cpu),
            Storage::Gpu(s) => s.binary(l, gpu(rhs)?, op).map(Storage::Gpu),
        }
    }
    fn where_cond(&self, l: &Layout, t: Operand<Self>, f: Operand<Self>) -> Result<Self> {
        let _span = profile::span("where_cond", || format!("{:?}", l.shape().dims().to_vec()));
        if let Some(h) = t.0.cpu_half() {
            let (t, f) = (Wide::new(t)?, Wide::new(f)?);
            return narrow(self.where_cond(l, t.op(), f.op())?, h);
        }
        match self {
            Storage::Cpu(s) => s.where_cond(l, cpu(t)?, cpu(f)?).map(Storage::Cpu),
            Storage::Gpu(s) => s.where_cond(l, gpu(t)?, gpu(f)?).map(Storage::Gpu),
        }
    }
    fn reduce(&self, l: &Layout, op: ReduceOp, dims: &[usize]) -> Result<Self> {
        let _span = profile::span("reduce", || {
            format!("{:?}", (op, l.shape().dims().to_vec(), dims))
        });
        if let Some(h) = half(self) {
            let x = Wide::new((self, l))?;
            return narrow(x.storage().reduce(x.layout(), op, dims)?, h);
        }
        match self {
            Storage::Cpu(s) => s.reduce(l, op, dims).map(Storage::Cpu),
            Storage::Gpu(s) => s.reduce(l, op, dims).map(Storage::Gpu),
        }
    }
    fn matmul(&self, l: &Layout, rhs: Operand<Self>) -> Result<Self> {
        let _span = profile::span("matmul", || {
            format!(
                "{:?}",
                (l.shape().dims().to_vec(), rhs.1.shape().dims().to_vec())
            )
        });
        if let Some(h) = half(self) {
            let (a, b) = (Wide::new((self, l))?, Wide::new(rhs)?);
            return narrow(a.storage().matmul(a.layout(), b.op())?, h);
        }
        match self {
            Storage::Cpu(s) => s.matmul(l, cpu(rhs)?).map(Storage::Cpu),
            Storage::Gpu(s) => s.matmul(l, gpu(rhs)?).map(Storage::Gpu),
        }
    }
    fn conv2d(
        &self,
        l: &Layout,
        w: Operand<Self>,
        bias: Option<Operand<Self>>,
        sh: &ConvShape,
    ) -> Result<Self> {
        let _span = profile::span("conv2d", || format!("{:?}", conv_key(sh)));
        if let Some(h) = half(self) {
            let (x, w, b) = (Wide::new((self, l))?, Wide::new(w)?, Wide::opt(bias)?);
            let b = b.as_ref().map(Wide::op);
            return narrow(x.storage().conv2d(x.layout(), w.op(), b, sh)?, h);
        }
        match self {
            Storage::Cpu(s) => s.conv2d(l, cpu(w)?, cpu_opt(bias)?, sh).map(Storage::Cpu),
            Storage::Gpu(s) => s.conv2d(l, gpu(w)?, gpu_opt(bias)?, sh).map(Storage::Gpu),
        }
    }
    fn conv2d_backward_input(&self, l: &Layout, w: Operand<Self>, sh: &ConvShape) -> Result<Self> {
        let _span = profile::span("conv2d_backward_input", || format!("{:?}", conv_key(sh)));
        if let Some(h) = half(self) {
            let (dy, w) = (Wide::new((self, l))?, Wide::new(w)?);
            return narrow(
                dy.storage()
                    .conv2d_backward_input(dy.layout(), w.op(), sh)?,
                h,
            );
        }
        match self {
            Storage::Cpu(s) => s.conv2d_backward_input(l, cpu(w)?, sh).map(Storage::Cpu),
            Storage::Gpu(s) => s.conv2d_backward_input(l, gpu(w)?, sh).map(Storage::Gpu),
        }
    }
    fn conv2d_backward_weight(
        &self,
        l: &Layout,
        dy: Operand<Self>,
        sh: &ConvShape,
    ) -> Result<Self> {
        let _span = profile::span("conv2d_backward_weight", || format!("{:?}", conv_key(sh)));
        if let Some(h) = half(self) {
            let (x, dy) = (Wide::new((self, l))?, Wide::new(dy)?);
            return narrow(
                x.storage()
                    .conv2d_backward_weight(x.layout(), dy.op(), sh)?,
                h,
            );
        }
        match self {
            Storage::Cpu(s) => s.conv2d_backward_weight(l, cpu(dy)?, sh).map(Storage::Cpu),
            Storage::Gpu(s) => s.conv2d_backward_weight(l, gpu(dy)?, sh).map(Storage::Gpu),
        }
    }
    fn norm(
        &self,
        l: &Layout,
        w: Option<Operand<Self>>,
        b: Option<Operand<Self>>,
        sh: &NormShape,
    ) -> Result<(Self, Self, Self)> {
        let _span = profile::span("norm", || {
            format!("{:?}", (sh.rows, sh.groups, sh.cpg, sh.inner, sh.silu))
        });
        if let Some(h) = half(self) {
            // The statistics stay f32: only the backward reads them.
            let (x, w, b) = (Wide::new((self, l))?, Wide::opt(w)?, Wide::opt(b)?);
            let (y, mean, rstd) = x.storage().norm(
                x.layout(),
                w.as_ref().map(Wide::op),
                b.as_ref().map(Wide::op),
                sh,
            )?;
            return Ok((narrow(y, h)?, mean, rstd));
        }
        match self {
            Storage::Cpu(s) => three(s.norm(l, cpu_opt(w)?, cpu_opt(b)?, sh), Storage::Cpu),
            Storage::Gpu(s) => three(s.norm(l, gpu_opt(w)?, gpu_opt(b)?, sh), Storage::Gpu),
        }
    }
    fn norm_backward(
        &self,
        l: &Layout,
        dy: Operand<Self>,
        w: Option<Operand<Self>>,
        b: Option<Operand<Self>>,
        stats: (&Self, &Self),
        sh: &NormShape,
    ) -> Result<(Self, Self, Self)> {
        let _span = profile::span("norm_backward", || {
            format!("{:?}", (sh.rows, sh.groups, sh.cpg, sh.inner, sh.silu))
        });
        if let Some(h) = half(self) {
            let (x, dy) = (Wide::new((self, l))?, Wide::new(dy)?);
            let (w, b) = (Wide::opt(w)?, Wide::opt(b)?);
            let (dx, dw, db) = x.storage().norm_backward(
                x.layout(),
                dy.op(),
                w.as_ref().map(Wide::op),
                b.as_ref().map(Wide::op),
                stats,
                sh,
            )?;
            return Ok((narrow(dx, h)?, narrow(dw, h)?, narrow(db, h)?));
        }
        match self {
            Storage::Cpu(s) => {
                let stats = (cpu_ref(stats.0)?, cpu_ref(stats.1)?);
                three(
                    s.norm_backward(l, cpu(dy)?, cpu_opt(w)?, cpu_opt(b)?, stats, sh),
                    Storage::Cpu,
                )
            }
            Storage::Gpu(s) => {
                let stats = (gpu_ref(stats.0)?, gpu_ref(stats.1)?);
                three(
                    s.norm_backward(l, gpu(dy)?, gpu_opt(w)?, gpu_opt(b)?, stats, sh),
                    Storage::Gpu,
                )
            }
        }
    }
    fn softmax_last(&self, l: &Layout) -> Result<Self> {
        let _span = profile::span("softmax_last", || {
            format!("{:?}", l.shape().dims().to_vec())
        });
        if let Some(h) = half(self) {
            let x = Wide::new((self, l))?;
            return narrow(x.storage().softmax_last(x.layout())?, h);
        }
        match self {
            Storage::Cpu(s) => s.softmax_last(l).map(Storage::Cpu),
            Storage::Gpu(s) => s.softmax_last(l).map(Storage::Gpu),
        }
    }
    fn attention(
        &self,
        q: &Layout,
        k: Operand<Self>,
        v: Operand<Self>,
        mask: Option<Operand<Self>>,
        sh: &AttnShape,
    ) -> Result<(Self, Self)> {
        let _span = profile::span("attention", || {
            format!("{:?}", (sh.b, sh.h, sh.l, sh.s, sh.d, sh.causal))
        });
        if let Some(h) = half(self) {
            // The log-sum-exp stays f32: only the backward reads it.
            let (q, k, v) = (Wide::new((self, q))?, Wide::new(k)?, Wide::new(v)?);
            let mask = Wide::opt(mask)?;
            let (o, lse) = q.storage().attention(
                q.layout(),
                k.op(),
                v.op(),
                mask.as_ref().map(Wide::op),
                sh,
            )?;
            return Ok((narrow(o, h)?, lse));
        }
        match self {
            Storage::Cpu(s) => {
                let (o, lse) = s.attention(q, cpu(k)?, cpu(v)?, cpu_opt(mask)?, sh)?;
                Ok((Storage::Cpu(o), Storage::Cpu(lse)))
            }
            Storage::Gpu(s) => {
                let (o, lse) = s.attention(q, gpu(k)?, gpu(v)?, gpu_opt(mask)?, sh)?;
                Ok((Storage::Gpu(o), Storage::Gpu(lse)))
            }
        }
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
        sh: &AttnShape,
    ) -> Result<(Self, Self, Self)> {
        let _span = profile::span("attention_backward", || {
            format!("{:?}", (sh.b, sh.h, sh.l, sh.s, sh.d, sh.causal))
        });
        if let Some(h) = half(self) {
            let (q, k, v) = (Wide::new((self, q))?, Wide::new(k)?, Wide::new(v)?);
            let (mask, out, dout) = (Wide::opt(mask)?, Wide::new(out)?, Wide::new(dout)?);
            let (dq, dk, dv) = q.storage().attention_backward(
                q.layout(),
                k.op(),
                v.op(),
                mask.as_ref().map(Wide::op),
                out.op(),
                lse,
                dout.op(),
                sh,
            )?;
            return Ok((narrow(dq, h)?, narrow(dk, h)?, narrow(dv, h)?));
        }
        match self {
            Storage::Cpu(s) => three(
                s.attention_backward(
                    q,
                    cpu(k)?,
                    cpu(v)?,
                    cpu_opt(mask)?,
                    cpu(out)?,
                    cpu_ref(lse)?,
                    cpu(dout)?,
                    sh,
                ),
                Storage::Cpu,
            ),
            Storage::Gpu(s) => three(
                s.attention_backward(
                    q,
                    gpu(k)?,
                    gpu(v)?,
                    gpu_opt(mask)?,
                    gpu(out)?,
                    gpu_ref(lse)?,
                    gpu(dout)?,
                    sh,
                ),
                Storage::Gpu,
            ),
        }
    }
    fn embedding(&self, l: &Layout, w: Operand<Self>) -> Result<Self> {
        let _span = profile::span("embedding", || format!("{:?}", l.shape().dims().to_vec()));
        if let Some(h) = half(w.0) {
            return narrow(self.embedding(l, Wide::new(w)?.op())?, h);
        }
        match self {
            Storage::Cpu(s) => s.embedding(l, cpu(w)?).map(Storage::Cpu),
            Storage::Gpu(s) => s.embedding(l, gpu(w)?).map(Storage::Gpu),
        }
    }
    fn embedding_backward(&self, l: &Layout, dy: Operand<Self>, vocab: usize) -> Result<Self> {
        let _span = profile::span("embedding_backward", || {
            format!("{:?}", (l.shape().dims().to_vec(), vocab))
        });
        if let Some(h) = half(dy.0) {
            return narrow(self.embedding_backward(l, Wide::new(dy)?.op(), vocab)?, h);
        }
        match self {
            Storage::Cpu(s) => s.embedding_backward(l, cpu(dy)?, vocab).map(Storage::Cpu),
            Storage::Gpu(s) => s.embedding_backward(l, gpu(dy)?, vocab).map(Storage::Gpu),
        }
    }
    fn upsample_nearest2d(&self, l: &Layout, factor: usize) -> Result<Self> {
        let _span = profile::span("upsample_nearest2d", || {
            format!("{:?}", (l.shape().dims().to_vec(), factor))
        });
        if let Some(h) = half(self) {
            let x = Wide::new((self, l))?;
            return narrow(x.storage().upsample_nearest2d(x.layout(), factor)?, h);
        }
        match self {
            Storage::Cpu(s) => s.upsample_nearest2d(l, factor).map(Storage::Cpu),
            Storage::Gpu(s) => s.upsample_nearest2d(l, factor).map(Storage::Gpu),
        }
    }
    fn adamw_step(
        param: &mut Self,
        m: &mut Self,
        v: &mut Self,
        grad: Operand<Self>,
        h: &AdamWStep,
    ) -> Result<()> {
        let _span = profile::span("adamw_step", || {
            format!("{:?}", grad.1.shape().dims().to_vec())
        });
        match (param, m, v) {
            (Storage::Cpu(p), Storage::Cpu(m), Storage::Cpu(v)) => {
                CpuStorage::adamw_step(p, m, v, cpu(grad)?, h)
            }
            (Storage::Gpu(p), Storage::Gpu(m), Storage::Gpu(v)) => {
                GpuStorage::adamw_step(p, m, v, gpu(grad)?, h)
            }
            (p, _, _) => Err(Error::device(
                "adamw_step",
                format!(
                    "the moments are not on the parameter's device ({})",
                    p.device()
                ),
            )),
        }
    }
}
