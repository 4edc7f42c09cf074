//! Standard normals from Philox words with integer arithmetic only (fixed point), so
//! the CPU and a WGSL kernel running the same steps produce the same bits: Box-Muller
//! (1958), z = sqrt(-2 ln u1) (cos, sin)(2 pi u2), with the logarithm from a 64-entry
//! table plus a 4-term series, the square root as an exact integer square root, and
//! sine and cosine from octant symmetry plus Taylor polynomials. Each value is a
//! multiple of 2^-20 (|z| <= 5.77, u1 having 24 random bits); the only float step is
//! the final exact conversion of a 24-bit integer.

/// round(ln(1 + i/64) * 2^32).
pub const LN_TABLE: [u32; 64] = [
    0, 66589974, 132163268, 196750459, 260380768, 323082134, 384881291, 445803834, 505874286,
    565116154, 623551984, 681203418, 738091233, 794235396, 849655098, 904368797, 958394255,
    1011748572, 1064448219, 1116509066, 1167946415, 1218775023, 1269009132, 1318662486, 1367748360,
    1416279581, 1464268541, 1511727226, 1558667227, 1605099758, 1651035675, 1696485489, 1741459379,
    1785967210, 1830018543, 1873622647, 1916788510, 1959524856, 2001840147, 2043742599, 2085240191,
    2126340670, 2167051565, 2207380193, 2247333665, 2286918897, 2326142616, 2365011363, 2403531508,
    2441709246, 2479550612, 2517061482, 2554247578, 2591114477, 2627667611, 2663912276, 2699853634,
    2735496721, 2770846446, 2805907598, 2840684851, 2875182766, 2909405794, 2943358281,
];

/// round(2^31 / (1 + i/64)).
pub const INV_TABLE: [u32; 64] = [
    2147483648, 2114445438, 2082408386, 2051327664, 2021161080, 1991868891, 1963413621, 1935759908,
    1908874354, 1882725390, 1857283155, 1832519380, 1808407283, 1784921474, 1762037865, 1739733588,
    1717986918, 1696777203, 1676084798, 1655891006, 1636178018, 1616928864, 1598127366, 1579758086,
    1561806289, 1544257904, 1527099483, 1510318170, 1493901668, 1477838209, 1462116526, 1446725826,
    1431655765, 1416896428, 1402438301, 1388272257, 1374389535, 1360781718, 1347440720, 1334358772,
    1321528399, 1308942414, 1296593901, 1284476201, 1272582903, 1260907830, 1249445032, 1238188770,
    1227133513, 1216273925, 1205604855, 1195121335, 1184818564, 1174691910, 1164736894, 1154949189,
    1145324612, 1135859120, 1126548799, 1117389866, 1108378657, 1099511628, 1090785345, 1082196484,
];

/// round(ln 2 * 2^26).
pub const LN2_Q26: u32 = 46516320;
/// round(pi/4 * 2^32).
pub const PI4_Q32: u32 = 3373259426;
/// 1.0 in Q2.30.
const ONE: u32 = 1 << 30;

/// The high 32 bits of a 32 x 32-bit product (WGSL builds it from 16-bit halves).
#[inline]
fn mulhi(a: u32, b: u32) -> u32 {
    ((u64::from(a) * u64::from(b)) >> 32) as u32
}

/// ((a * b) >> 30) for products below 2^62.
#[inline]
fn mul_q30(a: u32, b: u32) -> u32 {
    ((u64::from(a) * u64::from(b)) >> 30) as u32
}

/// -2 ln(k / 2^24) in Q6.26 for k in 1..=2^24.
fn minus_two_ln(k: u32) -> u32 {
    let e = 31 - k.leading_zeros(); // k = 2^e m, m in [1, 2)
    let mq = k << (31 - e); // m in Q1.31
    let idx = ((mq >> 25) & 63) as usize; // m in [c, c + 1/64), c = 1 + idx/64
    let d = mq & ((1 << 25) - 1); // (m - c) 2^31
                                  // f = (m - c) / c = m / c - 1 in Q0.32, below 2^26.
    let f = mul_q30(d, INV_TABLE[idx]);
    // ln(1 + f) = f - f^2/2 + f^3/3 - f^4/4 (error below f^5/5 < 2^-32).
    let f2 = mulhi(f, f);
    let f3 = mulhi(f2, f);
    let f4 = mulhi(f3, f);
    let ln_m = LN_TABLE[idx] + (f - f2 / 2 + f3 / 3 - f4 / 4); // Q0.32
                                                               // -ln u1 = (24 - e) ln 2 - ln m.
    2 * ((24 - e) * LN2_Q26 - (ln_m >> 6))
}

