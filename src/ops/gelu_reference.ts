/**
 * Float64 references of exact GELU (`kernels/gelu.wgsl`, `gelu.ts`) and its
 * backward (`kernels/gelu_backward.wgsl`, `gelu_backward.ts`), with the error
 * function they rest on. Plain TypeScript with no GPU import: the reference
 * models build on it too.
 *
 * @module
 */

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
 * import { erf } from "./gelu_reference.ts";
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
 * import { erfc } from "./gelu_reference.ts";
 * if (Math.abs(erfc(5) / 1.5374597944280349e-12 - 1) > 1e-14) throw new Error("erfc(5)");
 * ```
 */
export function erfc(z: number): number {
  if (Number.isNaN(z)) return NaN;
  if (z < 0) return 2 - erfc(-z);
  if (z < 1.5) return 1 - erfPositiveSeries(z);
  return erfcContinuedFraction(z);
}

/** Φ(x), the standard normal CDF, as `erfc(−x/√2)/2` (relatively accurate in both tails). */
function normalCdf(x: number): number {
  return 0.5 * erfc(-x / Math.SQRT2);
}

/**
 * Exact GELU `x·Φ(x)` (PyTorch's `nn.GELU()`) of every value, in float64.
 *
 * @example
 * ```ts
 * import { geluReference } from "./gelu_reference.ts";
 * const [a, b] = geluReference([0, 1]);
 * if (a !== 0 || Math.abs(b - 0.8413447460685429) > 1e-15) throw new Error("gelu");
 * ```
 */
export function geluReference(x: ArrayLike<number>): Float64Array {
  const y = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) y[i] = x[i] * normalCdf(x[i]);
  return y;
}

/**
 * GELU's backward, `∂x = ∂y·(Φ(x) + x·φ(x))`, in float64.
 *
 * @throws {TypeError} when `dy` and `x` differ in length
 * @example
 * ```ts
 * import { geluBackwardReference } from "./gelu_reference.ts";
 * const [g] = geluBackwardReference([2], [0]);
 * if (g !== 1) throw new Error("gelu'(0) = 1/2");
 * ```
 */
export function geluBackwardReference(dy: ArrayLike<number>, x: ArrayLike<number>): Float64Array {
  if (dy.length !== x.length) {
    throw new TypeError(`geluBackwardReference: dy has ${dy.length} values, x ${x.length}`);
  }
  const dx = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    const pdf = Math.exp(-0.5 * v * v) / Math.sqrt(2 * Math.PI);
    dx[i] = dy[i] * (normalCdf(v) + v * pdf);
  }
  return dx;
}
