/**
 * The stem's 3×3 stride-2 padding-1 convolution through the GEMM engine:
 *
 *     col = im2col(x)                 [B·Ho·Wo, Cin·9]   (kernels/conv2d_im2col.wgsl)
 *     y   = epilogue(col · Wᵀ)        [B·Ho·Wo, Cout]    (gemm: bias, GELU)
 *
 * and its backward:
 *
 *     ∂W  += ∂yᵀ · col                [Cout, Cin·9]      (gemm, accumulated)
 *     ∂x   = col2im(∂y · W)           x's shape          (gemm, kernels/conv2d_col2im.wgsl)
 *
 * A row of `col` holds an output pixel's patch in PyTorch's weight order
 * (`ci·9 + ky·3 + kx`), so `W` is PyTorch's `[Cout, Cin, 3, 3]` seen as
 * `[Cout, Cin·9]` ("depth" operand) or the folded, transposed `[Cin·9, Cout4]`
 * of `foldBatchNorm` ("rows" operand). The patch matrix is a temporary of
 * the active arena, Cin·9 times the output's pixels; the direct kernel
 * (`kernels/conv2d.wgsl`) needs none and is the other variant of the
 * `conv2d` tunable (`conv2d.ts`).
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import im2colWgsl from "../../kernels/conv2d_im2col.wgsl" with { type: "text" };
import col2imWgsl from "../../kernels/conv2d_col2im.wgsl" with { type: "text" };
import {
  bindingLimit,
  bindRows,
  type ChunkOptions,
  rowPieces,
  storageAlignment,
} from "./_shapes.ts";
import type { GemmOperand } from "./gemm.ts";
import { gemmAuto } from "./gemm_tune.ts";

const WG = 64;

/** Sizes of one stem convolution call. */
export interface ConvDims {
  B: number;
  cin: number;
  H: number;
  W: number;
  cout: number;
  ho: number;
  wo: number;
}

/** Input layout of a stem convolution. */
export type ConvLayout = "nchw" | "nhwc";

/** Bytes of the patch matrix `[B·Ho·Wo, Cin·9]` of a call. */
export function colBytes(d: ConvDims): number {
  return d.B * d.ho * d.wo * d.cin * 9 * 4;
}

/**
 * Gather the patches of `x` into `[B·Ho·Wo, Cin·9]` (a new tensor of the
 * active arena). Records one dispatch per piece of images that fits one
 * binding.
 */
export async function im2col(
  gpu: Gpu,
  x: Tensor,
  d: ConvDims,
  layout: ConvLayout,
  options: ChunkOptions = {},
): Promise<Tensor> {
  const op = "im2col";
  const k = d.cin * 9;
  const col = gpu.empty([d.B * d.ho * d.wo, k], "f32", `${op}.col`);
  const perImage = d.ho * d.wo * d.cin;
  if (col.numel === 0) return col;
  const inImage = d.cin * d.H * d.W;
  const colImage = perImage * 9;
  const align = storageAlignment(gpu);
  const limit = bindingLimit(gpu, options);
  const pieces = rowPieces(op, d.B, Math.max(inImage, colImage) * 4, limit, align);
  const kernel = await gpu.kernel("conv2d_im2col", im2colWgsl, { workgroupSize: WG });
  for (const { start, count } of pieces) {
    const xs = bindRows(x, start, count, inImage, align);
    const cs = bindRows(col, start, count, colImage, align);
    const n = count * perImage;
    gpu.dispatch(kernel, {
      bindings: [xs.range, cs.range],
      params: [n, d.cin, d.H, d.W, d.ho, d.wo, layout === "nchw" ? 1 : 0, xs.base, cs.base],
      workgroups: Math.ceil(n / WG),
    });
  }
  return col;
}

/**
 * Sum patch gradients `[B·Ho·Wo, Cin·9]` back onto the input: ∂x in the
 * input's shape and layout (assigned, a new tensor). Records one dispatch;
 * both tensors must fit one binding.
 */
