// Non-causal TSSA forward for the backward: Pi, one thread per token, with
// sq[b, c] = Σ_n w[n, c]² clamped as F.normalize does (‖w‖ ≥ 1e-12):
//   u[n, h]  = Σ_k w[n, c]² / max(sq[b, c], 1e-24)
//   Pi[n, h] = softmax over h of temp[h]·u[n, h]
//
// The token tensors may be one piece of larger tensors: the piece's rows
// start at flat row row_base, at element elem_base of the binding.

struct Params {
  count: u32,      // rows (tokens) in this piece
  tokens: u32,     // N
  row_base: u32,   // flat row (b·N + n) of the piece's first row
  elem_base: u32,  // element of that row within the binding
}

const DIM: u32 = {{dim}}u;
const HEADS: u32 = {{heads}}u;
const HEAD_DIM: u32 = {{headDim}}u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<f32>;     // [B·N, DIM]
@group(0) @binding(2) var<storage, read> sq: array<f32>;    // [B, DIM]
@group(0) @binding(3) var<storage, read> temp: array<f32>;  // [HEADS]
@group(0) @binding(4) var<storage, read_write> pi: array<f32>;  // [B·N, HEADS]

@compute @workgroup_size(64)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let r = (wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y) * 64u + lid;
  if (r >= p.count) {
    return;
  }
  let row = p.row_base + r;
  let e0 = p.elem_base + r * DIM;
  let b = row / p.tokens;
  var z: array<f32, HEADS>;
  var m = -3.4028235e38;
  for (var h = 0u; h < HEADS; h++) {
    var u = 0.0;
    for (var k = 0u; k < HEAD_DIM; k++) {
      let c = h * HEAD_DIM + k;
      let x = w[e0 + c];
      u += x * x / max(sq[b * DIM + c], 1e-24);
    }
    z[h] = temp[h] * u;
    m = max(m, z[h]);
  }
  var total = 0.0;
  for (var h = 0u; h < HEADS; h++) {
    z[h] = exp(z[h] - m);
    total += z[h];
  }
  for (var h = 0u; h < HEADS; h++) {
    pi[row * HEADS + h] = z[h] / total;
  }
}
