// Elementwise updates of an activation tensor x, in place, over a piece of
// its rows:
//
//   residual           x[i] += gamma[i % C] · y[i]      (layer-scaled residual)
//   residual_no_gamma  x[i] += y[i]
//   add_rows           x[r, c] += y[(row0 + r) % period, c]   (y broadcast over
//                      blocks of `period` rows: a positional encoding, a bias)
//   scale_channels     x[i] *= y[i % C]          (y holds the per-channel scale)
//
// Indices count lanes: one value (slot vecType f32) or four (vec4f, when C
// is a multiple of 4: every row, piece and channel index is then a whole
// number of vec4s). Each invocation takes PER lanes, WG apart, so the
// lanes of neighbouring invocations stay contiguous (flat workgroup index
// folded over 65535). The variants (src/ops/_tuned.ts: scalar, vec4,
// vec4x4) compute the same values.
//
// Bindings: 1 = x (read_write), 2 = y, 3 = gamma. A piece of rows of x (and of
// y for the residuals) starts at lane `x_base` (`y_base`) of its binding.

{{include lanes}}

alias V = {{vecType}};
const WG: u32 = {{workgroupSize}}u;
const PER: u32 = {{perInvocation}}u;

struct Params {
  n: u32,      // lanes in this piece (a whole number of rows)
  cols: u32,   // lanes per row
  x_base: u32, // lane offset of the piece inside x's binding
  y_base: u32, // lane offset of the piece inside y's binding (residuals)
  row0: u32,   // add_rows: (first row of the piece) mod period
  period: u32, // add_rows: rows of y
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> x: array<V>;
@group(0) @binding(2) var<storage, read> y: array<V>;
@group(0) @binding(3) var<storage, read> gamma: array<V>;

@compute @workgroup_size(WG)
fn residual(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  for (var k = 0u; k < PER; k++) {
    let i = lane(wid, nwg, lid, k);
    if (i >= params.n) {
      return;
    }
    x[params.x_base + i] += gamma[i % params.cols] * y[params.y_base + i];
  }
}

@compute @workgroup_size(WG)
fn residual_no_gamma(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  for (var k = 0u; k < PER; k++) {
    let i = lane(wid, nwg, lid, k);
    if (i >= params.n) {
      return;
    }
    x[params.x_base + i] += y[params.y_base + i];
  }
}

@compute @workgroup_size(WG)
fn add_rows(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  for (var k = 0u; k < PER; k++) {
    let i = lane(wid, nwg, lid, k);
    if (i >= params.n) {
      return;
    }
    let row = (params.row0 + i / params.cols) % params.period;
    x[params.x_base + i] += y[row * params.cols + i % params.cols];
  }
}

@compute @workgroup_size(WG)
fn scale_channels(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  for (var k = 0u; k < PER; k++) {
    let i = lane(wid, nwg, lid, k);
    if (i >= params.n) {
      return;
    }
    x[params.x_base + i] *= y[i % params.cols];
  }
}
