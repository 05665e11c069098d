/**
 * BatchNorm2d in **training mode** on channels-last maps `x [..., C]` (the
 * stem's NHWC stages; rows = B·H·W): the forward normalises with the batch
 * statistics and updates the running statistics as PyTorch does, the
 * backward goes through the batch statistics.
 *
 *     mean, var   over the K = rows values of each channel (var biased)
 *     y           = (x − mean)/√(var + eps)·weight + bias
 *     running_mean ← (1 − m)·running_mean + m·mean          (m = momentum, 0.1)
 *     running_var  ← (1 − m)·running_var  + m·var·K/(K − 1) (unbiased)
 *
 *     ∂x  = weight·invstd·(∂y − Σ∂y/K − x̂·Σ∂y·x̂/K)   (assigned)
 *     ∂weight += Σ ∂y·x̂,  ∂bias += Σ ∂y              (accumulated)
 *
 * `num_batches_tracked` is an integer counter the caller keeps.
 *
 * GPU kernels: `kernels/batch_norm_stats.wgsl` and
 * `kernels/batch_norm_backward_reduce.wgsl` (one workgroup per channel, tree
 * reductions), `kernels/batch_norm_apply.wgsl` and
 * `kernels/batch_norm_backward_input.wgsl` (one thread per element). The
 * float64 references are `batchNormTrainForwardReference` and
 * `batchNormTrainBackwardReference` in `batch_norm_reference.ts`
 * (NCHW there; the statistics are the same).
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { f32 } from "../gpu/runtime.ts";
import statsWgsl from "../../kernels/batch_norm_stats.wgsl" with { type: "text" };
import applyWgsl from "../../kernels/batch_norm_apply.wgsl" with { type: "text" };
import reduceWgsl from "../../kernels/batch_norm_backward_reduce.wgsl" with { type: "text" };
import inputWgsl from "../../kernels/batch_norm_backward_input.wgsl" with { type: "text" };
import { assertF32, assertShape, lastDimRows } from "./_shapes.ts";

/** PyTorch's default BatchNorm momentum. */
export const BATCH_NORM_MOMENTUM = 0.1;
/** PyTorch's default BatchNorm epsilon. */
export const BATCH_NORM_EPS = 1e-5;

const ELEMENTWISE_WG = 256;

/** Arguments of {@linkcode batchNormTrainForward}. */
export interface BatchNormTrainArgs {
  /** f32 `[..., C]`, channels last. */
  x: Tensor;
  /** `[C]` each. */
  weight: Tensor;
  bias: Tensor;
  /** `[C]`, updated in place unless `updateRunning` is false. */
  runningMean: Tensor;
  /** `[C]` (unbiased variance), updated in place unless `updateRunning` is false. */
  runningVar: Tensor;
  /** Default {@linkcode BATCH_NORM_EPS}. */
  eps?: number;
  /** Default {@linkcode BATCH_NORM_MOMENTUM}. */
  momentum?: number;
  /** Default true. */
  updateRunning?: boolean;
}

/** Output of {@linkcode batchNormTrainForward}. */
export interface BatchNormTrainOutput {
  /** Normalised map, x's shape. */
  y: Tensor;
  /** `[C, 2]`: batch mean and `1/√(var + eps)` per channel, for the backward. */
  stats: Tensor;
}

function channels(op: string, x: Tensor, vectors: Record<string, Tensor>) {
  assertF32(op, "x", x);
  const { rows, cols: C } = lastDimRows(op, "x", x);
  for (const [name, t] of Object.entries(vectors)) {
    assertF32(op, name, t);
    assertShape(op, name, t, [C]);
  }
  return { rows, C };
}

/**
 * Training-mode BatchNorm forward. Records dispatches only; `x` must fit one
 * storage binding.
 *
 * @returns the output and the batch statistics (both new tensors)
 * @throws {TypeError} for wrong shapes or dtypes
 * @throws {RangeError} for fewer than two values per channel when updating
 *   the running variance (PyTorch refuses that case too)
 * @example
 * ```ts ignore
 * const { y, stats } = await batchNormTrainForward(gpu, { x, weight, bias, runningMean, runningVar });
 * ```
 */
