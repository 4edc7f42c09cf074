// One tiled GEMM, C[batch, M, N] = A[batch, M, K] B[batch, K, N] (+ bias[m]), that every
// matmul and convolution runs through; only the operand index functions differ.
//
// Tiling (the classic shared-memory SGEMM: Volkov & Demmel 2008; the register blocking
// of CUTLASS and of Boehm's "How to optimize a CUDA matmul"): a workgroup of WG threads
// owns a BM x BN tile of C. For each BK-deep slice of K it stages A[BM, BK] and B[BK, BN]
// in workgroup memory, then every thread accumulates its own TM x TN block of outputs in
// registers from vec4 reads of the staged slices: TM + TN loads for TM * TN FMAs.
// Bounds are checked only when staging (out-of-range elements stage as 0) and storing,
// never in the inner loop. Each output is summed by one thread in a fixed K order:
// deterministic, no atomics.
//
// Thread (tx, ty) owns rows 4 (ty + i TY) + 0..3 and columns 4 (tx + j TX) + 0..3:
// interleaved vec4 slots, so the threads of a row read consecutive vec4s of the B slice.
//
// Specialisation (the host chooses; see gemm.rs):
//   substitutions WG BM BN BK TM TN: threads and tile sizes (TM, TN multiples of 4,
//     (BM / TM) (BN / TN) = WG); FMAS, STORES: the code on the accumulators, unrolled
//   A_VEC + A_VEC_K|A_VEC_M  A read as vec4 along k or m (contiguous, 16-byte aligned)
//   B_VEC + B_VEC_K|B_VEC_N  the same for B
//   SPLIT_AK SPLIT_BK SPLIT_BN  that axis is (i / d, i % d) with two strides
//   GATHER_FWD|GATHER_DGRAD|GATHER_WGRAD  B is a convolution gather (implicit GEMM)
//   NAIVE  also build the `naive` entry
// Choices that cost only a uniform branch are runtime bits instead (fewer pipelines to
// compile): scalar staging with threads walking k, vec4 stores of C, the bias.
//
// params p (u32):
//   0 M, 1 N, 2 K, 3 tiles along N, 4 tiles per batch entry, 5 batch entries,
//   6 plane: C[m, n] lives at (n / plane) M plane + m plane + n % plane (matmul: N),
//   7 bits: 1 A staged k-fast, 2 B staged k-fast, 4 C stored as vec4, 8 add bias,
//   8.. A: offset, m stride, k stride, k split d, k split outer stride,
//   13.. B: offset, k stride, n stride, k split d, k outer stride, n split d, n outer,
//   20 batch axes (<= 6), 21.. dims[6], 27.. A batch strides[6], 33.. B strides[6],
//   39.. conv: Cin, H, W, Cout, KH, KW, sh, sw, ph, pw, HO, WO.

#if A_VEC
@group(0) @binding(0) var<storage, read> a: array<vec4<f32>>;
#else
@group(0) @binding(0) var<storage, read> a: array<f32>;
#endif
#if B_VEC
@group(0) @binding(1) var<storage, read> b: array<vec4<f32>>;
#else
@group(0) @binding(1) var<storage, read> b: array<f32>;
#endif
@group(0) @binding(2) var<storage, read_write> c: array<vec4<f32>>;
// Bound to some input when there is no bias (the BIAS bit is off).
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> p: array<u32>;

const WG: u32 = $WG;
const BM: u32 = $BM;
const BN: u32 = $BN;
const BK: u32 = $BK;
const TM: u32 = $TM;
const TN: u32 = $TN;
const BM4: u32 = BM / 4u;
const BN4: u32 = BN / 4u;
// Threads along n and m, and vec4 slots per thread along n.
const TX: u32 = BN / TN;
const TY: u32 = BM / TM;
const RN: u32 = TN / 4u;

const P_M: u32 = 0u;
const P_N: u32 = 1u;
const P_K: u32 = 2u;
const P_TILES_N: u32 = 3u;
const P_TILES: u32 = 4u;
const P_BATCHES: u32 = 5u;
const P_PLANE: u32 = 6u;
const P_BITS: u32 = 7u;
const P_A: u32 = 8u;
const P_B: u32 = 13u;
const P_NB: u32 = 20u;
const P_DIMS: u32 = 21u;
const P_ABS: u32 = 27u;
const P_BBS: u32 = 33u;
const P_CONV: u32 = 39u;
const A_FAST_K: u32 = 1u;
const B_FAST_K: u32 = 2u;
const C_VEC: u32 = 4u;
const BIAS: u32 = 8u;

