// Exact GELU, y = x·Φ(x) = 0.5·x·(1 + erf(x/√2)), elementwise.
//
// WGSL has no erf. We use the Chebyshev-fitted complementary error function
// of Numerical Recipes (Press et al., 2nd ed., §6.2, "erfcc"):
//   erfc(z) ≈ t·exp(−z² + P(t)),  t = 1/(1 + z/2),  z ≥ 0,
// whose relative error is below 1.2e-7 for every z ≥ 0 (checked against
// mpmath: 1.05e-7). It is chosen over the shorter Abramowitz–Stegun 7.1.26
// (absolute error 1.5e-7) because it is *relatively* accurate in the tail:
// writing GELU as x·(1 − erfc(z)/2) for x ≥ 0 and x·erfc(−z)/2 for x < 0
// keeps the tiny negative-side outputs (e.g. gelu(−6) ≈ −6e-9) accurate to
// about 1e-7 relative instead of only 1e-7 absolute, and never subtracts two
// nearly equal numbers. The absolute error of erf itself stays ≤ 1.1e-7.
//
// Bindings: 1 = x, 2 = y (pieces of tensors over one binding are bound
// separately; `base` is where the piece starts inside the binding).

struct Params {
  n: u32,    // elements in this piece
  base: u32, // element offset of the piece inside both bindings
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

const FRAC_1_SQRT_2: f32 = 0.70710678118654752;

// erfc(z) for z ≥ 0, relative error < 1.2e-7.
fn erfc_nonneg(z: f32) -> f32 {
  let t = 1.0 / (1.0 + 0.5 * z);
  let p = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
    t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
    t * (-0.82215223 + t * 0.17087277))))))));
  return t * exp(p - z * z);
}

fn gelu(v: f32) -> f32 {
  let half_tail = 0.5 * erfc_nonneg(abs(v) * FRAC_1_SQRT_2); // = Φ(−|v|)
  return select(v * half_tail, v * (1.0 - half_tail), v >= 0.0);
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
  y[params.base + i] = gelu(x[params.base + i]);
}
