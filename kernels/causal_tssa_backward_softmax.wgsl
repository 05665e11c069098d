// Causal TSSA backward through Pi and the softmax over heads, one thread per
// token, with the suffix sums sa = rev(∂A) [B·N, DIM] and sq_ = rev(∂Q)
// [B·N, HEADS] and the exclusive prefix sums c_off = Σ_{m<n} w² (in place in
// `dc`), each a block-local scan plus the carry of its 64-row block (the
// suffix carries of block k are entry k + 1 of a_rcarry, q_rcarry; see
// scan_block.wgsl):
//   ∂Pi[n, h] = dpi0 + rev(∂Q) + Σ_k rev(∂A)·w²
//   ∂z        = Pi·(∂Pi − Σ_h' Pi·∂Pi),   ∂u = temp·∂z
//   C = c_off + w²,  Cc = max(C, 1e-12),  u = Σ_k w²/Cc + d·denom_bias[h, n]
//   dc[n, c]  ← ∂C = −∂u·w² / Cc²  (0 where C < 1e-12)   (then reverse-scanned)
//   dw[n, c] += 2w·∂u / Cc
//   du[n, h]   = ∂u,   dzu[n, h] = ∂z·u    (reduced later for ∂denom_bias, ∂temp)
//
// The [B·N, DIM] token tensors may be one piece of larger tensors (whole
// 64-row blocks): the piece's rows start at flat row row_base, at element
// elem_base of their bindings. [B·N, HEADS] tensors are bound whole.

{{include grid}}
{{include softmax_heads_backward}}

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
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> pi: array<f32>;          // [B·N, HEADS]
@group(0) @binding(3) var<storage, read> sa: array<f32>;          // [B·N, DIM]
@group(0) @binding(4) var<storage, read> sq_: array<f32>;         // [B·N, HEADS]
@group(0) @binding(5) var<storage, read> dpi0: array<f32>;        // [B·N, HEADS]
@group(0) @binding(6) var<storage, read> temp: array<f32>;        // [HEADS]
@group(0) @binding(7) var<storage, read> denom_bias: array<f32>;  // [HEADS, bias_stride]
@group(0) @binding(8) var<storage, read_write> dc: array<f32>;    // [B·N, DIM]
@group(0) @binding(9) var<storage, read_write> dw: array<f32>;    // [B·N, DIM]
@group(0) @binding(10) var<storage, read_write> du: array<f32>;   // [B·N, HEADS]
@group(0) @binding(11) var<storage, read_write> dzu: array<f32>;  // [B·N, HEADS]
@group(0) @binding(12) var<storage, read> a_rcarry: array<f32>;   // [B, scan_blocks, DIM]
@group(0) @binding(13) var<storage, read> q_rcarry: array<f32>;   // [B, scan_blocks, HEADS]
@group(0) @binding(14) var<storage, read> c_carry: array<f32>;    // [B, scan_blocks, DIM]

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
  let n = row % p.tokens;
  let blk = (row / p.tokens) * p.scan_blocks + n / 64u;
  let has_next = n / 64u + 1u < p.scan_blocks;
  var dpi: array<f32, HEADS>;
  for (var h = 0u; h < HEADS; h++) {
    let q = row * HEADS + h;
    var s = dpi0[q] + sq_[q];
    if (has_next) {
      s += q_rcarry[(blk + 1u) * HEADS + h];
    }
    for (var k = 0u; k < HEAD_DIM; k++) {
      let c = h * HEAD_DIM + k;
      let i = p.elem_base + r * DIM + c;
      let x = w[i];
      var a = sa[i];
      if (has_next) {
        a += a_rcarry[(blk + 1u) * DIM + c];
      }
      s += a * x * x;
    }
    dpi[h] = s;
  }
  softmax_heads_backward(row, &dpi); // now ∂z
  for (var h = 0u; h < HEADS; h++) {
    let q = row * HEADS + h;
    let z = dpi[h];
    let g = temp[h] * z;
    var u = f32(HEAD_DIM) * denom_bias[h * p.bias_stride + n];
    for (var k = 0u; k < HEAD_DIM; k++) {
      let i = p.elem_base + r * DIM + h * HEAD_DIM + k;
      let x = w[i];
      let s = x * x;
      let C = dc[i] + c_carry[blk * DIM + h * HEAD_DIM + k] + s;
      let Cc = max(C, 1e-12);
      u += s / Cc;
      dc[i] = select(0.0, -g * s / (Cc * Cc), C >= 1e-12);
      dw[i] += 2.0 * x * g / Cc;
    }
    du[q] = g;
    dzu[q] = z * u;
  }
}