fn bit(b: u32) -> bool {
    return (p[P_BITS] & b) != 0u;
}

// A[k][m] and B[k][n] slices, k-major so the inner loop reads vec4s along m and n.
var<workgroup> As: array<vec4<f32>, $AS_LEN>;
var<workgroup> Bs: array<vec4<f32>, $BS_LEN>;

// Element offsets of this workgroup's batch entry in A, B and C.
var<private> a_base: u32;
var<private> b_base: u32;
var<private> c_base: u32;

// Batch entry `bi` (row-major over the batch dims) -> operand offsets.
fn set_batch(bi: u32) {
    var rem = bi;
    var ao = p[P_A];
    var bo = p[P_B];
    for (var d = p[P_NB]; d > 0u; d -= 1u) {
        let size = p[P_DIMS + d - 1u];
        let i = rem % size;
        rem = rem / size;
        ao += i * p[P_ABS + d - 1u];
        bo += i * p[P_BBS + d - 1u];
    }
    a_base = ao;
    b_base = bo;
    c_base = bi * p[P_M] * p[P_N];
}

// ---- operand index functions -------------------------------------------------------

fn a_index(m: u32, k: u32) -> u32 {
#if SPLIT_AK
    let kk = (k / p[P_A + 3u]) * p[P_A + 4u] + (k % p[P_A + 3u]) * p[P_A + 2u];
#else
    let kk = k * p[P_A + 2u];
#endif
    return a_base + m * p[P_A + 1u] + kk;
}

fn b_index(k: u32, n: u32) -> u32 {
#if SPLIT_BK
    let kk = (k / p[P_B + 3u]) * p[P_B + 4u] + (k % p[P_B + 3u]) * p[P_B + 1u];
#else
    let kk = k * p[P_B + 1u];
#endif
#if SPLIT_BN
    let nn = (n / p[P_B + 5u]) * p[P_B + 6u] + (n % p[P_B + 5u]) * p[P_B + 2u];
#else
    let nn = n * p[P_B + 2u];
#endif
    return b_base + kk + nn;
}

// Scalar reads whichever way the operand is bound.
#if A_VEC
fn a_scalar(i: u32) -> f32 {
    return a[i / 4u][i % 4u];
}
#else
fn a_scalar(i: u32) -> f32 {
    return a[i];
}
#endif
#if B_VEC
fn b_scalar(i: u32) -> f32 {
    return b[i / 4u][i % 4u];
}
#else
fn b_scalar(i: u32) -> f32 {
    return b[i];
}
#endif

fn conv(i: u32) -> u32 {
    return p[P_CONV + i];
}

// x[img, ch, oh sh + i - ph, ow sw + j - pw] of x [N, Cin, H, W] at b_base, 0 in the
// padding (a "negative" row wraps to a huge u32 and fails the same test).
fn x_tap(img: u32, ch: u32, oh: u32, ow: u32, i: u32, j: u32) -> f32 {
    let ih = oh * conv(6u) + i - conv(8u);
    let iw = ow * conv(7u) + j - conv(9u);
    if (ih >= conv(1u) || iw >= conv(2u)) {
        return 0.0;
    }
    return b_scalar(b_base + ((img * conv(0u) + ch) * conv(1u) + ih) * conv(2u) + iw);
}

#if GATHER_FWD
// Forward conv (M = Cout, N = N HO WO, K = Cin KH KW): B((ch, i, j), (img, oh, ow)) is
// the input pixel under tap (i, j) of output (oh, ow): im2col without the buffer.
fn b_elem(k: u32, n: u32) -> f32 {
    let taps = conv(4u) * conv(5u);
    let t = k % taps;
    let pix = n % (conv(10u) * conv(11u));
    return x_tap(n / (conv(10u) * conv(11u)), k / taps, pix / conv(11u), pix % conv(11u),
                 t / conv(5u), t % conv(5u));
}
#elif GATHER_DGRAD
// Input gradient (M = Cin, N = N H W, K = Cout KH KW): B((o, i, j), (img, ih, iw)) =
// dy[img, o, (ih + ph - i) / sh, (iw + pw - j) / sw] where that divides exactly and lies
// inside dy, else 0: the transposed convolution, any stride.
fn b_elem(k: u32, n: u32) -> f32 {
    let taps = conv(4u) * conv(5u);
    let t = k % taps;
    let hw = conv(1u) * conv(2u);
    let pix = n % hw;
    let th = pix / conv(2u) + conv(8u) - t / conv(5u);
    let tw = pix % conv(2u) + conv(9u) - t % conv(5u);
    let oh = th / conv(6u);
    let ow = tw / conv(7u);
    if (th % conv(6u) != 0u || tw % conv(7u) != 0u || oh >= conv(10u) || ow >= conv(11u)) {
        return 0.0;
    }
    return b_scalar(b_base + (((n / hw) * conv(3u) + k / taps) * conv(10u) + oh) * conv(11u) + ow);
}
#elif GATHER_WGRAD
// Weight gradient (M = Cout, N = Cin KH KW, K = N HO WO): B((img, oh, ow), (ch, i, j))
// is the input pixel tap (i, j) of output (oh, ow) reads.
fn b_elem(k: u32, n: u32) -> f32 {
    let taps = conv(4u) * conv(5u);
    let t = n % taps;
    let pix = k % (conv(10u) * conv(11u));
    return x_tap(k / (conv(10u) * conv(11u)), n / taps, pix / conv(11u), pix % conv(11u),
                 t / conv(5u), t % conv(5u));
}
#else
fn b_elem(k: u32, n: u32) -> f32 {
    return b_scalar(b_index(k, n));
}
#endif

