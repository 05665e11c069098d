/**
 * Training of the stem's 3×3 stride-2 padding-1 convolutions (no bias,
 * PyTorch weight layout `[Cout, Cin, 3, 3]`): a forward that packs the
 * weight for `kernels/conv2d.wgsl` ({@linkcode conv3x3s2Train}), and the
 * backward ({@linkcode conv3x3s2Backward}):
 *
 *     ∂x  = conv_transpose(∂y, W)          (assigned)
 *     ∂W += Σ_{b,oy,ox} ∂y ⊗ x-patch        (accumulated)
 *
 * in two designs (`CONV2D_VARIANTS`; the forward's choice is the `conv2d`
 * tunable's, the backward's {@linkcode CONV2D_BACKWARD}'s): `gemm`, through the GEMM engine on the patch
 * matrix (`conv2d_gemm.ts`: ∂W += ∂yᵀ·col, ∂x = col2im(∂y·W)), or `direct`
 * (kernels/conv2d_backward_weight.wgsl, one workgroup per weight element and
 * a tree reduction; kernels/conv2d_backward_input.wgsl, one thread per input
 * element).
 *
 * Layouts: the input is NCHW (`"nchw"`, the images) or NHWC (`"nhwc"`, an
 * earlier stage); outputs and `∂y` are NHWC `[B, Ho, Wo, Cout]`. The float64
 * reference is `conv2dBackwardReference` in `conv2d_reference.ts`.
 *
 * Gradient convention: parameter gradients accumulate (`+=`), activation
 * gradients are assigned (returned new).
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import packWgsl from "../../kernels/conv2d_pack_weight.wgsl" with { type: "text" };
import inputWgsl from "../../kernels/conv2d_backward_input.wgsl" with { type: "text" };
import weightWgsl from "../../kernels/conv2d_backward_weight.wgsl" with { type: "text" };
import {
  CHECK_CONVS,
  CONV2D,
  CONV2D_VARIANTS,
  conv3x3s2,
  convClass,
  convOutSize,
  type ConvShape,
  nchwToNhwc,
  paddedChannels,
} from "./conv2d.ts";
import { conv2dBackwardReference } from "./conv2d_reference.ts";
import { testValues, type Tunable } from "../gpu/tune.ts";
import { convGemm, convGemmBackward } from "./conv2d_gemm.ts";
import { mismatch, resolveVariant, tunableOp } from "./_tuned.ts";
import { assertF32, assertShape } from "./_shapes.ts";
import type { ConvDims, ConvLayout } from "./conv2d_gemm.ts";

const WG = 64;

export type { ConvDims, ConvLayout } from "./conv2d_gemm.ts";

function convDims(op: string, x: Tensor, weight: Tensor, layout: ConvLayout): ConvDims {
  assertF32(op, "x", x);
  assertF32(op, "weight", weight);
  if (x.shape.length !== 4) throw new TypeError(`${op}: x must be 4-D, got [${x.shape}]`);
  if (weight.shape.length !== 4 || weight.shape[2] !== 3 || weight.shape[3] !== 3) {
    throw new TypeError(`${op}: weight must be [Cout, Cin, 3, 3], got [${weight.shape}]`);
  }
  const [B, d1, d2, d3] = x.shape;
  const [cin, H, W] = layout === "nchw" ? [d1, d2, d3] : [d3, d1, d2];
  if (weight.shape[1] !== cin) {
    throw new TypeError(`${op}: weight [${weight.shape}] does not take ${cin} input channels`);
  }
  if (H < 1 || W < 1) throw new RangeError(`${op}: empty image ${H}×${W}`);
  return { B, cin, H, W, cout: weight.shape[0], ho: convOutSize(H), wo: convOutSize(W) };
}

/**
 * The design of a training convolution (`conv2d`) or its backward
 * (`conv2d_backward`): `forced`, or the tunable's choice for the call's shape.
 */
function convVariant(
  gpu: Gpu,
  op: string,
  t: Tunable<ConvShape>,
  d: ConvDims,
  forced?: string,
): Promise<string> {
  const shape = { m: d.B * d.ho * d.wo, cin: d.cin, cout: d.cout };
  return resolveVariant(gpu, op, t, shape, forced);
}

