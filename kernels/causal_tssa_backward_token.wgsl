// Causal TSSA backward, per (token, head), with the exclusive prefix sums
// a_off = Σ_{m<n} Pi·w² (per column) and q_off = Σ_{m<n} Pi, each given as a
// block-local scan (in place in `da`, `dq`) plus the carry of its 64-row
// block (a_carry, q_carry; see scan_block.wgsl):
//   Q = q_off + Pi + 1e-8,  A = a_off + Pi·w²,  a = 1 / (1 + A / Q)
//   e = a²·∂y·w·Pi
//   da[n, c]  ← ∂A = e / Q                 (then reverse-scanned)
//   dq[n, h]  ← ∂Q = −Σ_k e·A / Q²         (then reverse-scanned)
//   dpi0[n, h] = −Σ_k ∂y·w·a
//   dw[n, c]   = −∂y·Pi·a                  (the direct term; more is added later)
// One thread per (token, head) pair, looping over the head's d columns;
// each thread reads and then overwrites only its own elements.
//
// The [B·N, DIM] token tensors may be one piece of larger tensors (whole
// 64-row blocks): the piece's rows start at flat row row_base, at element
// elem_base of their bindings. [B·N, HEADS] tensors are bound whole.

{{include grid}}

struct Params {
  count: u32,        // (token, head) pairs in this piece
  tokens: u32,       // N
  row_base: u32,     // flat row (b·N + n) of the piece's first row
  elem_base: u32,    // element of that row within the piece bindings
  scan_blocks: u32,  // ceil(N / 64)
}

const DIM: u32 = {{dim}}u;
const HEADS: u32 = {{heads}}u;
const HEAD_DIM: u32 = {{headDim}}u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> pi: array<f32>;           // [B·N, HEADS]
@group(0) @binding(4) var<storage, read_write> da: array<f32>;     // [B·N, DIM]
@group(0) @binding(5) var<storage, read_write> dq: array<f32>;     // [B·N, HEADS]
@group(0) @binding(6) var<storage, read_write> dpi0: array<f32>;   // [B·N, HEADS]
@group(0) @binding(7) var<storage, read_write> dw: array<f32>;     // [B·N, DIM]
@group(0) @binding(8) var<storage, read> a_carry: array<f32>;      // [B, scan_blocks, DIM]
@group(0) @binding(9) var<storage, read> q_carry: array<f32>;      // [B, scan_blocks, HEADS]

@compute @workgroup_size(64)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let local = flat_workgroup(wid, nwg) * 64u + lid;
  if (local >= p.count) {
    return;
  }
  let r = local / HEADS;
  let h = local % HEADS;
  let row = p.row_base + r;
  let q = row * HEADS + h;
  let blk = (row / p.tokens) * p.scan_blocks + (row % p.tokens) / 64u;
  let pih = pi[q];
  let Q = dq[q] + q_carry[blk * HEADS + h] + pih + 1e-8;
  var dqa = 0.0;
  var dp = 0.0;
  for (var k = 0u; k < HEAD_DIM; k++) {
    let i = p.elem_base + r * DIM + h * HEAD_DIM + k;
    let x = w[i];
    let g = dy[i];
    let A = da[i] + a_carry[blk * DIM + h * HEAD_DIM + k] + pih * x * x;
    let a = 1.0 / (1.0 + A / Q);
    let e = a * a * g * x * pih;
    da[i] = e / Q;
    dqa += e * A;
    dp -= g * x * a;
    dw[i] = -g * pih * a;
  }
  dq[q] = -dqa / (Q * Q);
  dpi0[q] = dp;
}
