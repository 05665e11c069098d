/**
 * Backward of the linear layer `y = x·Wᵀ + b` (`nn.Linear`): x `[M, K]`,
 * W `[N, K]`, y `[M, N]`.
 *
 *     ∂x  = ∂y·W          (assigned)
 *     ∂W += ∂yᵀ·x         (accumulated)
 *     ∂b += Σ_rows ∂y     (accumulated)
 *
 * Gradient convention (as in llm.c): **parameter gradients accumulate**
 * (`+=`) into gradient buffers the caller provides and zeroes; **activation
 * gradients are assigned** (returned fresh).
 *
 * GPU: `kernels/linear_backward.wgsl` (`input_grad` for ∂x, `weight_grad`
 * for ∂W over splits of the rows, the splits then summed as a tree), and
 * the row sums of ∂y for ∂b; both parameter gradients are added with
 * `kernels/accumulate_transposed.wgsl`.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { f32 } from "../gpu/runtime.ts";
import linearBackwardWgsl from "../../kernels/linear_backward.wgsl" with { type: "text" };
import accumulateWgsl from "../../kernels/accumulate_transposed.wgsl" with { type: "text" };
import { assertF32, assertShape, lastDimRows } from "./_shapes.ts";
import { totalSums } from "./_scan.ts";

/** Sizes of a linear layer applied to `rows` rows. */
export interface LinearDims {
  rows: number;
  inFeatures: number;
  outFeatures: number;
}

function checkLinear(op: string, lengths: Record<string, [number, number]>): void {
  for (const [name, [got, want]] of Object.entries(lengths)) {
    if (got !== want) throw new TypeError(`${op}: ${name} has ${got} values, expected ${want}`);
  }
}

/**
 * `y = x·Wᵀ + b` in float64 (inputs of any numeric array type).
 *
 * @example
 * ```ts
 * import { linearForwardReference } from "./linear_backward.ts";
 * const y = linearForwardReference([1, 2], [1, 0, 0, 1, 1, 1], [0, 0, 1], {
 *   rows: 1, inFeatures: 2, outFeatures: 3,
 * });
 * if (y.join() !== "1,2,4") throw new Error("linear");
 * ```
 */
export function linearForwardReference(
  x: ArrayLike<number>,
  weight: ArrayLike<number>,
  bias: ArrayLike<number> | null,
  dims: LinearDims,
): Float64Array {
  const { rows: M, inFeatures: K, outFeatures: N } = dims;
  checkLinear("linearForwardReference", {
    x: [x.length, M * K],
    weight: [weight.length, N * K],
    ...(bias ? { bias: [bias.length, N] as [number, number] } : {}),
  });
  const y = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = bias ? bias[n] : 0;
      for (let k = 0; k < K; k++) s += x[m * K + k] * weight[n * K + k];
      y[m * N + n] = s;
    }
  }
  return y;
}

/**
 * Linear backward in float64.
 *
 * @param args `dy` `[M, N]`, `x` `[M, K]`, `weight` `[N, K]`; `dWeight`
 *   (`N·K`) and `dBias` (`N`, or null when the layer has no bias) receive
 *   the **added** parameter gradients
 * @returns `∂x` `[M, K]` (assigned)
 * @example
 * ```ts
 * import { linearBackwardReference } from "./linear_backward.ts";
 * const dWeight = new Float64Array(2);
 * const dBias = new Float64Array(1);
 * const dx = linearBackwardReference(
 *   { dy: [3], x: [1, 2], weight: [5, 7], dWeight, dBias },
 *   { rows: 1, inFeatures: 2, outFeatures: 1 },
 * );
 * if (dx.join() !== "15,21" || dWeight.join() !== "3,6" || dBias[0] !== 3) throw new Error();
 * ```
 */
export function linearBackwardReference(
  args: {
    dy: ArrayLike<number>;
    x: ArrayLike<number>;
    weight: ArrayLike<number>;
    dWeight: Float64Array;
    dBias: Float64Array | null;
  },
  dims: LinearDims,
): Float64Array {
  const { dy, x, weight, dWeight, dBias } = args;
  const { rows: M, inFeatures: K, outFeatures: N } = dims;
  checkLinear("linearBackwardReference", {
    dy: [dy.length, M * N],
    x: [x.length, M * K],
    weight: [weight.length, N * K],
    dWeight: [dWeight.length, N * K],
    ...(dBias ? { dBias: [dBias.length, N] as [number, number] } : {}),
  });
  const dx = new Float64Array(M * K);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      const g = dy[m * N + n];
      if (dBias) dBias[n] += g;
      for (let k = 0; k < K; k++) {
        dx[m * K + k] += g * weight[n * K + k];
        dWeight[n * K + k] += g * x[m * K + k];
      }
    }
  }
  return dx;
}

