// Backward of exact GELU, y = x·Φ(x), elementwise:
//   dx = dy · (Φ(x) + x·φ(x)),   φ(x) = exp(−x²/2)/√(2π).
//
// Φ comes from the same relatively accurate erfc as kernels/gelu.wgsl
// (kernels/lib/erf.wgsl: Numerical Recipes' Chebyshev "erfcc", relative
// error < 1.2e-7).
//
// Bindings: 1 = dy, 2 = x, 3 = dx, pieces of equal layout starting at `base`.

{{include grid}}
{{include erf}}

struct Params {
  n: u32,    // elements in this piece
  base: u32, // element offset of the piece inside every binding
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

const FRAC_1_SQRT_2PI: f32 = 0.39894228040143268;

fn gelu_grad(v: f32) -> f32 {
  return normal_cdf(v) + v * FRAC_1_SQRT_2PI * exp(-0.5 * v * v);
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
  let k = params.base + i;
  dx[k] = dy[k] * gelu_grad(x[k]);
}
