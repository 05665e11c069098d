// Causal TSSA forward for the backward: sq[i] = w[i]², one thread per
// element, to be scanned into the prefix sums C (causal_tssa_backward_scan.wgsl).
//
// The [B·N, DIM] token tensors may be one piece of larger tensors (whole
// 64-row blocks): the piece's rows start at flat row row_base, at element
// elem_base of their bindings. [B·N, HEADS] tensors are bound whole.

struct Params {
  count: u32,        // elements (rows · DIM) in this piece
  tokens: u32,       // N
  row_base: u32,     // flat row (b·N + n) of the piece's first row
  elem_base: u32,    // element of that row within the piece bindings
  scan_blocks: u32,  // ceil(N / 64)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> sq: array<f32>;

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
  let i = p.elem_base + j;
  sq[i] = w[i] * w[i];
}
