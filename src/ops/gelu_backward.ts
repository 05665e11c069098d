/**
 * Backward of exact (erf) GELU, `y = x·Φ(x)`:
 *
 *     ∂x = ∂y · (Φ(x) + x·φ(x)),   φ(x) = e^(−x²/2)/√(2π)      (assigned)
 *
 * What the forward must save: its input `x` (the pre-activation).
 *
 * GPU: `kernels/gelu_backward.wgsl`, one thread per element, tensors over
 * one storage binding processed in pieces. Float64 reference:
 * `geluBackwardReference` in `gelu_reference.ts`.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import geluBackwardWgsl from "../../kernels/gelu_backward.wgsl" with { type: "text" };
import {
  assertF32,
  assertShape,
  bindingLimit,
  bindRows,
  rowPieces,
  storageAlignment,
} from "./_shapes.ts";
import type { ChunkOptions } from "./_shapes.ts";

const WORKGROUP_SIZE = 256;

/**
 * GELU backward on the GPU. Records dispatches only.
 *
 * @param args `dy` upstream gradient and `x` the forward's input, same shape
 * @param options test-only chunking limit
 * @returns ∂x, a new tensor shaped like `x` (assigned)
 * @throws {TypeError} on wrong shapes or dtypes
 * @example
 * ```ts ignore
 * const dPre = await geluBackward(gpu, { dy: dAct, x: pre });
 * ```
 */
export async function geluBackward(
  gpu: Gpu,
  args: { dy: Tensor; x: Tensor },
  options: ChunkOptions = {},
): Promise<Tensor> {
  const op = "geluBackward";
  const { dy, x } = args;
  assertF32(op, "dy", dy);
  assertF32(op, "x", x);
  assertShape(op, "dy", dy, x.shape);
  const dx = gpu.empty(x.shape, "f32", `${op}.dx`);
  const align = storageAlignment(gpu);
  const pieces = rowPieces(op, x.numel, 4, bindingLimit(gpu, options), align);
  if (pieces.length === 0) return dx;
  const kernel = await gpu.kernel("gelu_backward", geluBackwardWgsl, {
    workgroupSize: WORKGROUP_SIZE,
  });
  for (const { start, count } of pieces) {
    const ds = bindRows(dy, start, count, 1, align);
    const xs = bindRows(x, start, count, 1, align);
    const outs = bindRows(dx, start, count, 1, align);
    // Equal offsets give equal bases: every tensor here has the same layout.
    gpu.dispatch(kernel, {
      bindings: [ds.range, xs.range, outs.range],
      params: [count, xs.base],
      workgroups: Math.ceil(count / WORKGROUP_SIZE),
    });
  }
  return dx;
}