/// floor(sqrt(l * 2^14)) for l in Q6.26: sqrt(l) in Q.20. A float estimate, corrected
/// with exact 64-bit integer comparisons, so the result does not depend on how the
/// device rounds its square root.
fn sqrt_q20(l: u32) -> u32 {
    let r = u64::from(l) << 14;
    let mut s = ((l as f32).sqrt() * 128.0) as u32;
    for _ in 0..8 {
        if u64::from(s + 1) * u64::from(s + 1) <= r {
            s += 1;
        } else if u64::from(s) * u64::from(s) > r {
            s -= 1;
        } else {
            break;
        }
    }
    s
}

/// (cos phi, sin phi) in Q2.30 for phi = (pi/4) g / 2^21, g in 0..=2^21: Taylor to
/// phi^11 / phi^10 by Horner (truncation below 2e-10 on [0, pi/4]), all terms positive.
fn cos_sin_octant(g: u32) -> (u32, u32) {
    let phi = if g >= 1 << 21 {
        PI4_Q32
    } else {
        mulhi(g << 11, PI4_Q32)
    }; // Q0.32
    let p2 = mulhi(phi, phi); // phi^2 in Q0.32
    let mut s = ONE - mulhi(ONE, p2) / 110;
    s = ONE - mulhi(s, p2) / 72;
    s = ONE - mulhi(s, p2) / 42;
    s = ONE - mulhi(s, p2) / 20;
    s = ONE - mulhi(s, p2) / 6;
    let sin = mulhi(s, phi);
    let mut c = ONE - mulhi(ONE, p2) / 90;
    c = ONE - mulhi(c, p2) / 56;
    c = ONE - mulhi(c, p2) / 30;
    c = ONE - mulhi(c, p2) / 12;
    let cos = ONE - mulhi(c, p2) / 2;
    (cos, sin)
}

/// r * t / 2^30 as a float with sign `neg`: r in Q.20 below 2^23, t in Q2.30.
fn scale(r: u32, t: u32, neg: bool) -> f32 {
    let z = (mul_q30(r, t) as f32) * (1.0 / (1u32 << 20) as f32);
    if neg {
        -z
    } else {
        z
    }
}

/// Two standard normals from two Philox words.
pub fn box_muller(a: u32, b: u32) -> (f32, f32) {
    let r = sqrt_q20(minus_two_ln((a >> 8) + 1));
    let b24 = b >> 8;
    let octant = b24 >> 21;
    let g = b24 & ((1 << 21) - 1);
    // Odd octants measure the angle back from the octant's end.
    let (c, s) = cos_sin_octant(if octant & 1 == 1 { (1 << 21) - g } else { g });
    let swap = ((octant + 1) >> 1) & 1 == 1;
    let (cm, sm) = if swap { (s, c) } else { (c, s) };
    let neg_cos = ((octant + 2) >> 2) & 1 == 1;
    let neg_sin = octant >> 2 == 1;
    (scale(r, cm, neg_cos), scale(r, sm, neg_sin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_match_f64() {
        for k in [1u32, 2, 3, 1000, 77_777, 1 << 23, (1 << 24) - 1, 1 << 24] {
            let want = -2.0 * (k as f64 / (1u64 << 24) as f64).ln();
            let got = minus_two_ln(k) as f64 / (1u64 << 26) as f64;
            assert!(
                (got - want).abs() < 4e-7,
                "-2 ln u at k={k}: {got} vs {want}"
            );
        }
        for l in [0u32, 1, 2, 12345, 1 << 26, 2_000_000_000, u32::MAX >> 1] {
            let s = u64::from(sqrt_q20(l));
            let r = u64::from(l) << 14;
            assert!(s * s <= r && (s + 1) * (s + 1) > r, "isqrt of {r}");
        }
        for g in [0u32, 1, 1 << 20, (1 << 21) - 1, 1 << 21] {
            let phi = std::f64::consts::FRAC_PI_4 * g as f64 / (1u64 << 21) as f64;
            let (c, s) = cos_sin_octant(g);
            assert!(
                (c as f64 / ONE as f64 - phi.cos()).abs() < 1e-8,
                "cos at g={g}: {} vs {}",
                c as f64 / ONE as f64,
                phi.cos()
            );
            assert!(
                (s as f64 / ONE as f64 - phi.sin()).abs() < 1e-8,
                "sin at g={g}"
            );
        }
    }

    #[test]
    fn matches_float_box_muller_to_the_grid() {
        let mut rng = 0x1234_5678u32;
        for _ in 0..20_000 {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            let (a, b) = (rng, rng.rotate_left(16) ^ 0x9E37_79B9);
            let u1 = ((a >> 8) + 1) as f64 / (1u64 << 24) as f64;
            let th = std::f64::consts::TAU * (b >> 8) as f64 / (1u64 << 24) as f64;
            let r = (-2.0 * u1.ln()).sqrt();
            let (z0, z1) = box_muller(a, b);
            assert!(
                (z0 as f64 - r * th.cos()).abs() < 3e-6,
                "z0 {z0} vs {}",
                r * th.cos()
            );
            assert!(
                (z1 as f64 - r * th.sin()).abs() < 3e-6,
                "z1 {z1} vs {}",
                r * th.sin()
            );
        }
    }
}
