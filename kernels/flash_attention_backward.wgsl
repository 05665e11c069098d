// Flash attention backward, step 2 of 2: the gradients of q, k and v from
// recomputed probabilities (the N×N matrices never exist). Per (batch, head),
// with s_ij = q_i · k_j · log2(e)/√d, P_ij = 2^(s_ij − lse_i) (step 1):
//   dq:   ∂q_i = (1/√d) Σ_j P_ij (dout_i · v_j − delta_i) k_j
//   dkdv: ∂v_j = Σ_i P_ij dout_i,
//         ∂k_j = (1/√d) Σ_i P_ij (dout_i · v_j − delta_i) q_i
// Causal: only pairs j ≤ i.
//
// `dq`: one workgroup owns ROWS queries of one (batch, head), one invocation
// per query (q, dout and the ∂q accumulator in registers); keys and values
// are staged TILE rows at a time in workgroup memory. `dkdv`: one workgroup
// owns ROWS keys, one invocation per key (k, v and both accumulators in
// registers); queries and their dout, lse and delta are staged. Each entry
// point writes its own columns of dqkv, so nothing is accumulated across
// workgroups.
//
// Bindings (whole tensors): 1 = qkv [B, N, 3C], 2 = dout [B, N, C],
// 3 = lse [B, H, N], 4 = delta [B, H, N], 5 = dqkv [B, N, 3C].

{{include grid}}

