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
      let ox = u32(tx) / 2u;
      let g_at = ((b * params.ho + oy) * params.wo + ox) * params.cout;
      let w_at = ci * 9u + ky * 3u + kx;
      for (var co = 0u; co < params.cout; co++) {
        acc += grad[g_at + co] * kernel_w[co * params.cin * 9u + w_at];
      }
    }
  }
  out[i] = acc;
}
