/**
 * LayerNorm over the last dimension, as `torch.nn.LayerNorm(C, eps)`:
 * biased variance, elementwise affine weight and optional bias.
 *
 * GPU kernel: `kernels/layer_norm.wgsl`, one workgroup per row. Float64
 * reference: `layerNormReference` in `layer_norm_reference.ts`.
 *
 * @module
 */

import { f32 } from "../gpu/runtime.ts";
import type { Gpu, Tensor } from "../gpu/runtime.ts";
import layerNormWgsl from "../../kernels/layer_norm.wgsl" with { type: "text" };
import {
  assertF32,
  assertShape,
  bindingLimit,
  bindRows,
  lastDimRows,
  outputTensor,
  rowPieces,
  rowWorkgroupSize,
  storageAlignment,
} from "./_shapes.ts";
import type { ChunkOptions } from "./_shapes.ts";

/**
 * Normalise each row of `x` over its last dimension on the GPU.
 * Records dispatches only.
 *
 * @param x f32 tensor `[..., C]`
 * @param weight f32 `[C]`
 * @param bias f32 `[C]`, or null for a LayerNorm without bias
 * @param eps added to the variance (1e-5 in PyTorch, 1e-6 in the vision models)
 * @param out optional f32 tensor of x's shape to write into (not an input)
 * @param options test-only chunking limit
 * @returns `out` or a new tensor of x's shape
 * @example
 * ```ts ignore
 * const C = 4;
 * const w = gpu.upload(new Float32Array(C).fill(1), [C]);
 * const y = await layerNorm(gpu, gpu.upload(new Float32Array([1, 2, 3, 4]), [1, C]), w, null, 1e-5);
 * ```
 */
export async function layerNorm(
  gpu: Gpu,
  x: Tensor,
  weight: Tensor,
  bias: Tensor | null,
  eps: number,
  out?: Tensor,
  options: ChunkOptions = {},
): Promise<Tensor> {
  assertF32("layerNorm", "x", x);
  assertF32("layerNorm", "weight", weight);
  const { rows, cols } = lastDimRows("layerNorm", "x", x);
  assertShape("layerNorm", "weight", weight, [cols]);
  if (bias) {
    assertF32("layerNorm", "bias", bias);
    assertShape("layerNorm", "bias", bias, [cols]);
  }
  if (!(eps >= 0) || !Number.isFinite(eps)) {
    throw new RangeError(`layerNorm: eps must be a finite number ≥ 0, got ${eps}`);
  }
  const y = outputTensor(gpu, "layerNorm", x.shape, [x, weight, bias], out);
  const align = storageAlignment(gpu);
  const limit = bindingLimit(gpu, options);
  const pieces = rowPieces("layerNorm", rows, cols * 4, limit, align);
  if (pieces.length === 0) return y;
  gpu.assertBindable("layerNorm weight", cols * 4);
  const kernel = await gpu.kernel(
    "layer_norm",
    layerNormWgsl,
    { workgroupSize: rowWorkgroupSize(cols) },
    bias ? "main" : "main_no_bias",
  );
  for (const { start, count } of pieces) {
    const xs = bindRows(x, start, count, cols, align);
    const ys = bindRows(y, start, count, cols, align);
    const bindings = [xs.range, weight, ys.range];
    if (bias) bindings.push(bias);
    gpu.dispatch(kernel, { bindings, params: [count, cols, xs.base, f32(eps)], workgroups: count });
  }
  return y;
}
