// The input side of the stem convolution's input gradient (3×3, stride 2,
// padding 1), shared by conv2d_backward_input.wgsl and conv2d_col2im.wgsl:
// which input element an invocation owns, and which output pixel a tap of
// it fed.
//
// Contract with the including kernel: its `params` has `cin`, `h`, `w` and
// `nchw` (1: NCHW input, 0: NHWC).

// (b, ci, iy, ix) of element i of the input, in the input's layout.
fn input_coords(i: u32) -> vec4u {
  if (params.nchw == 1u) {
    return vec4u(
      i / (params.w * params.h * params.cin),
      (i / (params.w * params.h)) % params.cin,
      (i / params.w) % params.h,
      i % params.w,
    );
  }
  return vec4u(
    i / (params.cin * params.w * params.h),
    i % params.cin,
    (i / (params.cin * params.w)) % params.h,
    (i / params.cin) % params.w,
  );
}

// The output coordinate o with i = 2·o + k − 1 along one axis of `size`
// outputs, or −1 when there is none (odd, or outside).
fn tap_output(i: u32, k: u32, size: u32) -> i32 {
  let t = i32(i) + 1 - i32(k);
  if (t < 0 || (t & 1) != 0 || u32(t) / 2u >= size) {
    return -1;
  }
  return t / 2;
}
