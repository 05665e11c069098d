// Backward of exact GELU, y = x·Φ(x), elementwise:
//   dx = dy · (Φ(x) + x·φ(x)),   φ(x) = exp(−x²/2)/√(2π).
//
// Φ comes from the same relatively accurate erfc as kernels/gelu.wgsl
// (Numerical Recipes' Chebyshev "erfcc", relative error < 1.2e-7; WGSL has
// no include, so the function is repeated here): Φ(x) = 1 − erfc(z)/2 for
// x ≥ 0 and erfc(−z)/2 below, z = |x|/√2.
//
// Bindings: 1 = dy, 2 = x, 3 = dx, pieces of equal layout starting at `base`.

struct Params {
  n: u32,    // elements in this piece
  base: u32, // element offset of the piece inside every binding
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

const FRAC_1_SQRT_2: f32 = 0.70710678118654752;
const FRAC_1_SQRT_2PI: f32 = 0.39894228040143268;

// erfc(z) for z ≥ 0, relative error < 1.2e-7.
fn erfc_nonneg(z: f32) -> f32 {
  let t = 1.0 / (1.0 + 0.5 * z);
  let p = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
    t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
    t * (-0.82215223 + t * 0.17087277))))))));
  return t * exp(p - z * z);
}

fn gelu_grad(v: f32) -> f32 {
  let half_tail = 0.5 * erfc_nonneg(abs(v) * FRAC_1_SQRT_2); // Φ(−|v|)
  let cdf = select(half_tail, 1.0 - half_tail, v >= 0.0);
  return cdf + v * FRAC_1_SQRT_2PI * exp(-0.5 * v * v);
}

@compute @workgroup_size({{workgroupSize}})
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let group = wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y;
  let i = group * {{workgroupSize}}u + lid;
  if (i >= params.n) {
    return;
  }
  let k = params.base + i;
  dx[k] = dy[k] * gelu_grad(x[k]);
}
