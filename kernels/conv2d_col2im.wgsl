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
{{include conv_taps}}

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
  let at = input_coords(i);
  let b = at.x;
  let ci = at.y;
  let k = params.cin * 9u;
  var acc = 0.0;
  for (var ky = 0u; ky < 3u; ky++) {
    let oy = tap_output(at.z, ky, params.ho);
    if (oy < 0) {
      continue;
    }
    for (var kx = 0u; kx < 3u; kx++) {
      let ox = tap_output(at.w, kx, params.wo);
      if (ox < 0) {
        continue;
      }
      let m = (b * params.ho + u32(oy)) * params.wo + u32(ox);
      acc += dcol[m * k + ci * 9u + ky * 3u + kx];
    }
  }
  dx[i] = acc;
}
