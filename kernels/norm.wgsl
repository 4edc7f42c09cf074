// Group and layer normalisation (x seen as [rows, groups, cpg, inner], each (row, group)
// of M = cpg * inner contiguous elements normalised; weight and bias per channel
// group * cpg + j). Two-pass mean and variance in workgroup trees: no atomics.
//
// FUSED:    one workgroup per group: statistics and output.
// PARTIAL:  large groups, pass 1: workgroup (group, chunk) writes the chunk's (mean, M2).
// COMBINE:  pass 2: one thread per group merges its chunks in order (Chan et al. 1979).
// APPLY:    pass 3: one thread per element normalises with the merged statistics.
// BWD + BWD_FUSED: one workgroup per group: dx, and d * xhat and d for the weight and
//           bias gradients (d = dy, through the SiLU's derivative when fused).
// BWD + BWD_PARTIAL, BWD_APPLY: the same for large groups, split into chunks: chunk
//           sums of g and g xhat, then one thread per element.
//
// params p: [jobs, groups, cpg, inner, eps (f32 bits), has_w, has_b, chunk_len, chunks,
//            silu]

const WG: u32 = 256u;
var<workgroup> acc: array<f32, 256>;
var<workgroup> acc2: array<f32, 256>;

fn tree_sum(lid: u32, v: f32) -> f32 {
    acc[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            acc[lid] = acc[lid] + acc[lid + s];
        }
        workgroupBarrier();
    }
    let r = acc[0];
    workgroupBarrier();
    return r;
}

fn tree_sum2(lid: u32, a: f32, b: f32) -> vec2<f32> {
    acc[lid] = a;
    acc2[lid] = b;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            acc[lid] = acc[lid] + acc[lid + s];
            acc2[lid] = acc2[lid] + acc2[lid + s];
        }
        workgroupBarrier();
    }
    let r = vec2<f32>(acc[0], acc2[0]);
    workgroupBarrier();
    return r;
}

fn sigmoid(v: f32) -> f32 {
    if (v >= 0.0) {
        return 1.0 / (1.0 + exp(-v));
    }
    let e = exp(v);
    return e / (1.0 + e);
}

// The fused activation: silu(v) = v sigmoid(v) when p[9] is set.
fn act(v: f32) -> f32 {
    if (p[9] != 0u) {
        return v * sigmoid(v);
    }
    return v;
}

fn group_len() -> u32 {
    return p[2] * p[3];
}

// Channel of element e of job `job`'s group.
fn channel(job: u32, e: u32) -> u32 {
    return (job % p[1]) * p[2] + e / p[3];
}

#if FUSED
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> mean: array<f32>;
@group(0) @binding(5) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(6) var<storage, read> p: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let job = wid.x + wid.y * nwg.x;
    let valid = job < p[0];
    let m = group_len();
    let base = job * m;
    var s = 0.0;
    if (valid) {
        for (var e = lid.x; e < m; e = e + WG) {
            s = s + x[base + e];
        }
    }
    let mu = tree_sum(lid.x, s) / f32(m);
    var q = 0.0;
    if (valid) {
        for (var e = lid.x; e < m; e = e + WG) {
            let d = x[base + e] - mu;
            q = q + d * d;
        }
    }
    let rs = 1.0 / sqrt(tree_sum(lid.x, q) / f32(m) + bitcast<f32>(p[4]));
    if (valid) {
        for (var e = lid.x; e < m; e = e + WG) {
            let c = channel(job, e);
            var v = (x[base + e] - mu) * rs;
            if (p[5] != 0u) {
                v = v * w[c];
            }
            if (p[6] != 0u) {
                v = v + b[c];
            }
            y[base + e] = act(v);
        }
        if (lid.x == 0u) {
            mean[job] = mu;
            rstd[job] = rs;
        }
    }
}
#elif PARTIAL
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> part: array<f32>;
@group(0) @binding(2) var<storage, read> p: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let unit = wid.x + wid.y * nwg.x;
    let chunks = p[8];
    let job = unit / chunks;
    let valid = job < p[0];
    let m = group_len();
    let start = (unit % chunks) * p[7];
    let end = min(start + p[7], m);
    let base = job * m;
    var s = 0.0;
    if (valid) {
        for (var e = start + lid.x; e < end; e = e + WG) {
            s = s + x[base + e];
        }
    }
    let n = f32(end - min(start, end));
    let mu = tree_sum(lid.x, s) / max(n, 1.0);
    var q = 0.0;
    if (valid) {
        for (var e = start + lid.x; e < end; e = e + WG) {
            let d = x[base + e] - mu;
            q = q + d * d;
        }
    }
    let m2 = tree_sum(lid.x, q);
    if (valid && lid.x == 0u) {
        part[2u * unit] = mu;
        part[2u * unit + 1u] = m2;
    }
}
#elif COMBINE
@group(0) @binding(0) var<storage, read> part: array<f32>;
@group(0) @binding(1) var<storage, read_write> mean: array<f32>;
@group(0) @binding(2) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(3) var<storage, read> p: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let job = gid.x + gid.y * nwg.x * 256u;
    if (job >= p[0]) {
        return;
    }
    let m = group_len();
    let chunks = p[8];
    var n = 0.0;
    var mu = 0.0;
    var m2 = 0.0;
    for (var c = 0u; c < chunks; c = c + 1u) {
        let start = c * p[7];
        let nb = f32(min(start + p[7], m) - start);
        let mb = part[2u * (job * chunks + c)];
        let m2b = part[2u * (job * chunks + c) + 1u];
        let total = n + nb;
        let delta = mb - mu;
        mu = mu + delta * nb / total;
        m2 = m2 + m2b + delta * delta * n * nb / total;
        n = total;
    }
    mean[job] = mu;
    rstd[job] = 1.0 / sqrt(m2 / f32(m) + bitcast<f32>(p[4]));
}
#elif APPLY
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> mean: array<f32>;
@group(0) @binding(4) var<storage, read> rstd: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
@group(0) @binding(6) var<storage, read> p: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    let m = group_len();
    if (i >= p[0] * m) {
        return;
    }
    let job = i / m;
    let c = channel(job, i % m);
    var v = (x[i] - mean[job]) * rstd[job];
    if (p[5] != 0u) {
        v = v * w[c];
    }
    if (p[6] != 0u) {
        v = v + b[c];
    }
    y[i] = act(v);
}
#endif

