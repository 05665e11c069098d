// Softmax over the last dimension, numerically stable:
//   y[r, c] = exp(x[r, c] − max_c x[r, ·]) / Σ_c exp(x[r, c] − max_c x[r, ·]).
// Two designs (src/ops/softmax.ts chooses by measuring):
//   main: one workgroup per row (flat workgroup index folded over 65535); the
//         row's maximum and sum are tree-reduced in workgroup memory (GPUs);
//   row:  one invocation per row, serial, no barrier (CPUs); WG rows per
//         workgroup.
//
// Bindings: 1 = x, 2 = y; a piece of rows of both starts at element `base`.

{{include grid}}
{{include softmax_row}}
{{include softmax_serial}}

struct Params {
  rows: u32, // rows in this piece
  cols: u32, // C
  base: u32, // element offset of the piece's first row inside both bindings
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

const WG: u32 = {{workgroupSize}}u; // a power of two

fn softmax_row_input(i: u32) -> f32 {
  return x[i];
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = flat_workgroup(wid, nwg);
  if (row >= params.rows) {
    return; // uniform: the whole workgroup leaves together
  }
  let cols = params.cols;
  let start = params.base + row * cols;
  let stats = softmax_row_stats(lid, start, cols);
  let m = stats.x;
  let inv = 1.0 / stats.y;
  for (var c = lid; c < cols; c += WG) {
    y[start + c] = exp(x[start + c] - m) * inv;
  }
}

@compute @workgroup_size(WG)
fn row(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let r = flat_workgroup(wid, nwg) * WG + lid;
  if (r >= params.rows) {
    return;
  }
  let cols = params.cols;
  let start = params.base + r * cols;
  let stats = softmax_serial_stats(start, cols);
  let inv = 1.0 / stats.y;
  for (var c = 0u; c < cols; c++) {
    y[start + c] = exp(x[start + c] - stats.x) * inv;
  }
}
