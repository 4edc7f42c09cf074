//! Elementwise unary ops: each declared once with its value f(x) and derivative f'(x),
//! shared by the CPU kernels, the f64 reference and the backward rule (g * f'(x)).

use crate::autograd::record;
use crate::backend::BackendStorage;
use crate::op::Op;
use crate::{Float, Result, Tensor};

/// A function the kernels apply element by element. Implementors get the op's closure
/// monomorphised, so the match on the op happens once per kernel call, not per element.
pub trait MapFn<T> {
    type Out;
    fn call<F: Fn(T) -> T + Sync + Send + Copy>(self, f: F) -> Self::Out;
}

/// A function and its derivative applied together (GLU's backward needs act and act').
pub trait MapFnPair<T> {
    type Out;
    fn call<F, D>(self, f: F, df: D) -> Self::Out
    where
        F: Fn(T) -> T + Sync + Send + Copy,
        D: Fn(T) -> T + Sync + Send + Copy;
}

#[inline]
fn c<T: Float>(v: f64) -> T {
    T::from_f64(v)
}

/// The logistic function, branch-free so the f32 loop vectorises (`Float::sigmoid_fast`).
#[inline(always)]
fn sigmoid<T: Float>(x: T) -> T {
    x.sigmoid_fast()
}

/// sech^2(x) = 1 - tanh^2(x), as 4 e / (1 + e)^2 with e = exp(-2|x|): the subtraction
/// 1 - t^2 loses every digit once tanh rounds to +-1, this form keeps them.
#[inline]
fn sech2<T: Float>(x: T) -> T {
    let a = if x < T::ZERO { -x } else { x };
    let e = (c::<T>(-2.0) * a).exp();
    c::<T>(4.0) * e / ((T::ONE + e) * (T::ONE + e))
}

/// sqrt(2/pi), the constant of the tanh GELU (Hendrycks & Gimpel 2016, eq. 2).
const GELU_C: f64 = 0.797_884_560_802_865_4;
/// 1/sqrt(2 pi), the normal density's constant.
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

macro_rules! unary_ops {
    ($( $(#[$doc:meta])* $var:ident $name:literal |$x:ident| $f:expr, $df:expr; wgsl $wf:literal, $wdf:literal; )*) => {
        /// Elementwise unary ops.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum UnaryOp { $( $(#[$doc])* $var, )* }

        impl UnaryOp {
            /// Every unary op, for tests that sweep them.
            pub const ALL: &'static [UnaryOp] = &[$(UnaryOp::$var),*];

            pub fn name(self) -> &'static str {
                match self { $(UnaryOp::$var => $name,)* }
            }

            /// f(x), or f'(x), as a WGSL expression in `x` (helpers in elementwise.wgsl).
            pub fn wgsl(self, derivative: bool) -> &'static str {
                match (self, derivative) { $((UnaryOp::$var, false) => $wf, (UnaryOp::$var, true) => $wdf,)* }
            }

            /// f(x), or f'(x) when `derivative`, in any float type.
            pub fn eval<T: Float>(self, derivative: bool, x: T) -> T {
                self.visit(derivative, Eval(x))
            }

            /// Calls `v` with the op's scalar function (or its derivative).
            pub fn visit<T: Float, V: MapFn<T>>(self, derivative: bool, v: V) -> V::Out {
                match (self, derivative) {
                    $(
                        (UnaryOp::$var, false) => v.call(|$x: T| $f),
                        (UnaryOp::$var, true) => v.call(|$x: T| $df),
                    )*
                }
            }

            /// Calls `v` with the op's function and its derivative at once: one kernel
            /// per op, where a `visit` nested in another would monomorphise one for
            /// every pair of closures (4 x 17^2 per dtype, most of the crate's code).
            pub fn visit_pair<T: Float, V: MapFnPair<T>>(self, v: V) -> V::Out {
                match self {
                    $( UnaryOp::$var => v.call(|$x: T| $f, |$x: T| $df), )*
                }
            }
        }
    };
}

/// Applies the op to one value (what `eval` uses).
struct Eval<T>(T);
impl<T: Float> MapFn<T> for Eval<T> {
    type Out = T;
    fn call<F: Fn(T) -> T>(self, f: F) -> T {
        f(self.0)
    }
}