async function validateBackward(gpu: Gpu, variant: string): Promise<string | null> {
  for (const c of CHECK_CONVS) {
    const { B, cin, H, W, cout, layout } = c;
    const x = testValues(B * cin * H * W, 1);
    const weight = testValues(cout * cin * 9, 2);
    const [ho, wo] = [convOutSize(H), convOutSize(W)];
    const dyNchw = testValues(B * cout * ho * wo, 3);
    const dWant = new Float64Array(weight.length).fill(0.5);
    const geometry = { kernel: 3, stride: 2, padding: 1 };
    const map = { data: Float64Array.from(x), B, C: cin, H, W };
    const dxNchw = conv2dBackwardReference(dyNchw, map, weight, dWant, geometry);
    const nhwc = (a: ArrayLike<number>, C: number, P: number) =>
      Float32Array.from(nchwToNhwc(a, B, C, P));
    const xs = layout === "nchw"
      ? gpu.upload(x, [B, cin, H, W])
      : gpu.upload(nhwc(x, cin, H * W), [B, H, W, cin]);
    const ws = gpu.upload(weight, [cout, cin, 3, 3]);
    const dy = gpu.upload(nhwc(dyNchw, cout, ho * wo), [B, ho, wo, cout]);
    const dW = gpu.upload(new Float32Array(weight.length).fill(0.5), [cout, cin, 3, 3]);
    const dx = await conv3x3s2Backward(gpu, {
      dy,
      x: xs,
      weight: ws,
      dWeight: dW,
      layout,
      variant,
    });
    const what = `${B}×${cin}×${H}×${W}→${cout} ${layout}`;
    const dxWant = layout === "nchw" ? dxNchw : nchwToNhwc(dxNchw, B, cin, H * W);
    const tol = { atol: 1e-5, rtol: 1e-5 };
    const bad = mismatch(`${what} ∂x`, (await dx!.read()) as Float32Array, dxWant, tol) ??
      mismatch(`${what} ∂W`, (await dW.read()) as Float32Array, dWant, tol);
    for (const t of [xs, ws, dy, dW, dx!]) t.destroy();
    if (bad) return bad;
  }
  return null;
}

/**
 * The stem convolution backward's tunable: `gemm` (∂W and ∂x through the
 * GEMM engine on the patch matrix) or `direct` (a weight-gradient kernel
 * with a tree reduction per weight, an input-gradient kernel), classed as
 * the forward's `conv2d`.
 */
export const CONV2D_BACKWARD: Tunable<ConvShape> = tunableOp<ConvShape>({
  op: "conv2d_backward",
  version: 1,
  variants: CONV2D_VARIANTS,
  unsupported: (gpu, v, s) => CONV2D.unsupported(gpu, v, s),
  shapeClass: convClass,
  // The direct weight gradient's tree reductions are slow on lavapipe (470 ms
  // of a 1 s mnist step); the GEMM is the choice without a measurement.
  fallback: (gpu, s) => CONV2D.unsupported(gpu, "gemm", s) ? "direct" : "gemm",
  validate: validateBackward,
  workload(gpu, { m, cin, cout }) {
    // One square NHWC image with about m output pixels.
    const side = Math.max(1, Math.ceil(Math.sqrt(m)));
    const x = gpu.upload(testValues(4 * side * side * cin, 1), [1, 2 * side, 2 * side, cin]);
    const w = gpu.upload(testValues(cout * cin * 9, 2), [cout, cin, 3, 3]);
    const dy = gpu.upload(testValues(side * side * cout, 3), [1, side, side, cout]);
    const dW = gpu.empty([cout, cin, 3, 3], "f32", "tune.dW");
    return {
      shape: [m, cin, cout],
      run: async (variant) => {
        const args = { dy, x, weight: w, dWeight: dW, layout: "nhwc" as const, variant };
        (await conv3x3s2Backward(gpu, args))?.destroy();
      },
      destroy() {
        for (const t of [x, w, dy, dW]) t.destroy();
      },
    };
  },
  callsPerRound: 1,
});

function params(d: ConvDims, n: number, layout: ConvLayout): number[] {
  return [n, d.B, d.cin, d.H, d.W, d.cout, d.ho, d.wo, layout === "nchw" ? 1 : 0];
}

/**
 * Pack a `[Cout, Cin, 3, 3]` weight into the `[Cin·9, Cout4]` layout of
 * `conv3x3s2` (zero columns up to a multiple of 4). Records one dispatch.
 */
export async function packConvWeight(gpu: Gpu, weight: Tensor): Promise<Tensor> {
  const op = "packConvWeight";
  assertF32(op, "weight", weight);
  if (weight.shape.length !== 4 || weight.shape[2] !== 3 || weight.shape[3] !== 3) {
    throw new TypeError(`${op}: weight must be [Cout, Cin, 3, 3], got [${weight.shape}]`);
  }
  const [cout, cin] = weight.shape;
  const packed = gpu.empty([cin * 9, paddedChannels(cout)], "f32", `${op}.packed`);
  const n = packed.numel;
  if (n === 0) return packed;
  const kernel = await gpu.kernel("conv2d_pack_weight", packWgsl);
  gpu.dispatch(kernel, {
    bindings: [weight, packed],
    params: [n, 0, cin, 0, 0, cout, 0, 0, 0],
    workgroups: Math.ceil(n / WG),
  });
  return packed;
}

