//! `Storage`: the closed set of device storages (candle's storage.rs). It implements
//! `BackendStorage` by handing each call to the storage of the right device, after
//! checking that every operand lives there.

use crate::backend::{BackendStorage, Operand};
use crate::cpu::CpuStorage;
use crate::ops::{AttnShape, BinaryOp, ConvShape, NormShape, ReduceOp, UnaryOp};
use crate::{DType, Device, Layout, Result};

/// A tensor's elements on one device.
#[derive(Debug, Clone)]
pub enum Storage {
    Cpu(CpuStorage),
}

impl Storage {
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
        }
    }
}

/// The CPU storage of an operand, whose device the tensor layer has already matched.
fn cpu<'a>(o: Operand<'a, Storage>) -> Operand<'a, CpuStorage> {
    match o.0 {
        Storage::Cpu(s) => (s, o.1),
    }
}

fn cpu_opt<'a>(o: Option<Operand<'a, Storage>>) -> Option<Operand<'a, CpuStorage>> {
    o.map(cpu)
}

impl BackendStorage for Storage {
    fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => s.dtype(),
        }
    }
    fn copy_strided(&self, l: &Layout) -> Result<Self> {
        match self {
            Storage::Cpu(s) => s.copy_strided(l).map(Storage::Cpu),
        }
    }
    fn copy_into(&mut self, dst: &Layout, src: Operand<Self>) -> Result<()> {
        match self {
            Storage::Cpu(s) => s.copy_into(dst, cpu(src)),
        }
    }
    fn to_dtype(&self, l: &Layout, dtype: DType) -> Result<Self> {
        match self {
            Storage::Cpu(s) => s.to_dtype(l, dtype).map(Storage::Cpu),
        }
    }
    fn unary(&self, l: &Layout, op: UnaryOp, derivative: bool) -> Result<Self> {
        match self {
            Storage::Cpu(s) => s.unary(l, op, derivative).map(Storage::Cpu),
        }
    }
    fn affine(&self, l: &Layout, mul: f64, add: f64) -> Result<Self> {
        match self {
            Storage::Cpu(s) => s.affine(l, mul, add).map(Storage::Cpu),
        }
    }
    fn powf(&self, l: &Layout, e: f64) -> Result<Self> {
        match self {
            Storage::Cpu(s) => s.powf(l, e).map(Storage::Cpu),
        }
    }
    fn binary(&self, l: &Layout, rhs: Operand<Self>, op: BinaryOp) -> Result<Self> {
        match self {
            Storage::Cpu(s) => s.binary(l, cpu(rhs), op).map(Storage::Cpu),
        }
    }
    fn where_cond(&self, l: &Layout, t: Operand<Self>, f: Operand<Self>) -> Result<Self> {
        match self {
            Storage::Cpu(s) => s.where_cond(l, cpu(t), cpu(f)).map(Storage::Cpu),
        }
    }
    fn reduce(&self, l: &Layout, op: ReduceOp, dims: &[usize]) -> Result<Self> {
        match self {
            Storage::Cpu(s) => s.reduce(l, op, dims).map(Storage::Cpu),
        }
    }
    fn matmul(&self, l: &Layout, rhs: Operand<Self>) -> Result<Self> {
        match self {
            Storage::Cpu(s) => s.matmul(l, cpu(rhs)).map(Storage::Cpu),
        }
    }
    fn conv2d(
        &self,
        l: &Layout,
        w: Operand<Self>,
        bias: Option<Operand<Self>>,
        sh: &ConvShape,
    ) -> Result<Self> {
        match self {
            Storage::Cpu(s) => s.conv2d(l, cpu(w), cpu_opt(bias), sh).map(Storage::Cpu),
        }
    }
    fn conv2d_backward_input(&self, l: &Layout, w: Operand<Self>, sh: &ConvShape) -> Result<Self> {
        match self {
            Storage::Cpu(s) => s.conv2d_backward_input(l, cpu(w), sh).map(Storage::Cpu),
        }
    }
    fn conv2d_backward_weight(
        &self,
        l: &Layout,
        dy: Operand<Self>,
        sh: &ConvShape,
    ) -> Result<Self> {
        match self {
            Storage::Cpu(s) => s.conv2d_backward_weight(l, cpu(dy), sh).map(Storage::Cpu),
        }
    }
    fn norm(
        &self,
        l: &Layout,
        w: Option<Operand<Self>>,
        b: Option<Operand<Self>>,
        sh: &NormShape,
    ) -> Result<(Self, Self, Self)> {
        match self {
            Storage::Cpu(s) => {
                let (y, m, r) = s.norm(l, cpu_opt(w), cpu_opt(b), sh)?;
                Ok((Storage::Cpu(y), Storage::Cpu(m), Storage::Cpu(r)))
            }
        }
    }
    fn norm_backward(
        &self,
        l: &Layout,
        dy: Operand<Self>,
        w: Option<Operand<Self>>,
        mean: &Self,
        rstd: &Self,
        sh: &NormShape,
    ) -> Result<(Self, Self, Self)> {
        match (self, mean, rstd) {
            (Storage::Cpu(s), Storage::Cpu(m), Storage::Cpu(r)) => {
                let (dx, dw, db) = s.norm_backward(l, cpu(dy), cpu_opt(w), m, r, sh)?;
                Ok((Storage::Cpu(dx), Storage::Cpu(dw), Storage::Cpu(db)))
            }
        }
    }
    fn softmax_last(&self, l: &Layout) -> Result<Self> {
        match self {
            Storage::Cpu(s) => s.softmax_last(l).map(Storage::Cpu),
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
        match self {
            Storage::Cpu(s) => {
                let (o, lse) = s.attention(q, cpu(k), cpu(v), cpu_opt(mask), sh)?;
                Ok((Storage::Cpu(o), Storage::Cpu(lse)))
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
        match (self, lse) {
            (Storage::Cpu(s), Storage::Cpu(lse)) => {
                let (dq, dk, dv) = s.attention_backward(
                    q,
                    cpu(k),
                    cpu(v),
                    cpu_opt(mask),
                    cpu(out),
                    lse,
                    cpu(dout),
                    sh,
                )?;
                Ok((Storage::Cpu(dq), Storage::Cpu(dk), Storage::Cpu(dv)))
            }
        }
    }
    fn embedding(&self, l: &Layout, w: Operand<Self>) -> Result<Self> {
        match self {
            Storage::Cpu(s) => s.embedding(l, cpu(w)).map(Storage::Cpu),
        }
    }
    fn embedding_backward(&self, l: &Layout, dy: Operand<Self>, vocab: usize) -> Result<Self> {
        match self {
            Storage::Cpu(s) => s.embedding_backward(l, cpu(dy), vocab).map(Storage::Cpu),
        }
    }
    fn upsample_nearest2d(&self, l: &Layout, factor: usize) -> Result<Self> {
        match self {
            Storage::Cpu(s) => s.upsample_nearest2d(l, factor).map(Storage::Cpu),
        }
    }
}
