/**
 * Cross-entropy of rows of logits against integer targets, as PyTorch's
 * `F.cross_entropy(logits, targets, reduction="none", ignore_index=-1)`:
 * one loss per row, 0 for ignored rows. The mean is taken on the host in
 * float64 by {@linkcode meanLoss}.
 *
 * GPU kernel: `kernels/cross_entropy.wgsl` in two designs chosen per
 * adapter by measuring ({@linkcode CROSS_ENTROPY}): `workgroup` (one
 * workgroup per row: GPUs) and `row` (one invocation per row, no barrier:
 * CPUs); logits over one storage binding are processed in pieces of rows.
 * Float64 references: `cross_entropy_reference.ts`.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import crossEntropyWgsl from "../../kernels/cross_entropy.wgsl" with { type: "text" };
import { testValues, type Tunable } from "../gpu/tune.ts";
import {
  assertF32,
  bindingLimit,
  bindRows,
  lastDimRows,
  rowPieces,
  rowWorkgroupSize,
  storageAlignment,
} from "./_shapes.ts";
import type { ChunkOptions } from "./_shapes.ts";
import { checkRows, mismatch, resolveVariant, type RowShape, rowTunable } from "./_tuned.ts";
import { crossEntropyRowsReference } from "./cross_entropy_reference.ts";

/**
 * Check targets on the host and convert them to i32 (−1 = ignore).
 *
 * @throws {RangeError} for a target outside `[0, vocab)` other than −1.
 */
export function checkTargets(
  targets: ArrayLike<number | bigint>,
  vocab: number,
): Int32Array<ArrayBuffer> {
  const out = new Int32Array(targets.length);
  for (let i = 0; i < targets.length; i++) {
    const v = Number(targets[i]);
    if (!Number.isInteger(v) || v < -1 || v >= vocab) {
      throw new RangeError(
        `Target ${targets[i]} at position ${i} is outside [0, ${vocab}) and not -1`,
      );
    }
    out[i] = v;
  }
  return out;
}

/**
 * Per-row cross-entropy on the GPU. Records dispatches only.
 *
 * @param logits f32 `[..., V]` (R rows)
 * @param targets i32 `[R]` from {@linkcode checkTargets}
 * @returns f32 `[R]` losses (0 where the target is −1)
 * @example
 * ```ts ignore
 * const losses = await crossEntropy(gpu, logits, gpu.upload(checkTargets(t, V), [t.length]));
 * const loss = meanLoss(await losses.read() as Float32Array, t);
 * ```
 */
export async function crossEntropy(
  gpu: Gpu,
  logits: Tensor,
  targets: Tensor,
  options: ChunkOptions & { variant?: string } = {},
): Promise<Tensor> {
  const op = "crossEntropy";
  assertF32(op, "logits", logits);
  const { rows, cols } = lastDimRows(op, "logits", logits);
  if (targets.dtype !== "i32" || targets.numel !== rows) {
    throw new TypeError(
      `${op}: targets must be i32 with ${rows} values, got ${targets.dtype} [${targets.shape}]`,
    );
  }
  const loss = gpu.empty([rows], "f32", op);
  const align = storageAlignment(gpu);
  const pieces = rowPieces(op, rows, cols * 4, bindingLimit(gpu, options), align);
  if (pieces.length === 0) return loss;
  const variant = await resolveVariant(gpu, op, CROSS_ENTROPY, { rows, cols }, options.variant);
  const wg = variant === "row" ? 64 : rowWorkgroupSize(cols);
  const kernel = await gpu.kernel("cross_entropy", crossEntropyWgsl, {
    workgroupSize: wg,
  }, variant === "row" ? "row" : "main");
  for (const { start, count } of pieces) {
    const xs = bindRows(logits, start, count, cols, align);
    gpu.dispatch(kernel, {
      bindings: [xs.range, targets, loss],
      params: [count, cols, xs.base, start],
      workgroups: variant === "row" ? Math.ceil(count / wg) : count,
    });
  }
  return loss;
}

/**
 * Mean of per-row losses over the rows whose target is not −1, in float64
 * (NaN when every row is ignored).
 */
export function meanLoss(losses: ArrayLike<number>, targets: ArrayLike<number | bigint>): number {
  let sum = 0;
  let n = 0;
  for (let i = 0; i < losses.length; i++) {
    if (Number(targets[i]) === -1) continue;
    sum += losses[i];
    n++;
  }
  return sum / n;
}

/** Targets of a check: every class somewhere, and some rows ignored (−1). */
export function checkTargetValues(rows: number, classes: number): Int32Array<ArrayBuffer> {
  return Int32Array.from({ length: rows }, (_, r) => r % 5 === 3 ? -1 : (r * 7 + 1) % classes);
}

async function validate(gpu: Gpu, variant: string): Promise<string | null> {
  for (const { rows, cols } of [...checkRows(false), { rows: 3, cols: 2500 }]) {
    const hz = testValues(rows * cols, rows).map((v) => 20 * v);
    const ht = checkTargetValues(rows, cols);
    const z = gpu.upload(hz, [rows, cols], "check.logits");
    const t = gpu.upload(ht, [rows], "check.targets");
    try {
      const limit = Math.max(3 * cols * 4 + 256, 1024);
      const loss = await crossEntropy(gpu, z, t, { variant, maxBindingBytes: limit });
      const got = await loss.read();
      loss.destroy();
      const want = crossEntropyRowsReference(hz, ht, cols);
      const why = mismatch(`${rows}×${cols}`, got, want, { atol: 1e-5, rtol: 1e-5 });
      if (why) return why;
    } finally {
      z.destroy();
      t.destroy();
    }
  }
  return null;
}

/** Per-row cross-entropy as a tuned op ("cross_entropy" in `tost tune`, `tost info`). */
export const CROSS_ENTROPY: Tunable<RowShape> = rowTunable("cross_entropy", {
  validate,
  workload(gpu, { rows, cols }) {
    const z = gpu.upload(testValues(rows * cols, 1), [rows, cols], "tune.logits");
    const t = gpu.upload(checkTargetValues(rows, cols), [rows], "tune.targets");
    return {
      shape: [rows, cols],
      run: async (variant) => {
        (await crossEntropy(gpu, z, t, { variant })).destroy();
      },
      destroy() {
        z.destroy();
        t.destroy();
      },
    };
  },
});
