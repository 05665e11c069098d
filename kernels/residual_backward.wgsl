// Backward of the layer-scaled residual y = x + γ ⊙ f, elementwise:
//   df[i]   = γ[c] · dy[i]      (∂f)
//   prod[i] = dy[i] · f[i]      (summed over rows afterwards for ∂γ)
// with c = i mod C. ∂x = dy passes through untouched (not computed here).
//
// Bindings: 1 = dy, 2 = f, 3 = gamma [C], 4 = df, 5 = prod.

{{include grid}}

struct Params {
  n: u32,    // elements
  cols: u32, // C
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> f: array<f32>;
@group(0) @binding(3) var<storage, read> gamma: array<f32>;
@group(0) @binding(4) var<storage, read_write> df: array<f32>;
@group(0) @binding(5) var<storage, read_write> prod: array<f32>;

@compute @workgroup_size({{workgroupSize}})
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = flat_workgroup(wid, nwg) * {{workgroupSize}}u + lid;
  if (i >= params.n) {
    return;
  }
  let g = dy[i];
  df[i] = gamma[i % params.cols] * g;
  prod[i] = g * f[i];
}
