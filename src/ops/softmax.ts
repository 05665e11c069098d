/**
 * Softmax over the last dimension, numerically stable (the row maximum is
 * subtracted before exponentiating), as `torch.softmax(x, -1)`.
 *
 * GPU kernel: `kernels/softmax.wgsl`, one workgroup per row. Float64
 * reference: `softmaxReference` in `softmax_reference.ts`.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import softmaxWgsl from "../../kernels/softmax.wgsl" with { type: "text" };
import {
  assertF32,
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
 * Softmax of each row of `x` (over its last dimension) on the GPU.
 * Records dispatches only.
 *
 * Use large negative finite values, not −Infinity, to mask entries: WGSL
 * implementations may assume that no infinities occur.
 *
 * @param x f32 tensor `[..., C]`
 * @param out optional f32 tensor of x's shape to write into (not x itself)
 * @param options test-only chunking limit
 * @returns `out` or a new tensor of x's shape
 * @example
 * ```ts ignore
 * const p = await softmax(gpu, gpu.upload(new Float32Array([1, 2, 3, 0]), [2, 2]));
 * console.log(await p.read()); // ≈ [0.269, 0.731, 0.953, 0.047]
 * ```
 */
export async function softmax(
  gpu: Gpu,
  x: Tensor,
  out?: Tensor,
  options: ChunkOptions = {},
): Promise<Tensor> {
  assertF32("softmax", "x", x);
  const { rows, cols } = lastDimRows("softmax", "x", x);
  const y = outputTensor(gpu, "softmax", x.shape, [x], out);
  const align = storageAlignment(gpu);
  const pieces = rowPieces("softmax", rows, cols * 4, bindingLimit(gpu, options), align);
  if (pieces.length === 0) return y;
  const kernel = await gpu.kernel("softmax", softmaxWgsl, {
    workgroupSize: rowWorkgroupSize(cols),
  });
  for (const { start, count } of pieces) {
    const xs = bindRows(x, start, count, cols, align);
    const ys = bindRows(y, start, count, cols, align);
    gpu.dispatch(kernel, {
      bindings: [xs.range, ys.range],
      params: [count, cols, xs.base],
      workgroups: count,
    });
  }
  return y;
}
