// Causal TSSA backward, last pass, one thread per element: with the suffix
// sums sa = rev(∂A) and sc = rev(∂C) (block-local reverse scans plus the
// carries of the later blocks, entry k + 1 of a_rcarry, c_rcarry),
//   dw[n, c] += 2w·(rev(∂A)·Pi[n, h] + rev(∂C)).
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
@group(0) @binding(3) var<storage, read> sa: array<f32>;
@group(0) @binding(4) var<storage, read> sc: array<f32>;
@group(0) @binding(5) var<storage, read_write> dw: array<f32>;
@group(0) @binding(6) var<storage, read> a_rcarry: array<f32>;  // [B, scan_blocks, DIM]
@group(0) @binding(7) var<storage, read> c_rcarry: array<f32>;  // [B, scan_blocks, DIM]

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
  let row = p.row_base + j / DIM;
  let c = j % DIM;
  let pih = pi[row * HEADS + c / HEAD_DIM];
  var a = sa[i];
  var s = sc[i];
  let k = (row % p.tokens) / 64u + 1u;
  if (k < p.scan_blocks) {
    let t = ((row / p.tokens) * p.scan_blocks + k) * DIM + c;
    a += a_rcarry[t];
    s += c_rcarry[t];
  }
  dw[i] += 2.0 * w[i] * (a * pih + s);
}
