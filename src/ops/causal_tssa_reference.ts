/**
 * The float64 references of the causal TSSA operator
 * (`CausalSelfAttention_TSSA` of the reference), in plain TypeScript with no
 * GPU code: {@linkcode causalTssaReference}, the forward with Pi for the
 * backward; {@linkcode causalTssaBackwardReference}; and
 * {@linkcode causalTssaStepReference}, the same operator evaluated token by
 * token on running statistics, as decoding does. The GPU versions are
 * `causal_tssa.ts`, `causal_tssa_backward.ts` and `causal_tssa_step.ts`;
 * their module documentation gives the formulas these references follow.
 *
 * @module
 */

import { checkDims, checkLength, softmaxInPlace, TSSA_PI_EPS } from "./tssa_reference.ts";
import type { TssaDims } from "./tssa_reference.ts";

/** The clamp of the causal denominators (`clamp_min(1e-12)`). */
export const CAUSAL_DENOM_MIN = 1e-12;

/** Sizes of a causal TSSA problem: {@linkcode TssaDims} plus the bias length. */
export interface CausalTssaDims extends TssaDims {
  /** Positions in `denom_bias` (`[H, blockSize]`); `tokens ≤ blockSize`. */
  blockSize: number;
}

/** The float64 forward: the output and what the backward reads. */
export interface CausalTssaReferenceOutput {
  /** Output `[B, N, D]`. */
  y: Float64Array;
  /** Head memberships `[B, N, H]`. */
  pi: Float64Array;
}

/** Throw unless the dims are valid and `tokens ≤ blockSize`. */
export function checkCausalDims(op: string, dims: CausalTssaDims): void {
  checkDims(op, dims);
  if (!Number.isInteger(dims.blockSize) || dims.tokens > dims.blockSize) {
    throw new RangeError(`${op}: ${dims.tokens} tokens exceed the block size ${dims.blockSize}`);
  }
}

/**
 * Causal TSSA on the CPU in float64, exactly as the reference computes it
 * (formulas in `causal_tssa.ts`), with Pi for the backward.
 *
 * @param w `[B, N, H·d]`, row-major
 * @param params `temp` (`H` values) and `denomBias` (`[H, blockSize]`, row-major)
 * @returns y `[B, N, H·d]` and Pi `[B, N, H]`, float64
 * @throws {RangeError} when `N > blockSize`; {TypeError} for mismatched lengths
 * @example
 * ```ts
 * import { causalTssaReference } from "./causal_tssa_reference.ts";
 * // One head: Pi = 1 and dots = w²_0 / (1 + 1e-8) at the first token.
 * const { y } = causalTssaReference([2, 1], { temp: [1], denomBias: [0, 0] }, {
 *   batches: 1, tokens: 2, heads: 1, headDim: 1, blockSize: 2,
 * });
 * if (Math.abs(y[0] + 2 / (1 + 4 / (1 + 1e-8))) > 1e-12) throw new Error("causal");
 * ```
 */
export function causalTssaReference(
  w: ArrayLike<number>,
  params: { temp: ArrayLike<number>; denomBias: ArrayLike<number> },
  dims: CausalTssaDims,
): CausalTssaReferenceOutput {
  const op = "causalTssaReference";
  checkCausalDims(op, dims);
  const { batches: B, tokens: N, heads: H, headDim: d, blockSize } = dims;
  const { temp, denomBias } = params;
  const D = H * d;
  checkLength(op, "w", w, B * N * D);
  checkLength(op, "temp", temp, H);
  checkLength(op, "denomBias", denomBias, H * blockSize);
  const y = new Float64Array(B * N * D);
  const pi = new Float64Array(B * N * H);
  const C = new Float64Array(D);
  const A = new Float64Array(D);
  const Q = new Float64Array(H);
  const z = new Float64Array(H);
  for (let b = 0; b < B; b++) {
    C.fill(0);
    A.fill(0);
    Q.fill(0);
    for (let n = 0; n < N; n++) {
      const ro = (b * N + n) * D;
      for (let h = 0; h < H; h++) {
        let u = d * denomBias[h * blockSize + n];
        for (let k = 0; k < d; k++) {
          const c = h * d + k;
          const s = w[ro + c] ** 2;
          C[c] += s;
          u += s / Math.max(C[c], CAUSAL_DENOM_MIN);
        }
        z[h] = temp[h] * u;
      }
      softmaxInPlace(z);
      pi.set(z, (b * N + n) * H);
      for (let h = 0; h < H; h++) {
        Q[h] += z[h];
        for (let k = 0; k < d; k++) {
          const c = h * d + k;
          A[c] += z[h] * w[ro + c] ** 2;
          y[ro + c] = -w[ro + c] * z[h] / (1 + A[c] / (Q[h] + TSSA_PI_EPS));
        }
      }
    }
  }
  return { y, pi };
}

