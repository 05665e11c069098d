/**
 * Float64 building blocks of the plain-TypeScript reference models: named
 * weights, linear, LayerNorm, exact GELU (with an accurate erf), softmax,
 * 2-D convolution and BatchNorm. Everything is written for clarity, not speed;
 * these functions are what the GPU kernels are checked against.
 *
 * Layout conventions (dimension names as in the models): activations are
 * row-major; a "rows × C" matrix holds `rows` tokens of `C` features; images
 * and feature maps are `B × C × H × W` (NCHW) as in PyTorch; a linear weight
 * is `[out, in]` as `nn.Linear` stores it.
 *
 * @module
 */

import { toF32 } from "../../io/dtype.ts";
import type { StTensor } from "../../io/safetensors.ts";
import { linearForwardReference } from "../../ops/linear.ts";

/** One named parameter or buffer of a model, widened to float64. */
export interface Param {
  shape: number[];
  data: Float64Array;
}

/** A model's parameters by their PyTorch `state_dict` names. */
export type Weights = Map<string, Param>;

/** Receives an intermediate activation: a module name, its shape and a copy of its values. */
export type Capture = (name: string, shape: number[], data: Float64Array) => void;

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * The parameter `name` of `w`, checked to have `shape`.
 *
 * @throws {RangeError} when it is missing
 * @throws {TypeError} when its shape differs
 * @example
 * ```ts
 * import { param } from "./layers.ts";
 * const w = new Map([["b", { shape: [2], data: new Float64Array([1, 2]) }]]);
 * param(w, "b", [2]).data; // Float64Array [1, 2]
 * ```
 */
export function param(w: Weights, name: string, shape: readonly number[]): Param {
  const p = w.get(name);
  if (!p) throw new RangeError(`Missing parameter "${name}" (expected shape [${shape}])`);
  if (!sameShape(p.shape, shape)) {
    throw new TypeError(`Parameter "${name}" has shape [${p.shape}], expected [${shape}]`);
  }
  return p;
}

/**
 * Widen raw checkpoint tensors (F64, F32, F16, BF16, I64, I32) to float64 {@linkcode Weights}.
 * Integer buffers such as BatchNorm's `num_batches_tracked` are kept (as numbers).
 *
 * @throws {TypeError} for any other dtype, or bytes that do not match the shape
 * @example
 * ```ts
 * import { weightsFromTensors } from "./layers.ts";
 * const bytes = new Uint8Array(new Float32Array([0.5, -2]).buffer);
 * const w = weightsFromTensors(new Map([["x", { dtype: "F32", shape: [2], data: bytes }]]));
 * w.get("x")?.data; // Float64Array [0.5, -2]
 * ```
 */
