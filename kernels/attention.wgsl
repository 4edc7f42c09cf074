// Flash attention, forward and backward (Dao et al. 2022, FlashAttention; Dao 2023,
// FlashAttention-2): scores are computed a tile at a time in workgroup memory with an
// online softmax, so no L x S matrix ever reaches global memory. No atomics and no
// subgroups: every sum runs in a fixed order, so results are the same on every run.
//
// q [BH, L, D], k [BH, S, D], v [BH, S, DV], out/dout [BH, L, DV], lse/delta [BH, L],
// mask [B, S] (nonzero = attend; head bh belongs to batch bh / H). All dense from 0.
//
// A workgroup owns a block of ROWS rows (queries; keys in DKDV) with T threads per row.
// Thread (r, t) holds the scores of columns t, t + T, ... of the current tile and the
// output columns t, t + T, ... of one head-dim chunk (strided, so neighbouring threads
// touch neighbouring words of workgroup memory). Head dims are staged HC (the host's
// specialisation) columns at a time: dot products loop over chunks, and each workgroup
// writes one HC-wide chunk of its outputs (the grid's chunk index), so any D and DV run
// in a fixed amount of workgroup memory.
//
// FORWARD: out and lse; the workgroup loops over key tiles (FA-2 alg. 1).
// DELTA:   delta_i = sum_c dout_ic out_ic (FA-2 alg. 2, line 4), one thread per row.
// DKDV:    dk, dv for a block of keys, looping over query tiles (FA-2 alg. 2 without
//          the dq atomics).
// DQ:      dq for a block of queries, looping over key tiles (recomputes P and dP once
//          more instead of accumulating dq atomically from DKDV).
// With P = exp(scale q.k - lse), dP = dout.v, dS = P (dP - delta) scale:
//          dv_j = sum_i P_ij dout_i, dk_j = sum_i dS_ij q_i, dq_i = sum_j dS_ij k_j.
//
// params p: [jobs, H, L, S, D, DV, nd, ndv, causal, has_mask, scale (f32 bits), blocks,
//            chunks]: nd, ndv = HC-chunks of D and DV; a job is (bh, row block, chunk),
//            numbered chunk-fastest; blocks = row blocks per head.

const T: u32 = 8u;
const HC: u32 = $HCu;
const CPT: u32 = HC / T;
// Row stride of the head-dim tiles in workgroup memory: the +1 (as PS = tile + 1 for
// the score tiles) puts rows that neighbouring threads read at once in different banks.
const HS: u32 = HC + 1u;
// The running max before any visible key: finite, so no infinity enters the arithmetic,
// and exp(NEG - m) is 0 for any real score m (a masked row is found by its zero sum).
const NEG: f32 = -3.0e38f;

#if TILED
struct Job {
    valid: bool,
    bh: u32,
    row0: u32,
    chunk: u32,
}

fn job_of(wid: vec3<u32>, nwg: vec3<u32>, rows: u32) -> Job {
    let w = wid.x + wid.y * nwg.x;
    let chunks = p[12];
    let rest = w / chunks;
    return Job(w < p[0], rest / p[11], (rest % p[11]) * rows, w % chunks);
}

// Whether query i may attend key j (both in range is the caller's business).
fn visible(bh: u32, i: u32, j: u32) -> bool {
    if (p[8] != 0u && j > i) {
        return false;
    }
    if (p[9] != 0u) {
        return mask[(bh / p[1]) * p[3] + j] != 0.0;
    }
    return true;
}

// Index into a row-major [n, width] matrix of element e of the [rows, HC] tile whose
// top-left is (row0, c0); NONE when it falls outside (the tile holds 0 there).
const NONE: u32 = 0xffffffffu;
fn tile_src(e: u32, base: u32, row0: u32, n: u32, c0: u32, width: u32) -> u32 {
    let r = row0 + e / HC;
    let c = c0 + e % HC;
    if (r >= n || c >= width) {
        return NONE;
    }
    return (base + r) * width + c;
}

