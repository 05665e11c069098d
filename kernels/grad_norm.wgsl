// Squared L2 norm of many tensors (the gradients), in a fixed order so the
// result is the same bit for bit on every run:
//
//   partial: partials[offset + w] = Σ x[i]² over workgroup w's {{perWorkgroup}} elements
//   total:   out[0] = Σ partials[0 .. count)        (one workgroup)

struct Params {
  n: u32,
  offset: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

var<workgroup> sums: array<f32, {{workgroupSize}}>;

fn reduce(lid: u32) {
  for (var stride = {{workgroupSize}}u / 2u; stride > 0u; stride = stride / 2u) {
    workgroupBarrier();
    if (lid < stride) {
      sums[lid] = sums[lid] + sums[lid + stride];
    }
  }
}

@compute @workgroup_size({{workgroupSize}})
fn partial(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let w = wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y;
  let begin = w * {{perWorkgroup}}u;
  var s = 0.0;
  for (var k = 0u; k < {{perWorkgroup}}u; k = k + {{workgroupSize}}u) {
    let i = begin + k + lid;
    if (i < p.n) {
      let x = src[i];
      s = s + x * x;
    }
  }
  sums[lid] = s;
  reduce(lid);
  if (lid == 0u) {
    dst[p.offset + w] = sums[0];
  }
}

@compute @workgroup_size({{workgroupSize}})
fn total(@builtin(local_invocation_index) lid: u32) {
  var s = 0.0;
  for (var i = lid; i < p.n; i = i + {{workgroupSize}}u) {
    s = s + src[i];
  }
  sums[lid] = s;
  reduce(lid);
  if (lid == 0u) {
    dst[0] = sums[0];
  }
}
