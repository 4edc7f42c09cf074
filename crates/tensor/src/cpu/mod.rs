//! The CPU backend: `CpuStorage` and its `BackendStorage` impl, which picks the dtype
//! and hands plain slices to the kernels (SIMD + rayon, generic over f32/f64), and the
//! f64 reference that defines right.

mod attention;
mod conv;
mod conv_direct;
mod elementwise;
pub mod gemm;
mod glu;
mod index;
mod matmul;
mod norm;
mod optim;
mod reduce;
pub mod reference;
mod softmax;
mod strided;
mod wide;
#[cfg(target_arch = "x86_64")]
mod winograd;

use crate::backend::{BackendStorage, Operand};
use crate::ops::{AdamWStep, AttnShape, BinaryOp, ConvShape, NormShape, ReduceOp, UnaryOp};
use crate::{DType, Element, Error, Float, Layout, Result};
use half::{bf16, f16};

/// Host memory of one dtype.
#[derive(Clone, Debug, PartialEq)]
pub enum CpuStorage {
    F32(Vec<f32>),
    F64(Vec<f64>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    U32(Vec<u32>),
}

/// Runs `$body` with `$T` bound to the Rust type of a compute dtype (f32, f64);
/// other dtypes are an error naming the op.
macro_rules! with_float {
    ($op:expr, $dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            DType::F32 => {
                type $T = f32;
                $body
            }
            DType::F64 => {
                type $T = f64;
                $body
            }
            other => Err(Error::unsupported_dtype($op, other)),
        }
    };
}

/// Runs `$body` with `$T` bound to the Rust type of any dtype.
macro_rules! with_any {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            DType::F32 => {
                type $T = f32;
                $body
            }
            DType::F64 => {
                type $T = f64;
                $body
            }
            DType::F16 => {
                type $T = f16;
                $body
            }
            DType::BF16 => {
                type $T = bf16;
                $body
            }
            DType::U32 => {
                type $T = u32;
                $body
            }
        }
    };
}

impl CpuStorage {
    /// `n` copies of `value` converted to `dtype`.
    pub fn full(value: f64, n: usize, dtype: DType) -> Self {
        with_any!(dtype, T => T::to_cpu_storage(vec![T::from_f64(value); n]))
    }

    /// The concatenation of contiguous parts of one dtype (storage, offset, slab): for
    /// each of `outer` blocks, each part's next `slab` elements from its offset
    /// (`Tensor::cat` of contiguous CPU tensors).
    pub fn cat(parts: &[(&CpuStorage, usize, usize)], outer: usize, dtype: DType) -> Self {
        with_any!(dtype, T => {
            let parts: Vec<(&[T], usize)> =
                parts.iter().map(|&(s, off, slab)| (&s.slice::<T>()[off..], slab)).collect();
            T::to_cpu_storage(index::cat(&parts, outer))
        })
    }

    /// Values converted to `dtype`.
    pub fn from_f64(values: &[f64], dtype: DType) -> Self {
        with_any!(dtype, T => T::to_cpu_storage(values.iter().map(|&v| T::from_f64(v)).collect()))
    }

