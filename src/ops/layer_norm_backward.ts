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
 * block sums (`src/ops/_scan.ts`) and added to `dWeight`/`dBias`.
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

/**
 * LayerNorm forward in float64 (the reference the finite-difference checks
 * differentiate).
 *
 * @example
 * ```ts
 * import { layerNormForwardReference } from "./layer_norm_backward.ts";
 * const y = layerNormForwardReference([1, 3], [1, 1], null, 2, 0);
 * if (y[0] !== -1 || y[1] !== 1) throw new Error("layerNorm");
 * ```
 */
export function layerNormForwardReference(
  x: ArrayLike<number>,
  weight: ArrayLike<number>,
  bias: ArrayLike<number> | null,
  C: number,
  eps: number,
): Float64Array {
  checkLengths("layerNormForwardReference", x.length, weight.length, bias?.length ?? C, C);
  const rows = x.length / C;
  const y = new Float64Array(x.length);
  for (let r = 0; r < rows; r++) {
    const [mean, rstd] = rowStats(x, r * C, C, eps);
    for (let c = 0; c < C; c++) {
      y[r * C + c] = (x[r * C + c] - mean) * rstd * weight[c] + (bias ? bias[c] : 0);
    }
  }
  return y;
}

/**
 * LayerNorm backward in float64.
 *
 * @param args `dy`, `x` (`rows·C` values), `weight` (`C`); `dWeight` and
 *   `dBias` (`C`, or null) receive the **added** parameter gradients
 * @returns ∂x (assigned)
 * @example
 * ```ts
 * import { layerNormBackwardReference } from "./layer_norm_backward.ts";
 * const dWeight = new Float64Array(2);
 * const dBias = new Float64Array(2);
 * const dx = layerNormBackwardReference(
 *   { dy: [1, 1], x: [1, 3], weight: [1, 1], dWeight, dBias }, 2, 0,
 * );
 * // a constant upstream gradient does not reach x through the mean
 * if (dx[0] !== 0 || dx[1] !== 0 || dWeight.join() !== "-1,1" || dBias.join() !== "1,1") {
 *   throw new Error("layerNorm backward");
 * }
 * ```
 */
export function layerNormBackwardReference(
  args: {
    dy: ArrayLike<number>;
    x: ArrayLike<number>;
    weight: ArrayLike<number>;
    dWeight: Float64Array;
    dBias: Float64Array | null;
  },
  C: number,
  eps: number,
): Float64Array {
  const { dy, x, weight, dWeight, dBias } = args;
  checkLengths("layerNormBackwardReference", x.length, weight.length, dBias?.length ?? C, C);
  if (dy.length !== x.length || dWeight.length !== C) {
    throw new TypeError(
      `layerNormBackwardReference: dy has ${dy.length} values and dWeight ${dWeight.length}, ` +
        `expected ${x.length} and ${C}`,
    );
  }
  const rows = x.length / C;
  const dx = new Float64Array(x.length);
  const xhat = new Float64Array(C);
  for (let r = 0; r < rows; r++) {
    const o = r * C;
    const [mean, rstd] = rowStats(x, o, C, eps);
    let gMean = 0;
    let gxMean = 0;
    for (let c = 0; c < C; c++) {
      xhat[c] = (x[o + c] - mean) * rstd;
      const g = dy[o + c] * weight[c];
      gMean += g;
      gxMean += g * xhat[c];
      dWeight[c] += dy[o + c] * xhat[c];
      if (dBias) dBias[c] += dy[o + c];
    }
    gMean /= C;
    gxMean /= C;
    for (let c = 0; c < C; c++) {
      dx[o + c] = rstd * (dy[o + c] * weight[c] - gMean - xhat[c] * gxMean);
    }
  }
  return dx;
}

function rowStats(x: ArrayLike<number>, o: number, C: number, eps: number): [number, number] {
  let s = 0;
  for (let c = 0; c < C; c++) s += x[o + c];
  const mean = s / C;
  let q = 0;
  for (let c = 0; c < C; c++) q += (x[o + c] - mean) ** 2;
  return [mean, 1 / Math.sqrt(q / C + eps)];
}

function checkLengths(op: string, xLen: number, wLen: number, bLen: number, C: number): void {
  if (!Number.isInteger(C) || C <= 0 || xLen % C !== 0 || wLen !== C || bLen !== C) {
    throw new TypeError(
      `${op}: ${xLen} values, weight ${wLen}, bias ${bLen} do not fit rows of C = ${C}`,
    );
  }
}
