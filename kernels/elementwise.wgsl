// Elementwise updates of an activation tensor x, in place, over a piece of
// its rows (flat workgroup index folded over 65535, one thread per element):
//
//   residual           x[i] += gamma[i % C] · y[i]      (layer-scaled residual)
//   residual_no_gamma  x[i] += y[i]
//   add_rows           x[r, c] += y[(row0 + r) % period, c]   (y broadcast over
//                      blocks of `period` rows: a positional encoding, a bias)
//   scale_channels     x[i] *= y[i % C]          (y holds the per-channel scale)
//
// Bindings: 1 = x (read_write), 2 = y, 3 = gamma. A piece of rows of x (and of
// y for the residuals) starts at element `x_base` (`y_base`) of its binding.

{{include grid}}

struct Params {
  n: u32,      // elements in this piece (a whole number of rows of C)
  cols: u32,   // C
  x_base: u32, // element offset of the piece inside x's binding
  y_base: u32, // element offset of the piece inside y's binding (residuals)
  row0: u32,   // add_rows: (first row of the piece) mod period
  period: u32, // add_rows: rows of y
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read> gamma: array<f32>;

const WG: u32 = {{workgroupSize}}u;

fn flat_index(wid: vec3u, nwg: vec3u, lid: u32) -> u32 {
  return flat_workgroup(wid, nwg) * WG + lid;
}

@compute @workgroup_size(WG)
fn residual(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = flat_index(wid, nwg, lid);
  if (i >= params.n) {
    return;
  }
  x[params.x_base + i] += gamma[i % params.cols] * y[params.y_base + i];
}

@compute @workgroup_size(WG)
fn residual_no_gamma(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = flat_index(wid, nwg, lid);
  if (i >= params.n) {
    return;
  }
  x[params.x_base + i] += y[params.y_base + i];
}

@compute @workgroup_size(WG)
fn add_rows(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = flat_index(wid, nwg, lid);
  if (i >= params.n) {
    return;
  }
  let row = (params.row0 + i / params.cols) % params.period;
  x[params.x_base + i] += y[row * params.cols + i % params.cols];
}

@compute @workgroup_size(WG)
fn scale_channels(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = flat_index(wid, nwg, lid);
  if (i >= params.n) {
    return;
  }
  x[params.x_base + i] *= y[i % params.cols];
}