// The backward passes share x, dy, w, b and the statistics (flag BWD, with one of the
// three below).
#if BWD
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read> mean: array<f32>;
@group(0) @binding(5) var<storage, read> rstd: array<f32>;

// The gradient at the normaliser's output: dy, or dy silu'(xhat w + b) when fused.
fn d_at(e: u32, job: u32, xh: f32) -> f32 {
    if (p[9] == 0u) {
        return dy[e];
    }
    let c = channel(job, e % group_len());
    var v = xh;
    if (p[5] != 0u) {
        v = v * w[c];
    }
    if (p[6] != 0u) {
        v = v + b[c];
    }
    let s = sigmoid(v);
    return dy[e] * s * (1.0 + v * (1.0 - s));
}

// g = d w, the gradient at xhat, of element e (in-group index ge) of group `job`.
fn g_at(d: f32, job: u32, ge: u32) -> f32 {
    if (p[5] != 0u) {
        return d * w[channel(job, ge)];
    }
    return d;
}
#endif

// With xhat = (x - mean) rstd and g = d w:
// dx = rstd (g - mean(g) - xhat mean(g xhat)); gxh = d xhat and gd = d (summed per
// channel later).
#if BWD_FUSED
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;
@group(0) @binding(7) var<storage, read_write> gxh: array<f32>;
@group(0) @binding(8) var<storage, read_write> gd: array<f32>;
@group(0) @binding(9) var<storage, read> p: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let job = wid.x + wid.y * nwg.x;
    let valid = job < p[0];
    let m = group_len();
    let base = job * m;
    var mu = 0.0;
    var rs = 0.0;
    if (valid) {
        mu = mean[job];
        rs = rstd[job];
    }
    var sg = 0.0;
    var sgx = 0.0;
    if (valid) {
        for (var e = lid.x; e < m; e = e + WG) {
            let xh = (x[base + e] - mu) * rs;
            let g = g_at(d_at(base + e, job, xh), job, e);
            sg = sg + g;
            sgx = sgx + g * xh;
        }
    }
    let sums = tree_sum2(lid.x, sg, sgx) / f32(m);
    if (valid) {
        for (var e = lid.x; e < m; e = e + WG) {
            let xh = (x[base + e] - mu) * rs;
            let d = d_at(base + e, job, xh);
            let g = g_at(d, job, e);
            dx[base + e] = rs * (g - sums.x - xh * sums.y);
            gxh[base + e] = d * xh;
            gd[base + e] = d;
        }
    }
}
#elif BWD_PARTIAL
// Large groups, pass 1: workgroup (group, chunk) writes its chunk's sums of g and g xhat.
@group(0) @binding(6) var<storage, read_write> part: array<f32>;
@group(0) @binding(7) var<storage, read> p: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let unit = wid.x + wid.y * nwg.x;
    let chunks = p[8];
    let job = unit / chunks;
    let valid = job < p[0];
    let m = group_len();
    let start = (unit % chunks) * p[7];
    let end = min(start + p[7], m);
    let base = job * m;
    var sg = 0.0;
    var sgx = 0.0;
    if (valid) {
        let mu = mean[job];
        let rs = rstd[job];
        for (var e = start + lid.x; e < end; e = e + WG) {
            let xh = (x[base + e] - mu) * rs;
            let g = g_at(d_at(base + e, job, xh), job, e);
            sg = sg + g;
            sgx = sgx + g * xh;
        }
    }
    let sums = tree_sum2(lid.x, sg, sgx);
    if (valid && lid.x == 0u) {
        part[2u * unit] = sums.x;
        part[2u * unit + 1u] = sums.y;
    }
}
#elif BWD_APPLY
// Large groups, pass 2: one thread per element adds its group's chunk sums in order
// (the same order for every element, so all see the same mean) and writes dx, gxh, gd.
@group(0) @binding(6) var<storage, read> part: array<f32>;
@group(0) @binding(7) var<storage, read_write> dx: array<f32>;
@group(0) @binding(8) var<storage, read_write> gxh: array<f32>;
@group(0) @binding(9) var<storage, read_write> gd: array<f32>;
@group(0) @binding(10) var<storage, read> p: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    let m = group_len();
    if (i >= p[0] * m) {
        return;
    }
    let job = i / m;
    let chunks = p[8];
    var sg = 0.0;
    var sgx = 0.0;
    for (var c = 0u; c < chunks; c = c + 1u) {
        sg = sg + part[2u * (job * chunks + c)];
        sgx = sgx + part[2u * (job * chunks + c) + 1u];
    }
    let rs = rstd[job];
    let xh = (x[i] - mean[job]) * rs;
    let d = d_at(i, job, xh);
    let g = g_at(d, job, i % m);
    dx[i] = rs * (g - sg / f32(m) - xh * sgx / f32(m));
    gxh[i] = d * xh;
    gd[i] = d;
}
#endif
