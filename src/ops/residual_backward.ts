/**
 * Backward of the layer-scaled residual `y = x + γ ⊙ f` (γ per channel over
 * the last dimension; ToST's and its twins' `x += gamma·branch(x)`):
 *
 *     ∂f  = γ ⊙ ∂y                 (assigned, returned)
 *     ∂γ += Σ_rows ∂y ⊙ f          (accumulated)
 *     ∂x  = ∂y                     (pass-through: nothing is computed or added)
 *
 * The stream gradient `∂y` *is* `∂x`: this op neither copies it nor adds
 * into it. The caller keeps using the `∂y` tensor as the gradient of the
 * residual stream and, once the branch's backward reaches the branch's
 * input, adds that gradient in place: the blocks let LayerNorm's backward
 * add it (`layerNormBackward(…, { dxInto: dStream })`), or
 * `residual(gpu, dStream, dxBranch, null)` from `elementwise.ts` does
 * (`dStream += dxBranch`).
 *
 * What the forward must save: the branch output `f` (only when γ's gradient
 * is wanted).
 *
 * GPU: one column pass (`column_sums.ts`, entry `residual` of
 * `kernels/column_sums.wgsl`, the tuned column-sum variant): each
 * invocation walks a block of rows of its columns, writing ∂f and adding
 * `∂y ⊙ f` up for ∂γ: one dispatch for up to a block of rows.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { chooseVariant } from "../gpu/tune.ts";
import { assertF32, assertShape, lastDimRows } from "./_shapes.ts";
import { COLUMN_SUMS, columnPass } from "./column_sums.ts";

/** Arguments of {@linkcode residualBackward}. */
export interface ResidualBackwardArgs {
  /** Gradient of the residual stream after the update, `[..., C]`. */
  dy: Tensor;
  /** The branch output `f` saved by the forward, `[..., C]`. */
  f: Tensor;
  /** `[C]` layer scale. */
  gamma: Tensor;
  /** `[C]`, receives `Σ_rows ∂y ⊙ f` (added). */
  dGamma: Tensor;
}

/**
 * Layer-scaled residual backward on the GPU. Records dispatches only; every
 * tensor must fit one storage binding. `options.variant` forces a
 * column-sum variant (tests, benches).
 *
 * @returns ∂f = γ ⊙ ∂y, a new tensor (assigned); ∂x is `dy` itself (see the module doc)
 * @throws {TypeError} on wrong shapes or dtypes
 * @example
 * ```ts ignore
 * const dBranch = await residualBackward(gpu, { dy: dStream, f: mlpOut, gamma, dGamma });
 * // … backward through the branch down to dxBranch, then:
 * await residual(gpu, dStream, dxBranch, null);
 * ```
 */
export async function residualBackward(
  gpu: Gpu,
  args: ResidualBackwardArgs,
  options: { variant?: string } = {},
): Promise<Tensor> {
  const op = "residualBackward";
  const { dy, f, gamma, dGamma } = args;
  for (const [name, t] of Object.entries({ dy, f, gamma, dGamma })) assertF32(op, name, t);
  const { rows, cols } = lastDimRows(op, "dy", dy);
  assertShape(op, "f", f, dy.shape);
  assertShape(op, "gamma", gamma, [cols]);
  assertShape(op, "dGamma", dGamma, [cols]);
  for (const [name, t] of Object.entries({ dy, f })) {
    gpu.assertBindable(`${op}: ${name}`, t.byteSize);
  }
  const df = gpu.empty(dy.shape, "f32", `${op}.df`);
  if (rows * cols === 0) return df;
  const scratch: Tensor[] = [];
  try {
    await columnPass(gpu, {
      entry: "residual",
      variant: options.variant ?? await chooseVariant(gpu, COLUMN_SUMS, { rows, cols }),
      rows,
      cols,
      inputs: [dy, f, gamma, df],
      outputs: [dGamma],
    }, scratch);
  } catch (err) {
    df.destroy();
    throw err;
  } finally {
    for (const t of scratch) t.destroy();
  }
  return df;
}

/**
 * Layer-scaled residual backward in float64.
 *
 * @returns ∂f (assigned); `dGamma` (`C`) receives `Σ_rows ∂y ⊙ f` (added)
 * @example
 * ```ts
 * import { residualBackwardReference } from "./residual_backward.ts";
 * const dGamma = new Float64Array(1);
 * const df = residualBackwardReference({ dy: [1, 2], f: [3, 4], gamma: [5], dGamma }, 1);
 * if (df.join() !== "5,10" || dGamma[0] !== 11) throw new Error();
 * ```
 */
export function residualBackwardReference(
  args: {
    dy: ArrayLike<number>;
    f: ArrayLike<number>;
    gamma: ArrayLike<number>;
    dGamma: Float64Array;
  },
  C: number,
): Float64Array {
  const { dy, f, gamma, dGamma } = args;
  if (
    dy.length !== f.length || gamma.length !== C || dGamma.length !== C || dy.length % C !== 0
  ) {
    throw new TypeError(
      `residualBackwardReference: dy ${dy.length}, f ${f.length}, gamma ${gamma.length}, ` +
        `dGamma ${dGamma.length} do not fit rows of C = ${C}`,
    );
  }
  const df = new Float64Array(dy.length);
  for (let i = 0; i < dy.length; i++) {
    const c = i % C;
    df[i] = gamma[c] * dy[i];
    dGamma[c] += dy[i] * f[i];
  }
  return df;
}
