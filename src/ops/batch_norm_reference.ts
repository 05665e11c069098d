/**
 * Float64 references of BatchNorm2d (`batch_norm.ts`,
 * `kernels/batch_norm_*.wgsl`), as PyTorch computes it on NCHW maps:
 *
 * - eval mode: `y = (x − running_mean_c)/√(running_var_c + eps)·weight_c + bias_c`;
 * - training mode: every channel is normalised with the mean and the
 *   *biased* variance of that channel over the batch and all positions; the
 *   running statistics are then updated with momentum using the *unbiased*
 *   variance (`running_var ← (1 − m)·running_var + m·var·K/(K−1)`, K values
 *   per channel). The updates are returned, never applied to the inputs.
 *
 * Plain TypeScript with no GPU import: the reference models build on it too.
 *
 * @module
 */

import type { FeatureMap } from "./conv2d_reference.ts";

/** PyTorch's default BatchNorm epsilon. */
export const BATCH_NORM_EPS = 1e-5;
/** PyTorch's default BatchNorm momentum. */
export const BATCH_NORM_MOMENTUM = 0.1;

/** Parameters and running statistics of a BatchNorm2d. */
export interface BatchNormParams {
  weight: ArrayLike<number>;
  bias: ArrayLike<number>;
  runningMean: ArrayLike<number>;
  /** Running unbiased variance. */
  runningVar: ArrayLike<number>;
  /** Default {@linkcode BATCH_NORM_EPS}. */
  eps?: number;
  /** Default {@linkcode BATCH_NORM_MOMENTUM} (training mode only). */
  momentum?: number;
}

/** What {@linkcode batchNormTrainForwardReference} computes and keeps. */
export interface BatchNormTrainSaves {
  /** Output `B × C × H × W`. */
  y: Float64Array;
  /** Normalised input `(x − mean)·invStd`, `B × C × H × W`. */
  xhat: Float64Array;
  /** Batch mean per channel. */
  mean: Float64Array;
  /** `1/√(biased variance + eps)` per channel. */
  invStd: Float64Array;
  /** Updated running mean (new array). */
  runningMean: Float64Array;
  /** Updated running variance, from the unbiased batch variance (new array). */
  runningVar: Float64Array;
}

function checkChannels(op: string, C: number, p: Record<string, ArrayLike<number>>): void {
  for (const [name, v] of Object.entries(p)) {
    if (v.length !== C) throw new TypeError(`${op}: ${name} has ${v.length} values, not ${C}`);
  }
}

/** `visit(at)` for every element of channel `c` of an NCHW map. */
function forEachInChannel(x: FeatureMap, c: number, visit: (at: number) => void): void {
  const hw = x.H * x.W;
  for (let b = 0; b < x.B; b++) {
    const o = (b * x.C + c) * hw;
    for (let i = 0; i < hw; i++) visit(o + i);
  }
}

/**
 * BatchNorm2d forward in training mode: batch statistics (biased variance in
 * the normalisation) and the momentum update of the running statistics with
 * the unbiased variance, as PyTorch does. With a single value per channel
 * (K = 1) the unbiased variance is NaN, as in PyTorch.
 *
 * @throws {TypeError} when a parameter does not hold C values
 * @example
 * ```ts
 * import { batchNormTrainForwardReference } from "./batch_norm_reference.ts";
 * const x = { data: new Float64Array([1, 2, 3, 4]), B: 1, C: 1, H: 2, W: 2 };
 * const one = new Float64Array([1]);
 * const s = batchNormTrainForwardReference(x, {
 *   weight: one, bias: new Float64Array(1), runningMean: new Float64Array(1), runningVar: one,
 * });
 * // mean 2.5, biased variance 1.25, unbiased 5/3
 * if (Math.abs(s.runningVar[0] - (0.9 + 0.1 * 5 / 3)) > 1e-15) throw new Error("running var");
 * ```
 */
export function batchNormTrainForwardReference(
  x: FeatureMap,
  p: BatchNormParams,
): BatchNormTrainSaves {
  const { C } = x;
  const K = x.B * x.H * x.W;
  const eps = p.eps ?? BATCH_NORM_EPS;
  const momentum = p.momentum ?? BATCH_NORM_MOMENTUM;
  const { weight, bias, runningMean: rm, runningVar: rv } = p;
  checkChannels("batchNormTrainForwardReference", C, { weight, bias, rm, rv });
  const y = new Float64Array(x.data.length);
  const xhat = new Float64Array(x.data.length);
  const mean = new Float64Array(C);
  const invStd = new Float64Array(C);
  const runningMean = new Float64Array(C);
  const runningVar = new Float64Array(C);
  for (let c = 0; c < C; c++) {
    let m = 0;
    forEachInChannel(x, c, (at) => m += x.data[at]);
    m /= K;
    let ss = 0;
    forEachInChannel(x, c, (at) => ss += (x.data[at] - m) ** 2);
    const inv = 1 / Math.sqrt(ss / K + eps);
    mean[c] = m;
    invStd[c] = inv;
    runningMean[c] = (1 - momentum) * rm[c] + momentum * m;
    runningVar[c] = (1 - momentum) * rv[c] + momentum * (ss / (K - 1));
    forEachInChannel(x, c, (at) => {
      xhat[at] = (x.data[at] - m) * inv;
      y[at] = xhat[at] * weight[c] + bias[c];
    });
  }
  return { y, xhat, mean, invStd, runningMean, runningVar };
}