// Where element e of a [rows, HC] tile lives in its padded [rows, HS] array.
fn slot(e: u32) -> u32 {
    return (e / HC) * HS + e % HC;
}

fn scale() -> f32 {
    return bitcast<f32>(p[10]);
}
#endif

#if FORWARD
@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read> mask: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
@group(0) @binding(6) var<storage, read> p: array<u32>;

const ROWS: u32 = 16u; // queries per workgroup
const BK: u32 = 32u; // keys per tile
const SPT: u32 = BK / T; // scores per thread
const PS: u32 = BK + 1u; // row stride of ps
const WG: u32 = ROWS * T;
var<workgroup> qs: array<f32, ROWS * HS>; // [ROWS, HC] query chunk
var<workgroup> kv: array<f32, BK * HS>; // [BK, HC] key chunk, then value chunk
var<workgroup> ps: array<f32, ROWS * PS>; // [ROWS, BK] probabilities of the tile
var<workgroup> part: array<f32, ROWS * T>; // [ROWS, T] per-thread tile maxima

fn stage_q(lid: u32, bh: u32, row0: u32, dc: u32) {
    for (var e = lid; e < ROWS * HC; e = e + WG) {
        let s = tile_src(e, bh * p[2], row0, p[2], dc * HC, p[4]);
        qs[slot(e)] = 0.0;
        if (s != NONE) {
            qs[slot(e)] = q[s];
        }
    }
}

fn stage_k(lid: u32, bh: u32, k0: u32, dc: u32) {
    for (var e = lid; e < BK * HC; e = e + WG) {
        let s = tile_src(e, bh * p[3], k0, p[3], dc * HC, p[4]);
        kv[slot(e)] = 0.0;
        if (s != NONE) {
            kv[slot(e)] = k[s];
        }
    }
}