/**
 * Causal TSSA backward in float64 (formulas in `causal_tssa_backward.ts`).
 *
 * @param args `dy` and `w` `[B, N, D]`; `temp` (`H`), `denomBias`
 *   (`H·blockSize`); `pi` `[B, N, H]` from the forward (`causalTssaReference`); `dtemp` (`H`) and
 *   `dDenomBias` (`H·blockSize`), to which the parameter gradients are **added**
 * @returns `∂L/∂w`, `[B, N, D]`, float64 (assigned)
 * @example
 * ```ts
 * import { causalTssaBackwardReference } from "./causal_tssa_reference.ts";
 * const dims = { batches: 1, tokens: 1, heads: 1, headDim: 1, blockSize: 1 };
 * const dtemp = new Float64Array(1);
 * const dDenomBias = new Float64Array(1);
 * const dw = causalTssaBackwardReference(
 *   { dy: [1], w: [2], temp: [1], denomBias: [0], pi: [1], dtemp, dDenomBias },
 *   dims,
 * );
 * // One token and head: y = −w/(1 + w²), dy/dw = (w² − 1)/(1 + w²)².
 * if (Math.abs(dw[0] - 3 / 25) > 1e-8) throw new Error("causal tssa backward");
 * ```
 */
export function causalTssaBackwardReference(
  args: {
    dy: ArrayLike<number>;
    w: ArrayLike<number>;
    temp: ArrayLike<number>;
    denomBias: ArrayLike<number>;
    pi: ArrayLike<number>;
    dtemp: Float64Array;
    dDenomBias: Float64Array;
  },
  dims: CausalTssaDims,
): Float64Array {
  const op = "causalTssaBackwardReference";
  checkCausalDims(op, dims);
  const { dy, w, temp, pi, dtemp, dDenomBias } = args;
  const { batches: B, tokens: N, heads: H, headDim: d, blockSize } = dims;
  const D = H * d;
  checkLength(op, "dy", dy, B * N * D);
  checkLength(op, "w", w, B * N * D);
  checkLength(op, "temp", temp, H);
  checkLength(op, "denomBias", args.denomBias, H * blockSize);
  checkLength(op, "pi", pi, B * N * H);
  checkLength(op, "dtemp", dtemp, H);
  checkLength(op, "dDenomBias", dDenomBias, H * blockSize);
  const dw = new Float64Array(B * N * D);
  // Per batch element: prefix sums, then the per-token gradients, then suffix sums.
  const Cc = new Float64Array(N * D); // clamped prefix sums of s
  const clamped = new Uint8Array(N * D); // where the clamp is active (no gradient to C)
  const dA = new Float64Array(N * D); // ∂A, then rev(∂A)
  const dC = new Float64Array(N * D); // ∂C, then rev(∂C)
  const dQ = new Float64Array(N * H); // ∂Q, then rev(∂Q)
  const dPi0 = new Float64Array(N * H); // −Σ_k g·w·a
  const C = new Float64Array(D);
  const A = new Float64Array(D);
  const Q = new Float64Array(H);
  const dPi = new Float64Array(H);
  for (let b = 0; b < B; b++) {
    C.fill(0);
    A.fill(0);
    Q.fill(0);
    dQ.fill(0);
    dPi0.fill(0);
    for (let n = 0; n < N; n++) {
      const ro = (b * N + n) * D;
      const po = (b * N + n) * H;
      for (let h = 0; h < H; h++) {
        const p = pi[po + h];
        Q[h] += p;
        const q = Q[h] + TSSA_PI_EPS;
        for (let k = 0; k < d; k++) {
          const c = h * d + k;
          const x = w[ro + c];
          const s = x * x;
          C[c] += s;
          A[c] += p * s;
          Cc[n * D + c] = Math.max(C[c], CAUSAL_DENOM_MIN);
          clamped[n * D + c] = C[c] >= CAUSAL_DENOM_MIN ? 0 : 1;
          const a = 1 / (1 + A[c] / q);
          const e = a * a * dy[ro + c] * x * p;
          dA[n * D + c] = e / q;
          dQ[n * H + h] -= e * A[c] / (q * q);
          dPi0[n * H + h] -= dy[ro + c] * x * a;
          dw[ro + c] = -dy[ro + c] * p * a;
        }
      }
    }
    suffixSums(dA, N, D);
    suffixSums(dQ, N, H);
    for (let n = 0; n < N; n++) {
      const ro = (b * N + n) * D;
      const po = (b * N + n) * H;
      let dot = 0;
      for (let h = 0; h < H; h++) {
        let s = dPi0[n * H + h] + dQ[n * H + h];
        for (let k = 0; k < d; k++) {
          const c = h * d + k;
          s += dA[n * D + c] * w[ro + c] ** 2;
        }
        dPi[h] = s;
        dot += pi[po + h] * s;
      }
      for (let h = 0; h < H; h++) {
        const z = pi[po + h] * (dPi[h] - dot);
        let u = d * args.denomBias[h * blockSize + n];
        for (let k = 0; k < d; k++) {
          const c = h * d + k;
          const cc = Cc[n * D + c];
          const s = w[ro + c] ** 2;
          u += s / cc;
          const g = temp[h] * z;
          dC[n * D + c] = clamped[n * D + c] ? 0 : -g * s / (cc * cc);
          dw[ro + c] += 2 * w[ro + c] * g / cc;
        }
        dtemp[h] += z * u;
        dDenomBias[h * blockSize + n] += d * temp[h] * z;
      }
    }
    suffixSums(dC, N, D);
    for (let n = 0; n < N; n++) {
      const ro = (b * N + n) * D;
      for (let c = 0; c < D; c++) {
        const p = pi[(b * N + n) * H + Math.floor(c / d)];
        dw[ro + c] += 2 * w[ro + c] * (dA[n * D + c] * p + dC[n * D + c]);
      }
    }
  }
  return dw;
}