// ---- staging: A[m0.., k0..] -> As, B[k0.., n0..] -> Bs, zeros outside the matrix ----

#if A_VEC_K
// Rows contiguous along k: each thread loads 4 consecutive k of one row.
fn stage_a(t: u32, m0: u32, k0: u32) {
    for (var r = 0u; r < BM * BK / 4u / WG; r += 1u) {
        let g = t + r * WG;
        let m = g / (BK / 4u);
        let k = 4u * (g % (BK / 4u));
        var v = vec4<f32>(0.0);
        if (m0 + m < p[P_M] && k0 + k < p[P_K]) {
            v = a[a_index(m0 + m, k0 + k) / 4u];
        }
        let s = k * BM4 + m / 4u;
        As[s][m % 4u] = v.x;
        As[s + BM4][m % 4u] = v.y;
        As[s + 2u * BM4][m % 4u] = v.z;
        As[s + 3u * BM4][m % 4u] = v.w;
    }
}
#elif A_VEC_M
// Columns contiguous along m (a transposed operand): vec4s go straight into As.
fn stage_a(t: u32, m0: u32, k0: u32) {
    for (var r = 0u; r < BM * BK / 4u / WG; r += 1u) {
        let g = t + r * WG;
        let m = 4u * (g % BM4);
        let k = g / BM4;
        var v = vec4<f32>(0.0);
        if (m0 + m < p[P_M] && k0 + k < p[P_K]) {
            v = a[a_index(m0 + m, k0 + k) / 4u];
        }
        As[k * BM4 + m / 4u] = v;
    }
}
#else
// Scalar staging: consecutive threads walk the operand's contiguous axis (coalesced).
// Walking m, each thread keeps one row (WG is a multiple of BM).
fn stage_a(t: u32, m0: u32, k0: u32) {
    let k_fast = bit(A_FAST_K);
    for (var r = 0u; r < BM * BK / WG; r += 1u) {
        let e = t + r * WG;
        var m = e % BM;
        var k = e / BM;
        if (k_fast) {
            m = e / BK;
            k = e % BK;
        }
        var v = 0.0;
        if (m0 + m < p[P_M] && k0 + k < p[P_K]) {
            v = a_scalar(a_index(m0 + m, k0 + k));
        }
        As[k * BM4 + m / 4u][m % 4u] = v;
    }
}
#endif

