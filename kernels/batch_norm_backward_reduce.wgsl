// BatchNorm in training mode, backward step 1: per channel of the
// channels-last x [rows, C], one workgroup per channel,
//   Σdy[c]   = Σ_r dy[r, c]
//   Σdyx̂[c]  = Σ_r dy[r, c]·x̂[r, c],   x̂ = (x − mean)·invstd
// written to sums [C, 2] and accumulated into the parameter gradients:
//   dweight[c] += Σdyx̂[c],  dbias[c] += Σdy[c].
//
// Bindings: 1 = dy, 2 = x, 3 = stats [C, 2] (mean, invstd), 4 = sums [C, 2],
// 5 = dweight, 6 = dbias (read_write).

struct Params {
  rows: u32,
  channels: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> stats: array<f32>;
@group(0) @binding(4) var<storage, read_write> sums: array<f32>;
@group(0) @binding(5) var<storage, read_write> dweight: array<f32>;
@group(0) @binding(6) var<storage, read_write> dbias: array<f32>;

const WG: u32 = 64u;

var<workgroup> part_dy: array<f32, WG>;
var<workgroup> part_dyx: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let c = wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y;
  if (c >= params.channels) {
    return; // uniform per workgroup
  }
  let C = params.channels;
  let mean = stats[2u * c];
  let invstd = stats[2u * c + 1u];
  var a = 0.0;
  var b = 0.0;
  for (var r = lid; r < params.rows; r += WG) {
    let g = dy[r * C + c];
    a += g;
    b += g * (x[r * C + c] - mean) * invstd;
  }
  part_dy[lid] = a;
  part_dyx[lid] = b;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (lid < s) {
      part_dy[lid] += part_dy[lid + s];
      part_dyx[lid] += part_dyx[lid + s];
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    sums[2u * c] = part_dy[0];
    sums[2u * c + 1u] = part_dyx[0];
    dbias[c] += part_dy[0];
    dweight[c] += part_dyx[0];
  }
}
