//! exp in f32 as a branch-free polynomial the compiler vectorises: the fused CPU kernels
//! (GroupNorm + SiLU, softmax, attention, sigmoid-based activations) call it on every
//! element, where libm's scalar `expf` cost more than the memory traffic.

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
}
