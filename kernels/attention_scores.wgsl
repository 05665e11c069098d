// Standard attention, step 1 of 3: the scaled scores of every (batch, head),
//   s[b, h, i, j] = (q_i · k_j) / √d,
// written to the materialised scores tensor [B, H, N, N] (the quadratic
// memory is the point of this baseline; flash_attention.wgsl avoids it).
//
// A workgroup of 64 invocations computes a 32×32 tile of one head's scores;
// each invocation owns a 4×4 block (rows ty + 8a, columns tx + 8b, so that
// neighbouring invocations write neighbouring columns). The head dimension is
// walked in chunks of KC: a 32×KC slab of queries and of keys is staged in
// workgroup memory (neighbouring invocations load neighbouring floats).
// Causal: tiles entirely above the diagonal are skipped; the softmax step
// masks the rest.
//
// Bindings: 1 = qkv rows of the batches in this dispatch, 2 = scores rows of
// the heads in this dispatch.

{{include grid}}

struct Params {
  n_tokens: u32,  // N
  heads: u32,     // H
  head_dim: u32,  // d
  width: u32,     // C = H·d
  units: u32,     // (batch, head) pairs in this dispatch
  unit0: u32,     // first pair, counted from the first batch bound in binding 1
  qkv_base: u32,  // element index of the first bound batch in binding 1
  s_base: u32,    // element index of the first pair's scores in binding 2
  scale: f32,     // 1/√d
  causal: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read_write> scores: array<f32>;

const TILE: u32 = 32u;
const KC: u32 = 16u;

var<workgroup> q_slab: array<array<f32, TILE>, KC>; // [k][row]
var<workgroup> k_slab: array<array<f32, TILE>, KC>; // [k][key]

@compute @workgroup_size(64)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let group = flat_workgroup(wid, nwg);
  let n = params.n_tokens;
  let tiles = (n + TILE - 1u) / TILE;
  if (group >= params.units * tiles * tiles) {
    return; // uniform
  }
  let tj = group % tiles;
  let ti = (group / tiles) % tiles;
  let unit = group / (tiles * tiles);
  if (params.causal != 0u && tj > ti) {
    return; // uniform: the tile lies above the diagonal
  }
  let pair = params.unit0 + unit;
  let b = pair / params.heads;
  let h = pair % params.heads;
  let d = params.head_dim;
  let c3 = 3u * params.width;
  let head_col = params.qkv_base + b * n * c3 + h * d;
  let i0 = ti * TILE;
  let j0 = tj * TILE;
  let tx = lid % 8u;
  let ty = lid / 8u;

  var acc: array<vec4f, 4>; // acc[a][bcol]: row ty + 8a, column tx + 8·bcol
  for (var k0 = 0u; k0 < d; k0 += KC) {
    workgroupBarrier();
    for (var e = lid; e < TILE * KC; e += 64u) {
      let r = e / KC;
      let k = e % KC;
      var qv = 0.0;
      var kv = 0.0;
      if (k0 + k < d) {
        if (i0 + r < n) {
          qv = qkv[head_col + (i0 + r) * c3 + k0 + k];
        }
        if (j0 + r < n) {
          kv = qkv[head_col + (j0 + r) * c3 + params.width + k0 + k];
        }
      }
      q_slab[k][r] = qv;
      k_slab[k][r] = kv;
    }
    workgroupBarrier();
    for (var k = 0u; k < KC; k++) {
      let qa = vec4f(q_slab[k][ty], q_slab[k][ty + 8u], q_slab[k][ty + 16u], q_slab[k][ty + 24u]);
      let kb = vec4f(k_slab[k][tx], k_slab[k][tx + 8u], k_slab[k][tx + 16u], k_slab[k][tx + 24u]);
      acc[0] += qa.x * kb;
      acc[1] += qa.y * kb;
      acc[2] += qa.z * kb;
      acc[3] += qa.w * kb;
    }
  }

  let head_scores = params.s_base + unit * n * n;
  for (var a = 0u; a < 4u; a++) {
    let i = i0 + ty + 8u * a;
    if (i < n) {
      for (var c = 0u; c < 4u; c++) {
        let j = j0 + tx + 8u * c;
        if (j < n) {
          scores[head_scores + i * n + j] = acc[a][c] * params.scale;
        }
      }
    }
  }
}
