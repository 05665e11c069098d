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
 * GPU: a row pass writes ∂x and each row's (mean, rstd), in one of two
 * designs chosen per adapter by measuring ({@linkcode LAYER_NORM_BACKWARD}):
 * `row` (`kernels/layer_norm_row.wgsl`, one invocation per row, vec4, no
 * barrier: CPUs; C a multiple of 4) or `workgroup`
 * (`kernels/layer_norm_backward.wgsl`, one workgroup per row: GPUs). One
 * column pass (`column_sums.ts`, entry `layer_norm`, its own tuned variant)
 * then adds `Σ_rows ∂y ⊙ x̂` and `Σ_rows ∂y` to `dWeight` and `dBias`: two
 * dispatches in all for up to a block of rows. Float64 reference:
 * `layerNormBackwardReference` in `layer_norm_reference.ts`.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { f32 } from "../gpu/runtime.ts";
import layerNormBackwardWgsl from "../../kernels/layer_norm_backward.wgsl" with { type: "text" };
import layerNormRowWgsl from "../../kernels/layer_norm_row.wgsl" with { type: "text" };
import { chooseVariant, testValues, type Tunable } from "../gpu/tune.ts";
import { assertF32, assertShape, lastDimRows, rowWorkgroupSize } from "./_shapes.ts";
import { checkRows, mismatch, resolveVariant, type RowShape } from "./_tuned.ts";
import { COLUMN_SUMS, columnPass } from "./column_sums.ts";
import { layerNormTunable } from "./layer_norm.ts";
import { layerNormBackwardReference } from "./layer_norm_reference.ts";

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
  /**
   * Add ∂x into this tensor (shaped like `x`: the residual stream's
   * gradient, which takes the branch's input gradient in place) instead of
   * returning a new one; it is then returned.
   */
  dxInto?: Tensor;
}

/**
 * LayerNorm backward on the GPU. Records dispatches only; every tensor must
 * fit one storage binding.
 *
 * @returns ∂x, a new tensor shaped like `x` (assigned), or `args.dxInto` with ∂x added
 * @throws {TypeError} on wrong shapes or dtypes
 * @throws {RangeError} for a negative or non-finite eps
 * @example
 * ```ts ignore
 * const dx = await layerNormBackward(gpu, { dy, x, weight, eps: 1e-5, dWeight, dBias });
 * ```
 */
export async function layerNormBackward(
  gpu: Gpu,
  args: LayerNormBackwardArgs,
  options: { variant?: string; columnVariant?: string } = {},
): Promise<Tensor> {
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
  const into = args.dxInto;
  if (into) {
    assertF32(op, "dxInto", into);
    assertShape(op, "dxInto", into, x.shape);
    if ([dy, x, weight].some((t) => t.buffer === into.buffer)) {
      throw new TypeError(`${op}: dxInto must not be one of the inputs`);
    }
  }
  const dx = into ?? gpu.empty(x.shape, "f32", `${op}.dx`);
  if (rows === 0 || cols === 0) return dx;
  const accumulate = String(Boolean(into));
  const scratch: Tensor[] = [];
  try {
    const shape = { rows, cols };
    const variant = await resolveVariant(gpu, op, LAYER_NORM_BACKWARD, shape, options.variant);
    const stats = gpu.empty([rows, 2], "f32", `${op}.stats`); // (mean, rstd) per row
    scratch.push(stats);
    if (variant === "row") {
      const kernel = await gpu.kernel("layer_norm_row", layerNormRowWgsl, {
        hasBias: "false",
        accumulate,
      }, "backward");
      gpu.dispatch(kernel, {
        bindings: [x, weight, dx, dy, stats],
        params: [rows, cols, 0, f32(eps)],
        workgroups: Math.ceil(rows / 64),
      });
    } else {
      const kernel = await gpu.kernel("layer_norm_backward", layerNormBackwardWgsl, {
        workgroupSize: rowWorkgroupSize(cols),
        accumulate,
      });
      gpu.dispatch(kernel, {
        bindings: [dy, x, weight, dx, stats],
        params: [rows, cols, f32(eps)],
        workgroups: rows,
      });
    }
    let db = dBias;
    if (!db) {
      db = gpu.empty([cols], "f32", `${op}.dBias`); // summed and dropped
      scratch.push(db);
    }
    await columnPass(gpu, {
      entry: "layer_norm",
      variant: options.columnVariant ?? await chooseVariant(gpu, COLUMN_SUMS, shape),
      rows,
      cols,
      inputs: [dy, x, stats],
      outputs: [dWeight, db],
    }, scratch);
  } catch (err) {
    if (!into) dx.destroy();
    throw err;
  } finally {
    for (const t of scratch) t.destroy();
  }
  return dx;
}

async function validate(gpu: Gpu, variant: string): Promise<string | null> {
  for (const { rows, cols } of checkRows(variant === "row")) {
    const hx = testValues(rows * cols, rows).map((v) => 3 * v + 30);
    const hdy = testValues(rows * cols, rows + 1);
    const hw = testValues(cols, 7).map((v) => v + 1.5);
    const hgw = testValues(cols, 8);
    const hgb = testValues(cols, 9);
    const owned = [
      gpu.upload(hdy, [rows, cols], "check.dy"),
      gpu.upload(hx, [rows, cols], "check.x"),
      gpu.upload(hw, [cols], "check.w"),
      gpu.upload(hgw, [cols], "check.dw"),
      gpu.upload(hgb, [cols], "check.db"),
    ];
    const [dy, x, weight, dWeight, dBias] = owned;
    try {
      const dx = await layerNormBackward(gpu, { dy, x, weight, eps: 0.25, dWeight, dBias }, {
        variant,
      });
      owned.push(dx);
      const want = { dWeight: Float64Array.from(hgw), dBias: Float64Array.from(hgb) };
      const wantDx = layerNormBackwardReference(
        { dy: hdy, x: hx, weight: hw, ...want },
        cols,
        0.25,
      );
      const tol = { atol: 1e-4, rtol: 1e-4 };
      const why = mismatch(`∂x ${rows}×${cols}`, await dx.read(), wantDx, tol) ??
        mismatch(`∂w ${rows}×${cols}`, await dWeight.read(), want.dWeight, tol) ??
        mismatch(`∂b ${rows}×${cols}`, await dBias.read(), want.dBias, tol);
      if (why) return why;
    } finally {
      for (const t of owned) t.destroy();
    }
  }
  return null;
}

/** LayerNorm's backward as a tuned op ("layer_norm_backward"): the design of its row pass. */
export const LAYER_NORM_BACKWARD: Tunable<RowShape> = layerNormTunable("layer_norm_backward", {
  validate,
  workload(gpu, { rows, cols }) {
    const owned = [
      gpu.upload(testValues(rows * cols, 1), [rows, cols], "tune.dy"),
      gpu.upload(testValues(rows * cols, 2), [rows, cols], "tune.x"),
      gpu.upload(testValues(cols, 3), [cols], "tune.w"),
      gpu.empty([cols], "f32", "tune.dw"),
      gpu.empty([cols], "f32", "tune.db"),
    ];
    const [dy, x, weight, dWeight, dBias] = owned;
    return {
      shape: [rows, cols],
      run: async (variant) => {
        const dx = await layerNormBackward(gpu, { dy, x, weight, eps: 1e-5, dWeight, dBias }, {
          variant,
        });
        dx.destroy();
      },
      destroy() {
        for (const t of owned) t.destroy();
      },
    };
  },
});
