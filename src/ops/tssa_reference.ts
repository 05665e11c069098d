/**
 * The float64 references of the non-causal TSSA operator (`AttentionTSSA`
 * of the reference), in plain TypeScript with no GPU code:
 * {@linkcode tssaReference}, the forward with what the backward reads, and
 * {@linkcode tssaBackwardReference}. The GPU forward is `tssa.ts` and its
 * backward `tssa_backward.ts`; their module documentation gives the formulas
 * these references follow.
 *
 * The sizes, clamps and checks both TSSA operators share live here too
 * ({@linkcode TssaDims}, {@linkcode TSSA_NORM_SQ_MIN},
 * {@linkcode TSSA_PI_EPS}, {@linkcode checkDims}, {@linkcode checkLength}).
 *
 * @module
 */

import { softmaxRowsInPlace } from "./softmax_reference.ts";

/** Sizes of a TSSA problem: `w` is `[batches, tokens, heads·headDim]`. */
export interface TssaDims {
  batches: number;
  tokens: number;
  heads: number;
  headDim: number;
}

/** The float64 forward: the output and what the backward reads. */
export interface TssaReferenceOutput {
  /** Output `[B, N, D]`. */
  y: Float64Array;
  /** Head memberships `[B, N, H]`. */
  pi: Float64Array;
  /** Column sums of squares `Σ_n w²` (unclamped), `[B, D]`. */
  sq: Float64Array;
  /** `Σ_n Pi·w²`, `[B, D]`. */
  num: Float64Array;
  /** `Σ_n Pi`, `[B, H]`. */
  den: Float64Array;
}

/** Smallest squared column norm, as `F.normalize(eps=1e-12)` clamps it. */
export const TSSA_NORM_SQ_MIN = 1e-24;
/** The `1e-8` added to `Σ Pi` in both operators. */
export const TSSA_PI_EPS = 1e-8;

/** Throw a TypeError unless `a` holds `n` values. */
export function checkLength(op: string, name: string, a: ArrayLike<number>, n: number): void {
  if (a.length !== n) {
    throw new TypeError(`${op}: ${name} has ${a.length} values, expected ${n}`);
  }
}

/** Throw unless the dims are non-negative integers and heads, headDim positive. */
export function checkDims(op: string, dims: TssaDims): void {
  const { batches, tokens, heads, headDim } = dims;
  for (const [name, v] of Object.entries({ batches, tokens })) {
    if (!Number.isInteger(v) || v < 0) throw new RangeError(`${op}: ${name} is ${v}`);
  }
  for (const [name, v] of Object.entries({ heads, headDim })) {
    if (!Number.isInteger(v) || v < 1) throw new RangeError(`${op}: ${name} is ${v}`);
  }
}

/**
 * Non-causal TSSA on the CPU in float64, exactly as the reference computes
 * it (formulas in `tssa.ts`), with what the backward reads.
 *
 * @param w `[B, N, H·d]`, row-major
 * @param temp `H` values
 * @returns y `[B, N, H·d]` and the saves, float64
 * @throws {TypeError} when a length does not match the sizes
 * @example
 * ```ts
 * import { tssaReference } from "./tssa_reference.ts";
 * // One token, one head: Pi = 1, dots = w², y = −w / (1 + w²).
 * const { y } = tssaReference([2], [1], { batches: 1, tokens: 1, heads: 1, headDim: 1 });
 * if (Math.abs(y[0] + 2 / 5) > 1e-8) throw new Error("tssa");
 * ```
 */
export function tssaReference(
  w: ArrayLike<number>,
  temp: ArrayLike<number>,
  dims: TssaDims,
): TssaReferenceOutput {
  const op = "tssaReference";
  checkDims(op, dims);
  const { batches: B, tokens: N, heads: H, headDim: d } = dims;
  const D = H * d;
  checkLength(op, "w", w, B * N * D);
  checkLength(op, "temp", temp, H);
  const y = new Float64Array(B * N * D);
  const pi = new Float64Array(B * N * H);
  const sq = new Float64Array(B * D);
  const num = new Float64Array(B * D);
  const den = new Float64Array(B * H);
  const z = new Float64Array(H);
  for (let b = 0; b < B; b++) {
    const wb = b * N * D;
    for (let n = 0; n < N; n++) {
      for (let c = 0; c < D; c++) sq[b * D + c] += w[wb + n * D + c] ** 2;
    }
    for (let n = 0; n < N; n++) {
      for (let h = 0; h < H; h++) {
        let u = 0;
        for (let k = 0; k < d; k++) {
          const c = h * d + k;
          u += w[wb + n * D + c] ** 2 / Math.max(sq[b * D + c], TSSA_NORM_SQ_MIN);
        }
        z[h] = temp[h] * u;
      }
      softmaxInPlace(z);
      pi.set(z, (b * N + n) * H);
      for (let h = 0; h < H; h++) {
        den[b * H + h] += z[h];
        for (let k = 0; k < d; k++) {
          const c = h * d + k;
          num[b * D + c] += z[h] * w[wb + n * D + c] ** 2;
        }
      }
    }
    for (let n = 0; n < N; n++) {
      for (let c = 0; c < D; c++) {
        const h = Math.floor(c / d);
        const a = 1 / (1 + num[b * D + c] / (den[b * H + h] + TSSA_PI_EPS));
        const i = wb + n * D + c;
        y[i] = -w[i] * pi[(b * N + n) * H + h] * a;
      }
    }
  }
  return { y, pi, sq, num, den };
}

