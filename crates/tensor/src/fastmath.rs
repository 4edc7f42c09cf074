//! exp, sigmoid and SiLU in f32 as branch-free polynomials the compiler vectorises: the
//! fused CPU kernels (GroupNorm + SiLU, softmax, attention, sigmoid-based activations)
//! call them on every element, where libm's scalar `expf` cost more than the memory
//! traffic.

/// log2(e).
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in two (Cody & Waite 1980): the high part has few significant bits, so
/// k * LN2_HI is exact for the |k| <= 128 seen here and r = x - k ln 2 keeps its bits.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5 * 2^23: adding it rounds a float below 2^22 to an integer, left in the low bits.
const ROUND: f32 = 12_582_912.0;
/// Below this exp underflows past the smallest normal float: the result is 0.
const MIN_X: f32 = -87.3;
/// Above this 2^k would overflow the exponent: the result is +inf.
const MAX_X: f32 = 88.3;

/// a b + c: one fused multiply-add where the build has FMA (the default x86-64-v3 build
/// does), which halves the polynomial's chain of dependent operations, the exp loop's
/// limit. Without FMA at compile time `mul_add` would be a libm call that stops the loop
/// from vectorising, so such builds use a plain product and sum.
#[inline(always)]
fn fma(a: f32, b: f32, c: f32) -> f32 {
    if cfg!(target_feature = "fma") {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// e^x to within 2 ulp of the correctly rounded value on [-87.3, 88.3], 0 below, +inf
/// above, NaN for NaN. Cephes' expf (Moshier 1989): e^x = 2^k e^r with k = round(x /
/// ln 2), |r| <= ln 2 / 2, and e^r from a degree-6 minimax polynomial.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    let xc = x.clamp(MIN_X, MAX_X);
    let t = fma(xc, LOG2E, ROUND);
    // The low bits of t hold k (two's complement around 2^22); t - ROUND is k as a float.
    let k = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let kf = t - ROUND;
    let r = fma(-kf, LN2_LO, fma(-kf, LN2_HI, xc));
    let mut p = 1.987_569_2e-4f32;
    p = fma(p, r, 1.398_199_9e-3);
    p = fma(p, r, 8.333_452e-3);
    p = fma(p, r, 4.166_579_6e-2);
    p = fma(p, r, 1.666_666_5e-1);
    p = fma(p, r, 0.5);
    let er = fma(p * r, r, r) + 1.0;
    let scale = f32::from_bits(((k + 127) as u32) << 23);
    let y = er * scale;
    if x < MIN_X {
        0.0
    } else if x > MAX_X {
        f32::INFINITY
    } else {
        y
    }
}

/// 1.5 * 2^23 + 127: adding it rounds to an integer k and leaves k + 127, 2^k's biased
/// exponent, in the float's low bits, so one shift makes 2^k (for k in [-126, 127]).
const ROUND_BIASED: f32 = 12_583_039.0;

/// v, or -88.3 where v is below it; NaN stays NaN (`f32::max` would drop it).
#[inline(always)]
fn floor_at_min(v: f32) -> f32 {
    if v < -MAX_X {
        -MAX_X
    } else {
        v
    }
}

/// 1 + e^-v, the sigmoid's denominator, for SiLU's hot loops, given v >= -88.3 (or NaN):
/// [`exp_f32`]'s method with what a sigmoid does not need taken out: GroupNorm + SiLU
/// ~1.2x as fast in `bench cpu` (36-41 -> 45-48 GB/s on Zen 4, AVX-512; its loop alone
/// 1.4x). v is capped at 87.3 too, so no edge cases are
/// patched in after: e^-v stays finite, between e^-87.3 and e^88.3. 2^k comes from the
/// rounding constant's low bits by one shift, k ln 2 is subtracted in two parts (Cody &
/// Waite) as in `exp_f32`, and e^r on |r| <= ln 2 / 2 is 1 + r + r^2 p(r) with p of
/// degree 4, fitted for the least largest relative error (Lawson's iteration; 3e-9
/// before rounding, so f32's rounding is all that is left: `sigmoid_f32` and `silu_f32`
/// are within 3 ulp, tested).
#[inline(always)]
fn one_plus_exp_neg(v: f32) -> f32 {
    let vc = if v > -MIN_X { -MIN_X } else { v };
    // k = round(-v log2 e); t holds k + 127 in its low bits.
    let t = fma(vc, -LOG2E, ROUND_BIASED);
    let kf = t - ROUND_BIASED;
    // q = v + k ln 2 = -r, so e^-v = 2^k e^r.
    let q = fma(kf, LN2_LO, fma(kf, LN2_HI, vc));
    let r = -q;
    let mut p = 1.381_461_3e-3f32;
    p = fma(p, r, 8.368_71e-3);
    p = fma(p, r, 4.166_839e-2);
    p = fma(p, r, 1.666_652_1e-1);
    p = fma(p, r, 0.499_999_94);
    let er = fma(p * r, r, r) + 1.0;
    let two_k = f32::from_bits(t.to_bits() << 23);
    fma(er, two_k, 1.0)
}

/// The logistic function 1 / (1 + e^-v), within 3 ulp (see [`one_plus_exp_neg`]); NaN
/// for NaN, 1 at +inf, and exactly 0 below -88.3, as `exp_f32`'s overflow gave: the
/// derivatives s (1 - s) and SiLU's s (1 + v (1 - s)) then stay 0 for any finite v,
/// where a floor of 1 / (1 + e^88.3) times v = -1e38 would be -0.5.
#[inline(always)]
pub fn sigmoid_f32(v: f32) -> f32 {
    if v < -MAX_X {
        0.0
    } else {
        1.0 / one_plus_exp_neg(v)
    }
}

/// SiLU v sigmoid(v) as one division, v / (1 + e^-v): one rounding fewer and one
/// multiply less than `v * sigmoid_f32(v)`. Within 3 ulp; NaN for NaN, +inf at +inf.
/// Below -88.3 the numerator is floored with the exponent, so the result stays within
/// 5e-37 of its limit 0 for any v down to -inf (v itself over 1 + e^88.3 would be -0.5
/// at v = -1e38).
#[inline(always)]
pub fn silu_f32(v: f32) -> f32 {
    let v = floor_at_min(v);
    v / one_plus_exp_neg(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between two positive finite floats.
    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulp_everywhere_in_range() {
        let mut worst = (0, 0.0f32);
        let n = 2_000_000;
        for i in 0..=n {
            let x = MIN_X + (MAX_X - MIN_X) * i as f32 / n as f32;
            let want = (x as f64).exp() as f32;
            let u = ulps(exp_f32(x), want);
            if u > worst.0 {
                worst = (u, x);
            }
        }
        assert!(worst.0 <= 2, "{} ulp at x = {}", worst.0, worst.1);
        // Exact points and small arguments.
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(ulps(exp_f32(1.0), std::f32::consts::E) <= 1);
        assert!(ulps(exp_f32(1e-8), 1.0) <= 1);
    }

    #[test]
    fn exp_edges_underflow_overflow_and_nan() {
        assert_eq!(exp_f32(-88.0), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(89.0), f32::INFINITY);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
        assert!(exp_f32(MIN_X) > 0.0 && exp_f32(MIN_X).is_normal());
        assert!(exp_f32(MAX_X).is_finite());
    }

    /// Largest ulp distance between f and g (the f64 truth, rounded) over a fine grid of
    /// [lo, hi], skipping points where the truth is below the smallest normal float.
    fn worst_ulps(f: impl Fn(f32) -> f32, g: impl Fn(f64) -> f64, lo: f32, hi: f32) -> (u32, f32) {
        let mut worst = (0, 0.0f32);
        let n = 2_000_000;
        for i in 0..=n {
            let v = lo + (hi - lo) * i as f32 / n as f32;
            let want = g(v as f64) as f32;
            if want.abs() < f32::MIN_POSITIVE {
                continue;
            }
            let got = f(v);
            assert_eq!(got.signum(), want.signum(), "sign at {v}");
            let u = ulps(got.abs(), want.abs());
            if u > worst.0 {
                worst = (u, v);
            }
        }
        worst
    }

    #[test]
    fn sigmoid_and_silu_are_within_three_ulp() {
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        let (u, at) = worst_ulps(sigmoid_f32, sig, -87.0, 30.0);
        assert!(u <= 3, "sigmoid: {u} ulp at {at}");
        let (u, at) = worst_ulps(silu_f32, |v| v * sig(v), -87.0, 30.0);
        assert!(u <= 3, "silu: {u} ulp at {at}");
        // Near 0, where SiLU's value is small and its relative error could grow.
        let (u, at) = worst_ulps(silu_f32, |v| v * sig(v), -1e-3, 1e-3);
        assert!(u <= 3, "silu near 0: {u} ulp at {at}");
    }

    #[test]
    fn sigmoid_and_silu_edges() {
        assert_eq!(sigmoid_f32(0.0), 0.5);
        assert_eq!(silu_f32(0.0), 0.0);
        assert_eq!(sigmoid_f32(f32::INFINITY), 1.0);
        assert_eq!(sigmoid_f32(100.0), 1.0);
        assert_eq!(silu_f32(100.0), 100.0);
        assert_eq!(silu_f32(f32::INFINITY), f32::INFINITY);
        // Past the clamp the true values are subnormal or 0: the sigmoid is 0 (so is
        // SiLU's derivative from it), SiLU within 5e-37 of 0, down to -inf.
        for v in [-88.5f32, -100.0, -1e30, f32::MIN, f32::NEG_INFINITY] {
            let s = sigmoid_f32(v);
            assert_eq!(s, 0.0, "sigmoid({v})");
            if v.is_finite() {
                assert_eq!(s * (1.0 + v * (1.0 - s)), 0.0, "silu'({v})");
            }
            let y = silu_f32(v);
            assert!(y <= 0.0 && y > -5e-37, "silu({v}) = {y}");
        }
        assert!(sigmoid_f32(f32::NAN).is_nan());
        assert!(silu_f32(f32::NAN).is_nan());
    }
}
