// Reductions (sum, max, min) as workgroup tree reductions: no float atomics, so the
// result is the same on every run. The host permutes the reduced axes last; workgroup
// (row, chunk) reduces elements [chunk * chunk_len, ...) of its row, and rows longer than
// one chunk are finished by a second pass over the partials.
//
// params p: [rows, row_len, chunk_len, chunks, op (0 sum, 1 max, 2 min), rank, dims[8],
//            offset, strides[8]]

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> p: array<u32>;

const WG: u32 = 256u;
const MAX_RANK: u32 = 8u;
var<workgroup> acc: array<f32, 256>;

fn offset_of(i: u32) -> u32 {
    var rem = i;
    var off = p[6u + MAX_RANK];
    for (var d = p[5]; d > 0u; d = d - 1u) {
        let size = p[5u + d];
        off = off + (rem % size) * p[6u + MAX_RANK + d];
        rem = rem / size;
    }
    return off;
}

fn combine(a: f32, b: f32) -> f32 {
    let op = p[4];
    if (op == 0u) {
        return a + b;
    }
    if (!(a == a) || !(b == b)) {
        return a + b; // NaN wins, as on the CPU
    }
    if (op == 1u) {
        return max(a, b);
    }
    return min(a, b);
}

fn identity() -> f32 {
    let op = p[4];
    if (op == 1u) {
        return bitcast<f32>(0xff800000u); // -inf
    }
    if (op == 2u) {
        return bitcast<f32>(0x7f800000u); // +inf
    }
    return 0.0;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let job = wid.x + wid.y * nwg.x;
    let chunks = p[3];
    // Uniform control flow: every thread of the workgroup takes the same branches.
    let valid = job < p[0] * chunks;
    let row = job / max(chunks, 1u);
    let chunk = job % max(chunks, 1u);
    let row_len = p[1];
    let start = chunk * p[2];
    let end = min(start + p[2], row_len);
    var a = identity();
    if (valid) {
        for (var j = start + lid.x; j < end; j = j + WG) {
            a = combine(a, x[offset_of(row * row_len + j)]);
        }
    }
    acc[lid.x] = a;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid.x < s) {
            acc[lid.x] = combine(acc[lid.x], acc[lid.x + s]);
        }
        workgroupBarrier();
    }
    if (valid && lid.x == 0u) {
        y[job] = acc[0];
    }
}
