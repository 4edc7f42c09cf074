//! Element types: `DType`, the `Element` trait for host data, and the `Float` trait the
//! CPU kernels compute in (f32 and f64).

use crate::cpu::CpuStorage;
use half::{bf16, f16};
use std::fmt;

/// The dtype of a tensor's elements. F32 is the compute type everywhere; F64 computes on
/// the CPU for references and gradient checks; F16/BF16 are storage (checkpoints) and are
/// cast to F32 to compute; U32 holds token ids and masks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F64,
    F16,
    BF16,
    U32,
}

impl DType {
    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::F64 => 8,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// Whether the CPU kernels compute in this dtype (f32, f64).
    pub fn is_compute(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }

    /// Whether the dtype holds floating-point values.
    pub fn is_float(self) -> bool {
        !matches!(self, DType::U32)
    }

    /// The lower-case name used in errors and file formats ("f32", "bf16").
    pub fn as_str(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::U32 => "u32",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A host type that a tensor can be built from and read back into.
pub trait Element: Copy + Send + Sync + fmt::Debug + 'static {
    const DTYPE: DType;
    /// Converts from f64 (rounding to nearest; u32 saturates).
    fn from_f64(v: f64) -> Self;
    /// Converts to f64 (exact for every type here).
    fn to_f64(self) -> f64;
    /// Wraps host values as CPU storage.
    fn to_cpu_storage(data: Vec<Self>) -> CpuStorage;
    /// Unwraps CPU storage of this dtype.
    fn from_cpu_storage(s: CpuStorage) -> Option<Vec<Self>>;
    /// Borrows CPU storage of this dtype.
    fn cpu_slice(s: &CpuStorage) -> Option<&[Self]>;
}

macro_rules! element {
    ($t:ty, $dt:ident, |$v:ident| $from:expr, |$s:ident| $to:expr) => {
        impl Element for $t {
            const DTYPE: DType = DType::$dt;
            #[inline]
            fn from_f64($v: f64) -> Self {
                $from
            }
            #[inline]
            fn to_f64(self) -> f64 {
                let $s = self;
                $to
            }
            fn to_cpu_storage(data: Vec<Self>) -> CpuStorage {
                CpuStorage::$dt(data)
            }
            fn from_cpu_storage(s: CpuStorage) -> Option<Vec<Self>> {
                match s {
                    CpuStorage::$dt(v) => Some(v),
                    _ => None,
                }
            }
            fn cpu_slice(s: &CpuStorage) -> Option<&[Self]> {
                match s {
                    CpuStorage::$dt(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
element!(f32, F32, |v| v as f32, |s| s as f64);
element!(f64, F64, |v| v, |s| s);
element!(f16, F16, |v| f16::from_f64(v), |s| s.to_f64());
element!(bf16, BF16, |v| bf16::from_f64(v), |s| s.to_f64());
element!(u32, U32, |v| v as u32, |s| s as f64);

/// The arithmetic the CPU kernels are written against, implemented for f32 and f64 so
/// every kernel runs in both (f64 for gradient checks).
pub trait Float:
    Element
    + Default
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
    + std::ops::AddAssign
    + std::ops::MulAssign
    + std::iter::Sum
{
    const ZERO: Self;
    const ONE: Self;
    const NEG_INFINITY: Self;
    fn exp(self) -> Self;
    /// e^x for the fast CPU kernels: `fastmath::exp_f32` (vectorisable, <= 2 ulp) for
    /// f32, the exact `exp` for f64 (the gradient checks' precision).
    fn exp_fast(self) -> Self;
    /// 1 / (1 + e^-x) for the fast CPU kernels: `fastmath::sigmoid_f32` (<= 3 ulp) for
    /// f32, from the exact `exp` for f64.
    fn sigmoid_fast(self) -> Self;
    /// x / (1 + e^-x), SiLU, likewise: `fastmath::silu_f32` for f32.
    fn silu_fast(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn tanh(self) -> Self;
    fn sin(self) -> Self;
    fn cos(self) -> Self;
    fn powf(self, e: Self) -> Self;
    fn max(self, o: Self) -> Self;
    fn is_finite(self) -> bool;
    fn is_nan(self) -> bool;
    /// The error function, to the type's precision (see `erf_f64` / `erf_f32`).
    fn erf(self) -> Self;
    /// Fused multiply-add where the kernel wants one rounding.
    fn mul_add(self, a: Self, b: Self) -> Self;
}

macro_rules! float {
    ($t:ty, $erf:path, $exp_fast:path, $sigmoid_fast:path, $silu_fast:path) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            #[inline]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline(always)]
            fn exp_fast(self) -> Self {
                $exp_fast(self)
            }
            #[inline(always)]
            fn sigmoid_fast(self) -> Self {
                $sigmoid_fast(self)
            }
            #[inline(always)]
            fn silu_fast(self) -> Self {
                $silu_fast(self)
            }
            #[inline]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline]
            fn sin(self) -> Self {
                <$t>::sin(self)
            }
            #[inline]
            fn cos(self) -> Self {
                <$t>::cos(self)
            }
            #[inline]
            fn powf(self, e: Self) -> Self {
                <$t>::powf(self, e)
            }
            #[inline]
            fn max(self, o: Self) -> Self {
                <$t>::max(self, o)
            }
            #[inline]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            #[inline]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            #[inline]
            fn erf(self) -> Self {
                $erf(self)
            }
            #[inline]
            fn mul_add(self, a: Self, b: Self) -> Self {
                <$t>::mul_add(self, a, b)
            }
        }
    };
}
float!(
    f32,
    erf_f32,
    crate::fastmath::exp_f32,
    crate::fastmath::sigmoid_f32,
    crate::fastmath::silu_f32
);
float!(f64, erf_f64, f64::exp, sigmoid_f64, silu_f64);

fn sigmoid_f64(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn silu_f64(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// erf in f64 to ~1e-15: erf(x) = 2/sqrt(pi) exp(-x^2) sum_n 2^n x^(2n+1) / (1*3*...*(2n+1))
/// (Abramowitz & Stegun 7.1.6). Every term is positive, so there is no cancellation; the
/// series needs about x^2 + 30 terms, and |x| > 6 is +-1 to f64 precision (erfc(6) = 2e-17).
pub fn erf_f64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    if a > 6.0 {
        return x.signum();
    }
    let x2 = a * a;
    let (mut term, mut sum, mut n) = (a, a, 0.0);
    while term > sum * 1e-17 {
        n += 1.0;
        term *= 2.0 * x2 / (2.0 * n + 1.0);
        sum += term;
    }
    let r = std::f64::consts::FRAC_2_SQRT_PI * (-x2).exp() * sum;
    r.min(1.0).copysign(x)
}

/// erf in f32 from Numerical Recipes' erfc Chebyshev fit (Press et al., 3rd ed., sec.
/// 6.2.2): erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z/2), fractional error < 1.2e-7
/// for every z, so erf = 1 - erfc is within ~2e-7 of the true value everywhere. Exact
/// GELU runs it on every element of the U-Net's GEGLU feed-forward layers: in f32 with
/// the polynomial exp (`fastmath`), the loop vectorises, where f64 and libm's exp ran one
/// element at a time. -z^2 is folded in by a fused multiply-add, so it is exact.
#[inline(always)]
#[allow(clippy::excessive_precision)] // the fit's coefficients as published
pub fn erf_f32(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let mut p = 0.170_872_77f32;
    for c in [
        -0.822_152_23,
        1.488_515_87,
        -1.135_203_98,
        0.278_868_07,
        -0.186_288_06,
        0.096_784_18,
        0.374_091_96,
        1.000_023_68,
        -1.265_512_23,
    ] {
        p = p.mul_add(t, c);
    }
    let erfc = t * crate::fastmath::exp_f32((-z).mul_add(z, p));
    (1.0 - erfc).copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        // Values from A&S table 7.1 / mpmath.
        let cases = [
            (0.0, 0.0),
            (0.1, 0.1124629160182849),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (2.0, 0.9953222650189527),
            (3.0, 0.9999779095030014),
            (5.0, 0.9999999999984626),
        ];
        for (x, want) in cases {
            assert!((erf_f64(x) - want).abs() < 1e-15, "erf({x})");
            assert!((erf_f64(-x) + want).abs() < 1e-15, "erf(-{x})");
        }
    }

    /// The f32 erf is within 3e-7 of the f64 one everywhere (the fit's 1.2e-7 plus f32
    /// rounding), odd, and saturates to +-1.
    #[test]
    fn erf_f32_is_close_to_erf_f64() {
        let mut worst = (0.0, 0.0);
        for i in -80_000..=80_000 {
            let x = i as f32 / 10_000.0;
            let err = (erf_f32(x) as f64 - erf_f64(x as f64)).abs();
            if err > worst.0 {
                worst = (err, x);
            }
            assert_eq!(erf_f32(-x), -erf_f32(x), "odd at {x}");
        }
        assert!(worst.0 < 3e-7, "{} at x = {}", worst.0, worst.1);
        assert_eq!(erf_f32(10.0), 1.0);
        assert_eq!(erf_f32(f32::INFINITY), 1.0);
        assert!(erf_f32(f32::NAN).is_nan());
    }
}