/**
 * BatchNorm2d forward of a map into a new map: eval mode (the running
 * statistics; the default) or training mode (the batch statistics, as
 * {@linkcode batchNormTrainForwardReference}; running statistics not updated).
 *
 * @throws {TypeError} when a parameter does not hold C values
 * @example
 * ```ts
 * import { batchNormReference } from "./batch_norm_reference.ts";
 * const one = new Float64Array([1]);
 * const x = { data: new Float64Array([3]), B: 1, C: 1, H: 1, W: 1 };
 * const y = batchNormReference(x, {
 *   weight: one, bias: one, runningMean: one, runningVar: new Float64Array([4]), eps: 0,
 * });
 * if (y.data[0] !== 2) throw new Error("batchNorm");
 * ```
 */
export function batchNormReference(
  x: FeatureMap,
  p: BatchNormParams,
  mode: "eval" | "batch" = "eval",
): FeatureMap {
  if (mode === "batch") return { ...x, data: batchNormTrainForwardReference(x, p).y };
  const { weight, bias, runningMean, runningVar } = p;
  checkChannels("batchNormReference", x.C, { weight, bias, runningMean, runningVar });
  const eps = p.eps ?? BATCH_NORM_EPS;
  const y = new Float64Array(x.data.length);
  for (let c = 0; c < x.C; c++) {
    const scale = weight[c] / Math.sqrt(runningVar[c] + eps);
    forEachInChannel(x, c, (at) => y[at] = (x.data[at] - runningMean[c]) * scale + bias[c]);
  }
  return { ...x, data: y };
}

/**
 * Backward of the training-mode BatchNorm2d (the batch statistics depend on
 * the input): `∂x = invStd·(g − mean(g) − x̂·mean(g·x̂))` per channel with
 * `g = ∂y·weight`; `∂weight += Σ ∂y·x̂`, `∂bias += Σ ∂y`.
 *
 * @param dims the map's `B, C, H, W`
 * @returns `∂x` (assigned)
 * @throws {TypeError} when the sizes disagree
 * @example
 * ```ts
 * import { batchNormTrainBackwardReference } from "./batch_norm_reference.ts";
 * const grads = { dWeight: new Float64Array(1), dBias: new Float64Array(1) };
 * const dims = { B: 1, C: 1, H: 1, W: 2 };
 * const saved = { xhat: new Float64Array([-1, 1]), invStd: new Float64Array([2]) };
 * // a constant upstream gradient moves the mean only: ∂x = 0
 * const dx = batchNormTrainBackwardReference(new Float64Array([3, 3]), saved, [1], grads, dims);
 * if (dx.join() !== "0,0" || grads.dBias[0] !== 6 || grads.dWeight[0] !== 0) throw new Error();
 * ```
 */
export function batchNormTrainBackwardReference(
  dy: ArrayLike<number>,
  saved: Pick<BatchNormTrainSaves, "xhat" | "invStd">,
  weight: ArrayLike<number>,
  grads: { dWeight: Float64Array; dBias: Float64Array },
  dims: { B: number; C: number; H: number; W: number },
): Float64Array {
  const { B, C, H, W } = dims;
  const K = B * H * W;
  if (dy.length !== B * C * H * W || saved.xhat.length !== dy.length) {
    throw new TypeError(`batchNormTrainBackwardReference: expected ${B}×${C}×${H}×${W} values`);
  }
  const map = { data: saved.xhat, B, C, H, W };
  const dx = new Float64Array(dy.length);
  for (let c = 0; c < C; c++) {
    let sumDy = 0;
    let sumDyX = 0;
    forEachInChannel(map, c, (at) => {
      sumDy += dy[at];
      sumDyX += dy[at] * saved.xhat[at];
    });
    grads.dWeight[c] += sumDyX;
    grads.dBias[c] += sumDy;
    const g = weight[c] * saved.invStd[c];
    forEachInChannel(map, c, (at) => {
      dx[at] = g * (dy[at] - sumDy / K - saved.xhat[at] * sumDyX / K);
    });
  }
  return dx;
}