export async function batchNormTrainForward(
  gpu: Gpu,
  args: BatchNormTrainArgs,
): Promise<BatchNormTrainOutput> {
  const op = "batchNormTrainForward";
  const { x, weight, bias, runningMean, runningVar } = args;
  const { rows, C } = channels(op, x, { weight, bias, runningMean, runningVar });
  const update = args.updateRunning ?? true;
  if (rows < 1 || (update && rows < 2)) {
    throw new RangeError(
      `${op}: training-mode BatchNorm needs more than one value per channel, got ${rows}`,
    );
  }
  gpu.assertBindable(`${op}: x`, x.byteSize);
  const y = gpu.empty(x.shape, "f32", `${op}.y`);
  const stats = gpu.empty([C, 2], "f32", `${op}.stats`);
  const [statsKernel, applyKernel] = await Promise.all([
    gpu.kernel("batch_norm_stats", statsWgsl),
    gpu.kernel("batch_norm_apply", applyWgsl),
  ]);
  gpu.dispatch(statsKernel, {
    bindings: [x, stats, runningMean, runningVar],
    params: [
      rows,
      C,
      f32(args.eps ?? BATCH_NORM_EPS),
      f32(args.momentum ?? BATCH_NORM_MOMENTUM),
      update ? 1 : 0,
    ],
    workgroups: C,
  });
  gpu.dispatch(applyKernel, {
    bindings: [x, stats, weight, bias, y],
    params: [rows * C, C],
    workgroups: Math.ceil((rows * C) / ELEMENTWISE_WG),
  });
  return { y, stats };
}

/**
 * Training-mode BatchNorm backward. Records dispatches only.
 *
 * @param args `dy` and the forward's `x` (same shape `[..., C]`), its
 *   `stats`, `weight`; `dWeight` and `dBias` (`[C]`) receive the **added**
 *   parameter gradients
 * @returns ∂x, a new tensor shaped like x (assigned)
 * @throws {TypeError} for wrong shapes or dtypes
 * @example
 * ```ts ignore
 * const dx = await batchNormTrainBackward(gpu, { dy, x, stats, weight, dWeight, dBias });
 * ```
 */
export async function batchNormTrainBackward(
  gpu: Gpu,
  args: {
    dy: Tensor;
    x: Tensor;
    stats: Tensor;
    weight: Tensor;
    dWeight: Tensor;
    dBias: Tensor;
  },
): Promise<Tensor> {
  const op = "batchNormTrainBackward";
  const { dy, x, stats, weight, dWeight, dBias } = args;
  const { rows, C } = channels(op, x, { weight, dWeight, dBias });
  assertF32(op, "dy", dy);
  assertShape(op, "dy", dy, x.shape);
  assertShape(op, "stats", stats, [C, 2]);
  gpu.assertBindable(`${op}: x`, x.byteSize);
  const dx = gpu.empty(x.shape, "f32", `${op}.dx`);
  if (rows === 0 || C === 0) return dx;
  const sums = gpu.empty([C, 2], "f32", `${op}.sums`);
  try {
    const [reduceKernel, inputKernel] = await Promise.all([
      gpu.kernel("batch_norm_backward_reduce", reduceWgsl),
      gpu.kernel("batch_norm_backward_input", inputWgsl),
    ]);
    gpu.dispatch(reduceKernel, {
      bindings: [dy, x, stats, sums, dWeight, dBias],
      params: [rows, C],
      workgroups: C,
    });
    gpu.dispatch(inputKernel, {
      bindings: [dy, x, stats, weight, sums, dx],
      params: [rows * C, C, rows],
      workgroups: Math.ceil((rows * C) / ELEMENTWISE_WG),
    });
  } finally {
    sums.destroy();
  }
  return dx;
}
