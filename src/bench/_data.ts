/**
 * What the benchmarks share: the operator names of `tost bench`,
 * deterministic weights, inputs and upstream gradients of the benchmarked
 * attention modules (for the forward, `operators.ts`, and the
 * forward+backward, `operators_backward.ts`, and their CPU checks), and the
 * checks every variant passes before it is timed (also in the `deno bench`
 * cases, `*_bench.ts`).
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";

/** Operators `tost bench` knows, by their command-line names. */
export const OPERATORS = [
  "tssa",
  "causal-tssa",
  "softmax",
  "causal-softmax",
  "flash-softmax",
  "causal-flash-softmax",
] as const;

/** One of {@linkcode OPERATORS}. */
export type OperatorName = typeof OPERATORS[number];

/** Sizes shared by every operator in a run. */
export interface ModuleShape {
  batch: number;
  dim: number;
  heads: number;
  /**
   * False to time the operator alone on already-projected tokens (`[B, N, D]`
   * for TSSA, packed `[B, N, 3D]` for softmax), without the input and output
   * projections whose linear cost hides the operator's scaling at small N.
   */
  projections?: boolean;
}

/** Host copies of a module's parameters (PyTorch layouts). */
export interface Weights {
  /** `[P, D]`, `P = 3D` for the softmax operators (packed qkv), else `D`. */
  inWeight: Float32Array<ArrayBuffer>;
  /** `[P]`, present for causal TSSA only (`c_attn.bias`). */
  inBias: Float32Array<ArrayBuffer> | null;
  /** `[D, D]` */
  outWeight: Float32Array<ArrayBuffer>;
  /** `[D]` */
  outBias: Float32Array<ArrayBuffer>;
  /** `[H]` */
  temp: Float32Array<ArrayBuffer>;
  /** `[H, blockSize]` */
  denomBias: Float32Array<ArrayBuffer>;
  blockSize: number;
}

/** Deterministic small random values (LCG), so every run times the same data. */
export function randomFill(n: number, seed: number, scale: number): Float32Array<ArrayBuffer> {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = ((s / 4294967296) * 2 - 1) * scale;
  }
  return out;
}

/** Whether the operator is a softmax attention (packed qkv input). */
export function isSoftmax(op: OperatorName): boolean {
  return op.includes("softmax");
}

/** Whether the operator is causal. */
export function isCausal(op: OperatorName): boolean {
  return op.startsWith("causal");
}

/** Features of the input projection's output: `3D` for softmax, `D` for TSSA. */
export function projectedFeatures(op: OperatorName, dim: number): number {
  return isSoftmax(op) ? 3 * dim : dim;
}

/** The module's parameters at length `n` (the causal TSSA block size is `n`). */
export function makeWeights(op: OperatorName, shape: ModuleShape, n: number): Weights {
  const c = shape.dim;
  const inFeatures = projectedFeatures(op, c);
  const s = 1 / Math.sqrt(c);
  return {
    inWeight: randomFill(inFeatures * c, 1, s),
    inBias: op === "causal-tssa" ? randomFill(inFeatures, 2, 0.1) : null,
    outWeight: randomFill(c * c, 3, s),
    outBias: randomFill(c, 4, 0.1),
    temp: randomFill(shape.heads, 5, 0.2).map((v) => 1 + v),
    denomBias: randomFill(shape.heads * n, 6, 0.05),
    blockSize: n,
  };
}

const FILL_CHUNK = 1 << 20;

/** Seed of the module input `x`. */
export const INPUT_SEED = 7;
/** Seed of the fixed upstream gradient `dy` of the forward+backward step. */
export const GRADIENT_SEED = 1_000_003;

/**
 * Fill a (possibly huge) tensor with deterministic values in chunks of 2²⁰,
 * chunk k seeded `seed + k`; {@linkcode chunkedValues} builds the same
 * values on the CPU.
 */
export function fillRandom(gpu: Gpu, t: Tensor, seed: number, scale = 1): void {
  for (let start = 0, s = seed; start < t.numel; start += FILL_CHUNK, s++) {
    const len = Math.min(FILL_CHUNK, t.numel - start);
    gpu.write(t, randomFill(len, s, scale), start);
  }
}

/** The values {@linkcode fillRandom} writes into `total` elements, on the CPU. */
export function chunkedValues(total: number, seed: number, scale = 1): Float32Array {
  const out = new Float32Array(total);
  for (let start = 0, s = seed; start < total; start += FILL_CHUNK, s++) {
    out.set(randomFill(Math.min(FILL_CHUNK, total - start), s, scale), start);
  }
  return out;
}

/**
 * Largest `|got − ref|` relative to `max(1, max|ref|)`.
 *
 * @throws {RangeError} when the lengths differ
 * @example
 * ```ts
 * import { relativeError } from "./_data.ts";
 * if (relativeError([1, 4], [1, 4.5]) !== 0.5 / 4.5) throw new Error("relative error");
 * ```
 */
export function relativeError(got: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (got.length !== ref.length) {
    throw new RangeError(`relativeError: ${got.length} values against ${ref.length}`);
  }
  let maxRef = 1;
  for (let i = 0; i < ref.length; i++) maxRef = Math.max(maxRef, Math.abs(ref[i]));
  let err = 0;
  for (let i = 0; i < ref.length; i++) err = Math.max(err, Math.abs(got[i] - ref[i]));
  return err / maxRef;
}

/**
 * Throw unless every value is within `atol + rtol·|ref|` of the reference
 * (NaN fails): the check a variant passes before it is timed.
 *
 * @example
 * ```ts
 * import { assertWithin } from "./_data.ts";
 * assertWithin("sum", [1.00001], [1], 1e-4, 0);
 * ```
 */
export function assertWithin(
  what: string,
  got: ArrayLike<number>,
  ref: ArrayLike<number>,
  atol: number,
  rtol: number,
): void {
  if (got.length !== ref.length) {
    throw new RangeError(`${what}: ${got.length} values against ${ref.length}`);
  }
  for (let i = 0; i < ref.length; i++) {
    if (!(Math.abs(got[i] - ref[i]) <= atol + rtol * Math.abs(ref[i]))) {
      throw new Error(`${what}: element ${i} is ${got[i]}, the reference says ${ref[i]}`);
    }
  }
}