export function weightsFromTensors(tensors: ReadonlyMap<string, StTensor>): Weights {
  const out: Weights = new Map();
  for (const [name, t] of tensors) {
    const numel = t.shape.reduce((a, b) => a * b, 1);
    const view = new DataView(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    const data = new Float64Array(numel);
    const expectBytes = (size: number) => {
      if (t.data.byteLength !== numel * size) {
        throw new TypeError(
          `Tensor "${name}" (${t.dtype} [${t.shape}]) has ${t.data.byteLength} bytes, ` +
            `expected ${numel * size}`,
        );
      }
    };
    switch (t.dtype) {
      case "F64":
        expectBytes(8);
        for (let i = 0; i < numel; i++) data[i] = view.getFloat64(8 * i, true);
        break;
      case "I64":
        expectBytes(8);
        for (let i = 0; i < numel; i++) data[i] = Number(view.getBigInt64(8 * i, true));
        break;
      case "I32":
        expectBytes(4);
        for (let i = 0; i < numel; i++) data[i] = view.getInt32(4 * i, true);
        break;
      case "F32":
      case "F16":
      case "BF16":
        expectBytes(t.dtype === "F32" ? 4 : 2);
        data.set(toF32(t.dtype, t.data));
        break;
      default:
        throw new TypeError(`Tensor "${name}" has dtype ${t.dtype}, which no model parameter uses`);
    }
    out.set(name, { shape: [...t.shape], data });
  }
  return out;
}

/**
 * `y[r, o] = Σ_i x[r, i]·weight[o, i] + bias[o]` for `rows` rows (`nn.Linear`).
 *
 * @param x `rows × inF`
 * @param weight `outF × inF`
 * @param bias `outF`, or undefined for none
 * @returns `rows × outF`
 * @example
 * ```ts
 * import { linear } from "./layers.ts";
 * linear(new Float64Array([1, 2]), 1, new Float64Array([3, 4]), 2, 1); // [11]
 * ```
 */
export function linear(
  x: Float64Array,
  rows: number,
  weight: Float64Array,
  inF: number,
  outF: number,
  bias?: Float64Array,
): Float64Array {
  return linearForwardReference(x, weight, bias, { rows, inFeatures: inF, outFeatures: outF });
}

/**
 * LayerNorm over the last dimension with the biased variance, as `F.layer_norm`:
 * `y = (x − mean)/√(var + eps)·weight + bias`.
 *
 * @param x `rows × C`
 * @param bias `C`, or undefined for none
 * @returns `rows × C`
 * @example
 * ```ts
 * import { layerNorm } from "./layers.ts";
 * layerNorm(new Float64Array([1, 3]), 1, 2, new Float64Array([1, 1]), undefined, 0); // [-1, 1]
 * ```
 */
export function layerNorm(
  x: Float64Array,
  rows: number,
  C: number,
  weight: Float64Array,
  bias: Float64Array | undefined,
  eps: number,
): Float64Array {
  const y = new Float64Array(rows * C);
  for (let r = 0; r < rows; r++) {
    const o = r * C;
    let mean = 0;
    for (let c = 0; c < C; c++) mean += x[o + c];
    mean /= C;
    let variance = 0;
    for (let c = 0; c < C; c++) variance += (x[o + c] - mean) ** 2;
    variance /= C;
    const inv = 1 / Math.sqrt(variance + eps);
    for (let c = 0; c < C; c++) {
      y[o + c] = (x[o + c] - mean) * inv * weight[c] + (bias ? bias[c] : 0);
    }
  }
  return y;
}

const TWO_OVER_SQRT_PI = 2 / Math.sqrt(Math.PI);

/** erf(z) for 0 ≤ z < 1.5 from the series of positive terms `e^(−z²)·Σ (2z²)ⁿ·z/(2n+1)!!`. */
function erfPositiveSeries(z: number): number {
  const z2 = z * z;
  let term = z;
  let sum = z;
  for (let n = 1; term > 1e-17 * sum; n++) {
    term *= (2 * z2) / (2 * n + 1);
    sum += term;
  }
  return TWO_OVER_SQRT_PI * Math.exp(-z2) * sum;
}

/**
 * erfc(z) for z ≥ 1.5 from Laplace's continued fraction
 * `√π·e^(z²)·erfc(z) = 1/(z + (1/2)/(z + (2/2)/(z + (3/2)/(z + …))))`,
 * evaluated bottom-up; 150 levels reach double precision from z = 1.5 on
 * (120 already do).
 */
function erfcContinuedFraction(z: number): number {
  let f = z;
  for (let k = 150; k >= 1; k--) f = z + k / 2 / f;
  return Math.exp(-z * z) / (Math.sqrt(Math.PI) * f);
}

/**
 * The error function in float64, accurate to a few units in the last place.
 *
 * @example
 * ```ts
 * import { erf } from "./layers.ts";
 * if (Math.abs(erf(1) - 0.8427007929497149) > 1e-15) throw new Error("erf(1)");
 * ```
 */
export function erf(z: number): number {
  if (Number.isNaN(z)) return NaN;
  if (z < 0) return -erf(-z);
  if (z < 1.5) return erfPositiveSeries(z);
  return 1 - erfcContinuedFraction(z);
}

/**
 * The complementary error function `1 − erf(z)` in float64, with full
 * relative accuracy in the right tail (no cancellation).
 *
 * @example
 * ```ts
 * import { erfc } from "./layers.ts";
 * if (Math.abs(erfc(5) / 1.5374597944280349e-12 - 1) > 1e-14) throw new Error("erfc(5)");
 * ```
 */
export function erfc(z: number): number {
  if (Number.isNaN(z)) return NaN;
  if (z < 0) return 2 - erfc(-z);
  if (z < 1.5) return 1 - erfPositiveSeries(z);
  return erfcContinuedFraction(z);
}

/**
 * Exact GELU of one value, `x·Φ(x) = x·erfc(−x/√2)/2` (PyTorch's `nn.GELU()`).
 *
 * @example
 * ```ts
 * import { geluScalar } from "./layers.ts";
 * if (Math.abs(geluScalar(1) - 0.8413447460685429) > 1e-15) throw new Error("gelu(1)");
 * ```
 */
export function geluScalar(x: number): number {
  return 0.5 * x * erfc(-x / Math.SQRT2);
}

/**
 * Apply exact GELU to every element of `x`, in place.
 *
 * @returns `x`
 * @example
 * ```ts
 * import { geluInPlace } from "./layers.ts";
 * geluInPlace(new Float64Array([0, 10])); // [0, 10]
 * ```
 */
export function geluInPlace(x: Float64Array): Float64Array {
  for (let i = 0; i < x.length; i++) x[i] = geluScalar(x[i]);
  return x;
}

/**
 * Softmax of each row of `x` (`rows × n`), in place, shifted by the row maximum.
 * Entries of `-Infinity` get probability 0 (a masked position).
 *
 * @returns `x`
 * @example
 * ```ts
 * import { softmaxRowsInPlace } from "./layers.ts";
 * softmaxRowsInPlace(new Float64Array([0, Math.log(3)]), 1, 2); // [0.25, 0.75]
 * ```
 */
export function softmaxRowsInPlace(x: Float64Array, rows: number, n: number): Float64Array {
  for (let r = 0; r < rows; r++) {
    const o = r * n;
    let max = -Infinity;
    for (let i = 0; i < n; i++) max = Math.max(max, x[o + i]);
    let sum = 0;
    for (let i = 0; i < n; i++) {
      const e = Math.exp(x[o + i] - max);
      x[o + i] = e;
      sum += e;
    }
    for (let i = 0; i < n; i++) x[o + i] /= sum;
  }
  return x;
}

/** A `B × C × H × W` feature map. */
export interface FeatureMap {
  data: Float64Array;
  B: number;
  C: number;
  H: number;
  W: number;
}

/** Geometry of {@linkcode conv2d}. */
export interface Conv2dOptions {
  /** Square kernel size. */
  kernel: number;
  stride: number;
  /** Zero padding on every side. */
  padding: number;
  /** `Cout`, or undefined for none. */
  bias?: Float64Array;
}

/**
 * 2-D cross-correlation as `nn.Conv2d` (groups 1, dilation 1):
 * `y[b,o,i,j] = bias[o] + Σ_{c,u,v} x[b,c,i·s+u−p,j·s+v−p]·weight[o,c,u,v]`,
 * zero outside the image; output size `⌊(H + 2p − k)/s⌋ + 1`.
 *
 * @param weight `Cout × Cin × k × k`
 * @throws {RangeError} when the kernel does not fit the padded input
 * @example
 * ```ts
 * import { conv2d } from "./layers.ts";
 * const x = { data: new Float64Array([1, 2, 3, 4]), B: 1, C: 1, H: 2, W: 2 };
 * conv2d(x, new Float64Array([1]), 1, { kernel: 1, stride: 2, padding: 0 }).data; // [1]
 * ```
 */
export function conv2d(
  x: FeatureMap,
  weight: Float64Array,
  Cout: number,
  { kernel: k, stride: s, padding: p, bias }: Conv2dOptions,
): FeatureMap {
  const { B, C: Cin, H, W } = x;
  const Ho = Math.floor((H + 2 * p - k) / s) + 1;
  const Wo = Math.floor((W + 2 * p - k) / s) + 1;
  if (Ho < 1 || Wo < 1) {
    throw new RangeError(
      `conv2d: a ${k}×${k} kernel does not fit a ${H}×${W} input (padding ${p})`,
    );
  }
  const y = new Float64Array(B * Cout * Ho * Wo);
  for (let b = 0; b < B; b++) {
    for (let o = 0; o < Cout; o++) {
      const yo = (b * Cout + o) * Ho * Wo;
      for (let i = 0; i < Ho; i++) {
        for (let j = 0; j < Wo; j++) {
          let sum = bias ? bias[o] : 0;
          for (let c = 0; c < Cin; c++) {
            const xc = (b * Cin + c) * H * W;
            const wc = (o * Cin + c) * k * k;
            for (let u = 0; u < k; u++) {
              const row = i * s + u - p;
              if (row < 0 || row >= H) continue;
              for (let v = 0; v < k; v++) {
                const col = j * s + v - p;
                if (col < 0 || col >= W) continue;
                sum += x.data[xc + row * W + col] * weight[wc + u * k + v];
              }
            }
          }
          y[yo + i * Wo + j] = sum;
        }
      }
    }
  }
  return { data: y, B, C: Cout, H: Ho, W: Wo };
}

/** Parameters and statistics of {@linkcode batchNorm2dInPlace}. */
export interface BatchNormParams {
  weight: Float64Array;
  bias: Float64Array;
  /** Running mean, used in eval mode. */
  runningMean: Float64Array;
  /** Running (unbiased) variance, used in eval mode. */
  runningVar: Float64Array;
  eps: number;
}

/**
 * BatchNorm2d, in place: `y = (x − μ_c)/√(σ²_c + eps)·weight_c + bias_c`. In
 * `"eval"` mode μ, σ² are the running statistics; in `"batch"` mode (PyTorch's
 * training-mode forward) they are the mean and biased variance of channel `c`
 * over the batch and all positions. Running statistics are never updated.
 *
 * @returns `x`
 * @example
 * ```ts
 * import { batchNorm2dInPlace } from "./layers.ts";
 * const one = new Float64Array([1]);
 * const x = { data: new Float64Array([3]), B: 1, C: 1, H: 1, W: 1 };
 * batchNorm2dInPlace(x, {
 *   weight: one, bias: one, runningMean: one, runningVar: new Float64Array([4]), eps: 0,
 * }, "eval").data; // [2]
 * ```
 */
export function batchNorm2dInPlace(
  x: FeatureMap,
  p: BatchNormParams,
  mode: "eval" | "batch",
): FeatureMap {
  const { B, C, H, W } = x;
  const hw = H * W;
  for (let c = 0; c < C; c++) {
    let mean = p.runningMean[c];
    let variance = p.runningVar[c];
    if (mode === "batch") {
      mean = 0;
      for (let b = 0; b < B; b++) {
        const o = (b * C + c) * hw;
        for (let i = 0; i < hw; i++) mean += x.data[o + i];
      }
      mean /= B * hw;
      variance = 0;
      for (let b = 0; b < B; b++) {
        const o = (b * C + c) * hw;
        for (let i = 0; i < hw; i++) variance += (x.data[o + i] - mean) ** 2;
      }
      variance /= B * hw;
    }
    const scale = p.weight[c] / Math.sqrt(variance + p.eps);
    for (let b = 0; b < B; b++) {
      const o = (b * C + c) * hw;
      for (let i = 0; i < hw; i++) x.data[o + i] = (x.data[o + i] - mean) * scale + p.bias[c];
    }
  }
  return x;
}

/**
 * `x[i] += gamma[i mod C]·y[i]` over `rows × C`: a residual with a layer scale.
 *
 * @returns `x`
 * @example
 * ```ts
 * import { addScaledInPlace } from "./layers.ts";
 * addScaledInPlace(new Float64Array([1, 1]), new Float64Array([2, 3]), new Float64Array([1, 2]));
 * // [3, 7]
 * ```
 */
export function addScaledInPlace(
  x: Float64Array,
  y: Float64Array,
  gamma: Float64Array,
): Float64Array {
  const C = gamma.length;
  for (let i = 0; i < x.length; i++) x[i] += gamma[i % C] * y[i];
  return x;
}

/**
 * Mean cross-entropy `logsumexp(z_r) − z_r[target_r]` over the rows whose
 * target is not `ignoreIndex` (PyTorch's `F.cross_entropy(…, ignore_index=-1)`);
 * NaN when every row is ignored.
 *
 * @param logits `rows × classes`
 * @throws {RangeError} for a target outside `[0, classes)` other than `ignoreIndex`
 * @example
 * ```ts
 * import { crossEntropyReference } from "./layers.ts";
 * crossEntropyReference(new Float64Array([0, 0]), [1], 1, 2); // ln 2
 * ```
 */
export function crossEntropyReference(
  logits: ArrayLike<number>,
  targets: ArrayLike<number | bigint>,
  rows: number,
  classes: number,
  ignoreIndex = -1,
): number {
  if (logits.length !== rows * classes) {
    throw new TypeError(`crossEntropy: ${logits.length} logits, expected ${rows}×${classes}`);
  }
  if (targets.length !== rows) {
    throw new TypeError(`crossEntropy: ${targets.length} targets, expected ${rows}`);
  }
  let total = 0;
  let counted = 0;
  for (let r = 0; r < rows; r++) {
    const t = Number(targets[r]);
    if (t === ignoreIndex) continue;
    if (!Number.isInteger(t) || t < 0 || t >= classes) {
      throw new RangeError(`crossEntropy: target ${t} of row ${r} is outside [0, ${classes})`);
    }
    const o = r * classes;
    let max = -Infinity;
    for (let c = 0; c < classes; c++) max = Math.max(max, logits[o + c]);
    let sum = 0;
    for (let c = 0; c < classes; c++) sum += Math.exp(logits[o + c] - max);
    total += max + Math.log(sum) - logits[o + t];
    counted++;
  }
  return total / counted;
}
