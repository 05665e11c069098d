// BatchNorm in training mode, backward step 2: the input gradient, which
// goes through the batch statistics too, one thread per element of the
// channels-last x [rows, C]:
//   dx = weight·invstd·(dy − Σdy/K − x̂·Σdyx̂/K),  x̂ = (x − mean)·invstd,  K = rows
// (assigned), with the sums of batch_norm_backward_reduce.wgsl.
//
// Bindings: 1 = dy, 2 = x, 3 = stats [C, 2], 4 = weight, 5 = sums [C, 2],
// 6 = dx (read_write).

{{include grid}}

struct Params {
  n: u32,        // rows·C
  channels: u32,
  rows: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> stats: array<f32>;
@group(0) @binding(4) var<storage, read> weight: array<f32>;
@group(0) @binding(5) var<storage, read> sums: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;

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
  let invstd = stats[2u * c + 1u];
  let xhat = (x[i] - stats[2u * c]) * invstd;
  let K = f32(params.rows);
  dx[i] = weight[c] * invstd * (dy[i] - sums[2u * c] / K - xhat * sums[2u * c + 1u] / K);
}
