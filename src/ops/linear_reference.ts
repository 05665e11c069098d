/**
 * The float64 references of the linear layer `y = x·Wᵀ + b` (`nn.Linear`):
 * the forward and the backward, no GPU code (the reference models and the
 * GEMM tests compose them). The GPU layer is `linear.ts` and
 * `linear_backward.ts`.
 *
 * @module
 */

/** Sizes of a linear layer applied to `rows` rows. */
export interface LinearDims {
  rows: number;
  inFeatures: number;
  outFeatures: number;
}

/**
 * `y = x·Wᵀ + b` in float64 (inputs of any numeric array type): the one CPU
 * reference of the layer.
 *
 * @example
 * ```ts
 * import { linearForwardReference } from "./linear_reference.ts";
 * const y = linearForwardReference([1, 2], [1, 0, 0, 1, 1, 1], [0, 0, 1], {
 *   rows: 1, inFeatures: 2, outFeatures: 3,
 * });
 * if (y.join() !== "1,2,4") throw new Error("linear");
 * ```
 */
export function linearForwardReference(
  x: ArrayLike<number>,
  weight: ArrayLike<number>,
  bias: ArrayLike<number> | null | undefined,
  dims: LinearDims,
): Float64Array {
  const { rows: M, inFeatures: K, outFeatures: N } = dims;
  const lengths: [string, number, number][] = [
    ["x", x.length, M * K],
    ["weight", weight.length, N * K],
  ];
  if (bias) lengths.push(["bias", bias.length, N]);
  for (const [name, got, want] of lengths) {
    if (got !== want) {
      throw new TypeError(
        `linearForwardReference: ${name} has ${got} values, expected ${want} for ${M}×${K} → ${N}`,
      );
    }
  }
  const y = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    const xo = m * K;
    for (let n = 0; n < N; n++) {
      const wo = n * K;
      let s = bias ? bias[n] : 0;
      for (let k = 0; k < K; k++) s += x[xo + k] * weight[wo + k];
      y[m * N + n] = s;
    }
  }
  return y;
}

/**
 * {@linkcode linearForwardReference} with positional sizes, rounded to f32
 * (the form the benches and the public module use).
 *
 * @param x `rows × inFeatures`, row-major
 * @param weight `outFeatures × inFeatures`, row-major
 * @param bias `outFeatures` values, or null
 * @example
 * ```ts
 * import { linearReference } from "./linear_reference.ts";
 * const w = new Float32Array([1, 0, 0, 1, 1, 1]);
 * const y = linearReference(new Float32Array([1, 2]), w, new Float32Array([0, 0, 1]), 1, 2, 3);
 * if (y.join() !== "1,2,4") throw new Error("linear");
 * ```
 */
export function linearReference(
  x: Float32Array,
  weight: Float32Array,
  bias: Float32Array | null,
  rows: number,
  inFeatures: number,
  outFeatures: number,
): Float32Array<ArrayBuffer> {
  return Float32Array.from(
    linearForwardReference(x, weight, bias, { rows, inFeatures, outFeatures }),
  );
}

function checkLinear(op: string, lengths: Record<string, [number, number]>): void {
  for (const [name, [got, want]] of Object.entries(lengths)) {
    if (got !== want) throw new TypeError(`${op}: ${name} has ${got} values, expected ${want}`);
  }
}

/**
 * Linear backward in float64.
 *
 * @param args `dy` `[M, N]`, `x` `[M, K]`, `weight` `[N, K]`; `dWeight`
 *   (`N·K`) and `dBias` (`N`, or null when the layer has no bias) receive
 *   the **added** parameter gradients
 * @returns `∂x` `[M, K]` (assigned)
 * @example
 * ```ts
 * import { linearBackwardReference } from "./linear_reference.ts";
 * const dWeight = new Float64Array(2);
 * const dBias = new Float64Array(1);
 * const dx = linearBackwardReference(
 *   { dy: [3], x: [1, 2], weight: [5, 7], dWeight, dBias },
 *   { rows: 1, inFeatures: 2, outFeatures: 1 },
 * );
 * if (dx.join() !== "15,21" || dWeight.join() !== "3,6" || dBias[0] !== 3) throw new Error();
 * ```
 */
export function linearBackwardReference(
  args: {
    dy: ArrayLike<number>;
    x: ArrayLike<number>;
    weight: ArrayLike<number>;
    dWeight: Float64Array;
    dBias: Float64Array | null;
  },
  dims: LinearDims,
): Float64Array {
  const { dy, x, weight, dWeight, dBias } = args;
  const { rows: M, inFeatures: K, outFeatures: N } = dims;
  checkLinear("linearBackwardReference", {
    dy: [dy.length, M * N],
    x: [x.length, M * K],
    weight: [weight.length, N * K],
    dWeight: [dWeight.length, N * K],
    ...(dBias ? { dBias: [dBias.length, N] as [number, number] } : {}),
  });
  const dx = new Float64Array(M * K);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      const g = dy[m * N + n];
      if (dBias) dBias[n] += g;
      for (let k = 0; k < K; k++) {
        dx[m * K + k] += g * weight[n * K + k];
        dWeight[n * K + k] += g * x[m * K + k];
      }
    }
  }
  return dx;
}
