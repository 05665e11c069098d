// Causal TSSA backward, first pass: the terms of the forward's prefix sums,
// one thread per element of w [B·N, DIM]:
//   sq[i] = w²,   spi[i] = w²·Pi[n, h],   pis[n, h] = Pi[n, h] (a copy)
// The caller then scans all three down the tokens (scan_block.wgsl)
// to recover C, A and Σ Pi without having kept them.
//
// The [B·N, DIM] token tensors may be one piece of larger tensors (whole
// 64-row blocks): the piece's rows start at flat row row_base, at element
// elem_base of their bindings. [B·N, HEADS] tensors are bound whole.

{{include grid}}

struct Params {
  count: u32,        // elements (rows · DIM) in this piece
  tokens: u32,       // N
  row_base: u32,     // flat row (b·N + n) of the piece's first row
  elem_base: u32,    // element of that row within the piece bindings
  scan_blocks: u32,  // ceil(N / 64)
}

const DIM: u32 = {{dim}}u;
const HEADS: u32 = {{heads}}u;
const HEAD_DIM: u32 = {{headDim}}u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> pi: array<f32>;  // [B·N, HEADS]
@group(0) @binding(3) var<storage, read_write> sq: array<f32>;
@group(0) @binding(4) var<storage, read_write> spi: array<f32>;
@group(0) @binding(5) var<storage, read_write> pis: array<f32>;  // [B·N, HEADS]

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
  let i = p.elem_base + j;
  let x = w[i];
  let s = x * x;
  let c = j % DIM;
  let q = (p.row_base + j / DIM) * HEADS + c / HEAD_DIM;
  sq[i] = s;
  spi[i] = s * pi[q];
  if (c % HEAD_DIM == 0u) {
    pis[q] = pi[q];
  }
}
