// Squared L2 norm of many tensors (the gradients), in a fixed order so the
// result is the same bit for bit on every run:
//
//   partial: partials[offset + w] = Σ x[i]² over workgroup w's {{perWorkgroup}} elements
//            (of type {{vecType}}: f32, or vec4f for inputs of whole vec4s)
//   total:   out[0] = Σ partials[0 .. count)        (one workgroup)

{{include grid}}
{{include reduce}}

struct Params {
  n: u32,
  offset: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<{{vecType}}>;
// The same binding as `partials` in the total entry point (the sums, f32).
@group(0) @binding(1) var<storage, read> partials: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

const WG: u32 = {{workgroupSize}}u; // a power of two

@compute @workgroup_size(WG)
fn partial(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let w = flat_workgroup(wid, nwg);
  let begin = w * {{perWorkgroup}}u;
  var s = 0.0;
  for (var k = 0u; k < {{perWorkgroup}}u; k = k + WG) {
    let i = begin + k + lid;
    if (i < p.n) {
      let x = src[i];
      s = s + {{square}};
    }
  }
  let sum = workgroup_sum(lid, s);
  if (lid == 0u) {
    dst[p.offset + w] = sum;
  }
}

@compute @workgroup_size(WG)
fn total(@builtin(local_invocation_index) lid: u32) {
  var s = 0.0;
  for (var i = lid; i < p.n; i = i + WG) {
    s = s + partials[i];
  }
  let sum = workgroup_sum(lid, s);
  if (lid == 0u) {
    dst[0] = sum;
  }
}