fn stage_v(lid: u32, bh: u32, k0: u32, vc: u32) {
    for (var e = lid; e < BK * HC; e = e + WG) {
        let s = tile_src(e, bh * p[3], k0, p[3], vc * HC, p[5]);
        kv[slot(e)] = 0.0;
        if (s != NONE) {
            kv[slot(e)] = v[s];
        }
    }
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid3: vec3<u32>) {
    let job = job_of(wid, nwg, ROWS);
    let lid = lid3.x;
    let r = lid / T;
    let t = lid % T;
    let i = job.row0 + r;
    let n_keys = p[3];
    let nd = p[6];
    // Causal: the block's last query sees no key past it, so later tiles are skipped.
    var key_end = n_keys;
    if (p[8] != 0u) {
        key_end = min(n_keys, job.row0 + ROWS);
    }
    if (!job.valid) {
        key_end = 0u;
    }
    var m = NEG; // running max of the visible scores of row i
    var l = 0.0; // running sum of exp(score - m)
    var acc: array<f32, CPT>; // running sum of exp(score - m) v, this thread's columns
    for (var k0 = 0u; k0 < key_end; k0 = k0 + BK) {
        // Scores s[u] = q_i . k_(k0 + t + u T), over head-dim chunks.
        var s: array<f32, SPT>;
        for (var u = 0u; u < SPT; u = u + 1u) {
            s[u] = 0.0;
        }
        for (var dc = 0u; dc < nd; dc = dc + 1u) {
            workgroupBarrier();
            if (nd > 1u || k0 == 0u) {
                stage_q(lid, job.bh, job.row0, dc);
            }
            stage_k(lid, job.bh, k0, dc);
            workgroupBarrier();
            for (var c = 0u; c < HC; c = c + 1u) {
                let qc = qs[r * HS + c];
                for (var u = 0u; u < SPT; u = u + 1u) {
                    s[u] = s[u] + qc * kv[(t + u * T) * HS + c];
                }
            }
        }
        // Scale, hide, and the tile's row max, first per thread, then over the row.
        var vis: array<bool, SPT>;
        var mt = NEG;
        for (var u = 0u; u < SPT; u = u + 1u) {
            let j = k0 + t + u * T;
            vis[u] = i < p[2] && j < n_keys && visible(job.bh, i, j);
            s[u] = s[u] * scale();
            if (vis[u]) {
                mt = max(mt, s[u]);
            }
        }
        part[r * T + t] = mt;
        workgroupBarrier();
        for (var w = 0u; w < T; w = w + 1u) {
            mt = max(mt, part[r * T + w]);
        }
        let m_new = max(m, mt);
        for (var u = 0u; u < SPT; u = u + 1u) {
            var pu = 0.0;
            if (vis[u]) {
                pu = exp(s[u] - m_new);
            }
            ps[r * PS + t + u * T] = pu;
        }
        stage_v(lid, job.bh, k0, job.chunk);
        workgroupBarrier();
        // Rescale what the earlier tiles gave to the new max (FA-2 alg. 1, line 10).
        let alpha = exp(m - m_new);
        m = m_new;
        for (var u = 0u; u < CPT; u = u + 1u) {
            acc[u] = acc[u] * alpha;
        }
        var lt = 0.0;
        for (var j = 0u; j < BK; j = j + 1u) {
            let pj = ps[r * PS + j];
            lt = lt + pj;
            for (var u = 0u; u < CPT; u = u + 1u) {
                acc[u] = acc[u] + pj * kv[j * HS + t + u * T];
            }
        }
        l = l * alpha + lt;
        // The next tile's first barrier keeps kv and ps until every thread is done.
    }
    if (!job.valid || i >= p[2]) {
        return;
    }
    let row = job.bh * p[2] + i;
    // A row with no visible key: out = 0 and lse = -inf, as on the CPU.
    var inv = 0.0;
    if (l > 0.0) {
        inv = 1.0 / l;
    }
    for (var u = 0u; u < CPT; u = u + 1u) {
        let c = job.chunk * HC + t + u * T;
        if (c < p[5]) {
            out[row * p[5] + c] = acc[u] * inv;
        }
    }
    if (job.chunk == 0u && t == 0u) {
        if (l > 0.0) {
            lse[row] = m + log(l);
        } else {
            lse[row] = bitcast<f32>(0xff800000u);
        }
    }
}
#elif DELTA
@group(0) @binding(0) var<storage, read> out: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read_write> delta: array<f32>;
@group(0) @binding(3) var<storage, read> p: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = gid.x + gid.y * nwg.x * 256u;
    if (row >= p[0]) {
        return;
    }
    let dv = p[5];
    var d = 0.0;
    for (var c = 0u; c < dv; c = c + 1u) {
        d = d + dout[row * dv + c] * out[row * dv + c];
    }
    delta[row] = d;
}
#elif DKDV
@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read> mask: array<f32>;
@group(0) @binding(4) var<storage, read> dout: array<f32>;
@group(0) @binding(5) var<storage, read> lse: array<f32>;
@group(0) @binding(6) var<storage, read> delta: array<f32>;
@group(0) @binding(7) var<storage, read_write> dk: array<f32>;
@group(0) @binding(8) var<storage, read_write> dv: array<f32>;
@group(0) @binding(9) var<storage, read> p: array<u32>;

const ROWS: u32 = 16u; // keys per workgroup
const BQ: u32 = 16u; // queries per tile
const SPT: u32 = BQ / T;
const PS: u32 = BQ + 1u;
const WG: u32 = ROWS * T;
var<workgroup> ks: array<f32, ROWS * HS>; // [ROWS, HC] key chunk
var<workgroup> vs: array<f32, ROWS * HS>; // [ROWS, HC] value chunk
var<workgroup> qs: array<f32, BQ * HS>; // [BQ, HC] query chunk
var<workgroup> dos: array<f32, BQ * HS>; // [BQ, HC] dout chunk
var<workgroup> ps: array<f32, ROWS * PS>; // [ROWS, BQ] P^T of the tile
var<workgroup> dss: array<f32, ROWS * PS>; // [ROWS, BQ] dS^T of the tile
var<workgroup> lses: array<f32, BQ>;
var<workgroup> deltas: array<f32, BQ>;

