// BatchNorm in training mode, step 1: batch statistics per channel of a
// channels-last map x [rows, C] (rows = B·H·W), one workgroup per channel,
// two passes over the rows with tree reductions in workgroup memory:
//
//   mean[c]   = Σ_r x[r, c] / K                       (K = rows)
//   var[c]    = Σ_r (x[r, c] − mean[c])² / K          (biased, for the normalisation)
//   stats[c]  = (mean[c], 1/√(var[c] + eps))
//
// and, when `update` is 1, PyTorch's running-statistic update with the
// unbiased variance:
//   running_mean[c] ← (1 − momentum)·running_mean[c] + momentum·mean[c]
//   running_var[c]  ← (1 − momentum)·running_var[c]  + momentum·var[c]·K/(K − 1)
//
// Bindings: 1 = x, 2 = stats [C, 2] (read_write), 3 = running_mean,
// 4 = running_var (read_write).

{{include grid}}
{{include reduce}}

struct Params {
  rows: u32,
  channels: u32,
  eps: f32,
  momentum: f32,
  update: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> stats: array<f32>;
@group(0) @binding(3) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(4) var<storage, read_write> running_var: array<f32>;

const WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let c = flat_workgroup(wid, nwg);
  if (c >= params.channels) {
    return; // uniform per workgroup
  }
  let C = params.channels;
  let K = f32(params.rows);
  var s = 0.0;
  for (var r = lid; r < params.rows; r += WG) {
    s += x[r * C + c];
  }
  let mean = workgroup_sum(lid, s) / K;
  var q = 0.0;
  for (var r = lid; r < params.rows; r += WG) {
    let d = x[r * C + c] - mean;
    q += d * d;
  }
  let ss = workgroup_sum(lid, q);
  if (lid == 0u) {
    stats[2u * c] = mean;
    stats[2u * c + 1u] = inverseSqrt(ss / K + params.eps);
    if (params.update == 1u) {
      let m = params.momentum;
      running_mean[c] = (1.0 - m) * running_mean[c] + m * mean;
      running_var[c] = (1.0 - m) * running_var[c] + m * ss / (K - 1.0);
    }
  }
}
