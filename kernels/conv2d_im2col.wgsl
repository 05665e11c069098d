// The stem convolution (3×3, stride 2, padding 1) as a GEMM, step 1: gather
// the input patches into a matrix (im2col), one row per output pixel and
// PyTorch's weight order along the row:
//
//   col[m, ci·9 + ky·3 + kx] = in(b, ci, 2·oy + ky − 1, 2·ox + kx − 1)   (0 outside)
//   m = (b·Ho + oy)·Wo + ox,   col is [B·Ho·Wo, Cin·9]
//
// so that y = col · Wᵀ with W = [Cout, Cin·9] (or its transpose, the folded
// weight [Cin·9, Cout4]) is the convolution, run by the GEMM engine. One
// invocation per (output pixel, input channel) writes its 9 taps; neighbouring
// invocations read neighbouring channels of an NHWC input.
//
// The input is NCHW (the images) when `nchw` is 1, else NHWC. Batches too
// large for one binding run in pieces of whole images starting at element
// `in_base` of the input's binding and `out_base` of col's.
//
// Bindings: 1 = input, 2 = col (read_write).

{{include grid}}

struct Params {
  n: u32,     // invocations of this piece: images · Ho · Wo · Cin
  cin: u32,
  h: u32,
  w: u32,
  ho: u32,
  wo: u32,
  nchw: u32,
  in_base: u32,
  out_base: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read_write> col: array<f32>;

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
  let cin = params.cin;
  let ci = i % cin;
  let m = i / cin; // output pixel of the piece: (b, oy, ox)
  let ox = m % params.wo;
  let oy = (m / params.wo) % params.ho;
  let b = m / (params.wo * params.ho);
  let h = i32(params.h);
  let w = i32(params.w);
  // Element (iy, ix) of channel ci of image b is at base + (iy·W + ix)·step.
  var base: u32;
  var step: u32;
  if (params.nchw == 1u) {
    base = params.in_base + (b * cin + ci) * params.h * params.w;
    step = 1u;
  } else {
    base = params.in_base + b * params.h * params.w * cin + ci;
    step = cin;
  }
  let out = params.out_base + m * cin * 9u + ci * 9u;
  for (var ky = 0; ky < 3; ky++) {
    let iy = i32(oy) * 2 + ky - 1;
    for (var kx = 0; kx < 3; kx++) {
      let ix = i32(ox) * 2 + kx - 1;
      var v = 0.0;
      if (iy >= 0 && iy < h && ix >= 0 && ix < w) {
        v = input[base + (u32(iy) * params.w + u32(ix)) * step];
      }
      col[out + u32(ky * 3 + kx)] = v;
    }
  }
}
