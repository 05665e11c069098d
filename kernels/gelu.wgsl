// Exact GELU, y = x·Φ(x) = 0.5·x·(1 + erf(x/√2)), elementwise.
//
// WGSL has no erf: Φ comes from the relatively accurate erfc of
// kernels/lib/erf.wgsl, so the tiny negative-side outputs (e.g.
// gelu(−6) ≈ −6e-9) are accurate to about 1e-7 relative, not only absolute.
//
// Bindings: 1 = x, 2 = y (pieces of tensors over one binding are bound
// separately; `base` is where the piece starts inside the binding).

{{include grid}}
{{include erf}}

struct Params {
  n: u32,    // elements in this piece
  base: u32, // element offset of the piece inside both bindings
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

fn gelu(v: f32) -> f32 {
  return v * normal_cdf(v);
}

@compute @workgroup_size({{workgroupSize}})
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let group = flat_workgroup(wid, nwg);
  let i = group * {{workgroupSize}}u + lid;
  if (i >= params.n) {
    return;
  }
  y[params.base + i] = gelu(x[params.base + i]);
}
