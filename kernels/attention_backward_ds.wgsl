// Standard attention backward, step 2 of 3: the gradient of the scores of
// every (batch, head), scaled by 1/√d so that step 3 needs no scale:
//   dP[i, j] = dout_i · v_j,   ds[b, h, i, j] = P[i, j] · (dP[i, j] − delta_i) / √d
// A workgroup of 64 invocations computes a 32×32 tile; each invocation owns
// a 4×4 block (rows ty + 8a, columns tx + 8b), as attention_scores.wgsl.
// Causal: tiles entirely above the diagonal are skipped (never read by step
// 3); inside the diagonal tiles P is exactly 0 above the diagonal, so ds is.
//
// Bindings: 1 = dout rows and 2 = qkv rows of the batches in this dispatch,
// 3 = probabilities and 5 = ds rows of the (batch, head) pairs in this
// dispatch, 4 = delta [B, H, N] (whole).

{{include grid}}

struct Params {
  n_tokens: u32,    // N
  heads: u32,       // H
  head_dim: u32,    // d
  width: u32,       // C = H·d
  units: u32,       // (batch, head) pairs in this dispatch
  unit0: u32,       // first pair, counted from the first batch bound in bindings 1 and 2
  g_base: u32,      // element index of the first bound batch in binding 1
  qkv_base: u32,    // element index of the first bound batch in binding 2
  p_base: u32,      // element index of the first pair's probabilities in binding 3
  s_base: u32,      // element index of the first pair's ds in binding 5
  delta_pair0: u32, // global pair index of this dispatch's first pair (for delta)
  scale: f32,       // 1/√d
  causal: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read> qkv: array<f32>;
@group(0) @binding(3) var<storage, read> probs: array<f32>;
@group(0) @binding(4) var<storage, read> delta: array<f32>;
@group(0) @binding(5) var<storage, read_write> ds: array<f32>;

const TILE: u32 = 32u;
const KC: u32 = 16u;

var<workgroup> g_slab: array<array<f32, TILE>, KC>; // [k][query]
var<workgroup> v_slab: array<array<f32, TILE>, KC>; // [k][key]

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
  let c = params.width;
  let g_col = params.g_base + b * n * c + h * d;
  let v_col = params.qkv_base + b * n * 3u * c + 2u * c + h * d;
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
      var gv = 0.0;
      var vv = 0.0;
      if (k0 + k < d) {
        if (i0 + r < n) {
          gv = dout[g_col + (i0 + r) * c + k0 + k];
        }
        if (j0 + r < n) {
          vv = qkv[v_col + (j0 + r) * 3u * c + k0 + k];
        }
      }
      g_slab[k][r] = gv;
      v_slab[k][r] = vv;
    }
    workgroupBarrier();
    for (var k = 0u; k < KC; k++) {
      let ga = vec4f(g_slab[k][ty], g_slab[k][ty + 8u], g_slab[k][ty + 16u], g_slab[k][ty + 24u]);
      let vb = vec4f(v_slab[k][tx], v_slab[k][tx + 8u], v_slab[k][tx + 16u], v_slab[k][tx + 24u]);
      acc[0] += ga.x * vb;
      acc[1] += ga.y * vb;
      acc[2] += ga.z * vb;
      acc[3] += ga.w * vb;
    }
  }

  let head = unit * n * n;
  let delta_row = (params.delta_pair0 + unit) * n;
  for (var a = 0u; a < 4u; a++) {
    let i = i0 + ty + 8u * a;
    if (i < n) {
      let di = delta[delta_row + i];
      for (var col = 0u; col < 4u; col++) {
        let j = j0 + tx + 8u * col;
        if (j < n) {
          let p = probs[params.p_base + head + i * n + j];
          ds[params.s_base + head + i * n + j] = p * (acc[a][col] - di) * params.scale;
        }
      }
    }
  }
}