fn stage_keys(lid: u32, bh: u32, row0: u32, dc: u32) {
    for (var e = lid; e < ROWS * HC; e = e + WG) {
        let s = tile_src(e, bh * p[3], row0, p[3], dc * HC, p[4]);
        ks[slot(e)] = 0.0;
        if (s != NONE) {
            ks[slot(e)] = k[s];
        }
    }
}

fn stage_values(lid: u32, bh: u32, row0: u32, vc: u32) {
    for (var e = lid; e < ROWS * HC; e = e + WG) {
        let s = tile_src(e, bh * p[3], row0, p[3], vc * HC, p[5]);
        vs[slot(e)] = 0.0;
        if (s != NONE) {
            vs[slot(e)] = v[s];
        }
    }
}

fn stage_queries(lid: u32, bh: u32, i0: u32, dc: u32) {
    for (var e = lid; e < BQ * HC; e = e + WG) {
        let s = tile_src(e, bh * p[2], i0, p[2], dc * HC, p[4]);
        qs[slot(e)] = 0.0;
        if (s != NONE) {
            qs[slot(e)] = q[s];
        }
    }
}

fn stage_douts(lid: u32, bh: u32, i0: u32, vc: u32) {
    for (var e = lid; e < BQ * HC; e = e + WG) {
        let s = tile_src(e, bh * p[2], i0, p[2], vc * HC, p[5]);
        dos[slot(e)] = 0.0;
        if (s != NONE) {
            dos[slot(e)] = dout[s];
        }
    }
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid3: vec3<u32>) {
    let job = job_of(wid, nwg, ROWS);
    let lid = lid3.x;
    let r = lid / T;
    let t = lid % T;
    let j = job.row0 + r; // this thread's key
    let n_q = p[2];
    let nd = p[6];
    let ndv = p[7];
    // Causal: queries before the block's first key see none of its keys.
    var q_start = 0u;
    if (p[8] != 0u) {
        q_start = job.row0;
    }
    if (!job.valid) {
        q_start = n_q;
    }
    var gk: array<f32, CPT>;
    var gv: array<f32, CPT>;
    for (var i0 = q_start; i0 < n_q; i0 = i0 + BQ) {
        // The last tile's reads of lses and deltas ended at its final barrier.
        if (lid < BQ) {
            let i = i0 + lid;
            lses[lid] = 0.0;
            deltas[lid] = 0.0;
            if (i < n_q) {
                lses[lid] = lse[job.bh * n_q + i];
                deltas[lid] = delta[job.bh * n_q + i];
            }
        }
        // s[u] = k_j . q_(i0 + t + u T) and dp[u] = v_j . dout_(i0 + t + u T), by chunks;
        // the key block's own chunks stay put when there is only one.
        var s: array<f32, SPT>;
        var dp: array<f32, SPT>;
        for (var u = 0u; u < SPT; u = u + 1u) {
            s[u] = 0.0;
            dp[u] = 0.0;
        }
        for (var dc = 0u; dc < nd; dc = dc + 1u) {
            workgroupBarrier();
            if (nd > 1u || i0 == q_start) {
                stage_keys(lid, job.bh, job.row0, dc);
            }
            stage_queries(lid, job.bh, i0, dc);
            workgroupBarrier();
            for (var c = 0u; c < HC; c = c + 1u) {
                let kc = ks[r * HS + c];
                for (var u = 0u; u < SPT; u = u + 1u) {
                    s[u] = s[u] + kc * qs[(t + u * T) * HS + c];
                }
            }
        }
        for (var vc = 0u; vc < ndv; vc = vc + 1u) {
            workgroupBarrier();
            if (ndv > 1u || i0 == q_start) {
                stage_values(lid, job.bh, job.row0, vc);
            }
            stage_douts(lid, job.bh, i0, vc);
            workgroupBarrier();
            for (var c = 0u; c < HC; c = c + 1u) {
                let vjc = vs[r * HS + c];
                for (var u = 0u; u < SPT; u = u + 1u) {
                    dp[u] = dp[u] + vjc * dos[(t + u * T) * HS + c];
                }
            }
        }
        workgroupBarrier();
        for (var u = 0u; u < SPT; u = u + 1u) {
            let ii = t + u * T;
            let i = i0 + ii;
            var pu = 0.0;
            var dsu = 0.0;
            // A fully masked row has no visible key, so its lse (-inf) is never used.
            if (i < n_q && j < p[3] && visible(job.bh, i, j)) {
                pu = exp(s[u] * scale() - lses[ii]);
                dsu = pu * (dp[u] - deltas[ii]) * scale();
            }
            ps[r * PS + ii] = pu;
            dss[r * PS + ii] = dsu;
        }
        // The products need the chunk this workgroup writes; with one chunk it is there.
        if (nd > 1u) {
            stage_queries(lid, job.bh, i0, job.chunk);
        }
        if (ndv > 1u) {
            stage_douts(lid, job.bh, i0, job.chunk);
        }
        workgroupBarrier();
        for (var ii = 0u; ii < BQ; ii = ii + 1u) {
            let pv = ps[r * PS + ii];
            let dsv = dss[r * PS + ii];
            for (var u = 0u; u < CPT; u = u + 1u) {
                gv[u] = gv[u] + pv * dos[ii * HS + t + u * T];
                gk[u] = gk[u] + dsv * qs[ii * HS + t + u * T];
            }
        }
    }
    if (!job.valid || j >= p[3]) {
        return;
    }
    let row = job.bh * p[3] + j;
    for (var u = 0u; u < CPT; u = u + 1u) {
        let c = job.chunk * HC + t + u * T;
        if (c < p[4]) {
            dk[row * p[4] + c] = gk[u];
        }
        if (c < p[5]) {
            dv[row * p[5] + c] = gv[u];
        }
    }
}
#elif DQ
@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read> mask: array<f32>;
@group(0) @binding(4) var<storage, read> dout: array<f32>;
@group(0) @binding(5) var<storage, read> lse: array<f32>;
@group(0) @binding(6) var<storage, read> delta: array<f32>;
@group(0) @binding(7) var<storage, read_write> dq: array<f32>;
@group(0) @binding(8) var<storage, read> p: array<u32>;

