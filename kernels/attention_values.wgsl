// Standard attention, step 3 of 3: out = P · V per (batch, head),
//   out[b, i, h·d + c] = Σ_j p[b, h, i, j] · v[b, j, h·d + c],
// heads concatenated in the output's last dimension.
//
// A workgroup of 64 invocations computes a 32-query × 32-column tile of one
// head's output; each invocation owns a 4×4 block (rows ty + 8a, columns
// tx + 8b). The keys are walked in chunks of KC: a 32×KC slab of
// probabilities and a KC×32 slab of values are staged in workgroup memory.
// Causal: the walk stops after the tile's last query (later columns of P are
// zero).
//
// Bindings: 1 = scores rows of the pairs in this dispatch (probabilities,
// after attention_softmax), 2 = qkv rows of the batches in this dispatch,
// 3 = out rows of the same batches.

{{include grid}}

struct Params {
  n_tokens: u32,  // N
  heads: u32,     // H
  head_dim: u32,  // d
  width: u32,     // C = H·d
  units: u32,     // (batch, head) pairs in this dispatch
  unit0: u32,     // first pair, counted from the first batch bound in bindings 2 and 3
  qkv_base: u32,  // element index of the first bound batch in binding 2
  o_base: u32,    // element index of the first bound batch in binding 3
  s_base: u32,    // element index of the first pair's scores in binding 1
  causal: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> probs: array<f32>;
@group(0) @binding(2) var<storage, read> qkv: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const TILE: u32 = 32u;
const KC: u32 = 16u;

var<workgroup> p_slab: array<array<f32, TILE>, KC>; // [key][row]
var<workgroup> v_slab: array<array<f32, TILE>, KC>; // [key][column]

@compute @workgroup_size(64)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let group = flat_workgroup(wid, nwg);
  let n = params.n_tokens;
  let d = params.head_dim;
  let row_tiles = (n + TILE - 1u) / TILE;
  let col_tiles = (d + TILE - 1u) / TILE;
  if (group >= params.units * row_tiles * col_tiles) {
    return; // uniform
  }
  let tc = group % col_tiles;
  let ti = (group / col_tiles) % row_tiles;
  let unit = group / (col_tiles * row_tiles);
  let pair = params.unit0 + unit;
  let b = pair / params.heads;
  let h = pair % params.heads;
  let c3 = 3u * params.width;
  let i0 = ti * TILE;
  let c0 = tc * TILE;
  let tx = lid % 8u;
  let ty = lid / 8u;
  let head_probs = params.s_base + unit * n * n;
  let v_col = params.qkv_base + b * n * c3 + 2u * params.width + h * d;

  var key_end = n;
  if (params.causal != 0u) {
    key_end = min(n, i0 + TILE);
  }

  var acc: array<vec4f, 4>; // acc[a][bcol]: row ty + 8a, column tx + 8·bcol
  for (var j0 = 0u; j0 < key_end; j0 += KC) {
    workgroupBarrier();
    for (var e = lid; e < TILE * KC; e += 64u) {
      // probabilities: neighbouring invocations read neighbouring keys of a row
      let r = e / KC;
      let k = e % KC;
      var p = 0.0;
      if (i0 + r < n && j0 + k < key_end) {
        p = probs[head_probs + (i0 + r) * n + j0 + k];
      }
      p_slab[k][r] = p;
      // values: neighbouring invocations read neighbouring columns of a key
      let vk = e / TILE;
      let vc = e % TILE;
      var v = 0.0;
      if (j0 + vk < key_end && c0 + vc < d) {
        v = qkv[v_col + (j0 + vk) * c3 + c0 + vc];
      }
      v_slab[vk][vc] = v;
    }
    workgroupBarrier();
    for (var k = 0u; k < KC; k++) {
      let pa = vec4f(p_slab[k][ty], p_slab[k][ty + 8u], p_slab[k][ty + 16u], p_slab[k][ty + 24u]);
      let vb = vec4f(v_slab[k][tx], v_slab[k][tx + 8u], v_slab[k][tx + 16u], v_slab[k][tx + 24u]);
      acc[0] += pa.x * vb;
      acc[1] += pa.y * vb;
      acc[2] += pa.z * vb;
      acc[3] += pa.w * vb;
    }
  }

  let out_rows = params.o_base + b * n * params.width + h * d;
  for (var a = 0u; a < 4u; a++) {
    let i = i0 + ty + 8u * a;
    if (i < n) {
      for (var c = 0u; c < 4u; c++) {
        let col = c0 + tx + 8u * c;
        if (col < d) {
          out[out_rows + i * params.width + col] = acc[a][c];
        }
      }
    }
  }
}
