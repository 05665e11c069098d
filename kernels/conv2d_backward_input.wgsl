// The stem's 3×3 stride-2 padding-1 convolutions (no bias) in training, with
// PyTorch's weight layout W[co, ci, ky, kx] = w[(co·Cin + ci)·9 + ky·3 + kx]:
//
//   y[b, oy, ox, co] = Σ_{ci, ky, kx} x(b, ci, 2·oy + ky − 1, 2·ox + kx − 1) · W[co, ci, ky, kx]
//
// `y` and `dy` are channels-last [B, Ho, Wo, Cout] (the layout of conv2d.wgsl);
// the input is NCHW (`nchw` = 1, the images) or NHWC (a previous stage).
//
// Input gradient, one thread per input element, in the input's layout:
//   dx(b, ci, iy, ix) = Σ_{co, ky, kx : iy = 2·oy + ky − 1, ix = 2·ox + kx − 1}
//                         dy[b, oy, ox, co] · W[co, ci, ky, kx]      (assigned)
//
// Bindings: 1 = dy, 2 = W, 3 = dx (read_write).

{{include grid}}
{{include conv_taps}}

struct Params {
  n: u32,      // threads (pack_weight, input_grad) or workgroups (weight_grad) in total
  batches: u32,
  cin: u32,
  h: u32,
  w: u32,
  cout: u32,
  ho: u32,
  wo: u32,
  nchw: u32,   // 1: input is NCHW, 0: NHWC
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read> kernel_w: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;

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
      let g_at = ((b * params.ho + u32(oy)) * params.wo + u32(ox)) * params.cout;
      let w_at = ci * 9u + ky * 3u + kx;
      for (var co = 0u; co < params.cout; co++) {
        acc += grad[g_at + co] * kernel_w[co * params.cin * 9u + w_at];
      }
    }
  }
  out[i] = acc;
}
