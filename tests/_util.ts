/**
 * Shared test helpers: closeness checks with `atol + rtol·|ref|`, a GPU
 * fixture that is always destroyed, and seeded random data.
 *
 * @module
 */

import { Gpu } from "../src/gpu/runtime.ts";

/** Tolerances of {@linkcode assertClose}. */
export interface Tolerance {
  atol?: number;
  rtol?: number;
}

/**
 * Assert `|a - b| <= atol + rtol·|b|` elementwise; reports the worst index.
 * NaN anywhere fails.
 */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  { atol = 1e-5, rtol = 1e-5 }: Tolerance = {},
  what = "values",
): void {
  if (actual.length !== expected.length) {
    throw new Error(`${what}: length ${actual.length} != expected ${expected.length}`);
  }
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i];
    const b = expected[i];
    const err = Math.abs(a - b);
    const excess = err - (atol + rtol * Math.abs(b));
    if (!(excess <= 0) && (worst < 0 || !(excess <= worstExcess))) {
      worst = i;
      worstExcess = excess;
      if (Number.isNaN(excess)) break;
    }
  }
  if (worst >= 0) {
    throw new Error(
      `${what}: mismatch at index ${worst}: got ${actual[worst]}, expected ${expected[worst]} ` +
        `(|diff| ${Math.abs(actual[worst] - expected[worst])}, atol ${atol}, rtol ${rtol})`,
    );
  }
}

/**
 * The fixtures' rule: `|a - b| <= tol · max(1, max|ref|)`.
 */
export function assertCloseScaled(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: number,
  what = "values",
): void {
  let maxRef = 0;
  for (let i = 0; i < expected.length; i++) maxRef = Math.max(maxRef, Math.abs(expected[i]));
  assertClose(actual, expected, { atol: tol * Math.max(1, maxRef), rtol: 0 }, what);
}

/** Run `fn` with a fresh GPU runtime and destroy it afterwards. */
export async function withGpu<T>(fn: (gpu: Gpu) => Promise<T>): Promise<T> {
  const gpu = await Gpu.create();
  try {
    return await fn(gpu);
  } finally {
    gpu.destroy();
  }
}

/** Deterministic pseudo-random numbers (mulberry32), uniform in [lo, hi). */
export function seededRandom(seed: number): (lo?: number, hi?: number) => number {
  let s = seed >>> 0;
  return (lo = -1, hi = 1) => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    const u = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    return lo + (hi - lo) * u;
  };
}

/** A Float32Array of `n` seeded uniform values in [lo, hi). */
export function randomArray(
  n: number,
  seed: number,
  lo = -1,
  hi = 1,
): Float32Array<ArrayBuffer> {
  const r = seededRandom(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = r(lo, hi);
  return out;
}

/**
 * Run `fn` counting every blocking host wait it makes (each
 * `GPUBuffer.mapAsync` and `GPUQueue.onSubmittedWorkDone` call, wherever it
 * comes from); `probe` gives the count so far at any moment.
 */
export async function countHostWaits<T>(
  fn: (probe: () => number) => Promise<T>,
): Promise<{ result: T; waits: number }> {
  let waits = 0;
  const map = GPUBuffer.prototype.mapAsync;
  const done = GPUQueue.prototype.onSubmittedWorkDone;
  GPUBuffer.prototype.mapAsync = function (...a: Parameters<typeof map>) {
    waits++;
    return map.apply(this, a);
  };
  GPUQueue.prototype.onSubmittedWorkDone = function () {
    waits++;
    return done.apply(this);
  };
  try {
    return { result: await fn(() => waits), waits };
  } finally {
    GPUBuffer.prototype.mapAsync = map;
    GPUQueue.prototype.onSubmittedWorkDone = done;
  }
}
