// fill: every 32-bit word of y set to one bit pattern (zeros, ones, NaN poison).
// params: [n_words, pattern]

@group(0) @binding(0) var<storage, read_write> y: array<u32>;
@group(0) @binding(1) var<storage, read> p: array<u32>;

@compute @workgroup_size(256)
fn fill(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i < p[0]) {
        y[i] = p[1];
    }
}
