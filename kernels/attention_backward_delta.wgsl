// Standard attention backward, step 1 of 3: per (batch, head, query)
//   delta[b, h, i] = Σ_c dout[b, i, h·d + c] · out[b, i, h·d + c]
// (= Σ_j P_ij ∂P_ij, the softmax backward's row term). One thread per row.
//
// Bindings: 1 = dout and 2 = out rows of the batches in this dispatch
// (starting at g_base / o_base), 3 = delta [B, H, N] (whole; this
// dispatch's first row is delta_base).

{{include grid}}

struct Params {
  n_tokens: u32,  // N
  heads: u32,     // H
  head_dim: u32,  // d
  width: u32,     // C = H·d
  rows: u32,      // batches in this dispatch · H · N
  g_base: u32,
  o_base: u32,
  delta_base: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> delta: array<f32>;

@compute @workgroup_size(64)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let r = flat_workgroup(wid, nwg) * 64u + lid;
  if (r >= params.rows) {
    return;
  }
  let n = params.n_tokens;
  let i = r % n;
  let pair = r / n;
  let b = pair / params.heads;
  let h = pair % params.heads;
  let off = (b * n + i) * params.width + h * params.head_dim;
  var acc = 0.0;
  for (var c = 0u; c < params.head_dim; c++) {
    acc += dout[params.g_base + off + c] * out[params.o_base + off + c];
  }
  delta[params.delta_base + r] = acc;
}
