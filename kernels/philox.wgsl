// Philox 4x32-10 fills (Salmon et al., SC 2011), bit-identical to the CPU's
// (crates/tensor/src/random.rs and normal.rs): uniforms as (w >> 8) 2^-24, normals by
// Box-Muller in integer fixed point, so no float rounding differs between devices.
// One thread per 128-bit block, writing values 4j .. 4j+3.
//
// params p: [n, start_lo, start_hi, seed_lo, seed_hi, normal (0/1)]
// $LN_TABLE and $INV_TABLE are substituted from the Rust constants.

@group(0) @binding(0) var<storage, read_write> y: array<f32>;
@group(0) @binding(1) var<storage, read> p: array<u32>;

var<private> LN_TABLE: array<u32, 64> = array<u32, 64>($LN_TABLE);
var<private> INV_TABLE: array<u32, 64> = array<u32, 64>($INV_TABLE);

const LN2_Q26: u32 = 46516320u;
const PI4_Q32: u32 = 3373259426u;
const ONE: u32 = 1073741824u; // 1.0 in Q2.30

// The full 64-bit product of two u32 as (hi, lo), from 16-bit halves.
fn mulhilo(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let ll = a0 * b0;
    let lh = a0 * b1;
    let hl = a1 * b0;
    let hh = a1 * b1;
    let mid = (ll >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
    let lo = (mid << 16u) | (ll & 0xffffu);
    let hi = hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
    return vec2<u32>(hi, lo);
}

fn mulhi(a: u32, b: u32) -> u32 {
    return mulhilo(a, b).x;
}

// (a * b) >> 30 for products below 2^62.
fn mul_q30(a: u32, b: u32) -> u32 {
    let r = mulhilo(a, b);
    return (r.x << 2u) | (r.y >> 30u);
}

fn philox(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key;
    for (var round = 0u; round < 10u; round = round + 1u) {
        if (round > 0u) {
            k = vec2<u32>(k.x + 0x9E3779B9u, k.y + 0xBB67AE85u);
        }
        let p0 = mulhilo(0xD2511F53u, c.x);
        let p1 = mulhilo(0xCD9E8D57u, c.z);
        c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
    }
    return c;
}

// -2 ln(k / 2^24) in Q6.26 for k in 1..=2^24 (see normal.rs: minus_two_ln).
fn minus_two_ln(k: u32) -> u32 {
    let e = 31u - countLeadingZeros(k);
    let mq = k << (31u - e);
    let idx = (mq >> 25u) & 63u;
    let d = mq & 0x1ffffffu;
    let f = mul_q30(d, INV_TABLE[idx]);
    let f2 = mulhi(f, f);
    let f3 = mulhi(f2, f);
    let f4 = mulhi(f3, f);
    let ln_m = LN_TABLE[idx] + (f - f2 / 2u + f3 / 3u - f4 / 4u);
    return 2u * ((24u - e) * LN2_Q26 - (ln_m >> 6u));
}

// floor(sqrt(l * 2^14)): a float estimate corrected by exact 64-bit comparisons.
fn le64(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.x < b.x || (a.x == b.x && a.y <= b.y);
}

fn sqrt_q20(l: u32) -> u32 {
    let r = vec2<u32>(l >> 18u, l << 14u);
    var s = u32(sqrt(f32(l)) * 128.0);
    for (var i = 0u; i < 8u; i = i + 1u) {
        if (le64(mulhilo(s + 1u, s + 1u), r)) {
            s = s + 1u;
        } else if (!le64(mulhilo(s, s), r)) {
            s = s - 1u;
        } else {
            break;
        }
    }
    return s;
}

// (cos phi, sin phi) in Q2.30 for phi = (pi/4) g / 2^21 (see normal.rs).
fn cos_sin_octant(g: u32) -> vec2<u32> {
    var phi = PI4_Q32;
    if (g < 2097152u) {
        phi = mulhi(g << 11u, PI4_Q32);
    }
    let p2 = mulhi(phi, phi);
    var s = ONE - mulhi(ONE, p2) / 110u;
    s = ONE - mulhi(s, p2) / 72u;
    s = ONE - mulhi(s, p2) / 42u;
    s = ONE - mulhi(s, p2) / 20u;
    s = ONE - mulhi(s, p2) / 6u;
    let sin = mulhi(s, phi);
    var c = ONE - mulhi(ONE, p2) / 90u;
    c = ONE - mulhi(c, p2) / 56u;
    c = ONE - mulhi(c, p2) / 30u;
    c = ONE - mulhi(c, p2) / 12u;
    let cos = ONE - mulhi(c, p2) / 2u;
    return vec2<u32>(cos, sin);
}

fn scale(r: u32, t: u32, neg: bool) -> f32 {
    let z = f32(mul_q30(r, t)) * (1.0 / 1048576.0);
    return select(z, -z, neg);
}

fn box_muller(a: u32, b: u32) -> vec2<f32> {
    let r = sqrt_q20(minus_two_ln((a >> 8u) + 1u));
    let b24 = b >> 8u;
    let octant = b24 >> 21u;
    let g = b24 & 0x1fffffu;
    var gg = g;
    if ((octant & 1u) == 1u) {
        gg = 2097152u - g;
    }
    let cs = cos_sin_octant(gg);
    var cm = cs.x;
    var sm = cs.y;
    if ((((octant + 1u) >> 1u) & 1u) == 1u) {
        cm = cs.y;
        sm = cs.x;
    }
    let neg_cos = (((octant + 2u) >> 2u) & 1u) == 1u;
    let neg_sin = (octant >> 2u) == 1u;
    return vec2<f32>(scale(r, cm, neg_cos), scale(r, sm, neg_sin));
}

fn uniform24(w: u32) -> f32 {
    return f32(w >> 8u) * (1.0 / 16777216.0);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = gid.x + gid.y * nwg.x * 256u;
    let n = p[0];
    if (j * 4u >= n) {
        return;
    }
    // Block index start + j with the carry into the high word.
    let lo = p[1] + j;
    let hi = p[2] + select(0u, 1u, lo < j);
    let w = philox(vec4<u32>(lo, hi, 0u, 0u), vec2<u32>(p[3], p[4]));
    var v: vec4<f32>;
    if (p[5] == 1u) {
        v = vec4<f32>(box_muller(w.x, w.y), box_muller(w.z, w.w));
    } else {
        v = vec4<f32>(uniform24(w.x), uniform24(w.y), uniform24(w.z), uniform24(w.w));
    }
    for (var i = 0u; i < 4u; i = i + 1u) {
        if (j * 4u + i < n) {
            y[j * 4u + i] = v[i];
        }
    }
}
