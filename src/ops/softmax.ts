/**
 * Softmax over the last dimension, numerically stable (the row maximum is
 * subtracted before exponentiating), as `torch.softmax(x, -1)`.
 *
 * GPU kernel: `kernels/softmax.wgsl` in two designs chosen per adapter by
 * measuring ({@linkcode SOFTMAX}): `workgroup` (one workgroup per row, a
 * tree reduction: GPUs) and `row` (one invocation per row, serial, no
 * barrier: CPUs); they may differ in the last bits. Float64 reference:
 * `softmaxReference` in `softmax_reference.ts`.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import softmaxWgsl from "../../kernels/softmax.wgsl" with { type: "text" };
import { testValues, type Tunable } from "../gpu/tune.ts";
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
import { checkRows, mismatch, resolveVariant, type RowShape, rowTunable } from "./_tuned.ts";
import { softmaxReference } from "./softmax_reference.ts";

/**
 * Softmax of each row of `x` (over its last dimension) on the GPU.
 * Records dispatches only.
 *
 * Use large negative finite values, not −Infinity, to mask entries: WGSL
 * implementations may assume that no infinities occur.
 *
 * @param x f32 tensor `[..., C]`
 * @param out optional f32 tensor of x's shape to write into (not x itself)
 * @param options test/bench-only: chunking limit, variant
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
  options: ChunkOptions & { variant?: string } = {},
): Promise<Tensor> {
  assertF32("softmax", "x", x);
  const { rows, cols } = lastDimRows("softmax", "x", x);
  const y = outputTensor(gpu, "softmax", x.shape, [x], out);
  const align = storageAlignment(gpu);
  const pieces = rowPieces("softmax", rows, cols * 4, bindingLimit(gpu, options), align);
  if (pieces.length === 0) return y;
  const variant = await resolveVariant(gpu, "softmax", SOFTMAX, { rows, cols }, options.variant);
  const wg = variant === "row" ? 64 : rowWorkgroupSize(cols);
  const kernel = await gpu.kernel("softmax", softmaxWgsl, { workgroupSize: wg }, entry(variant));
  for (const { start, count } of pieces) {
    const xs = bindRows(x, start, count, cols, align);
    const ys = bindRows(y, start, count, cols, align);
    gpu.dispatch(kernel, {
      bindings: [xs.range, ys.range],
      params: [count, cols, xs.base],
      workgroups: variant === "row" ? Math.ceil(count / wg) : count,
    });
  }
  return y;
}

function entry(variant: string): string {
  return variant === "row" ? "row" : "main";
}

async function validate(gpu: Gpu, variant: string): Promise<string | null> {
  for (const { rows, cols } of [...checkRows(false), { rows: 2, cols: 2500 }]) {
    const hx = testValues(rows * cols, rows).map((v) => 20 * v);
    const x = gpu.upload(hx, [rows, cols], "check.x");
    try {
      const limit = Math.max(3 * cols * 4 + 256, 1024);
      const y = await softmax(gpu, x, undefined, { variant, maxBindingBytes: limit });
      const got = await y.read();
      y.destroy();
      const want = softmaxReference(hx, rows, cols);
      const why = mismatch(`${rows}×${cols}`, got, want, { atol: 1e-7, rtol: 1e-5 });
      if (why) return why;
    } finally {
      x.destroy();
    }
  }
  return null;
}

/** Softmax over rows as a tuned op ("softmax" in `tost tune`, `tost info`). */
export const SOFTMAX: Tunable<RowShape> = rowTunable("softmax", {
  validate,
  workload(gpu, { rows, cols }) {
    const x = gpu.upload(testValues(rows * cols, 1), [rows, cols], "tune.x");
    const y = gpu.empty([rows, cols], "f32", "tune.y");
    return {
      shape: [rows, cols],
      run: async (variant) => {
        await softmax(gpu, x, y, { variant });
      },
      destroy() {
        x.destroy();
        y.destroy();
      },
    };
  },
});
