/**
 * LayerNorm over the last dimension, as `torch.nn.LayerNorm(C, eps)`:
 * biased variance, elementwise affine weight and optional bias.
 *
 * GPU kernels, two designs chosen per adapter by measuring
 * ({@linkcode LAYER_NORM}, `src/gpu/tune.ts`): `row` (`kernels/layer_norm_row.wgsl`,
 * one invocation per row, vec4, no barrier: CPUs; C a multiple of 4) and
 * `workgroup` (`kernels/layer_norm.wgsl`, one workgroup per row, a tree
 * reduction: GPUs, any C). They may differ in the last bits. Float64
 * reference: `layerNormReference` in `layer_norm_reference.ts`.
 *
 * @module
 */

import { f32 } from "../gpu/runtime.ts";
import type { Gpu, Tensor } from "../gpu/runtime.ts";
import layerNormWgsl from "../../kernels/layer_norm.wgsl" with { type: "text" };
import layerNormRowWgsl from "../../kernels/layer_norm_row.wgsl" with { type: "text" };
import { testValues, type Tunable } from "../gpu/tune.ts";
import {
  checkRows,
  mismatch,
  type OpChecks,
  resolveVariant,
  rowClass,
  type RowShape,
  tunableOp,
  vec4Unsupported,
} from "./_tuned.ts";
import { layerNormReference } from "./layer_norm_reference.ts";
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
 * @param options test/bench-only: chunking limit, variant
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
  options: ChunkOptions & { variant?: string } = {},
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
  const variant = await resolveVariant(
    gpu,
    "layerNorm",
    LAYER_NORM,
    { rows, cols },
    options.variant,
  );
  const kernel = variant === "row"
    ? await gpu.kernel("layer_norm_row", layerNormRowWgsl, {
      hasBias: String(!!bias),
      accumulate: "false",
    }, "forward")
    : await gpu.kernel(
      "layer_norm",
      layerNormWgsl,
      { workgroupSize: rowWorkgroupSize(cols) },
      bias ? "main" : "main_no_bias",
    );
  for (const { start, count } of pieces) {
    const xs = bindRows(x, start, count, cols, align);
    const ys = bindRows(y, start, count, cols, align);
    const bindings = [xs.range, weight, ys.range];
    if (variant === "row") bindings.push(bias ?? weight); // not read without a bias
    else if (bias) bindings.push(bias);
    gpu.dispatch(kernel, {
      bindings,
      params: [count, cols, xs.base, f32(eps)],
      workgroups: variant === "row" ? Math.ceil(count / ROW_WG) : count,
    });
  }
  return y;
}

/** Invocations (rows) per workgroup of the row design. */
const ROW_WG = 64;

/** The LayerNorm designs (see the module doc). */
export const LAYER_NORM_VARIANTS = ["row", "workgroup"] as const;

/** The design without tuning: rows on a CPU when C allows, workgroups otherwise. */
export function defaultLayerNormVariant(gpu: Gpu, cols: number): string {
  return gpu.info.software && cols % 4 === 0 ? "row" : "workgroup";
}

/** Why a LayerNorm variant cannot take rows of `cols`, or null. */
export function layerNormUnsupported(variant: string, cols: number): string | null {
  if (!(LAYER_NORM_VARIANTS as readonly string[]).includes(variant)) {
    return `is unknown (known: ${LAYER_NORM_VARIANTS.join(", ")})`;
  }
  return variant === "row" ? vec4Unsupported(cols) : null;
}

/** A LayerNorm pass's {@linkcode Tunable}: the designs of {@linkcode LAYER_NORM_VARIANTS}. */
export function layerNormTunable(op: string, checks: OpChecks<RowShape>): Tunable<RowShape> {
  return tunableOp<RowShape>({
    op,
    version: checks.version ?? 1,
    variants: LAYER_NORM_VARIANTS,
    unsupported: (_gpu, v, s) => layerNormUnsupported(v, s.cols),
    shapeClass: rowClass,
    fallback: (gpu, s) => defaultLayerNormVariant(gpu, s.cols),
    ...checks,
  });
}

async function validate(gpu: Gpu, variant: string): Promise<string | null> {
  for (const { rows, cols } of checkRows(variant === "row")) {
    // An offset mean shows a one-pass variance; the affine parameters and a
    // large eps show what the kernel ignored.
    const hx = testValues(rows * cols, rows).map((v) => 3 * v + 30);
    const hw = testValues(cols, 7).map((v) => v + 1.5);
    const hb = testValues(cols, 9);
    for (const [bias, eps] of [[null, 1e-5], [hb, 0.25]] as const) {
      const x = gpu.upload(hx, [rows, cols], "check.x");
      const w = gpu.upload(hw, [cols], "check.w");
      const b = bias && gpu.upload(bias, [cols], "check.b");
      // A piece limit of 3 rows exercises the pieces of the forward.
      const limit = Math.max(3 * cols * 4 + 256, 1024);
      try {
        const y = await layerNorm(gpu, x, w, b, eps, undefined, {
          variant,
          maxBindingBytes: limit,
        });
        const got = await y.read();
        y.destroy();
        const want = layerNormReference(hx, hw, bias, rows, cols, eps);
        const why = mismatch(`${rows}×${cols}`, got, want, { atol: 1e-5, rtol: 1e-5 });
        if (why) return why;
      } finally {
        for (const t of [x, w, b]) t?.destroy();
      }
    }
  }
  return null;
}

/** LayerNorm's forward as a tuned op ("layer_norm" in `tost tune` and `tost info`). */
export const LAYER_NORM: Tunable<RowShape> = layerNormTunable("layer_norm", {
  validate,
  workload(gpu, { rows, cols }) {
    const x = gpu.upload(testValues(rows * cols, 1), [rows, cols], "tune.x");
    const w = gpu.upload(testValues(cols, 2), [cols], "tune.w");
    const b = gpu.upload(testValues(cols, 3), [cols], "tune.b");
    const y = gpu.empty([rows, cols], "f32", "tune.y");
    return {
      shape: [rows, cols],
      run: async (variant) => {
        await layerNorm(gpu, x, w, b, 1e-5, y, { variant });
      },
      destroy() {
        for (const t of [x, w, b, y]) t.destroy();
      },
    };
  },
});
