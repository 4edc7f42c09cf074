// Elementwise kernels over strided operands: unary maps (and their derivatives), binary
// ops with broadcasting (stride 0), select (where), and strided copies; and the gated
// linear unit over dense rows (GLU, GLU_BACKWARD: $EXPR and $DEXPR are the activation
// and its derivative in x).
//
// The host substitutes $X, $Y (element types), $EXPR (the op, in terms of x or a, b and
// the scalars s0, s1) before compiling, so each op is its own specialised pipeline.
// Maps and binary ops on f16 storage compute in f32: the host sets $LOAD to f32 (widen
// each operand as it is read) and $STORE to f16 (round once, on the write); for f32,
// copies and casts both are empty.
//
// params p: [n, rank, dims[8], then per operand k: offset, strides[8], then scalars].
// Axes are coalesced on the host, so a contiguous operand is rank 1 with stride 1.

@group(0) @binding(0) var<storage, read> x0: array<$X>;
#if BINARY
@group(0) @binding(1) var<storage, read> x1: array<$X>;
@group(0) @binding(2) var<storage, read_write> y: array<$Y>;
@group(0) @binding(3) var<storage, read> p: array<u32>;
#elif SELECT
@group(0) @binding(1) var<storage, read> x1: array<$Y>;
@group(0) @binding(2) var<storage, read> x2: array<$Y>;
@group(0) @binding(3) var<storage, read_write> y: array<$Y>;
@group(0) @binding(4) var<storage, read> p: array<u32>;
#else
@group(0) @binding(1) var<storage, read_write> y: array<$Y>;
@group(0) @binding(2) var<storage, read> p: array<u32>;
#endif

const MAX_RANK: u32 = 8u;

// Storage offset of element i (row-major over dims) in operand k.
fn offset_of(i: u32, k: u32) -> u32 {
    let base = 2u + MAX_RANK + k * (MAX_RANK + 1u);
    var rem = i;
    var off = p[base];
    for (var d = p[1]; d > 0u; d = d - 1u) {
        let size = p[1u + d];
        off = off + (rem % size) * p[base + d];
        rem = rem / size;
    }
    return off;
}

fn scalar(j: u32) -> f32 {
    return bitcast<f32>(p[2u + MAX_RANK + NUM_OPERANDS * (MAX_RANK + 1u) + j]);
}

fn sigmoid(x: f32) -> f32 {
    if (x >= 0.0) {
        return 1.0 / (1.0 + exp(-x));
    }
    let e = exp(x);
    return e / (1.0 + e);
}

// tanh saturates to +-1 in f32 by |x| = 9; clamping keeps exp-based implementations
// from overflowing to NaN.
fn tanh_(x: f32) -> f32 {
    return tanh(clamp(x, -15.0, 15.0));
}

// 1 - tanh^2(x) without the cancellation: 4 e / (1 + e)^2, e = exp(-2|x|).
fn sech2(x: f32) -> f32 {
    let e = exp(-2.0 * abs(x));
    return 4.0 * e / ((1.0 + e) * (1.0 + e));
}

fn silu_grad(x: f32) -> f32 {
    let s = sigmoid(x);
    return s * (1.0 + x * (1.0 - s));
}

const GELU_C: f32 = 0.7978845608028654;

fn gelu_tanh(x: f32) -> f32 {
    return 0.5 * x * (1.0 + tanh_(GELU_C * (x + 0.044715 * x * x * x)));
}

fn gelu_tanh_grad(x: f32) -> f32 {
    let u = GELU_C * (x + 0.044715 * x * x * x);
    let du = GELU_C * (1.0 + 3.0 * 0.044715 * x * x);
    return 0.5 * (1.0 + tanh_(u)) + 0.5 * x * sech2(u) * du;
}

// erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7).
fn erf_(x: f32) -> f32 {
    let a = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    return sign(x) * (1.0 - poly * exp(-a * a));
}

fn gelu_erf(x: f32) -> f32 {
    return 0.5 * x * (1.0 + erf_(x * 0.7071067811865476));
}

fn gelu_erf_grad(x: f32) -> f32 {
    return 0.5 * (1.0 + erf_(x * 0.7071067811865476)) + x * 0.3989422804014327 * exp(-0.5 * x * x);
}

fn quick_gelu_grad(x: f32) -> f32 {
    let s = sigmoid(1.702 * x);
    return s + 1.702 * x * s * (1.0 - s);
}

// x^e with the real-power rule of powf: a negative base works for integer exponents.
fn powf_(x: f32, e: f32) -> f32 {
    if (x >= 0.0 || e != round(e)) {
        return pow(x, e);
    }
    let m = pow(-x, e);
    if (abs(e % 2.0) == 1.0) {
        return -m;
    }
    return m;
}

fn is_nan(v: f32) -> bool {
    return !(v == v);
}

fn maximum(a: f32, b: f32) -> f32 {
    if (is_nan(a) || is_nan(b)) {
        return a + b;
    }
    return select(b, a, a >= b);
}

fn minimum(a: f32, b: f32) -> f32 {
    if (is_nan(a) || is_nan(b)) {
        return a + b;
    }
    return select(b, a, a <= b);
}

fn truth(c: bool) -> f32 {
    return select(0.0, 1.0, c);
}

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

#if GLU
// y[r, j] = x[r, j] * act(x[r, n + j]) for x [rows, 2n]. params p: [rows * n, n]
fn act(x: f32) -> f32 {
    return $EXPR;
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p[0]) {
        return;
    }
    let n = p[1];
    let at = (i / n) * 2u * n + i % n;
    y[i] = x0[at] * act(x0[at + n]);
}
#elif GLU_BACKWARD
// dx[r, j] = dy[r, j] act(g), dx[r, n + j] = dy[r, j] a act'(g) with a = x[r, j],
// g = x[r, n + j]; x0 is x [rows, 2n], x1 is dy [rows, n]. params p: [rows * n, n]
fn act(x: f32) -> f32 {
    return $EXPR;
}

fn act_grad(x: f32) -> f32 {
    return $DEXPR;
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p[0]) {
        return;
    }
    let n = p[1];
    let at = (i / n) * 2u * n + i % n;
    let d = x1[i];
    let g = x0[at + n];
    y[at] = d * act(g);
    y[at + n] = d * x0[at] * act_grad(g);
}
#elif BINARY
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p[0]) {
        return;
    }
    let a = $LOAD(x0[offset_of(i, 0u)]);
    let b = $LOAD(x1[offset_of(i, 1u)]);
    y[i] = $STORE($EXPR);
}
#elif SELECT
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p[0]) {
        return;
    }
    let c = x0[offset_of(i, 0u)];
    y[i] = select(x2[offset_of(i, 2u)], x1[offset_of(i, 1u)], c != $X(0));
}
#elif SCATTER
// y[offset in dst layout] = x[offset in src layout]: operand 0 is the destination.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p[0]) {
        return;
    }
    y[offset_of(i, 0u)] = x0[offset_of(i, 1u)];
}
#else
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p[0]) {
        return;
    }
    let x = $LOAD(x0[offset_of(i, 0u)]);
    y[i] = $STORE($EXPR);
}
#endif
