// The stem convolution's input gradient as a GEMM, step 2 (col2im): with
// dcol = ∂y · W ([B·Ho·Wo, Cin·9], PyTorch's weight order along the row, as
// conv2d_im2col.wgsl), every input element sums the patch entries it fed:
//
//   dx(b, ci, iy, ix) = Σ_{ky, kx : iy = 2·oy + ky − 1, ix = 2·ox + kx − 1}
//                         dcol[(b·Ho + oy)·Wo + ox, ci·9 + ky·3 + kx]     (assigned)
//
// (at most 2×2 taps with stride 2). One invocation per input element, in the
// input's layout: NCHW when `nchw` is 1, else NHWC. No atomics: the sums are
// gathered, so the result is deterministic.
//
// Bindings: 1 = dcol, 2 = dx (read_write).

{{include grid}}

struct Params {
  n: u32,     // input elements: B · Cin · H · W
  cin: u32,
  h: u32,
  w: u32,
  ho: u32,
  wo: u32,
  nchw: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> dcol: array<f32>;
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;

const WG: u32 = {{workgroupSize}}u;

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = flat_workgroup(wid, nwg) * WG + lid;
  if (i >= params.n) {
    return;
  }
  var b: u32;
  var ci: u32;
  var iy: u32;
  var ix: u32;
  if (params.nchw == 1u) {
    ix = i % params.w;
    iy = (i / params.w) % params.h;
    ci = (i / (params.w * params.h)) % params.cin;
    b = i / (params.w * params.h * params.cin);
  } else {
    ci = i % params.cin;
    ix = (i / params.cin) % params.w;
    iy = (i / (params.cin * params.w)) % params.h;
    b = i / (params.cin * params.w * params.h);
  }
  let k = params.cin * 9u;
  var acc = 0.0;
  for (var ky = 0u; ky < 3u; ky++) {
    // iy = 2·oy + ky − 1  ⇔  oy = (iy + 1 − ky)/2, which must be whole and inside.
    let ty = i32(iy) + 1 - i32(ky);
    if (ty < 0 || (ty & 1) != 0 || u32(ty) / 2u >= params.ho) {
      continue;
    }
    let oy = u32(ty) / 2u;
    for (var kx = 0u; kx < 3u; kx++) {
      let tx = i32(ix) + 1 - i32(kx);
      if (tx < 0 || (tx & 1) != 0 || u32(tx) / 2u >= params.wo) {
        continue;
      }
      let m = (b * params.ho + oy) * params.wo + u32(tx) / 2u;
      acc += dcol[m * k + ci * 9u + ky * 3u + kx];
    }
  }
  dx[i] = acc;
}