export async function col2im(
  gpu: Gpu,
  dcol: Tensor,
  d: ConvDims,
  layout: ConvLayout,
): Promise<Tensor> {
  const shape = layout === "nchw" ? [d.B, d.cin, d.H, d.W] : [d.B, d.H, d.W, d.cin];
  const dx = gpu.empty(shape, "f32", "col2im.dx");
  const n = dx.numel;
  if (n === 0) return dx;
  gpu.assertBindable("col2im: dcol", dcol.byteSize);
  gpu.assertBindable("col2im: dx", dx.byteSize);
  const kernel = await gpu.kernel("conv2d_col2im", col2imWgsl, { workgroupSize: WG });
  gpu.dispatch(kernel, {
    bindings: [dcol, dx],
    params: [n, d.cin, d.H, d.W, d.ho, d.wo, layout === "nchw" ? 1 : 0],
    workgroups: Math.ceil(n / WG),
  });
  return dx;
}

/**
 * `y = epilogue(im2col(x) · Wᵀ)` `[B, Ho, Wo, Cout]` through the GEMM engine.
 *
 * @param weight `W` as a GEMM operand over Cin·9 terms: PyTorch's weight
 *   (`{ layout: "depth", ld: Cin·9 }`) or the folded `[Cin·9, Cout4]`
 *   (`{ layout: "rows", ld: Cout4 }`)
 * @param epilogue the bias `[Cout]` (or null) and whether GELU follows
 */
export async function convGemm(
  gpu: Gpu,
  x: Tensor,
  d: ConvDims,
  layout: ConvLayout,
  weight: GemmOperand,
  epilogue: { bias: Tensor | null; gelu: boolean },
  options: ChunkOptions = {},
): Promise<Tensor> {
  const y = gpu.empty([d.B, d.ho, d.wo, d.cout], "f32", "conv3x3s2");
  const m = d.B * d.ho * d.wo;
  if (m === 0 || d.cout === 0) return y;
  const col = await im2col(gpu, x, d, layout, options);
  try {
    const k = d.cin * 9;
    await gemmAuto(
      gpu,
      {
        a: { tensor: col, layout: "depth", ld: k },
        b: weight,
        c: y,
        m,
        n: d.cout,
        k,
        epilogue: { bias: epilogue.bias, gelu: epilogue.gelu },
      },
      options,
      "conv3x3s2",
    );
  } finally {
    col.destroy();
  }
  return y;
}

/**
 * The backward of {@linkcode convGemm} without bias from PyTorch's weight
 * `[Cout, Cin, 3, 3]`: `∂W += ∂yᵀ·col` (col gathered again from `x`) and,
 * with `inputGrad`, `∂x = col2im(∂y·W)` (returned), else null.
 */
export async function convGemmBackward(
  gpu: Gpu,
  args: {
    dy: Tensor;
    x: Tensor;
    weight: Tensor;
    dWeight: Tensor;
    d: ConvDims;
    layout: ConvLayout;
    inputGrad: boolean;
  },
): Promise<Tensor | null> {
  const { dy, d } = args;
  const op = "conv3x3s2Backward";
  const m = d.B * d.ho * d.wo;
  const k = d.cin * 9;
  if (m > 0 && d.cout > 0) {
    const col = await im2col(gpu, args.x, d, args.layout);
    try {
      // ∂W [Cout, K] += ∂yᵀ · col: both read down their columns.
      await gemmAuto(
        gpu,
        {
          a: { tensor: dy, layout: "rows", ld: d.cout },
          b: { tensor: col, layout: "rows", ld: k },
          c: args.dWeight,
          m: d.cout,
          n: k,
          k: m,
          epilogue: { accumulate: true },
        },
        {},
        op,
      );
    } finally {
      col.destroy();
    }
  }
  if (!args.inputGrad) return null;
  const dcol = gpu.empty([m, k], "f32", `${op}.dcol`);
  try {
    if (m > 0 && d.cout > 0) {
      // dcol [M, K] = ∂y [M, Cout] · W [Cout, K].
      await gemmAuto(
        gpu,
        {
          a: { tensor: dy, layout: "depth", ld: d.cout },
          b: { tensor: args.weight, layout: "rows", ld: k },
          c: dcol,
          m,
          n: k,
          k: d.cout,
        },
        {},
        op,
      );
    } else {
      gpu.clear(dcol);
    }
    return await col2im(gpu, dcol, d, args.layout);
  } finally {
    dcol.destroy();
  }
}
