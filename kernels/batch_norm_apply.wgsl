// BatchNorm in training mode, step 2: normalise a channels-last map
// x [rows, C] with the batch statistics of batch_norm_stats.wgsl,
//   y[r, c] = (x[r, c] − mean[c])·invstd[c]·weight[c] + bias[c],
// one thread per element.
//
// Bindings: 1 = x, 2 = stats [C, 2] (mean, invstd), 3 = weight, 4 = bias,
// 5 = y (read_write).

{{include grid}}

struct Params {
  n: u32,        // rows·C
  channels: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> stats: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = flat_workgroup(wid, nwg) * WG + lid;
  if (i >= params.n) {
    return;
  }
  let c = i % params.channels;
  y[i] = (x[i] - stats[2u * c]) * stats[2u * c + 1u] * weight[c] + bias[c];
}
