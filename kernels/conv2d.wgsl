// 3×3 convolution, stride 2, padding 1 (the XCiT/ToST patch stem), with a
// bias (eval-mode BatchNorm folded in on the host). One thread per output
// pixel and group of 4 output channels, so every input value read serves 4
// multiply-adds; outputs are channels-last (NHWC), which for the last stage
// is the token layout [B, Ho·Wo, C]:
//
//   y[b, oy, ox, co] = bias[co] + Σ_{ci, ky, kx} in(b, ci, 2·oy + ky − 1, 2·ox + kx − 1)
//                                   · weight[(ci·3 + ky)·3 + kx, co]
//
// with zero padding. `weight` is PyTorch's [Cout, Cin, 3, 3] transposed to
// [Cin·9, Cout4] on the host, Cout4 = Cout rounded up to a multiple of 4 with
// zero columns, and read as vec4s. The input is NCHW (the images) when `nchw`
// is 1, else NHWC (the previous stage's output).
//
// Bindings: 1 = input, 2 = weight (vec4), 3 = bias, 4 = y (read_write).
// Batches too large for one binding are run in pieces of whole images; a
// piece's images start at element `in_base` of the input's binding and
// `out_base` of y's.

{{include grid}}

struct Params {
  n: u32,     // threads of this piece: images · Ho · Wo · Cout4/4
  cin: u32,
  h: u32,
  w: u32,
  cout: u32,
  ho: u32,
  wo: u32,
  nchw: u32,  // 1: input is NCHW, 0: NHWC
  in_base: u32,  // element offset of the piece's first image in input's binding
  out_base: u32, // element offset of the piece's first image in y's binding
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<vec4f>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

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
  let cout = params.cout;
  let groups = (cout + 3u) / 4u; // vec4 columns of weight
  let g = i % groups;
  let pixel_out = i / groups; // (b, oy, ox)
  let ox = pixel_out % params.wo;
  let oy = (pixel_out / params.wo) % params.ho;
  let b = pixel_out / (params.wo * params.ho);
  let h = i32(params.h);
  let w = i32(params.w);
  let plane = params.h * params.w;
  var acc = vec4f(0.0);
  for (var ky = 0; ky < 3; ky++) {
    let iy = i32(oy) * 2 + ky - 1;
    if (iy < 0 || iy >= h) {
      continue;
    }
    for (var kx = 0; kx < 3; kx++) {
      let ix = i32(ox) * 2 + kx - 1;
      if (ix < 0 || ix >= w) {
        continue;
      }
      let pixel = u32(iy) * params.w + u32(ix);
      let k = u32(ky * 3 + kx);
      if (params.nchw == 1u) {
        for (var ci = 0u; ci < params.cin; ci++) {
          acc += input[params.in_base + (b * params.cin + ci) * plane + pixel] *
            weight[(ci * 9u + k) * groups + g];
        }
      } else {
        let base = params.in_base + (b * plane + pixel) * params.cin;
        for (var ci = 0u; ci < params.cin; ci++) {
          acc += input[base + ci] * weight[(ci * 9u + k) * groups + g];
        }
      }
    }
  }
  let co0 = g * 4u;
  let out0 = params.out_base + pixel_out * cout + co0;
  for (var j = 0u; j < 4u; j++) {
    if (co0 + j < cout) {
      y[out0 + j] = acc[j] + bias[co0 + j];
    }
  }
}