/**
 * Training-mode forward of a stem convolution without bias, from the
 * PyTorch-layout weight. Records dispatches only.
 *
 * @param x f32 `[B, Cin, H, W]` ("nchw") or `[B, H, W, Cin]` ("nhwc")
 * @param weight f32 `[Cout, Cin, 3, 3]`
 * @returns f32 `[B, Ho, Wo, Cout]`
 * @example
 * ```ts ignore
 * const y = await conv3x3s2Train(gpu, images, weight, "nchw");
 * ```
 */
export async function conv3x3s2Train(
  gpu: Gpu,
  x: Tensor,
  weight: Tensor,
  layout: ConvLayout,
  options: { variant?: string } = {},
): Promise<Tensor> {
  const op = "conv3x3s2Train";
  const d = convDims(op, x, weight, layout);
  if (await convVariant(gpu, op, CONV2D, d, options.variant) === "gemm") {
    const w = { tensor: weight, layout: "depth" as const, ld: d.cin * 9 };
    return await convGemm(gpu, x, d, layout, w, { bias: null, gelu: false });
  }
  const packed = await packConvWeight(gpu, weight);
  const zero = gpu.upload(new Float32Array(d.cout), [d.cout], "conv3x3s2Train.bias");
  try {
    return await conv3x3s2(gpu, x, packed, zero, layout);
  } finally {
    packed.destroy();
    zero.destroy();
  }
}

/**
 * Backward of a stem convolution. Records dispatches only; every tensor must
 * fit one storage binding.
 *
 * @param args `dy` f32 `[B, Ho, Wo, Cout]`, the forward's input `x` and
 *   `weight` `[Cout, Cin, 3, 3]`, `dWeight` (same shape) receiving the
 *   **added** weight gradient, the input `layout`, and `inputGrad` (default
 *   true; false for the first stage, whose input is the images)
 * @returns ∂x in x's shape and layout (assigned), or null without `inputGrad`
 * @throws {TypeError} for mismatched shapes; {RangeError} for a tensor over one binding
 * @example
 * ```ts ignore
 * const dx = await conv3x3s2Backward(gpu, { dy, x, weight, dWeight, layout: "nhwc" });
 * ```
 */
export async function conv3x3s2Backward(
  gpu: Gpu,
  args: {
    dy: Tensor;
    x: Tensor;
    weight: Tensor;
    dWeight: Tensor;
    layout: ConvLayout;
    inputGrad?: boolean;
    /** A `CONV2D_VARIANTS` name instead of the tuned choice (tests, benches). */
    variant?: string;
  },
): Promise<Tensor | null> {
  const op = "conv3x3s2Backward";
  const { dy, x, weight, dWeight, layout } = args;
  const d = convDims(op, x, weight, layout);
  assertF32(op, "dy", dy);
  assertShape(op, "dy", dy, [d.B, d.ho, d.wo, d.cout]);
  assertF32(op, "dWeight", dWeight);
  assertShape(op, "dWeight", dWeight, weight.shape);
  for (const [name, t] of Object.entries({ dy, x, weight })) {
    gpu.assertBindable(`${op}: ${name}`, t.byteSize);
  }
  if (await convVariant(gpu, op, CONV2D_BACKWARD, d, args.variant) === "gemm") {
    const inputGrad = args.inputGrad ?? true;
    return await convGemmBackward(gpu, { dy, x, weight, dWeight, d, layout, inputGrad });
  }
  const elems = dWeight.numel;
  if (elems > 0 && d.B > 0) {
    const kernel = await gpu.kernel("conv2d_backward_weight", weightWgsl);
    gpu.dispatch(kernel, {
      bindings: [x, dy, dWeight],
      params: params(d, elems, layout),
      workgroups: elems,
    });
  }
  if (args.inputGrad === false) return null;
  const dx = gpu.empty(x.shape, "f32", `${op}.dx`);
  const n = dx.numel;
  if (n > 0) {
    const kernel = await gpu.kernel("conv2d_backward_input", inputWgsl);
    gpu.dispatch(kernel, {
      bindings: [dy, weight, dx],
      params: params(d, n, layout),
      workgroups: Math.ceil(n / WG),
    });
  }
  return dx;
}
