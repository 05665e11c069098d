// Backward of exact GELU, y = x·Φ(x), elementwise:
//   dx = dy · (Φ(x) + x·φ(x)),   φ(x) = exp(−x²/2)/√(2π).
//
// Φ comes from the same relatively accurate erfc as kernels/gelu.wgsl
// (kernels/lib/erf.wgsl: Numerical Recipes' Chebyshev "erfcc", relative
// error < 1.2e-7).
//
// Entry points: `main` (f32 lanes) and `main4` (vec4 lanes), PER lanes per
// invocation, WG apart, as kernels/gelu.wgsl.
//
// Bindings: 1 = dy, 2 = x, 3 = dx, pieces of equal layout starting at lane `base`.

{{include lanes}}
{{include erf}}

const WG: u32 = {{workgroupSize}}u;
const PER: u32 = {{perInvocation}}u;

struct Params {
  n: u32,    // lanes in this piece
  base: u32, // lane offset of the piece inside every binding
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;
@group(0) @binding(1) var<storage, read> dy4: array<vec4f>;
@group(0) @binding(2) var<storage, read> x4: array<vec4f>;
@group(0) @binding(3) var<storage, read_write> dx4: array<vec4f>;

const FRAC_1_SQRT_2PI: f32 = 0.39894228040143268;

fn gelu_grad(v: f32) -> f32 {
  return normal_cdf(v) + v * FRAC_1_SQRT_2PI * exp(-0.5 * v * v);
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  for (var k = 0u; k < PER; k++) {
    let i = lane(wid, nwg, lid, k);
    if (i >= params.n) {
      return;
    }
    let j = params.base + i;
    dx[j] = dy[j] * gelu_grad(x[j]);
  }
}

@compute @workgroup_size(WG)
fn main4(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  for (var k = 0u; k < PER; k++) {
    let i = lane(wid, nwg, lid, k);
    if (i >= params.n) {
      return;
    }
    let j = params.base + i;
    let v = x4[j];
    dx4[j] = dy4[j] * vec4f(gelu_grad(v.x), gelu_grad(v.y), gelu_grad(v.z), gelu_grad(v.w));
  }
}