struct Params {
  n_tokens: u32, // N
  heads: u32,    // H
  head_dim: u32, // d
  width: u32,    // C = H·d
  batches: u32,  // B
  scale: f32,    // log2(e)/√d
  inv_sqrt_d: f32,
  causal: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read> lse: array<f32>;
@group(0) @binding(4) var<storage, read> delta: array<f32>;
@group(0) @binding(5) var<storage, read_write> dqkv: array<f32>;

const ROWS: u32 = {{rows}}u;       // rows owned per workgroup = invocations
const TILE: u32 = {{tileRows}}u;   // rows per staged tile
const D4: u32 = {{headVec4s}}u;    // ⌈d/4⌉
const DP: u32 = D4 * 4u;

var<workgroup> a_tile: array<vec4f, TILE * D4>; // dq: keys; dkdv: queries (scaled)
var<workgroup> b_tile: array<vec4f, TILE * D4>; // dq: values; dkdv: dout
var<workgroup> lse_tile: array<f32, TILE>;
var<workgroup> delta_tile: array<f32, TILE>;

struct Block {
  pair: u32,
  b: u32,
  h: u32,
  first: u32, // first row owned by the workgroup
  valid: bool,
}

fn block_of(group: u32) -> Block {
  let n = params.n_tokens;
  let blocks = (n + ROWS - 1u) / ROWS;
  var blk: Block;
  blk.valid = group < params.batches * params.heads * blocks;
  blk.pair = group / blocks;
  blk.b = blk.pair / params.heads;
  blk.h = blk.pair % params.heads;
  blk.first = (group % blocks) * ROWS;
  return blk;
}

// Row `t` (token) of head h of the q (part 0), k (1) or v (2) third of qkv.
fn load_qkv(b: u32, t: u32, h: u32, part: u32) -> array<vec4f, D4> {
  let c = params.width;
  let d = params.head_dim;
  let at = (b * params.n_tokens + t) * 3u * c + part * c + h * d;
  var r: array<vec4f, D4>;
  for (var k = 0u; k < D4; k++) {
    for (var e = 0u; e < 4u; e++) {
      let col = 4u * k + e;
      if (col < d) {
        r[k][e] = qkv[at + col];
      }
    }
  }
  return r;
}

fn load_dout(b: u32, t: u32, h: u32) -> array<vec4f, D4> {
  let d = params.head_dim;
  let at = (b * params.n_tokens + t) * params.width + h * d;
  var r: array<vec4f, D4>;
  for (var k = 0u; k < D4; k++) {
    for (var e = 0u; e < 4u; e++) {
      let col = 4u * k + e;
      if (col < d) {
        r[k][e] = dout[at + col];
      }
    }
  }
  return r;
}

fn store(b: u32, t: u32, h: u32, part: u32, v: array<vec4f, D4>) {
  let c = params.width;
  let d = params.head_dim;
  let at = (b * params.n_tokens + t) * 3u * c + part * c + h * d;
  for (var k = 0u; k < D4; k++) {
    for (var e = 0u; e < 4u; e++) {
      let col = 4u * k + e;
      if (col < d) {
        dqkv[at + col] = v[k][e];
      }
    }
  }
}

@compute @workgroup_size(ROWS)
fn dq(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let blk = block_of(flat_workgroup(wid, nwg));
  if (!blk.valid) {
    return; // uniform
  }
  let n = params.n_tokens;
  let c = params.width;
  let d = params.head_dim;
  let i = blk.first + lid;
  let ti = min(i, n - 1u);
  var q = load_qkv(blk.b, ti, blk.h, 0u);
  for (var k = 0u; k < D4; k++) {
    q[k] *= params.scale;
  }
  let g = load_dout(blk.b, ti, blk.h);
  let l_i = lse[blk.pair * n + ti];
  let d_i = delta[blk.pair * n + ti];
  var acc: array<vec4f, D4>;

  var k_end = n;
  if (params.causal != 0u) {
    k_end = min(n, blk.first + ROWS);
  }
  let kv_rows = blk.b * n * 3u * c + c + blk.h * d;
  for (var j0 = 0u; j0 < k_end; j0 += TILE) {
    workgroupBarrier();
    for (var e = lid; e < TILE * DP; e += ROWS) {
      let r = e / DP;
      let col = e % DP;
      var kv = vec2f(0.0);
      if (col < d && j0 + r < k_end) {
        let at = kv_rows + (j0 + r) * 3u * c + col;
        kv = vec2f(qkv[at], qkv[at + c]);
      }
      a_tile[r * D4 + col / 4u][col % 4u] = kv.x;
      b_tile[r * D4 + col / 4u][col % 4u] = kv.y;
    }
    workgroupBarrier();
    for (var r = 0u; r < TILE; r++) {
      let j = j0 + r;
      if (j < k_end && (params.causal == 0u || j <= ti)) {
        var s = 0.0;
        var dp = 0.0;
        for (var k = 0u; k < D4; k++) {
          s += dot(q[k], a_tile[r * D4 + k]);
          dp += dot(g[k], b_tile[r * D4 + k]);
        }
        let ds = exp2(s - l_i) * (dp - d_i);
        for (var k = 0u; k < D4; k++) {
          acc[k] += ds * a_tile[r * D4 + k];
        }
      }
    }
  }
  if (i < n) {
    for (var k = 0u; k < D4; k++) {
      acc[k] *= params.inv_sqrt_d;
    }
    store(blk.b, i, blk.h, 0u, acc);
  }
}

@compute @workgroup_size(ROWS)
fn dkdv(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let blk = block_of(flat_workgroup(wid, nwg));
  if (!blk.valid) {
    return; // uniform
  }
  let n = params.n_tokens;
  let c = params.width;
  let d = params.head_dim;
  let j = blk.first + lid;
  let tj = min(j, n - 1u);
  let kk = load_qkv(blk.b, tj, blk.h, 1u);
  let vv = load_qkv(blk.b, tj, blk.h, 2u);
  var dk: array<vec4f, D4>;
  var dv: array<vec4f, D4>;

  var i_begin = 0u;
  if (params.causal != 0u) {
    i_begin = blk.first; // queries before the block's first key see none of its keys
  }
  let q_rows = blk.b * n * 3u * c + blk.h * d;
  let g_rows = blk.b * n * c + blk.h * d;
  for (var i0 = i_begin; i0 < n; i0 += TILE) {
    workgroupBarrier();
    for (var e = lid; e < TILE * DP; e += ROWS) {
      let r = e / DP;
      let col = e % DP;
      var qg = vec2f(0.0);
      if (col < d && i0 + r < n) {
        qg = vec2f(qkv[q_rows + (i0 + r) * 3u * c + col], dout[g_rows + (i0 + r) * c + col]);
      }
      a_tile[r * D4 + col / 4u][col % 4u] = qg.x;
      b_tile[r * D4 + col / 4u][col % 4u] = qg.y;
    }
    for (var r = lid; r < TILE; r += ROWS) {
      let t = min(i0 + r, n - 1u);
      lse_tile[r] = lse[blk.pair * n + t];
      delta_tile[r] = delta[blk.pair * n + t];
    }
    workgroupBarrier();
    for (var r = 0u; r < TILE; r++) {
      let i = i0 + r;
      if (i < n && (params.causal == 0u || tj <= i)) {
        var s = 0.0;
        var dp = 0.0;
        for (var k = 0u; k < D4; k++) {
          s += dot(a_tile[r * D4 + k], kk[k]);
          dp += dot(b_tile[r * D4 + k], vv[k]);
        }
        let p = exp2(s * params.scale - lse_tile[r]);
        let ds = p * (dp - delta_tile[r]);
        for (var k = 0u; k < D4; k++) {
          dv[k] += p * b_tile[r * D4 + k];
          dk[k] += ds * a_tile[r * D4 + k];
        }
      }
    }
  }
  if (j < n) {
    for (var k = 0u; k < D4; k++) {
      dk[k] *= params.inv_sqrt_d;
    }
    store(blk.b, j, blk.h, 1u, dk);
    store(blk.b, j, blk.h, 2u, dv);
  }
}
