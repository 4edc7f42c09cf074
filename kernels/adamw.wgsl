// The fused AdamW update (Loshchilov & Hutter 2019) in place, one thread per element, in
// torch.optim.AdamW's order of operations:
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
//   p = p (1 - lr wd) - step_size m / (sqrt(v) / sqrt(1 - b2^t) + eps).
// params p: [n, b1, b2, eps, decay = 1 - lr wd, 1 - b1, 1 - b2, step_size, sqrt(1 - b2^t)]
// (all but n as f32 bits).

@group(0) @binding(0) var<storage, read_write> param: array<f32>;
@group(0) @binding(1) var<storage, read_write> m: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read> g: array<f32>;
@group(0) @binding(4) var<storage, read> p: array<u32>;

fn h(i: u32) -> f32 {
    return bitcast<f32>(p[i]);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p[0]) {
        return;
    }
    let gi = g[i];
    let mi = h(1u) * m[i] + h(5u) * gi;
    let vi = h(2u) * v[i] + h(6u) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    let denom = sqrt(vi) / h(8u) + h(3u);
    param[i] = param[i] * h(4u) - h(7u) * mi / denom;
}
