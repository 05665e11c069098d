// LayerNorm over the last dimension (biased variance), one INVOCATION per
// row: the design for CPUs (lavapipe), where the workgroup tree reduction of
// kernels/layer_norm.wgsl pays a fibre switch per barrier. Each invocation
// walks its row serially in vec4s (C a multiple of 4): no workgroup memory,
// no barrier. The mean, then the variance about it (two passes, no
// E[x²] − E[x]² cancellation), as the workgroup design; the sums are grouped
// differently (four lanes, then across them), so the last bits may differ.
//
//   forward:  y = (x − mean)·rstd ⊙ w (+ b),  rstd = 1/√(var + eps)
//   backward: x̂ = (x − mean)·rstd,  g = dy ⊙ w
//             dx = rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂))   (or dx += …, slot
//             accumulate: the residual stream's gradient takes it in place)
//             stats[row] = (mean, rstd), for the parameter gradients
//             (kernels/column_sums.wgsl, entry layer_norm)
//
// Bindings, forward:  1 = x, 2 = weight [C], 3 = y, 4 = bias [C] (when the
//                     slot hasBias is false, anything: it is not read);
//           backward: 1 = x, 2 = weight, 3 = dx, 4 = dy, 5 = stats [rows] (vec2f).
// The forward takes pieces of rows: the piece starts at element `base` (a
// multiple of 4) of x's and y's bindings.

{{include grid}}

const WG: u32 = 64u;
const HAS_BIAS: bool = {{hasBias}};
const ACCUMULATE: bool = {{accumulate}};

struct Params {
  rows: u32, // rows in this piece
  cols: u32, // C, a multiple of 4
  base: u32, // element offset of the piece's first row (forward)
  eps: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4f>;
@group(0) @binding(2) var<storage, read> weight: array<vec4f>;
@group(0) @binding(3) var<storage, read_write> y: array<vec4f>;
@group(0) @binding(4) var<storage, read> bias: array<vec4f>;
@group(0) @binding(3) var<storage, read_write> dx: array<vec4f>;
@group(0) @binding(4) var<storage, read> dy: array<vec4f>;
@group(0) @binding(5) var<storage, read_write> stats: array<vec2f>;

fn hsum(v: vec4f) -> f32 {
  return (v.x + v.y) + (v.z + v.w);
}

// (mean, 1/√(var + eps)) of the row of n4 vec4s at vec4 index s0. The sum
// runs about the mean k of the first four values: a serial sum of values
// far from zero (an offset row) would lose the digits a tree keeps.
fn row_stats(s0: u32, n4: u32) -> vec2f {
  let k = hsum(x[s0]) * 0.25;
  var s = vec4f(0.0);
  for (var c = 0u; c < n4; c++) {
    s += x[s0 + c] - k;
  }
  let mean = k + hsum(s) / f32(params.cols);
  var q = vec4f(0.0);
  for (var c = 0u; c < n4; c++) {
    let d = x[s0 + c] - mean;
    q += d * d;
  }
  return vec2f(mean, inverseSqrt(hsum(q) / f32(params.cols) + params.eps));
}

@compute @workgroup_size(WG)
fn forward(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = flat_workgroup(wid, nwg) * WG + lid;
  if (row >= params.rows) {
    return;
  }
  let n4 = params.cols / 4u;
  let s0 = params.base / 4u + row * n4;
  let st = row_stats(s0, n4);
  for (var c = 0u; c < n4; c++) {
    var v = (x[s0 + c] - st.x) * st.y * weight[c];
    if (HAS_BIAS) {
      v += bias[c];
    }
    y[s0 + c] = v;
  }
}

@compute @workgroup_size(WG)
fn backward(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = flat_workgroup(wid, nwg) * WG + lid;
  if (row >= params.rows) {
    return;
  }
  let n4 = params.cols / 4u;
  let s0 = row * n4;
  let st = row_stats(s0, n4);
  var sg = vec4f(0.0);
  var sgx = vec4f(0.0);
  for (var c = 0u; c < n4; c++) {
    let g = dy[s0 + c] * weight[c];
    sg += g;
    sgx += g * ((x[s0 + c] - st.x) * st.y);
  }
  let inv_c = 1.0 / f32(params.cols);
  let mg = hsum(sg) * inv_c;
  let mgx = hsum(sgx) * inv_c;
  for (var c = 0u; c < n4; c++) {
    let xhat = (x[s0 + c] - st.x) * st.y;
    let v = st.y * (dy[s0 + c] * weight[c] - mg - xhat * mgx);
    if (ACCUMULATE) {
      dx[s0 + c] += v;
    } else {
      dx[s0 + c] = v;
    }
  }
  stats[row] = st;
}
