// Standard attention, step 2 of 3: softmax of each row of the scores, in
// place, numerically stable (the row maximum is subtracted first).
// Causal (PyTorch is_causal=True): row i keeps columns 0..i and gets exact
// zeros in columns i+1..N−1.
//
// One workgroup per row (flat index folded over 65535); maximum and sum are
// tree-reduced in workgroup memory.
//
// Binding 1 = scores rows of the (batch, head) pairs in this dispatch; the
// dispatch starts at a pair boundary, so row r is query r mod N.

{{include grid}}
{{include softmax_row}}

struct Params {
  rows: u32,     // rows in this dispatch (pairs · N)
  n_tokens: u32, // N, the row length
  s_base: u32,   // element index of the first row in binding 1
  causal: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> scores: array<f32>;

const WG: u32 = {{workgroupSize}}u; // a power of two

fn softmax_row_input(i: u32) -> f32 {
  return scores[i];
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = flat_workgroup(wid, nwg);
  if (row >= params.rows) {
    return; // uniform
  }
  let n = params.n_tokens;
  let start = params.s_base + row * n;
  var valid = n;
  if (params.causal != 0u) {
    valid = row % n + 1u;
  }
  let stats = softmax_row_stats(lid, start, valid);
  let m = stats.x;
  let inv = 1.0 / stats.y;
  for (var c = lid; c < n; c += WG) {
    var p = 0.0;
    if (c < valid) {
      p = exp(scores[start + c] - m) * inv;
    }
    scores[start + c] = p;
  }
}
