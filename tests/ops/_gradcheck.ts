/**
 * Finite-difference gradients for the backward tests.
 *
 * @module
 */

/** Central differences of `f` at `x`, one entry of `x` at a time (restored after). */
export function numericGradient(x: Float64Array, f: () => number, step = 1e-5): Float64Array {
  const g = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    x[i] = v + step;
    const plus = f();
    x[i] = v - step;
    const minus = f();
    x[i] = v;
    g[i] = (plus - minus) / (2 * step);
  }
  return g;
}
