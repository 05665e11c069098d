/**
 * Backward of LayerNorm over the last dimension (`torch.nn.LayerNorm(C, eps)`,
 * biased variance, affine weight, optional bias):
 *
 *     x̂ = (x − μ)·r,  r = 1/√(var + eps),  y = x̂ ⊙ w + b
 *     ∂x  = r · (g − mean_c(g) − x̂ · mean_c(g ⊙ x̂)),  g = ∂y ⊙ w   (assigned)
 *     ∂w += Σ_rows ∂y ⊙ x̂                                            (accumulated)
 *     ∂b += Σ_rows ∂y                                                (accumulated)
 *
 * What the forward must save: its input `x` only; the row statistics are
 * recomputed (two passes, as the forward) inside the backward kernel.
 *
 * GPU: `kernels/layer_norm_backward.wgsl`, one workgroup per row, writes ∂x
 * and the per-row products `∂y ⊙ x̂` into a scratch tensor; the parameter
 * gradients are then column sums over rows, reduced as a tree of parallel
 * block sums (`src/ops/_scan.ts`) and added to `dWeight`/`dBias`. Float64
 * reference: `layerNormBackwardReference` in `layer_norm_reference.ts`.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { f32 } from "../gpu/runtime.ts";
import layerNormBackwardWgsl from "../../kernels/layer_norm_backward.wgsl" with { type: "text" };
import { assertF32, assertShape, lastDimRows, rowWorkgroupSize } from "./_shapes.ts";
import { accumulateRowSums } from "./linear_backward.ts";

/** Arguments of {@linkcode layerNormBackward}. */
export interface LayerNormBackwardArgs {
  /** Upstream gradient `[..., C]`. */
  dy: Tensor;
  /** The forward's input `[..., C]` (saved). */
  x: Tensor;
  /** `[C]` */
  weight: Tensor;
  /** The forward's epsilon. */
  eps: number;
  /** `[C]`, receives `Σ_rows ∂y ⊙ x̂` (added). */
  dWeight: Tensor;
  /** `[C]`, receives `Σ_rows ∂y` (added); null for a LayerNorm without bias. */
  dBias: Tensor | null;
}

/**
 * LayerNorm backward on the GPU. Records dispatches only; every tensor must
 * fit one storage binding.
 *
 * @returns ∂x, a new tensor shaped like `x` (assigned)
 * @throws {TypeError} on wrong shapes or dtypes
 * @throws {RangeError} for a negative or non-finite eps
 * @example
 * ```ts ignore
 * const dx = await layerNormBackward(gpu, { dy, x, weight, eps: 1e-5, dWeight, dBias });
 * ```
 */
export async function layerNormBackward(gpu: Gpu, args: LayerNormBackwardArgs): Promise<Tensor> {
  const op = "layerNormBackward";
  const { dy, x, weight, eps, dWeight, dBias } = args;
  for (const [name, t] of Object.entries({ dy, x, weight, dWeight })) assertF32(op, name, t);
  const { rows, cols } = lastDimRows(op, "x", x);
  assertShape(op, "dy", dy, x.shape);
  assertShape(op, "weight", weight, [cols]);
  assertShape(op, "dWeight", dWeight, [cols]);
  if (dBias) {
    assertF32(op, "dBias", dBias);
    assertShape(op, "dBias", dBias, [cols]);
  }
  if (!(eps >= 0) || !Number.isFinite(eps)) {
    throw new RangeError(`${op}: eps must be a finite number ≥ 0, got ${eps}`);
  }
  for (const [name, t] of Object.entries({ dy, x })) {
    gpu.assertBindable(`${op}: ${name}`, t.byteSize);
  }
  const dx = gpu.empty(x.shape, "f32", `${op}.dx`);
  if (rows === 0 || cols === 0) return dx;
  const scratch: Tensor[] = [];
  try {
    const kernel = await gpu.kernel("layer_norm_backward", layerNormBackwardWgsl, {
      workgroupSize: rowWorkgroupSize(cols),
    });
    const prod = gpu.empty(x.shape, "f32", `${op}.dyXhat`);
    scratch.push(prod);
    gpu.dispatch(kernel, {
      bindings: [dy, x, weight, dx, prod],
      params: [rows, cols, f32(eps)],
      workgroups: rows,
    });
    await accumulateRowSums(gpu, prod, dWeight, { rows, count: cols }, scratch);
    if (dBias) await accumulateRowSums(gpu, dy, dBias, { rows, count: cols }, scratch);
  } catch (err) {
    dx.destroy();
    throw err;
  } finally {
    for (const t of scratch) t.destroy();
  }
  return dx;
}