const ROWS: u32 = 16u; // queries per workgroup
const BK: u32 = 16u; // keys per tile
const SPT: u32 = BK / T;
const PS: u32 = BK + 1u;
const WG: u32 = ROWS * T;
var<workgroup> qs: array<f32, ROWS * HS>; // [ROWS, HC] query chunk
var<workgroup> dos: array<f32, ROWS * HS>; // [ROWS, HC] dout chunk
var<workgroup> ks: array<f32, BK * HS>; // [BK, HC] key chunk
var<workgroup> vs: array<f32, BK * HS>; // [BK, HC] value chunk
var<workgroup> dss: array<f32, ROWS * PS>; // [ROWS, BK] dS of the tile

fn stage_queries(lid: u32, bh: u32, row0: u32, dc: u32) {
    for (var e = lid; e < ROWS * HC; e = e + WG) {
        let s = tile_src(e, bh * p[2], row0, p[2], dc * HC, p[4]);
        qs[slot(e)] = 0.0;
        if (s != NONE) {
            qs[slot(e)] = q[s];
        }
    }
}

fn stage_douts(lid: u32, bh: u32, row0: u32, vc: u32) {
    for (var e = lid; e < ROWS * HC; e = e + WG) {
        let s = tile_src(e, bh * p[2], row0, p[2], vc * HC, p[5]);
        dos[slot(e)] = 0.0;
        if (s != NONE) {
            dos[slot(e)] = dout[s];
        }
    }
}

fn stage_keys(lid: u32, bh: u32, k0: u32, dc: u32) {
    for (var e = lid; e < BK * HC; e = e + WG) {
        let s = tile_src(e, bh * p[3], k0, p[3], dc * HC, p[4]);
        ks[slot(e)] = 0.0;
        if (s != NONE) {
            ks[slot(e)] = k[s];
        }
    }
}