    /// Every element as f64.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        with_any!(self.dtype(), T => self.slice::<T>().iter().map(|v| v.to_f64()).collect())
    }

    pub fn len(&self) -> usize {
        with_any!(self.dtype(), T => self.slice::<T>().len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements as `T`, which must be this storage's dtype.
    fn slice<T: Element>(&self) -> &[T] {
        T::cpu_slice(self).expect("the tensor layer matched the dtypes")
    }

    /// The elements of a contiguous view (fused kernels require one).
    fn contiguous<T: Element>(&self, l: &Layout) -> &[T] {
        let r = l
            .contiguous_range()
            .expect("the tensor layer made this operand contiguous");
        &self.slice::<T>()[r]
    }

    /// An attention operand: contiguous, or with `seq_major` the [B, H, L, D] view of a
    /// contiguous [B, L, H, D] (the tensor layer checked which), as its elements in storage
    /// order.
    fn heads<T: Element>(&self, l: &Layout, seq_major: bool) -> &[T] {
        if !seq_major {
            return self.contiguous::<T>(l);
        }
        let r = l.offset()..l.offset() + l.elem_count();
        &self.slice::<T>()[r]
    }
}

fn wrap<T: Element>(v: Vec<T>) -> CpuStorage {
    T::to_cpu_storage(v)
}

impl BackendStorage for CpuStorage {
    fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::U32(_) => DType::U32,
        }
    }

    fn copy_strided(&self, l: &Layout) -> Result<Self> {
        with_any!(self.dtype(), T => {
            let x = self.slice::<T>();
            Ok(match l.contiguous_range() {
                Some(r) => wrap(x[r].to_vec()),
                None => wrap(elementwise::map(x, l, |v| v)),
            })
        })
    }

    fn copy_into(&mut self, dst: &Layout, src: Operand<Self>) -> Result<()> {
        let dtype = self.dtype();
        if src.0.dtype() != dtype {
            return Err(Error::dtype(
                "copy_into",
                format!("cannot copy {} into {}", src.0.dtype(), dtype),
            ));
        }
        with_any!(dtype, T => {
            elementwise::copy_into(slice_mut::<T>(self), dst, src.0.slice::<T>(), src.1);
            Ok(())
        })
    }

    fn to_dtype(&self, l: &Layout, dtype: DType) -> Result<Self> {
        with_any!(self.dtype(), S => {
            let x = self.slice::<S>();
            with_any!(dtype, D => Ok(wrap(elementwise::map(x, l, |v: S| D::from_f64(v.to_f64())))))
        })
    }

    fn unary(&self, l: &Layout, op: UnaryOp, derivative: bool) -> Result<Self> {
        with_float!(op.name(), self.dtype(), T => Ok(wrap(elementwise::unary(self.slice::<T>(), l, op, derivative))))
    }

    fn glu(&self, l: &Layout, act: UnaryOp) -> Result<Self> {
        let n = l.dims().last().copied().unwrap_or(0) / 2;
        with_float!("glu", self.dtype(), T => Ok(wrap(glu::glu(self.contiguous::<T>(l), n, act))))
    }

    fn glu_backward(&self, l: &Layout, dy: Operand<Self>, act: UnaryOp) -> Result<Self> {
        let n = l.dims().last().copied().unwrap_or(0) / 2;
        with_float!("glu_backward", self.dtype(), T => {
            Ok(wrap(glu::glu_backward(self.contiguous::<T>(l), dy.0.contiguous::<T>(dy.1), n, act)))
        })
    }

    fn affine(&self, l: &Layout, mul: f64, add: f64) -> Result<Self> {
        with_float!("affine", self.dtype(), T => {
            let (m, a) = (T::from_f64(mul), T::from_f64(add));
            Ok(wrap(elementwise::map(self.slice::<T>(), l, move |v: T| v * m + a)))
        })
    }

    fn powf(&self, l: &Layout, e: f64) -> Result<Self> {
        with_float!("powf", self.dtype(), T => {
            let e = T::from_f64(e);
            Ok(wrap(elementwise::map(self.slice::<T>(), l, move |v: T| v.powf(e))))
        })
    }

    fn binary(&self, l: &Layout, rhs: Operand<Self>, op: BinaryOp) -> Result<Self> {
        with_float!(op.name(), self.dtype(), T => {
            Ok(wrap(elementwise::binary(self.slice::<T>(), l, rhs.0.slice::<T>(), rhs.1, op)))
        })
    }

    fn where_cond(&self, l: &Layout, t: Operand<Self>, f: Operand<Self>) -> Result<Self> {
        with_float!("where_cond", t.0.dtype(), T => {
            // The condition, of any dtype, as 0/1 in T over the output shape.
            let cond: Vec<T> = with_any!(self.dtype(), C => {
                elementwise::map(self.slice::<C>(), l, |v: C| if v.to_f64() != 0.0 { T::ONE } else { T::ZERO })
            });
            let lc = Layout::contiguous(l.shape().clone());
            Ok(wrap(elementwise::select(&cond, &lc, t.0.slice::<T>(), t.1, f.0.slice::<T>(), f.1)))
        })
    }

    fn reduce(&self, l: &Layout, op: ReduceOp, dims: &[usize]) -> Result<Self> {
        with_float!(op.name(), self.dtype(), T => Ok(wrap(reduce::reduce(self.slice::<T>(), l, op, dims))))
    }

    fn matmul(&self, l: &Layout, rhs: Operand<Self>) -> Result<Self> {
        with_float!("matmul", self.dtype(), T => Ok(wrap(matmul::matmul(self.slice::<T>(), l, rhs.0.slice::<T>(), rhs.1))))
    }

    fn conv2d(
        &self,
        l: &Layout,
        w: Operand<Self>,
        bias: Option<Operand<Self>>,
        s: &ConvShape,
    ) -> Result<Self> {
        with_float!("conv2d", self.dtype(), T => {
            let b = bias.map(|(b, bl)| b.contiguous::<T>(bl));
            Ok(wrap(conv::conv2d(self.contiguous::<T>(l), w.0.contiguous::<T>(w.1), b, s)))
        })
    }

    fn conv2d_backward_input(&self, l: &Layout, w: Operand<Self>, s: &ConvShape) -> Result<Self> {
        with_float!("conv2d_backward_input", self.dtype(), T => {
            Ok(wrap(conv::conv2d_backward_input(self.contiguous::<T>(l), w.0.contiguous::<T>(w.1), s)))
        })
    }

    fn conv2d_backward_weight(&self, l: &Layout, dy: Operand<Self>, s: &ConvShape) -> Result<Self> {
        with_float!("conv2d_backward_weight", self.dtype(), T => {
            Ok(wrap(conv::conv2d_backward_weight(self.contiguous::<T>(l), dy.0.contiguous::<T>(dy.1), s)))
        })
    }

    fn norm(
        &self,
        l: &Layout,
        w: Option<Operand<Self>>,
        b: Option<Operand<Self>>,
        s: &NormShape,
    ) -> Result<(Self, Self, Self)> {
        with_float!("norm", self.dtype(), T => {
            let w = w.map(|(w, wl)| w.contiguous::<T>(wl));
            let b = b.map(|(b, bl)| b.contiguous::<T>(bl));
            let (y, m, r) = norm::norm(self.contiguous::<T>(l), w, b, s);
            Ok((wrap(y), wrap(m), wrap(r)))
        })
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
        with_float!("norm_backward", self.dtype(), T => {
            let w = w.map(|(w, wl)| w.contiguous::<T>(wl));
            let b = b.map(|(b, bl)| b.contiguous::<T>(bl));
            let x = (self.contiguous::<T>(l), dy.0.contiguous::<T>(dy.1));
            let (dx, dw, db) = norm::norm_backward(x, (w, b), (stats.0.slice::<T>(), stats.1.slice::<T>()), s);
            Ok((wrap(dx), wrap(dw), wrap(db)))
        })
    }

    fn softmax_last(&self, l: &Layout) -> Result<Self> {
        let d = l.dims().last().copied().unwrap_or(1);
        with_float!("softmax", self.dtype(), T => Ok(wrap(softmax::softmax_last(self.contiguous::<T>(l), d))))
    }

    fn attention(
        &self,
        q: &Layout,
        k: Operand<Self>,
        v: Operand<Self>,
        mask: Option<Operand<Self>>,
        s: &AttnShape,
    ) -> Result<(Self, Self)> {
        with_float!("attention", self.dtype(), T => {
            let m = mask.map(|(m, ml)| m.contiguous::<T>(ml));
            let sm = s.seq_major;
            let (o, lse) = attention::attention(self.heads::<T>(q, sm), k.0.heads::<T>(k.1, sm), v.0.heads::<T>(v.1, sm), m, s);
            Ok((wrap(o), wrap(lse)))
        })
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
        with_float!("attention_backward", self.dtype(), T => {
            let m = mask.map(|(m, ml)| m.contiguous::<T>(ml));
            let sm = s.seq_major;
            let (dq, dk, dv) = attention::attention_backward(
                self.heads::<T>(q, sm),
                k.0.heads::<T>(k.1, sm),
                v.0.heads::<T>(v.1, sm),
                m,
                out.0.heads::<T>(out.1, sm),
                lse.slice::<T>(),
                dout.0.heads::<T>(dout.1, sm),
                s,
            );
            Ok((wrap(dq), wrap(dk), wrap(dv)))
        })
    }

    fn embedding(&self, l: &Layout, w: Operand<Self>) -> Result<Self> {
        let ids = self.contiguous::<u32>(l);
        let (vocab, d) = (w.1.dims()[0], w.1.dims()[1]);
        with_float!("embedding", w.0.dtype(), T => Ok(wrap(index::embedding(ids, w.0.contiguous::<T>(w.1), vocab, d)?)))
    }

    fn embedding_backward(&self, l: &Layout, dy: Operand<Self>, vocab: usize) -> Result<Self> {
        let ids = self.contiguous::<u32>(l);
        let d = dy.1.dims().last().copied().unwrap_or(1);
        with_float!("embedding_backward", dy.0.dtype(), T => {
            Ok(wrap(index::embedding_backward(ids, dy.0.contiguous::<T>(dy.1), vocab, d)?))
        })
    }

    fn upsample_nearest2d(&self, l: &Layout, factor: usize) -> Result<Self> {
        let &[n, c, h, w] = l.dims() else {
            unreachable!("checked by the tensor layer")
        };
        with_float!("upsample_nearest2d", self.dtype(), T => {
            Ok(wrap(index::upsample_nearest2d(self.contiguous::<T>(l), n * c, h, w, factor)))
        })
    }

    fn adamw_step(
        param: &mut Self,
        m: &mut Self,
        v: &mut Self,
        grad: Operand<Self>,
        h: &AdamWStep,
    ) -> Result<()> {
        with_float!("adamw_step", param.dtype(), T => {
            let g = grad.0.slice::<T>();
            let g = match grad.1.contiguous_range() {
                Some(r) => std::borrow::Cow::Borrowed(&g[r]),
                None => std::borrow::Cow::Owned(elementwise::map(g, grad.1, |x| x)),
            };
            optim::adamw(slice_mut::<T>(param), slice_mut::<T>(m), slice_mut::<T>(v), &g, h);
            Ok(())
        })
    }
}

/// Mutable access to storage of dtype `T`.
fn slice_mut<T: Element>(s: &mut CpuStorage) -> &mut [T] {
    let any: &mut dyn std::any::Any = match s {
        CpuStorage::F32(v) => v,
        CpuStorage::F64(v) => v,
        CpuStorage::F16(v) => v,
        CpuStorage::BF16(v) => v,
        CpuStorage::U32(v) => v,
    };
    any.downcast_mut::<Vec<T>>()
        .expect("dtype checked by the caller")
}
