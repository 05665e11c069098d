// Softmax over the last dimension, numerically stable:
//   y[r, c] = exp(x[r, c] − max_c x[r, ·]) / Σ_c exp(x[r, c] − max_c x[r, ·]).
// One workgroup per row (flat workgroup index folded over 65535); the row's
// maximum and sum are tree-reduced in workgroup memory.
//
// Bindings: 1 = x, 2 = y; a piece of rows of both starts at element `base`.

struct Params {
  rows: u32, // rows in this piece
  cols: u32, // C
  base: u32, // element offset of the piece's first row inside both bindings
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

const WG: u32 = {{workgroupSize}}u; // a power of two

var<workgroup> partial: array<f32, WG>;

fn reduce_max(lid: u32, v: f32) -> f32 {
  partial[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (lid < s) {
      partial[lid] = max(partial[lid], partial[lid + s]);
    }
    workgroupBarrier();
  }
  let r = partial[0];
  workgroupBarrier(); // everyone has read before the next reduction writes
  return r;
}

fn reduce_sum(lid: u32, v: f32) -> f32 {
  partial[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (lid < s) {
      partial[lid] = partial[lid] + partial[lid + s];
    }
    workgroupBarrier();
  }
  let r = partial[0];
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y;
  if (row >= params.rows) {
    return; // uniform: the whole workgroup leaves together
  }
  let cols = params.cols;
  let start = params.base + row * cols;

  // Lowest finite f32 (WGSL has no infinity literal, and implementations may
  // assume no infinities: mask with large negative finite values, not −inf).
  var m = -3.40282347e38;
  for (var c = lid; c < cols; c += WG) {
    m = max(m, x[start + c]);
  }
  m = reduce_max(lid, m);

  var s = 0.0;
  for (var c = lid; c < cols; c += WG) {
    s += exp(x[start + c] - m);
  }
  let inv = 1.0 / reduce_sum(lid, s);

  for (var c = lid; c < cols; c += WG) {
    y[start + c] = exp(x[start + c] - m) * inv;
  }
}
