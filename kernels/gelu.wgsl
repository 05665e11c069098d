// Exact GELU, y = x·Φ(x) = 0.5·x·(1 + erf(x/√2)), elementwise.
//
// WGSL has no erf: Φ comes from the relatively accurate erfc of
// kernels/lib/erf.wgsl, so the tiny negative-side outputs (e.g.
// gelu(−6) ≈ −6e-9) are accurate to about 1e-7 relative, not only absolute.
//
// Entry points: `main` (one f32 lane) and `main4` (vec4 lanes: the size and
// the piece's start are multiples of 4); each invocation takes PER lanes,
// WG apart, so neighbouring invocations read contiguous values. Both compute
// the same values (src/ops/_tuned.ts: scalar, vec4, vec4x4).
//
// Bindings: 1 = x, 2 = y (pieces of tensors over one binding are bound
// separately; `base` is where the piece starts inside the binding, in lanes).

{{include lanes}}
{{include erf}}

const WG: u32 = {{workgroupSize}}u;
const PER: u32 = {{perInvocation}}u;

struct Params {
  n: u32,    // lanes in this piece
  base: u32, // lane offset of the piece inside both bindings
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(1) var<storage, read> x4: array<vec4f>;
@group(0) @binding(2) var<storage, read_write> y4: array<vec4f>;

fn gelu(v: f32) -> f32 {
  return v * normal_cdf(v);
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
    y[params.base + i] = gelu(x[params.base + i]);
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
    let v = x4[params.base + i];
    y4[params.base + i] = vec4f(gelu(v.x), gelu(v.y), gelu(v.z), gelu(v.w));
  }
}
