/**
 * Cross-entropy forward and backward fused, as PyTorch's
 * `F.cross_entropy(logits, targets, ignore_index=-1)` (mean reduction):
 *
 *     loss       = (1/n) Σ_{r: t_r ≠ −1} (log Σ_v e^{z_rv} − z_{r,t_r}),  n = #{r: t_r ≠ −1}
 *     ∂z[r, v]   = scale · (softmax(z_r)_v − [v = t_r]) / n   (0 on ignored rows; assigned)
 *
 * `scale` is the upstream gradient of the loss (1 normally, `1/steps` for
 * gradient accumulation); the returned loss is never scaled. Numerically
 * stable: the row maximum is subtracted before exponentiating. When every
 * row is ignored, `n = 0`: PyTorch returns NaN; here the loss is 0 and the
 * gradient 0 (such a batch contributes nothing), which keeps a training run
 * free of NaN.
 *
 * What the forward must save: nothing (this is the forward).
 *
 * GPU: `kernels/cross_entropy_forward_backward.wgsl`: `count_targets` (one
 * workgroup counts n), the row pass (max, sum of exponentials, the row's
 * loss and gradient; logits over one storage binding are processed in
 * pieces of rows) in two designs chosen per adapter by measuring
 * ({@linkcode CROSS_ENTROPY_FORWARD_BACKWARD}: `rows`, one workgroup per
 * row, for GPUs; `rows_serial`, one invocation per row, for CPUs), `mean`
 * (one workgroup averages the per-row losses). Float64 reference:
 * `crossEntropyBackwardReference` in `cross_entropy_reference.ts`.
 *
 * @module
 */

import type { Gpu } from "../gpu/runtime.ts";
import { f32, Tensor } from "../gpu/runtime.ts";
import { testValues, type Tunable } from "../gpu/tune.ts";
import crossEntropyForwardBackwardWgsl from "../../kernels/cross_entropy_forward_backward.wgsl" with {
  type: "text",
};
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
import { checkTargets, checkTargetValues } from "./cross_entropy.ts";
import { crossEntropyBackwardReference } from "./cross_entropy_reference.ts";

/** Arguments of {@linkcode crossEntropyForwardBackward}. */
export interface CrossEntropyArgs {
  /** `[..., V]` logits (R rows). */
  logits: Tensor;
  /**
   * The R targets in `[0, V)` or −1 (ignored): host values (checked, then
   * uploaded) or an i32 tensor already checked with `checkTargets`.
   */
  targets: Tensor | ArrayLike<number | bigint>;
  /** Upstream gradient of the loss (default 1). */
  scale?: number;
}

/** What {@linkcode crossEntropyForwardBackward} returns. */
export interface CrossEntropyResult {
  /** `[1]`: the mean loss over the rows not ignored. */
  loss: Tensor;
  /** `[..., V]` like the logits: `∂(scale·loss)/∂logits` (assigned). */
  dlogits: Tensor;
}

/**
 * Fused cross-entropy forward and backward on the GPU. Records dispatches
 * only, plus an upload of host targets (so call it outside `Gpu.timed()`
 * with host targets, or pass an i32 tensor).
 *
 * @throws {TypeError} on wrong shapes or dtypes
 * @throws {RangeError} for host targets outside `[0, V)` other than −1, or a non-finite scale
 * @example
 * ```ts ignore
 * const { loss, dlogits } = await crossEntropyForwardBackward(gpu, { logits, targets });
 * console.log((await loss.read())[0]);
 * ```
 */
