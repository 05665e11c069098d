/**
 * Float64 references of LayerNorm over the last dimension (`layer_norm.ts`,
 * `kernels/layer_norm.wgsl`) and of its backward (`layer_norm_backward.ts`,
 * `kernels/layer_norm_backward.wgsl`), as `torch.nn.LayerNorm` computes it:
 * biased variance, `y = (x − mean)/√(var + eps)·weight + bias`. Plain
 * TypeScript with no GPU import: the reference models build on it too.
 *
 * @module
 */

/** (mean, 1/√(var + eps)) of the row `x[o … o + C)`, two passes (no E[x²] − E[x]² cancellation). */
function rowStats(x: ArrayLike<number>, o: number, C: number, eps: number): [number, number] {
  let s = 0;
  for (let c = 0; c < C; c++) s += x[o + c];
  const mean = s / C;
  let q = 0;
  for (let c = 0; c < C; c++) q += (x[o + c] - mean) ** 2;
  return [mean, 1 / Math.sqrt(q / C + eps)];
}

function checkLengths(op: string, xLen: number, wLen: number, bLen: number, C: number): void {
  if (!Number.isInteger(C) || C <= 0 || xLen % C !== 0 || wLen !== C || bLen !== C) {
    throw new TypeError(
      `${op}: ${xLen} values, weight ${wLen}, bias ${bLen} do not fit rows of C = ${C}`,
    );
  }
}

/**
 * LayerNorm of each of the `rows` rows of `x` (`rows × C`), in float64.
 *
 * @param bias `C` values, or null/undefined for none
 * @throws {TypeError} when the lengths do not fit `rows × C`
 * @example
 * ```ts
 * import { layerNormReference } from "./layer_norm_reference.ts";
 * const y = layerNormReference([1, 3], [1, 1], null, 1, 2, 0);
 * if (y[0] !== -1 || y[1] !== 1) throw new Error("layerNorm");
 * ```
 */
export function layerNormReference(
  x: ArrayLike<number>,
  weight: ArrayLike<number>,
  bias: ArrayLike<number> | null | undefined,
  rows: number,
  C: number,
  eps: number,
): Float64Array {
  checkLengths("layerNormReference", x.length, weight.length, bias?.length ?? C, C);
  if (x.length !== rows * C) {
    throw new TypeError(`layerNormReference: ${x.length} values for ${rows} rows of ${C}`);
  }
  const y = new Float64Array(x.length);
  for (let r = 0; r < rows; r++) {
    const o = r * C;
    const [mean, rstd] = rowStats(x, o, C, eps);
    for (let c = 0; c < C; c++) {
      y[o + c] = (x[o + c] - mean) * rstd * weight[c] + (bias ? bias[c] : 0);
    }
  }
  return y;
}

/**
 * LayerNorm backward in float64, with `x̂ = (x − μ)·r`, `g = ∂y ⊙ w`:
 * `∂x = r·(g − mean(g) − x̂·mean(g ⊙ x̂))` (assigned), `∂w += Σ_rows ∂y ⊙ x̂`,
 * `∂b += Σ_rows ∂y`.
 *
 * @param args `dy`, `x` (`rows·C` values), `weight` (`C`); `dWeight` and
 *   `dBias` (`C`, or null) receive the **added** parameter gradients
 * @returns ∂x (assigned)
 * @throws {TypeError} when the lengths do not fit rows of `C`
 * @example
 * ```ts
 * import { layerNormBackwardReference } from "./layer_norm_reference.ts";
 * const dWeight = new Float64Array(2);
 * const dBias = new Float64Array(2);
 * const dx = layerNormBackwardReference(
 *   { dy: [1, 1], x: [1, 3], weight: [1, 1], dWeight, dBias }, 2, 0,
 * );
 * // a constant upstream gradient does not reach x through the mean
 * if (dx[0] !== 0 || dx[1] !== 0 || dWeight.join() !== "-1,1" || dBias.join() !== "1,1") {
 *   throw new Error("layerNorm backward");
 * }
 * ```
 */
export function layerNormBackwardReference(
  args: {
    dy: ArrayLike<number>;
    x: ArrayLike<number>;
    weight: ArrayLike<number>;
    dWeight: Float64Array;
    dBias: Float64Array | null;
  },
  C: number,
  eps: number,
): Float64Array {
  const { dy, x, weight, dWeight, dBias } = args;
  checkLengths("layerNormBackwardReference", x.length, weight.length, dBias?.length ?? C, C);
  if (dy.length !== x.length || dWeight.length !== C) {
    throw new TypeError(
      `layerNormBackwardReference: dy has ${dy.length} values and dWeight ${dWeight.length}, ` +
        `expected ${x.length} and ${C}`,
    );
  }
  const rows = x.length / C;
  const dx = new Float64Array(x.length);
  const xhat = new Float64Array(C);
  for (let r = 0; r < rows; r++) {
    const o = r * C;
    const [mean, rstd] = rowStats(x, o, C, eps);
    let gMean = 0;
    let gxMean = 0;
    for (let c = 0; c < C; c++) {
      xhat[c] = (x[o + c] - mean) * rstd;
      const g = dy[o + c] * weight[c];
      gMean += g;
      gxMean += g * xhat[c];
      dWeight[c] += dy[o + c] * xhat[c];
      if (dBias) dBias[c] += dy[o + c];
    }
    gMean /= C;
    gxMean /= C;
    for (let c = 0; c < C; c++) {
      dx[o + c] = rstd * (dy[o + c] * weight[c] - gMean - xhat[c] * gxMean);
    }
  }
  return dx;
}