/** In place: `x[n, c] ← Σ_{m ≥ n} x[m, c]` for `x` `[rows, cols]`. */
function suffixSums(x: Float64Array, rows: number, cols: number): void {
  for (let n = rows - 2; n >= 0; n--) {
    for (let c = 0; c < cols; c++) x[n * cols + c] += x[(n + 1) * cols + c];
  }
}

/** Running statistics of one layer on the CPU, float64, for {@linkcode causalTssaStepReference}. */
export interface CausalTssaHostState {
  /** Σ w², `[B, H·d]`. */
  s1: Float64Array;
  /** Σ Pi·w², `[B, H·d]`. */
  s2: Float64Array;
  /** Σ Pi, `[B, H]`. */
  s3: Float64Array;
  /** Tokens consumed so far. */
  position: number;
}

/** An empty CPU state for B sequences of H heads of d features. */
export function createCausalTssaHostState(
  batches: number,
  heads: number,
  headDim: number,
): CausalTssaHostState {
  return {
    s1: new Float64Array(batches * heads * headDim),
    s2: new Float64Array(batches * heads * headDim),
    s3: new Float64Array(batches * heads),
    position: 0,
  };
}

/**
 * The decoding step on the CPU in float64: T new tokens `w` `[B, T, H·d]` on
 * top of `state` (updated in place) → y `[B, T, H·d]`. Feeding a sequence
 * token by token gives {@linkcode causalTssaReference} of the whole sequence.
 *
 * @throws {RangeError} when the tokens would pass `blockSize`
 * @example
 * ```ts
 * import { causalTssaStepReference, createCausalTssaHostState } from "./causal_tssa_reference.ts";
 * // One head, d = 2: the first token gives −w / (1 + w² / (1 + 1e-8)).
 * const state = createCausalTssaHostState(1, 1, 2);
 * const y = causalTssaStepReference([2, 1], [1], [0, 0], state, 1, 1, 1, 2, 2);
 * if (Math.abs(y[0] + 2 / (1 + 4 / (1 + 1e-8))) > 1e-12 || state.position !== 1) {
 *   throw new Error("step");
 * }
 * ```
 */
export function causalTssaStepReference(
  w: ArrayLike<number>,
  temp: ArrayLike<number>,
  denomBias: ArrayLike<number>,
  state: CausalTssaHostState,
  B: number,
  T: number,
  heads: number,
  d: number,
  blockSize: number,
): Float64Array {
  const op = "causalTssaStepReference";
  const D = heads * d;
  if (w.length !== B * T * D) {
    throw new TypeError(`${op}: w has ${w.length} values, expected ${B}·${T}·${D}`);
  }
  if (temp.length !== heads || denomBias.length !== heads * blockSize) {
    throw new TypeError(
      `${op}: temp must hold ${heads} and denomBias ${heads}·${blockSize} values`,
    );
  }
  if (state.s1.length !== B * D || state.s2.length !== B * D || state.s3.length !== B * heads) {
    throw new TypeError(`${op}: the state does not hold ${B} sequences × ${heads} heads × ${d}`);
  }
  if (state.position + T > blockSize) {
    throw new RangeError(
      `${op}: tokens at positions ${state.position}…${
        state.position + T - 1
      } pass the block size ${blockSize}`,
    );
  }
  const y = new Float64Array(B * T * D);
  const z = new Float64Array(heads);
  for (let b = 0; b < B; b++) {
    const s1 = state.s1.subarray(b * D, (b + 1) * D);
    const s2 = state.s2.subarray(b * D, (b + 1) * D);
    const s3 = state.s3.subarray(b * heads, (b + 1) * heads);
    for (let t = 0; t < T; t++) {
      const n = state.position + t;
      const row = (b * T + t) * D;
      for (let c = 0; c < D; c++) s1[c] += w[row + c] ** 2;
      for (let h = 0; h < heads; h++) {
        let s = 0;
        for (let k = 0; k < d; k++) {
          const c = h * d + k;
          s += w[row + c] ** 2 / Math.max(s1[c], 1e-12) + denomBias[h * blockSize + n];
        }
        z[h] = temp[h] * s;
      }
      softmaxInPlace(z);
      for (let h = 0; h < heads; h++) {
        s3[h] += z[h];
        for (let k = 0; k < d; k++) {
          const c = h * d + k;
          s2[c] += z[h] * w[row + c] ** 2;
          y[row + c] = -(w[row + c] * z[h]) / (1 + s2[c] / (s3[h] + 1e-8));
        }
      }
    }
  }
  state.position += T;
  return y;
}
