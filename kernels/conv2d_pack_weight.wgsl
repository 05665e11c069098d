// The stem's 3×3 stride-2 padding-1 convolutions (no bias) in training, with
// PyTorch's weight layout W[co, ci, ky, kx] = w[(co·Cin + ci)·9 + ky·3 + kx]:
//
//   y[b, oy, ox, co] = Σ_{ci, ky, kx} x(b, ci, 2·oy + ky − 1, 2·ox + kx − 1) · W[co, ci, ky, kx]
//
// `y` and `dy` are channels-last [B, Ho, Wo, Cout] (the layout of conv2d.wgsl);
// the input is NCHW (`nchw` = 1, the images) or NHWC (a previous stage).
//
// This kernel packs W into [Cin·9, Cout4] with zero columns, the layout
// conv2d.wgsl reads, so the forward reuses that kernel with a zero bias.
// One thread per packed element.
//
// Bindings: 1 = W, 2 = packed (read_write).

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
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

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
  let cout4 = (params.cout + 3u) / 4u * 4u;
  let co = i % cout4;
  let k = i / cout4; // ci·9 + ky·3 + kx
  var v = 0.0;
  if (co < params.cout) {
    v = src[co * params.cin * 9u + k];
  }
  out[i] = v;
}
