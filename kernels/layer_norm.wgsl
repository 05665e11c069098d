// LayerNorm over the last dimension, as torch.nn.LayerNorm (biased variance):
//   y[r, c] = (x[r, c] − mean_r) / sqrt(var_r + eps) · weight[c] (+ bias[c]).
// One workgroup per row (flat workgroup index folded over 65535). The mean
// and then the variance about it (two passes, no E[x²] − E[x]² cancellation)
// are tree-reduced in workgroup memory.
//
// Entry points: `main` (bindings 1 = x, 2 = weight, 3 = y, 4 = bias) and
// `main_no_bias` (no binding 4). A piece of rows of x and y starts at `base`.

{{include grid}}
{{include reduce}}

struct Params {
  rows: u32, // rows in this piece
  cols: u32, // C
  base: u32, // element offset of the piece's first row inside x's and y's bindings
  eps: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;

const WG: u32 = {{workgroupSize}}u; // a power of two

// (mean, 1/sqrt(var + eps)) of the row starting at `start`.
fn row_stats(lid: u32, start: u32) -> vec2f {
  let cols = params.cols;
  var s = 0.0;
  for (var c = lid; c < cols; c += WG) {
    s += x[start + c];
  }
  let mean = workgroup_sum(lid, s) / f32(cols);
  var q = 0.0;
  for (var c = lid; c < cols; c += WG) {
    let d = x[start + c] - mean;
    q += d * d;
  }
  let variance = workgroup_sum(lid, q) / f32(cols);
  return vec2f(mean, inverseSqrt(variance + params.eps));
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
  let start = params.base + row * params.cols;
  let stats = row_stats(lid, start);
  for (var c = lid; c < params.cols; c += WG) {
    y[start + c] = (x[start + c] - stats.x) * stats.y * weight[c] + bias[c];
  }
}

@compute @workgroup_size(WG)
fn main_no_bias(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = flat_workgroup(wid, nwg);
  if (row >= params.rows) {
    return;
  }
  let start = params.base + row * params.cols;
  let stats = row_stats(lid, start);
  for (var c = lid; c < params.cols; c += WG) {
    y[start + c] = (x[start + c] - stats.x) * stats.y * weight[c];
  }
}