/**
 * Softmax of a small vector, in place, float64 (max-subtracted).
 *
 * @example
 * ```ts
 * import { softmaxInPlace } from "./tssa_reference.ts";
 * const z = new Float64Array([0, Math.log(3)]);
 * softmaxInPlace(z);
 * if (Math.abs(z[1] - 0.75) > 1e-15) throw new Error("softmax");
 * ```
 */
export function softmaxInPlace(z: Float64Array): void {
  softmaxRowsInPlace(z, 1, z.length);
}

/**
 * Non-causal TSSA backward in float64 (formulas in `tssa_backward.ts`).
 *
 * @param dy upstream gradient `[B, N, D]`
 * @param w the forward's input `[B, N, D]`
 * @param temp `H` values
 * @param saved the forward's saves for this `w` and `temp` (`tssaReference`)
 * @param dtemp `H` values; `∂L/∂temp` is **added** to it
 * @returns `∂L/∂w`, `[B, N, D]`, float64 (assigned)
 * @example
 * ```ts
 * import { tssaBackwardReference, tssaReference } from "./tssa_reference.ts";
 * const dims = { batches: 1, tokens: 1, heads: 1, headDim: 1 };
 * const saved = tssaReference([2], [1], dims);
 * const dtemp = new Float64Array(1);
 * const dw = tssaBackwardReference({ dy: [1], w: [2], temp: [1], saved, dtemp }, dims);
 * // y = −w/(1 + w²) for one token and head: dy/dw = (w² − 1)/(1 + w²)².
 * if (Math.abs(dw[0] - 3 / 25) > 1e-8) throw new Error("tssa backward");
 * ```
 */
export function tssaBackwardReference(
  args: {
    dy: ArrayLike<number>;
    w: ArrayLike<number>;
    temp: ArrayLike<number>;
    saved: TssaReferenceOutput;
    dtemp: Float64Array;
  },
  dims: TssaDims,
): Float64Array {
  const op = "tssaBackwardReference";
  checkDims(op, dims);
  const { dy, w, temp, saved, dtemp } = args;
  const { batches: B, tokens: N, heads: H, headDim: d } = dims;
  const D = H * d;
  checkLength(op, "dy", dy, B * N * D);
  checkLength(op, "w", w, B * N * D);
  checkLength(op, "temp", temp, H);
  checkLength(op, "dtemp", dtemp, H);
  checkLength(op, "saved.pi", saved.pi, B * N * H);
  const dw = new Float64Array(B * N * D);
  const a = new Float64Array(D);
  const da = new Float64Array(D);
  const dM = new Float64Array(D);
  const dP = new Float64Array(H);
  const R = new Float64Array(D);
  const dz = new Float64Array(N * H);
  const dPi = new Float64Array(H);
  for (let b = 0; b < B; b++) {
    const wb = b * N * D;
    const pib = b * N * H;
    for (let c = 0; c < D; c++) {
      const h = Math.floor(c / d);
      a[c] = 1 / (1 + saved.num[b * D + c] / (saved.den[b * H + h] + TSSA_PI_EPS));
    }
    // ∂a: reduction over tokens.
    da.fill(0);
    for (let n = 0; n < N; n++) {
      for (let c = 0; c < D; c++) {
        const i = wb + n * D + c;
        da[c] -= dy[i] * w[i] * saved.pi[pib + n * H + Math.floor(c / d)];
      }
    }
    dP.fill(0);
    for (let c = 0; c < D; c++) {
      const h = Math.floor(c / d);
      const P = saved.den[b * H + h] + TSSA_PI_EPS;
      const ddots = -a[c] * a[c] * da[c];
      dM[c] = ddots / P;
      dP[h] -= ddots * saved.num[b * D + c] / (P * P);
    }
    // ∂Pi and the softmax over heads, per token; R: reduction over tokens.
    R.fill(0);
    for (let n = 0; n < N; n++) {
      const po = pib + n * H;
      let dot = 0;
      for (let h = 0; h < H; h++) {
        let s = dP[h];
        for (let k = 0; k < d; k++) {
          const c = h * d + k;
          const i = wb + n * D + c;
          s += dM[c] * w[i] * w[i] - dy[i] * w[i] * a[c];
        }
        dPi[h] = s;
        dot += saved.pi[po + h] * s;
      }
      for (let h = 0; h < H; h++) {
        const z = saved.pi[po + h] * (dPi[h] - dot);
        dz[n * H + h] = z;
        let u = 0;
        for (let k = 0; k < d; k++) {
          const c = h * d + k;
          const w2 = w[wb + n * D + c] ** 2;
          u += w2 / Math.max(saved.sq[b * D + c], TSSA_NORM_SQ_MIN);
          R[c] += z * w2;
        }
        dtemp[h] += z * u;
      }
    }
    for (let n = 0; n < N; n++) {
      for (let c = 0; c < D; c++) {
        const h = Math.floor(c / d);
        const sq = saved.sq[b * D + c];
        const S = Math.max(sq, TSSA_NORM_SQ_MIN);
        const dS = sq >= TSSA_NORM_SQ_MIN ? -temp[h] * R[c] / (S * S) : 0;
        const i = wb + n * D + c;
        const p = saved.pi[pib + n * H + h];
        dw[i] = -dy[i] * p * a[c] + 2 * w[i] * (p * dM[c] + temp[h] * dz[n * H + h] / S + dS);
      }
    }
  }
  return dw;
}