/** Rows of ∂y·x per split of the weight gradient (a multiple of 16). */
const MIN_ROWS_PER_SPLIT = 256;
/** At most this many splits (partial ∂W copies) at once. */
const MAX_SPLITS = 64;

/**
 * Record `dst[i] += Σ_rows src[row, i]` for `src` viewed as `[rows, count]`.
 * @internal shared by the backward ops
 */
export async function accumulateRowSums(
  gpu: Gpu,
  src: Tensor,
  dst: Tensor,
  dims: { rows: number; count: number },
  scratch: Tensor[],
): Promise<void> {
  if (dims.rows === 0 || dims.count === 0) return;
  const sums = await totalSums(gpu, src, 1, dims.rows, dims.count, scratch);
  const kernel = await gpu.kernel("accumulate_transposed", accumulateWgsl);
  gpu.dispatch(kernel, {
    bindings: [sums, dst],
    params: [dims.count, 1, 1, f32(1)],
    workgroups: Math.ceil(dims.count / 64),
  });
}

/**
 * Linear backward on the GPU. Records dispatches only; every tensor must fit
 * one storage binding.
 *
 * @param args `dy` `[..., N]`, `x` `[..., K]` (same leading dims), `weight`
 *   `[N, K]`; `dWeight` `[N, K]` and `dBias` `[N]` (or null) receive the
 *   **added** parameter gradients
 * @returns ∂x, a new tensor shaped like `x` (assigned)
 * @throws {TypeError} on wrong shapes or dtypes
 * @example
 * ```ts ignore
 * const dx = await linearBackward(gpu, { dy, x, weight, dWeight, dBias });
 * ```
 */
export async function linearBackward(
  gpu: Gpu,
  args: { dy: Tensor; x: Tensor; weight: Tensor; dWeight: Tensor; dBias: Tensor | null },
): Promise<Tensor> {
  const op = "linearBackward";
  const { dy, x, weight, dWeight, dBias } = args;
  for (const [name, t] of Object.entries({ dy, x, weight, dWeight })) assertF32(op, name, t);
  if (weight.shape.length !== 2) {
    throw new TypeError(`${op}: weight must be [out, in], got [${weight.shape}]`);
  }
  const [N, K] = weight.shape;
  assertShape(op, "dWeight", dWeight, weight.shape);
  if (dBias) {
    assertF32(op, "dBias", dBias);
    assertShape(op, "dBias", dBias, [N]);
  }
  const { rows: M, cols: xCols } = lastDimRows(op, "x", x);
  if (xCols !== K) throw new TypeError(`${op}: x [${x.shape}] does not end in ${K} features`);
  assertShape(op, "dy", dy, [...x.shape.slice(0, -1), N]);
  for (const [name, t] of Object.entries({ dy, x, weight })) {
    gpu.assertBindable(`${op}: ${name}`, t.byteSize);
  }
  const dx = gpu.empty(x.shape, "f32", `${op}.dx`);
  if (M === 0) return dx;
  const scratch: Tensor[] = [];
  try {
    const [inputGrad, weightGrad] = await Promise.all([
      gpu.kernel("linear_backward", linearBackwardWgsl, {}, "input_grad"),
      gpu.kernel("linear_backward", linearBackwardWgsl, {}, "weight_grad"),
    ]);
    const tilesK = Math.ceil(K / 16);
    const tilesX = Math.ceil(M / 16) * tilesK;
    gpu.dispatch(inputGrad, {
      bindings: [dy, weight, dx],
      params: [M, N, K, 0, tilesK, tilesX],
      workgroups: tilesX,
    });
    const splits = Math.min(MAX_SPLITS, Math.ceil(M / MIN_ROWS_PER_SPLIT));
    const rowsPerSplit = Math.ceil(Math.ceil(M / splits) / 16) * 16;
    const used = Math.ceil(M / rowsPerSplit);
    const partial = gpu.empty([used, N * K], "f32", `${op}.partial`);
    scratch.push(partial);
    gpu.assertBindable(`${op}: partial weight gradients`, partial.byteSize);
    const tilesW = used * Math.ceil(N / 16) * tilesK;
    gpu.dispatch(weightGrad, {
      bindings: [dy, x, partial],
      params: [M, N, K, rowsPerSplit, tilesK, tilesW],
      workgroups: tilesW,
    });
    await accumulateRowSums(gpu, partial, dWeight, { rows: used, count: N * K }, scratch);
    if (dBias) await accumulateRowSums(gpu, dy, dBias, { rows: M, count: N }, scratch);
  } catch (err) {
    dx.destroy();
    throw err;
  } finally {
    for (const t of scratch) t.destroy();
  }
  return dx;
}
