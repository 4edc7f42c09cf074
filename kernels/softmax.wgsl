// Softmax over contiguous rows of length d, one workgroup per row: a tree max, a tree
// sum of exp(x - max), then the scaled write. params p: [rows, d]

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> p: array<u32>;

const WG: u32 = 256u;
var<workgroup> acc: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wid.x + wid.y * nwg.x;
    let valid = row < p[0];
    let d = p[1];
    let base = row * d;
    var m = bitcast<f32>(0xff800000u);
    if (valid) {
        for (var j = lid.x; j < d; j = j + WG) {
            m = max(m, x[base + j]);
        }
    }
    acc[lid.x] = m;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid.x < s) {
            acc[lid.x] = max(acc[lid.x], acc[lid.x + s]);
        }
        workgroupBarrier();
    }
    let row_max = acc[0];
    workgroupBarrier();
    var sum = 0.0;
    if (valid) {
        for (var j = lid.x; j < d; j = j + WG) {
            sum = sum + exp(x[base + j] - row_max);
        }
    }
    acc[lid.x] = sum;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid.x < s) {
            acc[lid.x] = acc[lid.x] + acc[lid.x + s];
        }
        workgroupBarrier();
    }
    let inv = 1.0 / acc[0];
    if (valid) {
        for (var j = lid.x; j < d; j = j + WG) {
            y[base + j] = exp(x[base + j] - row_max) * inv;
        }
    }
}
