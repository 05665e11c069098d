// Pack one GEMM operand into an rgba32float storage texture for
// kernels/gemm_block.wgsl: texel (t, r) holds reduction indices 4t … 4t+3
// of operand row r, zero past the reduction length `depth` and for rows past
// `rows` up to the texture height, so the GEMM reads without bounds checks.
//
// The source is a bound piece of a row-major tensor, element (r, k) at
// src[base + r·si + k·sk]: k contiguous (sk = 1) for x and W of the forward,
// r contiguous (si = 1) for W of ∂x and for ∂y and x of ∂W.

{{include grid}}

struct Params {
  rows: u32,    // valid operand rows
  depth: u32,   // valid reduction length
  texels: u32,  // texels written per row: ceil(depth / 4)
  height: u32,  // rows written: `rows` rounded up to the GEMM's block
  base: u32,
  si: u32,
  sk: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var dst: texture_storage_2d<rgba32float, write>;

const WG: u32 = 64u;

fn texel(t: u32, r: u32) -> vec4f {
  var v = vec4f(0.0);
  if (r < p.rows) {
    let k = 4u * t;
    let at = p.base + r * p.si + k * p.sk;
    if (k + 3u < p.depth) {
      v = vec4f(src[at], src[at + p.sk], src[at + 2u * p.sk], src[at + 3u * p.sk]);
    } else {
      for (var q = 0u; k + q < p.depth; q++) {
        v[q] = src[at + q * p.sk];
      }
    }
  }
  return v;
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let e = flat_workgroup(wid, nwg) * WG + lid;
  if (e >= p.texels * p.height) {
    return;
  }
  // Neighbouring invocations read neighbouring addresses: along t when k is
  // contiguous, along r otherwise.
  let along_t = p.sk == 1u;
  let t = select(e / p.height, e % p.texels, along_t);
  let r = select(e % p.height, e / p.texels, along_t);
  textureStore(dst, vec2u(t, r), texel(t, r));
}
