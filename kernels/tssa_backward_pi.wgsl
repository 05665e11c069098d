// TSSA backward through Pi and the softmax over heads, one thread per token:
//   ∂Pi[n, h] = ∂P[h] + Σ_k (∂M[c]·w[n, c]² − ∂y[n, c]·w[n, c]·a[c])
//   ∂z[n, h]  = Pi[n, h]·(∂Pi[n, h] − Σ_h' Pi[n, h']·∂Pi[n, h'])
// with a, ∂M from col (tssa_backward_coef.wgsl) and ∂P from dp. Each thread
// reads its token's DIM values; the work is parallel over all B·N tokens.
//
// The token tensors may be one piece of larger tensors: the piece's rows
// start at flat row row_base, at element elem_base of the binding.

{{include grid}}
{{include softmax_heads_backward}}

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
@group(0) @binding(1) var<storage, read> dy: array<f32>;    // [B·N, DIM]
@group(0) @binding(2) var<storage, read> w: array<f32>;     // [B·N, DIM]
@group(0) @binding(3) var<storage, read> pi: array<f32>;    // [B·N, HEADS]
@group(0) @binding(4) var<storage, read> col: array<f32>;   // [B, 4·DIM]
@group(0) @binding(5) var<storage, read> dp: array<f32>;    // [B, HEADS]
@group(0) @binding(6) var<storage, read_write> dz: array<f32>;  // [B·N, HEADS]

@compute @workgroup_size(64)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let r = flat_workgroup(wid, nwg) * 64u + lid;
  if (r >= p.count) {
    return;
  }
  let row = p.row_base + r;
  let e0 = p.elem_base + r * DIM;
  let b = row / p.tokens;
  var dpi: array<f32, HEADS>;
  for (var h = 0u; h < HEADS; h++) {
    var s = dp[b * HEADS + h];
    for (var k = 0u; k < HEAD_DIM; k++) {
      let c = h * HEAD_DIM + k;
      let x = w[e0 + c];
      s += x * (col[b * 4u * DIM + DIM + c] * x - dy[e0 + c] * col[b * 4u * DIM + c]);
    }
    dpi[h] = s;
  }
  softmax_heads_backward(row, &dpi); // now ∂z
  for (var h = 0u; h < HEADS; h++) {
    dz[row * HEADS + h] = dpi[h];
  }
}
