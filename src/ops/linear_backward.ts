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
 * GPU: both products run on the GEMM engine (`gemm.ts`: ∂x is its "nn"
 * product, ∂W its "tn" product with the accumulating epilogue) with the
 * variants the tuner chose (`gemm_tune.ts`); ∂b is the column sums of ∂y
 * (`column_sums.ts`, one dispatch for up to a block of rows).
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { assertF32, assertShape, lastDimRows } from "./_shapes.ts";
import { accumulateRowSums } from "./column_sums.ts";
import type { GemmOptions } from "./gemm.ts";
import { gemmAuto } from "./gemm_tune.ts";

/** Test and bench options of {@linkcode linearBackward}. */
export interface LinearBackwardOptions extends GemmOptions {
  /** GEMM variant of ∂x = ∂y·W instead of the tuned one. */
  dxVariant?: string;
  /** GEMM variant of ∂W += ∂yᵀ·x instead of the tuned one. */
  dwVariant?: string;
  /** Column-sum variant of ∂b instead of the tuned one (see `column_sums.ts`). */
  dbVariant?: string;
}

/**
 * Linear backward on the GPU. Records dispatches only.
 *
 * @param args `dy` `[..., N]`, `x` `[..., K]` (same leading dims), `weight`
 *   `[N, K]`; `dWeight` `[N, K]` and `dBias` `[N]` (or null) receive the
 *   **added** parameter gradients
 * @param options test/bench-only: variants, chunking limits
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
  options: LinearBackwardOptions = {},
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
  const dx = gpu.empty(x.shape, "f32", `${op}.dx`);
  if (M === 0 || N === 0) return dx; // nothing flows back: ∂x = 0 (a fresh tensor is zeroed)
  const scratch: Tensor[] = [];
  try {
    // ∂x [M, K] = Σ_n ∂y[m, n]·W[n, k]: B(j = k, r = n) = W[n·K + k], W read down its columns.
    await gemmAuto(
      gpu,
      {
        a: { tensor: dy, layout: "depth", ld: N },
        b: { tensor: weight, layout: "rows", ld: K },
        c: dx,
        m: M,
        n: K,
        k: N,
      },
      { ...options, variant: options.dxVariant },
      op,
    );
    // ∂W [N, K] += Σ_m ∂y[m, n]·x[m, k]: both operands read down their columns.
    await gemmAuto(
      gpu,
      {
        a: { tensor: dy, layout: "rows", ld: N },
        b: { tensor: x, layout: "rows", ld: K },
        c: dWeight,
        m: N,
        n: K,
        k: M,
        epilogue: { accumulate: true },
      },
      { ...options, variant: options.dwVariant },
      op,
    );
    if (dBias) {
      await accumulateRowSums(gpu, dy, dBias, { rows: M, count: N }, scratch, {
        variant: options.dbVariant,
      });
    }
  } catch (err) {
    dx.destroy();
    throw err;
  } finally {
    for (const t of scratch) t.destroy();
  }
  return dx;
}
