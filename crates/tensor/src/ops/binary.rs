//! Elementwise binary ops with NumPy broadcasting (arithmetic, maximum/minimum, and
//! comparisons that return 1/0 in the operands' dtype), and `where`/`masked_fill`.

use crate::autograd::record;
use crate::backend::BackendStorage;
use crate::op::Op;
use crate::{Error, Float, Result, Shape, Tensor};

/// A two-argument function the kernels apply element by element (see `MapFn`).
pub trait MapFn2<T> {
    type Out;
    fn call<F: Fn(T, T) -> T + Sync + Send + Copy>(self, f: F) -> Self::Out;
}

macro_rules! binary_ops {
    ($( $(#[$doc:meta])* $var:ident $name:literal |$a:ident, $b:ident| $f:expr, wgsl $w:literal; )*) => {
        /// Elementwise binary ops.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum BinaryOp { $( $(#[$doc])* $var, )* }

        impl BinaryOp {
            pub const ALL: &'static [BinaryOp] = &[$(BinaryOp::$var),*];

            pub fn name(self) -> &'static str {
                match self { $(BinaryOp::$var => $name,)* }
            }

            /// The op as a WGSL expression in `a` and `b` (helpers in elementwise.wgsl).
            pub fn wgsl(self) -> &'static str {
                match self { $(BinaryOp::$var => $w,)* }
            }

            /// Calls `v` with the op's scalar function.
            pub fn visit<T: Float, V: MapFn2<T>>(self, v: V) -> V::Out {
                match self { $( BinaryOp::$var => v.call(|$a: T, $b: T| $f), )* }
            }

            /// The op on two values.
            pub fn eval<T: Float>(self, a: T, b: T) -> T {
                struct Eval<T>(T, T);
                impl<T: Float> MapFn2<T> for Eval<T> {
                    type Out = T;
                    fn call<F: Fn(T, T) -> T>(self, f: F) -> T {
                        f(self.0, self.1)
                    }
                }
                self.visit(Eval(a, b))
            }
        }
    };
}

#[inline]
fn truth<T: Float>(b: bool) -> T {
    if b {
        T::ONE
    } else {
        T::ZERO
    }
}

binary_ops! {
    Add "add" |a, b| a + b, wgsl "a + b";
    Sub "sub" |a, b| a - b, wgsl "a - b";
    Mul "mul" |a, b| a * b, wgsl "a * b";
    Div "div" |a, b| a / b, wgsl "a / b";
    /// The larger operand (NaN if either is NaN, as torch.maximum).
    Maximum "maximum" |a, b| if a.is_nan() || b.is_nan() { a + b } else if a >= b { a } else { b }, wgsl "maximum(a, b)";
    Minimum "minimum" |a, b| if a.is_nan() || b.is_nan() { a + b } else if a <= b { a } else { b }, wgsl "minimum(a, b)";
    Eq "eq" |a, b| truth(a == b), wgsl "truth(a == b)";
    Ne "ne" |a, b| truth(a != b), wgsl "truth(a != b)";
    Lt "lt" |a, b| truth(a < b), wgsl "truth(a < b)";
    Le "le" |a, b| truth(a <= b), wgsl "truth(a <= b)";
    Gt "gt" |a, b| truth(a > b), wgsl "truth(a > b)";
    Ge "ge" |a, b| truth(a >= b), wgsl "truth(a >= b)";
}

impl BinaryOp {
    /// Comparisons produce constants: no gradient flows through them.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge
        )
    }
}

macro_rules! binary_methods {
    ($($method:ident $var:ident;)*) => {
        impl Tensor {
            $( #[doc = concat!("Elementwise `", stringify!($method), "` with NumPy broadcasting.")]
               pub fn $method(&self, rhs: &Tensor) -> Result<Tensor> { self.binary(rhs, BinaryOp::$var) } )*
        }
    };
}

binary_methods! {
    add Add; sub Sub; mul Mul; div Div; maximum Maximum; minimum Minimum;
    eq Eq; ne Ne; lt Lt; le Le; gt Gt; ge Ge;
}

impl Tensor {
    /// `self op rhs` with NumPy broadcasting. Both must share dtype and device.
    pub fn binary(&self, rhs: &Tensor, op: BinaryOp) -> Result<Tensor> {
        same_dtype_device(op.name(), &[self, rhs])?;
        let shape = Shape::broadcast(op.name(), self.shape(), rhs.shape())?;
        let (l, r) = (
            self.layout().broadcast_as(&shape)?,
            rhs.layout().broadcast_as(&shape)?,
        );
        let s = {
            let g = crate::tensor::read_storages(&[self, rhs]);
            g.get(0).binary(&l, (g.get(1), &r), op)?
        };
        let rec = if op.is_comparison() {
            None
        } else {
            record(&[self, rhs], || Op::Binary(self.clone(), rhs.clone(), op))
        };
        Ok(Tensor::from_storage(s, shape, rec))
    }

    /// `cond != 0 ? on_true : on_false` elementwise (`self` is the condition, any dtype),
    /// broadcasting all three.
    pub fn where_cond(&self, on_true: &Tensor, on_false: &Tensor) -> Result<Tensor> {
        same_dtype_device("where_cond", &[on_true, on_false])?;
        if self.device() != on_true.device() {
            return Err(Error::device(
                "where_cond",
                format!(
                    "condition is on {} but the values are on {}",
                    self.device(),
                    on_true.device()
                ),
            ));
        }
        let shape = Shape::broadcast("where_cond", self.shape(), on_true.shape())?;
        let shape = Shape::broadcast("where_cond", &shape, on_false.shape())?;
        let (c, t, f) = (
            self.layout().broadcast_as(&shape)?,
            on_true.layout().broadcast_as(&shape)?,
            on_false.layout().broadcast_as(&shape)?,
        );
        let s = {
            let g = crate::tensor::read_storages(&[self, on_true, on_false]);
            g.get(0).where_cond(&c, (g.get(1), &t), (g.get(2), &f))?
        };
        let rec = record(&[on_true, on_false], || {
            Op::Where(self.clone(), on_true.clone(), on_false.clone())
        });
        Ok(Tensor::from_storage(s, shape, rec))
    }

    /// `self` with `value` wherever `mask` is nonzero (mask broadcasts to self).
    pub fn masked_fill(&self, mask: &Tensor, value: f64) -> Result<Tensor> {
        let fill = Tensor::full(value, (), self.dtype(), self.device())?;
        let out = mask.where_cond(&fill, self)?;
        if out.shape() != self.shape() {
            return Err(Error::shapes(
                "masked_fill",
                mask.shape(),
                self.shape(),
                "the mask must broadcast to the tensor",
            ));
        }
        Ok(out)
    }
}

/// Checks that all operands share one dtype and one device.
pub(crate) fn same_dtype_device(op: &'static str, ts: &[&Tensor]) -> Result<()> {
    let first = ts[0];
    for t in &ts[1..] {
        if t.dtype() != first.dtype() {
            return Err(Error::dtype(
                op,
                format!(
                    "operands have dtypes {} and {}: cast one with .to_dtype",
                    first.dtype(),
                    t.dtype()
                ),
            ));
        }
        if t.device() != first.device() {
            return Err(Error::device(
                op,
                format!(
                    "operands are on {} and {}: move one to the other's device",
                    first.device(),
                    t.device()
                ),
            ));
        }
    }
    Ok(())
}
