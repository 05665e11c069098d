// Column sums down the rows of [rows, C] matrices, over blocks of rows: the
// parameter gradients that are sums over tokens (biases, LayerNorm's weight
// and bias, layer scales, position embeddings).
//
//   sums        out[c]  = Σ_r src[r, c]
//   layer_norm  out1[c] = Σ_r dy[r, c] · (x[r, c] − mean_r) · rstd_r   (∂w)
//               out2[c] = Σ_r dy[r, c]                                 (∂b)
//               with (mean_r, rstd_r) = stats[r], saved by the row pass
//   residual    out[c]  = Σ_r dy[r, c] · f[r, c]                       (∂γ)
//               and df[r, c] = γ[c] · dy[r, c] written on the way
//
// Σ_r runs over the rows of one block (`block_rows` rows). With one block
// (params.blocks == 1) the sums are ADDED into the outputs ([C] gradients);
// with several, each block stores its partial sums into the outputs, then
// [blocks, C] tensors that the driver (src/ops/column_sums.ts) sums again.
//
// One invocation per (block, lane of columns); a lane is one value (slot
// vecType f32) or four (vec4f: C a multiple of 4), and neighbouring
// invocations take neighbouring lanes, so every row is read contiguously.
// Each invocation sums its rows in order: no barriers, no atomics, the same
// bits every run. Long blocks of vec4 lanes suit CPUs (lavapipe); short
// blocks of scalar lanes give a GPU enough invocations.

{{include grid}}

alias V = {{vecType}};
const WG: u32 = 64u;

struct Params {
  rows: u32,       // rows of the matrices
  lanes: u32,      // lanes per row: C, or C / 4
  block_rows: u32, // rows summed by one invocation
  blocks: u32,     // ceil(rows / block_rows); 1: add into the outputs
}

@group(0) @binding(0) var<uniform> params: Params;

// sums: 1 = src [rows, C], 2 = out
@group(0) @binding(1) var<storage, read> src: array<V>;
@group(0) @binding(2) var<storage, read_write> out: array<V>;

// layer_norm: 1 = dy, 2 = x, 3 = stats [rows] (mean, rstd), 4 = out1 (∂w), 5 = out2 (∂b)
// residual:   1 = dy, 2 = f (declared as x), 3 = gamma [C], 4 = df [rows, C], 5 = res_out (∂γ)
@group(0) @binding(1) var<storage, read> dy: array<V>;
@group(0) @binding(2) var<storage, read> x: array<V>;
@group(0) @binding(3) var<storage, read> stats: array<vec2f>;
@group(0) @binding(4) var<storage, read_write> out1: array<V>;
@group(0) @binding(5) var<storage, read_write> out2: array<V>;
@group(0) @binding(3) var<storage, read> gamma: array<V>;
@group(0) @binding(4) var<storage, read_write> df: array<V>;
@group(0) @binding(5) var<storage, read_write> res_out: array<V>;

// The block and lane of this invocation, and its rows [r0, r1): none past the end.
struct Cell {
  lane: u32,
  block: u32,
  r0: u32,
  r1: u32,
}

fn cell(wid: vec3u, nwg: vec3u, lid: u32) -> Cell {
  let i = flat_workgroup(wid, nwg) * WG + lid;
  let lanes = params.lanes;
  let block = i / lanes;
  let r0 = min(block * params.block_rows, params.rows);
  if (block >= params.blocks) {
    return Cell(0u, block, r0, r0);
  }
  return Cell(i % lanes, block, r0, min(r0 + params.block_rows, params.rows));
}

// Where a sum goes: added into [C] with one block, stored as a partial sum otherwise.
fn slot(c: Cell) -> u32 {
  return select(c.block * params.lanes + c.lane, c.lane, params.blocks == 1u);
}

@compute @workgroup_size(WG)
fn sums(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let c = cell(wid, nwg, lid);
  if (c.block >= params.blocks) {
    return;
  }
  var acc = V(0.0);
  for (var r = c.r0; r < c.r1; r++) {
    acc += src[r * params.lanes + c.lane];
  }
  let o = slot(c);
  if (params.blocks == 1u) {
    out[o] += acc;
  } else {
    out[o] = acc;
  }
}

@compute @workgroup_size(WG)
fn layer_norm(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let c = cell(wid, nwg, lid);
  if (c.block >= params.blocks) {
    return;
  }
  var aw = V(0.0);
  var ab = V(0.0);
  for (var r = c.r0; r < c.r1; r++) {
    let s = stats[r];
    let k = r * params.lanes + c.lane;
    let d = dy[k];
    aw += d * ((x[k] - s.x) * s.y);
    ab += d;
  }
  let o = slot(c);
  if (params.blocks == 1u) {
    out1[o] += aw;
    out2[o] += ab;
  } else {
    out1[o] = aw;
    out2[o] = ab;
  }
}

@compute @workgroup_size(WG)
fn residual(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let c = cell(wid, nwg, lid);
  if (c.block >= params.blocks) {
    return;
  }
  let g = gamma[c.lane];
  var acc = V(0.0);
  for (var r = c.r0; r < c.r1; r++) {
    let k = r * params.lanes + c.lane;
    let d = dy[k];
    df[k] = g * d;
    acc += d * x[k];
  }
  let o = slot(c);
  if (params.blocks == 1u) {
    res_out[o] += acc;
  } else {
    res_out[o] = acc;
  }
}