#if B_VEC_K
// Columns contiguous along k (a transposed B, or NCHW pixels in the weight gradient).
fn stage_b(t: u32, n0: u32, k0: u32) {
    for (var r = 0u; r < BN * BK / 4u / WG; r += 1u) {
        let g = t + r * WG;
        let n = g / (BK / 4u);
        let k = 4u * (g % (BK / 4u));
        var v = vec4<f32>(0.0);
        if (n0 + n < p[P_N] && k0 + k < p[P_K]) {
            v = b[b_index(k0 + k, n0 + n) / 4u];
        }
        let s = k * BN4 + n / 4u;
        Bs[s][n % 4u] = v.x;
        Bs[s + BN4][n % 4u] = v.y;
        Bs[s + 2u * BN4][n % 4u] = v.z;
        Bs[s + 3u * BN4][n % 4u] = v.w;
    }
}
#elif B_VEC_N
fn stage_b(t: u32, n0: u32, k0: u32) {
    for (var r = 0u; r < BN * BK / 4u / WG; r += 1u) {
        let g = t + r * WG;
        let n = 4u * (g % BN4);
        let k = g / BN4;
        var v = vec4<f32>(0.0);
        if (n0 + n < p[P_N] && k0 + k < p[P_K]) {
            v = b[b_index(k0 + k, n0 + n) / 4u];
        }
        Bs[k * BN4 + n / 4u] = v;
    }
}
#else
// Scalar staging (gathers included). Walking n, each thread keeps its columns for the
// whole K loop (WG is a multiple of BN): a gather's column decode is loop-invariant.
fn stage_b(t: u32, n0: u32, k0: u32) {
    let k_fast = bit(B_FAST_K);
    for (var r = 0u; r < BN * BK / WG; r += 1u) {
        let e = t + r * WG;
        var n = e % BN;
        var k = e / BN;
        if (k_fast) {
            n = e / BK;
            k = e % BK;
        }
        var v = 0.0;
        if (n0 + n < p[P_N] && k0 + k < p[P_K]) {
            v = b_elem(k0 + k, n0 + n);
        }
        Bs[k * BN4 + n / 4u][n % 4u] = v;
    }
}
#endif

// ---- output ------------------------------------------------------------------------

fn c_index(m: u32, n: u32) -> u32 {
    let plane = p[P_PLANE];
    return c_base + (n / plane) * p[P_M] * plane + m * plane + n % plane;
}

fn store1(m: u32, n: u32, v: f32) {
    if (n < p[P_N]) {
        let i = c_index(m, n);
        c[i / 4u][i % 4u] = v;
    }
}

// Outputs (m, n..n+3) of one accumulator, plus the bias; nothing outside C.
fn store_block(m: u32, n: u32, acc: vec4<f32>) {
    if (m >= p[P_M] || n >= p[P_N]) {
        return;
    }
    var v = acc;
    if (bit(BIAS)) {
        v += vec4<f32>(bias[m]);
    }
    if (bit(C_VEC)) {
        // plane % 4 == 0: four consecutive n from a multiple of 4 are one aligned vec4.
        c[c_index(m, n) / 4u] = v;
        return;
    }
    store1(m, n, v.x);
    store1(m, n + 1u, v.y);
    store1(m, n + 2u, v.z);
    store1(m, n + 3u, v.w);
}

@compute @workgroup_size($WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
    // Workgroups are numbered (batch entry, tile row, tile column), folded into y past
    // the per-dimension limit; the fold's spare workgroups leave together.
    let lin = wid.x + wid.y * nwg.x;
    if (lin >= p[P_TILES] * p[P_BATCHES]) {
        return;
    }
    set_batch(lin / p[P_TILES]);
    let tile = lin % p[P_TILES];
    let m0 = (tile / p[P_TILES_N]) * BM;
    let n0 = (tile % p[P_TILES_N]) * BN;
    let tx = t % TX;
    let ty = t / TX;

    // acc[(4 i + e) RN + j]: row 4 (ty + i TY) + e, columns 4 (tx + j TX) + 0..3. The
    // host writes the code touching acc out in full (FMAS and STORES, from gemm.rs) so
    // every index is a constant: a local array indexed at run time would live in
    // memory, not registers, wherever the driver's unroller gives up.
    var acc: array<vec4<f32>, TM * RN>;
    for (var k0 = 0u; k0 < p[P_K]; k0 += BK) {
        stage_a(t, m0, k0);
        stage_b(t, n0, k0);
        workgroupBarrier();
        for (var k = 0u; k < BK; k += 1u) {
            // a_i = As[k][ty + i TY] (rows), b_j = Bs[k][tx + j TX] (columns);
            // acc[(4 i + e) RN + j] += a_i[e] b_j.
$FMAS
        }
        workgroupBarrier();
    }
$STORES
}

#if NAIVE
// The baseline: one thread per output, every operand read straight from global memory
// (K reads of A and B per output instead of K / TN and K / TM).
@compute @workgroup_size(256)
fn naive(@builtin(global_invocation_id) gid: vec3<u32>,
         @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    let mn = p[P_M] * p[P_N];
    if (i >= mn * p[P_BATCHES]) {
        return;
    }
    set_batch(i / mn);
    let m = (i % mn) / p[P_N];
    let n = i % p[P_N];
    var acc = 0.0;
    for (var k = 0u; k < p[P_K]; k += 1u) {
        acc = fma(a_scalar(a_index(m, k)), b_elem(k, n), acc);
    }
    if (bit(BIAS)) {
        acc += bias[m];
    }
    c[i / 4u][i % 4u] = acc;
}
#endif
