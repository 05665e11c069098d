// Causal TSSA forward for the backward: Pi, one thread per token, from the
// exclusive prefix sums c_off[n, c] = Σ_{m<n} w[m, c]² (a block-local scan
// plus the carry of its 64-row block; see causal_tssa_backward_scan.wgsl):
//   Cc = max(c_off + w², 1e-12)
//   u[n, h]  = Σ_k w²/Cc + d·denom_bias[h, n]
//   Pi[n, h] = softmax over h of temp[h]·u[n, h]
//
// The [B·N, DIM] token tensors may be one piece of larger tensors (whole
// 64-row blocks): the piece's rows start at flat row row_base, at element
// elem_base of their bindings. [B·N, HEADS] tensors are bound whole.

struct Params {
  count: u32,        // rows (tokens) in this piece
  tokens: u32,       // N
  row_base: u32,     // flat row (b·N + n) of the piece's first row
  elem_base: u32,    // element of that row within the piece bindings
  scan_blocks: u32,  // ceil(N / 64)
  bias_stride: u32,  // block_size of denom_bias [HEADS, block_size]
}

const DIM: u32 = {{dim}}u;
const HEADS: u32 = {{heads}}u;
const HEAD_DIM: u32 = {{headDim}}u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<f32>;           // [B·N, DIM]
@group(0) @binding(2) var<storage, read> c_off: array<f32>;       // [B·N, DIM]
@group(0) @binding(3) var<storage, read> temp: array<f32>;        // [HEADS]
@group(0) @binding(4) var<storage, read> denom_bias: array<f32>;  // [HEADS, bias_stride]
@group(0) @binding(5) var<storage, read_write> pi: array<f32>;    // [B·N, HEADS]
@group(0) @binding(6) var<storage, read> c_carry: array<f32>;     // [B, scan_blocks, DIM]

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
  let n = row % p.tokens;
  let blk = (row / p.tokens) * p.scan_blocks + n / 64u;
  var z: array<f32, HEADS>;
  var m = -3.4028235e38;
  for (var h = 0u; h < HEADS; h++) {
    var u = f32(HEAD_DIM) * denom_bias[h * p.bias_stride + n];
    for (var k = 0u; k < HEAD_DIM; k++) {
      let i = p.elem_base + r * DIM + h * HEAD_DIM + k;
      let s = w[i] * w[i];
      u += s / max(c_off[i] + c_carry[blk * DIM + h * HEAD_DIM + k] + s, 1e-12);
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
