/**
 * Small statistics for benchmarks: medians and log-log slopes.
 *
 * @module
 */

/** Median of a non-empty list. */
export function median(values: readonly number[]): number {
  if (values.length === 0) throw new RangeError("median of an empty list");
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Least-squares slope of log(y) against log(x): ≈1 for linear growth, ≈2 for
 * quadratic. Points with non-positive values are ignored; null with fewer
 * than two usable points.
 *
 * @example
 * ```ts
 * import { logLogSlope } from "./stats.ts";
 * const s = logLogSlope([1, 2, 4], [3, 12, 48]);
 * if (Math.abs(s! - 2) > 1e-12) throw new Error("expected 2");
 * ```
 */
export function logLogSlope(xs: readonly number[], ys: readonly number[]): number | null {
  const pts: [number, number][] = [];
  for (let i = 0; i < Math.min(xs.length, ys.length); i++) {
    if (xs[i] > 0 && ys[i] > 0) pts.push([Math.log(xs[i]), Math.log(ys[i])]);
  }
  if (pts.length < 2) return null;
  const mx = pts.reduce((a, p) => a + p[0], 0) / pts.length;
  const my = pts.reduce((a, p) => a + p[1], 0) / pts.length;
  let num = 0;
  let den = 0;
  for (const [x, y] of pts) {
    num += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  }
  return den === 0 ? null : num / den;
}
