// The stem's 3×3 stride-2 padding-1 convolutions (no bias) in training, with
// PyTorch's weight layout W[co, ci, ky, kx] = w[(co·Cin + ci)·9 + ky·3 + kx]:
//
//   y[b, oy, ox, co] = Σ_{ci, ky, kx} x(b, ci, 2·oy + ky − 1, 2·ox + kx − 1) · W[co, ci, ky, kx]
//
// `y` and `dy` are channels-last [B, Ho, Wo, Cout] (the layout of conv2d.wgsl);
// the input is NCHW (`nchw` = 1, the images) or NHWC (a previous stage).
//
// Weight gradient, one workgroup per weight element e = (co, ci, ky, kx):
// its threads stride over the B·Ho·Wo output pixels, a tree reduction in
// workgroup memory sums them, and
//   dw[e] += Σ_pixels dy[b, oy, ox, co] · x(b, ci, 2·oy + ky − 1, 2·ox + kx − 1)   (accumulated).
//
// Bindings: 1 = x, 2 = dy, 3 = dw (read_write).

{{include grid}}
{{include reduce}}

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
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;

// x(b, ci, iy, ix) in the input's layout; the caller checks bounds.
fn input_at(b: u32, ci: u32, iy: u32, ix: u32) -> f32 {
  if (params.nchw == 1u) {
    return src[((b * params.cin + ci) * params.h + iy) * params.w + ix];
  }
  return src[((b * params.h + iy) * params.w + ix) * params.cin + ci];
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let e = flat_workgroup(wid, nwg);
  if (e >= params.n) {
    return; // uniform per workgroup
  }
  let kx = e % 3u;
  let ky = (e / 3u) % 3u;
  let ci = (e / 9u) % params.cin;
  let co = e / (9u * params.cin);
  let pixels = params.batches * params.ho * params.wo;
  var acc = 0.0;
  for (var p = lid; p < pixels; p += WG) {
    let ox = p % params.wo;
    let oy = (p / params.wo) % params.ho;
    let b = p / (params.wo * params.ho);
    let iy = i32(2u * oy + ky) - 1;
    let ix = i32(2u * ox + kx) - 1;
    if (iy >= 0 && iy < i32(params.h) && ix >= 0 && ix < i32(params.w)) {
      acc += grad[p * params.cout + co] * input_at(b, ci, u32(iy), u32(ix));
    }
  }
  let total = workgroup_sum(lid, acc);
  if (lid == 0u) {
    out[e] += total;
  }
}
