// Backward of LayerNorm over the last dimension (biased variance):
//   x̂ = (x − μ)·r,  r = 1/√(var + eps),  g = dy ⊙ w
//   dx[c]      = r · (g[c] − mean(g) − x̂[c] · mean(g ⊙ x̂))   (or +=, slot accumulate)
//   stats[row] = (μ, r), for the parameter gradients (kernels/column_sums.wgsl,
//                entry layer_norm)
// One workgroup per row (flat workgroup index folded over 65535): the design
// for GPUs (kernels/layer_norm_row.wgsl is the one for CPUs). The row's
// mean and variance are recomputed from x in two passes, as the forward
// does; the two means of the gradient are tree-reduced in workgroup memory.
//
// Bindings: 1 = dy, 2 = x, 3 = weight [C], 4 = dx, 5 = stats [rows] (vec2f).

{{include grid}}
{{include reduce}}

struct Params {
  rows: u32,
  cols: u32, // C
  eps: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;
@group(0) @binding(5) var<storage, read_write> stats: array<vec2f>;

const WG: u32 = {{workgroupSize}}u; // a power of two
const ACCUMULATE: bool = {{accumulate}};

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
  let inv_c = 1.0 / f32(cols);
  let start = row * cols;
  var s = 0.0;
  for (var c = lid; c < cols; c += WG) {
    s += x[start + c];
  }
  let mean = workgroup_sum(lid, s) * inv_c;
  var q = 0.0;
  for (var c = lid; c < cols; c += WG) {
    let d = x[start + c] - mean;
    q += d * d;
  }
  let rstd = inverseSqrt(workgroup_sum(lid, q) * inv_c + params.eps);
  var sg = vec2f(0.0);
  for (var c = lid; c < cols; c += WG) {
    let xhat = (x[start + c] - mean) * rstd;
    let g = dy[start + c] * weight[c];
    sg += vec2f(g, g * xhat);
  }
  let means = workgroup_sum2(lid, sg) * inv_c;
  for (var c = lid; c < cols; c += WG) {
    let xhat = (x[start + c] - mean) * rstd;
    let d = dy[start + c];
    let v = rstd * (d * weight[c] - means.x - xhat * means.y);
    if (ACCUMULATE) {
      dx[start + c] += v;
    } else {
      dx[start + c] = v;
    }
  }
  if (lid == 0u) {
    stats[row] = vec2f(mean, rstd);
  }
}