export async function crossEntropyForwardBackward(
  gpu: Gpu,
  args: CrossEntropyArgs,
  options: ChunkOptions & { variant?: string } = {},
): Promise<CrossEntropyResult> {
  const op = "crossEntropyForwardBackward";
  const { logits } = args;
  const scale = args.scale ?? 1;
  assertF32(op, "logits", logits);
  if (!Number.isFinite(scale)) throw new RangeError(`${op}: scale must be finite, got ${scale}`);
  const { rows, cols } = lastDimRows(op, "logits", logits);
  const owned: Tensor[] = [];
  let targets: Tensor;
  if (args.targets instanceof Tensor) {
    targets = args.targets;
    if (targets.dtype !== "i32" || targets.numel !== rows) {
      throw new TypeError(
        `${op}: targets must be i32 with ${rows} values, got ${targets.dtype} [${targets.shape}]`,
      );
    }
  } else {
    if (args.targets.length !== rows) {
      throw new TypeError(`${op}: ${args.targets.length} targets for ${rows} rows of logits`);
    }
    targets = gpu.upload(checkTargets(args.targets, cols), [rows], `${op}.targets`);
    owned.push(targets);
  }
  const loss = gpu.empty([1], "f32", `${op}.loss`);
  const dlogits = gpu.empty(logits.shape, "f32", `${op}.dlogits`);
  try {
    if (rows === 0 || cols === 0) return { loss, dlogits };
    const align = storageAlignment(gpu);
    const pieces = rowPieces(op, rows, cols * 4, bindingLimit(gpu, options), align);
    gpu.assertBindable(`${op}: targets`, rows * 4);
    const variant = await resolveVariant(
      gpu,
      op,
      CROSS_ENTROPY_FORWARD_BACKWARD,
      { rows, cols },
      options.variant,
    );
    const serial = variant === "row";
    const wg = rowWorkgroupSize(cols);
    const kernel = (entry: string, workgroupSize: number) =>
      gpu.kernel("cross_entropy_forward_backward", crossEntropyForwardBackwardWgsl, {
        workgroupSize,
      }, entry);
    const [countK, rowsK, meanK] = await Promise.all([
      kernel("count_targets", wg),
      serial ? kernel("rows_serial", 64) : kernel("rows", wg),
      kernel("mean", wg),
    ]);
    const valid = gpu.empty([1], "f32", `${op}.valid`); // n, the rows not ignored
    owned.push(valid);
    const losses = gpu.empty([rows], "f32", `${op}.losses`);
    owned.push(losses);
    gpu.dispatch(countK, { bindings: [targets, valid], params: [rows, cols], workgroups: 1 });
    for (const { start, count } of pieces) {
      const zs = bindRows(logits, start, count, cols, align);
      const ds = bindRows(dlogits, start, count, cols, align);
      gpu.dispatch(rowsK, {
        bindings: [targets, valid, losses, zs.range, ds.range],
        params: [rows, cols, count, start, zs.base, f32(scale)],
        workgroups: serial ? Math.ceil(count / 64) : count,
      });
    }
    gpu.dispatch(meanK, {
      bindings: [targets, valid, losses, loss],
      params: [rows, cols],
      workgroups: 1,
    });
  } catch (err) {
    loss.destroy();
    dlogits.destroy();
    throw err;
  } finally {
    for (const t of owned) t.destroy();
  }
  return { loss, dlogits };
}

async function validate(gpu: Gpu, variant: string): Promise<string | null> {
  for (const { rows, cols } of [...checkRows(false), { rows: 3, cols: 2500 }]) {
    const hz = testValues(rows * cols, rows).map((v) => 20 * v);
    const ht = checkTargetValues(rows, cols);
    const z = gpu.upload(hz, [rows, cols], "check.logits");
    try {
      const limit = Math.max(3 * cols * 4 + 256, 1024);
      const r = await crossEntropyForwardBackward(gpu, { logits: z, targets: ht, scale: 0.5 }, {
        variant,
        maxBindingBytes: limit,
      });
      const [loss, dz] = await Promise.all([r.loss.read(), r.dlogits.read()]);
      r.loss.destroy();
      r.dlogits.destroy();
      const want = crossEntropyBackwardReference(hz, ht, cols, 0.5);
      const tol = { atol: 1e-5, rtol: 1e-5 };
      const why = mismatch(`loss ${rows}×${cols}`, loss, [want.loss], tol) ??
        mismatch(`∂logits ${rows}×${cols}`, dz, want.dlogits, tol);
      if (why) return why;
    } finally {
      z.destroy();
    }
  }
  return null;
}

/** The fused cross-entropy as a tuned op ("cross_entropy_forward_backward"): its row pass. */
export const CROSS_ENTROPY_FORWARD_BACKWARD: Tunable<RowShape> = rowTunable(
  "cross_entropy_forward_backward",
  {
    validate,
    workload(gpu, { rows, cols }) {
      const z = gpu.upload(testValues(rows * cols, 1), [rows, cols], "tune.logits");
      const t = gpu.upload(checkTargetValues(rows, cols), [rows], "tune.targets");
      return {
        shape: [rows, cols],
        run: async (variant) => {
          const r = await crossEntropyForwardBackward(gpu, { logits: z, targets: t }, { variant });
          r.loss.destroy();
          r.dlogits.destroy();
        },
        destroy() {
          z.destroy();
          t.destroy();
        },
      };
    },
  },
);
