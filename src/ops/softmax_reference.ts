/**
 * Float64 reference of the softmax over the last dimension (`softmax.ts`,
 * `kernels/softmax.wgsl`), numerically stable: the row maximum is subtracted
 * before exponentiating, as `torch.softmax(x, -1)`. Plain TypeScript with no
 * GPU import: the reference models and the attention references build on it.
 *
 * @module
 */

/**
 * Softmax of each row of `x` (`rows × C`), in place. Entries of `-Infinity`
 * get probability 0 (a masked position).
 *
 * @returns `x`
 * @throws {TypeError} when `x` does not hold `rows × C` values
 * @example
 * ```ts
 * import { softmaxRowsInPlace } from "./softmax_reference.ts";
 * const p = softmaxRowsInPlace(new Float64Array([0, Math.log(3)]), 1, 2);
 * if (p.join() !== "0.25,0.75") throw new Error("softmax");
 * ```
 */
export function softmaxRowsInPlace(x: Float64Array, rows: number, C: number): Float64Array {
  if (x.length !== rows * C) {
    throw new TypeError(`softmax reference: ${x.length} values for ${rows} rows of ${C}`);
  }
  for (let r = 0; r < rows; r++) {
    const o = r * C;
    let max = -Infinity;
    for (let c = 0; c < C; c++) max = Math.max(max, x[o + c]);
    let sum = 0;
    for (let c = 0; c < C; c++) {
      const e = Math.exp(x[o + c] - max);
      x[o + c] = e;
      sum += e;
    }
    for (let c = 0; c < C; c++) x[o + c] /= sum;
  }
  return x;
}

/**
 * Softmax of each row of `x` (`rows × C`), in float64, into a new array.
 *
 * @throws {TypeError} when `x` does not hold `rows × C` values
 * @example
 * ```ts
 * import { softmaxReference } from "./softmax_reference.ts";
 * const p = softmaxReference([0, 0], 1, 2);
 * if (p[0] !== 0.5 || p[1] !== 0.5) throw new Error("softmax");
 * ```
 */
export function softmaxReference(x: ArrayLike<number>, rows: number, C: number): Float64Array {
  return softmaxRowsInPlace(Float64Array.from(x), rows, C);
}