fn stage_values(lid: u32, bh: u32, k0: u32, vc: u32) {
    for (var e = lid; e < BK * HC; e = e + WG) {
        let s = tile_src(e, bh * p[3], k0, p[3], vc * HC, p[5]);
        vs[slot(e)] = 0.0;
        if (s != NONE) {
            vs[slot(e)] = v[s];
        }
    }
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid3: vec3<u32>) {
    let job = job_of(wid, nwg, ROWS);
    let lid = lid3.x;
    let r = lid / T;
    let t = lid % T;
    let i = job.row0 + r; // this thread's query
    let n_keys = p[3];
    let nd = p[6];
    let ndv = p[7];
    var key_end = n_keys;
    if (p[8] != 0u) {
        key_end = min(n_keys, job.row0 + ROWS);
    }
    if (!job.valid) {
        key_end = 0u;
    }
    var lse_i = 0.0;
    var delta_i = 0.0;
    if (job.valid && i < p[2]) {
        lse_i = lse[job.bh * p[2] + i];
        delta_i = delta[job.bh * p[2] + i];
    }
    var gq: array<f32, CPT>;
    for (var k0 = 0u; k0 < key_end; k0 = k0 + BK) {
        // s[u] = q_i . k_(k0 + t + u T) and dp[u] = dout_i . v_(k0 + t + u T).
        var s: array<f32, SPT>;
        var dp: array<f32, SPT>;
        for (var u = 0u; u < SPT; u = u + 1u) {
            s[u] = 0.0;
            dp[u] = 0.0;
        }
        for (var dc = 0u; dc < nd; dc = dc + 1u) {
            workgroupBarrier();
            if (nd > 1u || k0 == 0u) {
                stage_queries(lid, job.bh, job.row0, dc);
            }
            stage_keys(lid, job.bh, k0, dc);
            workgroupBarrier();
            for (var c = 0u; c < HC; c = c + 1u) {
                let qc = qs[r * HS + c];
                for (var u = 0u; u < SPT; u = u + 1u) {
                    s[u] = s[u] + qc * ks[(t + u * T) * HS + c];
                }
            }
        }
        for (var vc = 0u; vc < ndv; vc = vc + 1u) {
            workgroupBarrier();
            if (ndv > 1u || k0 == 0u) {
                stage_douts(lid, job.bh, job.row0, vc);
            }
            stage_values(lid, job.bh, k0, vc);
            workgroupBarrier();
            for (var c = 0u; c < HC; c = c + 1u) {
                let dic = dos[r * HS + c];
                for (var u = 0u; u < SPT; u = u + 1u) {
                    dp[u] = dp[u] + dic * vs[(t + u * T) * HS + c];
                }
            }
        }
        workgroupBarrier();
        for (var u = 0u; u < SPT; u = u + 1u) {
            let j = k0 + t + u * T;
            var dsu = 0.0;
            if (i < p[2] && j < n_keys && visible(job.bh, i, j)) {
                dsu = exp(s[u] * scale() - lse_i) * (dp[u] - delta_i) * scale();
            }
            dss[r * PS + t + u * T] = dsu;
        }
        if (nd > 1u) {
            stage_keys(lid, job.bh, k0, job.chunk);
        }
        workgroupBarrier();
        for (var jj = 0u; jj < BK; jj = jj + 1u) {
            let dsv = dss[r * PS + jj];
            for (var u = 0u; u < CPT; u = u + 1u) {
                gq[u] = gq[u] + dsv * ks[jj * HS + t + u * T];
            }
        }
    }
    if (!job.valid || i >= p[2]) {
        return;
    }
    let row = job.bh * p[2] + i;
    for (var u = 0u; u < CPT; u = u + 1u) {
        let c = job.chunk * HC + t + u * T;
        if (c < p[4]) {
            dq[row * p[4] + c] = gq[u];
        }
    }
}
#endif
