/**
 * Exact (erf) GELU, `y = x·Φ(x) = 0.5·x·(1 + erf(x/√2))`, as PyTorch's
 * `nn.GELU()` with its default `approximate="none"`.
 *
 * The GPU kernel is `kernels/gelu.wgsl` (its header says which erf
 * approximation it uses and why); the float64 reference, with an
 * independent erf, is `geluReference` in `gelu_reference.ts`.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import geluWgsl from "../../kernels/gelu.wgsl" with { type: "text" };
import {
  assertF32,
  bindingLimit,
  bindRows,
  outputTensor,
  rowPieces,
  storageAlignment,
} from "./_shapes.ts";
import type { ChunkOptions } from "./_shapes.ts";

const WORKGROUP_SIZE = 256;

/**
 * Apply exact GELU elementwise on the GPU. Records dispatches only.
 *
 * @param x any-shaped f32 tensor
 * @param out optional f32 tensor of x's shape to write into (not x itself)
 * @param options test-only chunking limit
 * @returns `out` or a new tensor of x's shape
 * @example
 * ```ts ignore
 * const y = await gelu(gpu, gpu.upload(new Float32Array([-1, 0, 1]), [3]));
 * console.log(await y.read()); // ≈ [-0.1587, 0, 0.8413]
 * ```
 */
export async function gelu(
  gpu: Gpu,
  x: Tensor,
  out?: Tensor,
  options: ChunkOptions = {},
): Promise<Tensor> {
  assertF32("gelu", "x", x);
  const y = outputTensor(gpu, "gelu", x.shape, [x], out);
  const n = x.numel;
  const align = storageAlignment(gpu);
  const pieces = rowPieces("gelu", n, 4, bindingLimit(gpu, options), align);
  if (pieces.length === 0) return y;
  const kernel = await gpu.kernel("gelu", geluWgsl, { workgroupSize: WORKGROUP_SIZE });
  for (const { start, count } of pieces) {
    const xs = bindRows(x, start, count, 1, align);
    const ys = bindRows(y, start, count, 1, align);
    gpu.dispatch(kernel, {
      bindings: [xs.range, ys.range],
      params: [count, xs.base],
      workgroups: Math.ceil(count / WORKGROUP_SIZE),
    });
  }
  return y;
}