unary_ops! {
    Neg "neg" |x| -x, { let _ = x; -T::ONE };
        wgsl "-x", "-1.0";
    Recip "recip" |x| T::ONE / x, -T::ONE / (x * x);
        wgsl "1.0 / x", "-1.0 / (x * x)";
    Sqr "sqr" |x| x * x, c::<T>(2.0) * x;
        wgsl "x * x", "2.0 * x";
    /// |x|; its derivative at 0 is 0 (as PyTorch's sign).
    Abs "abs" |x| if x < T::ZERO { -x } else { x },
        if x > T::ZERO { T::ONE } else if x < T::ZERO { -T::ONE } else { T::ZERO };
        wgsl "abs(x)", "sign(x)";
    Exp "exp" |x| x.exp(), x.exp();
        wgsl "exp(x)", "exp(x)";
    Log "log" |x| x.ln(), T::ONE / x;
        wgsl "log(x)", "1.0 / x";
    Sqrt "sqrt" |x| x.sqrt(), c::<T>(0.5) / x.sqrt();
        wgsl "sqrt(x)", "0.5 / sqrt(x)";
    /// 1/sqrt(x); derivative -1/2 x^(-3/2).
    Rsqrt "rsqrt" |x| T::ONE / x.sqrt(), c::<T>(-0.5) / (x * x.sqrt());
        wgsl "1.0 / sqrt(x)", "-0.5 / (x * sqrt(x))";
    Sin "sin" |x| x.sin(), x.cos();
        wgsl "sin(x)", "cos(x)";
    Cos "cos" |x| x.cos(), -x.sin();
        wgsl "cos(x)", "-sin(x)";
    Tanh "tanh" |x| x.tanh(), sech2(x);
        wgsl "tanh_(x)", "sech2(x)";
    Sigmoid "sigmoid" |x| sigmoid(x), { let s = sigmoid(x); s * (T::ONE - s) };
        wgsl "sigmoid(x)", "sigmoid(x) * (1.0 - sigmoid(x))";
    /// x sigmoid(x) (Elfwing et al. 2018); derivative s (1 + x (1 - s)).
    Silu "silu" |x| x.silu_fast(), { let s = sigmoid(x); s * (T::ONE + x * (T::ONE - s)) };
        wgsl "x * sigmoid(x)", "silu_grad(x)";
    /// GELU, tanh approximation: x/2 (1 + tanh(c (x + 0.044715 x^3))).
    GeluTanh "gelu_tanh" |x| {
        let u = c::<T>(GELU_C) * (x + c::<T>(0.044715) * x * x * x);
        c::<T>(0.5) * x * (T::ONE + u.tanh())
    }, {
        let u = c::<T>(GELU_C) * (x + c::<T>(0.044715) * x * x * x);
        let du = c::<T>(GELU_C) * (T::ONE + c::<T>(3.0 * 0.044715) * x * x);
        c::<T>(0.5) * (T::ONE + u.tanh()) + c::<T>(0.5) * x * sech2(u) * du
    };
        wgsl "gelu_tanh(x)", "gelu_tanh_grad(x)";
    /// Exact GELU: x Phi(x) = x/2 (1 + erf(x / sqrt 2)); derivative Phi(x) + x phi(x).
    GeluErf "gelu_erf" |x| c::<T>(0.5) * x * (T::ONE + (x * c::<T>(std::f64::consts::FRAC_1_SQRT_2)).erf()),
        c::<T>(0.5) * (T::ONE + (x * c::<T>(std::f64::consts::FRAC_1_SQRT_2)).erf())
            + x * c::<T>(INV_SQRT_2PI) * (c::<T>(-0.5) * x * x).exp_fast();
        wgsl "gelu_erf(x)", "gelu_erf_grad(x)";
    /// CLIP's quick_gelu: x sigmoid(1.702 x).
    QuickGelu "quick_gelu" |x| x * sigmoid(c::<T>(1.702) * x), {
        let s = sigmoid(c::<T>(1.702) * x);
        s + c::<T>(1.702) * x * s * (T::ONE - s)
    };
        wgsl "x * sigmoid(1.702 * x)", "quick_gelu_grad(x)";
    /// max(x, 0); derivative 0 at 0 (as PyTorch).
    Relu "relu" |x| if x > T::ZERO { x } else { T::ZERO }, if x > T::ZERO { T::ONE } else { T::ZERO };
        wgsl "max(x, 0.0)", "select(0.0, 1.0, x > 0.0)";
}

macro_rules! unary_methods {
    ($($(#[$doc:meta])* $method:ident $var:ident;)*) => {
        impl Tensor {
            $( $(#[$doc])* pub fn $method(&self) -> Result<Tensor> { self.unary(UnaryOp::$var) } )*
        }
    };
}

unary_methods! {
    neg Neg; recip Recip; sqr Sqr; abs Abs; exp Exp; log Log; sqrt Sqrt; rsqrt Rsqrt; sin Sin; cos Cos;
    tanh Tanh; sigmoid Sigmoid; silu Silu;
    /// GELU with the tanh approximation (PyTorch's `approximate="tanh"`).
    gelu_tanh GeluTanh;
    /// Exact GELU through erf (PyTorch's default `gelu`).
    gelu GeluErf;
    quick_gelu QuickGelu; relu Relu;
}

impl Tensor {
    /// y = op(x) elementwise.
    pub fn unary(&self, op: UnaryOp) -> Result<Tensor> {
        let s = self.storage().unary(self.layout(), op, false)?;
        Ok(Tensor::from_storage(
            s,
            self.shape(),
            record(&[self], || Op::Unary(self.clone(), op)),
        ))
    }

    /// op'(x) elementwise, untracked: what the backward rule multiplies the gradient by.
    pub(crate) fn unary_derivative(&self, op: UnaryOp) -> Result<Tensor> {
        let s = self.storage().unary(self.layout(), op, true)?;
        Ok(Tensor::from_storage(s, self.shape(), None))
    }

    /// y = x * mul + add.
    pub fn affine(&self, mul: f64, add: f64) -> Result<Tensor> {
        let s = self.storage().affine(self.layout(), mul, add)?;
        Ok(Tensor::from_storage(
            s,
            self.shape(),
            record(&[self], || Op::Affine(self.clone(), mul)),
        ))
    }
    pub fn add_scalar(&self, v: f64) -> Result<Tensor> {
        self.affine(1.0, v)
    }
    pub fn mul_scalar(&self, v: f64) -> Result<Tensor> {
        self.affine(v, 0.0)
    }

    /// y = x ^ e (real exponent; negative x gives NaN unless e is an integer, as powf).
    pub fn powf(&self, e: f64) -> Result<Tensor> {
        let s = self.storage().powf(self.layout(), e)?;
        Ok(Tensor::from_storage(
            s,
            self.shape(),
            record(&[self], || Op::Powf(self.clone(), e)),
        ))
    }
}
