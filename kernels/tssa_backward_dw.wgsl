// TSSA backward, the gradient of w, one thread per element:
//   ∂w = −∂y·Pi·a + 2w·(Pi·∂M + ∂z·temp/S + ∂S)
// with a, ∂M, temp/S, ∂S from col (tssa_backward_coef.wgsl and
// tssa_backward_finish.wgsl) and ∂z from tssa_backward_pi.wgsl.
//
// The token tensors may be one piece of larger tensors: the piece's rows
// start at flat row row_base, at element elem_base of the binding.

{{include grid}}

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
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> pi: array<f32>;   // [B·N, HEADS]
@group(0) @binding(4) var<storage, read> dz: array<f32>;   // [B·N, HEADS]
@group(0) @binding(5) var<storage, read> col: array<f32>;  // [B, 4·DIM]
@group(0) @binding(6) var<storage, read_write> dw: array<f32>;

@compute @workgroup_size(256)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let j = flat_workgroup(wid, nwg) * 256u + lid;
  if (j >= p.count) {
    return;
  }
  let row = p.row_base + j / DIM;
  let c = j % DIM;
  let i = p.elem_base + j;
  let h = c / HEAD_DIM;
  let cb = (row / p.tokens) * 4u * DIM + c;
  let pih = pi[row * HEADS + h];
  let x = w[i];
  dw[i] = -dy[i] * pih * col[cb] +
    2.0 * x * (pih * col[cb + DIM] + dz[row * HEADS + h] * col[cb + 2u * DIM] + col[cb + 3u * DIM]);
}
