// Gather and place: embedding rows (and their scatter-add backward, done as a gather
// over ids so no atomics are needed), and nearest-neighbour upsampling.

#if EMBEDDING
// y[r, c] = w[ids[r], c]; an id past the table gives a NaN row (the CPU returns an error).
// params p: [n_ids, d, vocab]
@group(0) @binding(0) var<storage, read> ids: array<u32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> p: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    let d = p[1];
    if (i >= p[0] * d) {
        return;
    }
    let id = ids[i / d];
    if (id >= p[2]) {
        y[i] = bitcast<f32>(0x7fc00000u);
        return;
    }
    y[i] = w[id * d + i % d];
}
#elif EMBEDDING_BACKWARD
// dw[v, c] = sum over r with ids[r] == v of dy[r, c], r in order (deterministic).
// params p: [n_ids, d, vocab]
@group(0) @binding(0) var<storage, read> ids: array<u32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> dw: array<f32>;
@group(0) @binding(3) var<storage, read> p: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    let d = p[1];
    if (i >= p[2] * d) {
        return;
    }
    let v = i / d;
    let c = i % d;
    var acc = 0.0;
    for (var r = 0u; r < p[0]; r = r + 1u) {
        if (ids[r] == v) {
            acc = acc + dy[r * d + c];
        }
    }
    dw[i] = acc;
}
#elif UPSAMPLE
// y[plane, oh, ow] = x[plane, oh / f, ow / f]. params p: [n_out, h, w, f]
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> p: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p[0]) {
        return;
    }
    let h = p[1];
    let w = p[2];
    let f = p[3];
    let wo = w * f;
    let ow = i % wo;
    let oh = (i / wo) % (h * f);
    let plane = i / (wo * h * f);
    y[i] = x[(plane * h + oh / f) * w + ow / f];
}
#endif
