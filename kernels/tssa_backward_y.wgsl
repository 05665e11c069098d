// Non-causal TSSA forward for the backward: the output, one thread per
// element, from Pi and the statistics num = Σ_n Pi·w², den = Σ_n Pi:
//   y[n, c] = −w[n, c]·Pi[n, h] / (1 + num[b, c] / (den[b, h] + 1e-8))
//
// The token tensors may be one piece of larger tensors: the piece's rows
// start at flat row row_base, at element elem_base of the binding.

struct Params {
  count: u32,      // elements (rows · DIM) in this piece
  tokens: u32,     // N
  row_base: u32,   // flat row (b·N + n) of the piece's first row
  elem_base: u32,  // element of that row within the binding
}

const DIM: u32 = {{dim}}u;
const HEADS: u32 = {{heads}}u;
const HEAD_DIM: u32 = {{headDim}}u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> pi: array<f32>;   // [B·N, HEADS]
@group(0) @binding(3) var<storage, read> num: array<f32>;  // [B, DIM]
@group(0) @binding(4) var<storage, read> den: array<f32>;  // [B, HEADS]
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let j = (wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y) * 256u + lid;
  if (j >= p.count) {
    return;
  }
  let row = p.row_base + j / DIM;
  let c = j % DIM;
  let i = p.elem_base + j;
  let h = c / HEAD_DIM;
  let b = row / p.tokens;
  let a = 1.0 / (1.0 + num[b * DIM + c] / (den[b * HEADS + h] + 1e-8));
  y[i] = -w[i] * pi[row * HEADS + h] * a;
}
