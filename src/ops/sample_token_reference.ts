/**
 * Sampling a token from logits on the host, in float64: the reference the
 * GPU sampler (`sample_token.ts`, `kernels/sample_token.wgsl`) is tested
 * against, and the seeded generators both use. Plain TypeScript with no GPU
 * import.
 *
 * The draws: token `i` of a generation uses {@linkcode randomAt}`(seed, i)`,
 * SplitMix32's output for counter `i` (the `i`-th number of
 * {@linkcode seededRandom}`(seed)`) kept to its top 24 bits, so the GPU
 * computes exactly the same number in float32.
 *
 * @module
 */

/** A seeded pseudo-random generator of uniform numbers in [0, 1). */
export type Random = () => number;

function checkSeed(seed: number): void {
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new RangeError(`The seed must be an integer in [0, 2^32), got ${seed}`);
  }
}

/** SplitMix32's output for state `state` (an integer hash). */
function mix32(state: number): number {
  let z = state >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  z ^= z >>> 16;
  return z >>> 0;
}

/**
 * A deterministic generator for a 32-bit seed (SplitMix32 steps: a Weyl
 * sequence through an integer hash), uniform in [0, 1).
 *
 * @throws {RangeError} unless the seed is an integer in [0, 2³²)
 * @example
 * ```ts
 * import { seededRandom } from "./sample_token_reference.ts";
 * const a = seededRandom(7), b = seededRandom(7);
 * if (a() !== b() || a() === a()) throw new Error("seeded");
 * ```
 */
export function seededRandom(seed: number): Random {
  checkSeed(seed);
  let state = seed >>> 0;
  return () => {
    state = (state + 0x9e3779b9) >>> 0;
    return mix32(state) / 4294967296;
  };
}

/**
 * Draw `index` (0-based) of the counter-based generator keyed by `seed`: the
 * `index`-th output of {@linkcode seededRandom}`(seed)`, its top 24 bits,
 * in [0, 1) and exact in float32 (the GPU sampler computes the same).
 *
 * @throws {RangeError} for a seed or index outside [0, 2³²)
 * @example
 * ```ts
 * import { randomAt, seededRandom } from "./sample_token_reference.ts";
 * const r = seededRandom(5);
 * r();
 * if (Math.abs(randomAt(5, 1) - r()) > 2 ** -24) throw new Error("same sequence");
 * ```
 */
export function randomAt(seed: number, index: number): number {
  checkSeed(seed);
  if (!Number.isInteger(index) || index < 0 || index > 0xffffffff) {
    throw new RangeError(`The draw index must be an integer in [0, 2^32), got ${index}`);
  }
  const state = (seed + Math.imul((index + 1) >>> 0, 0x9e3779b9)) >>> 0;
  return (mix32(state) >>> 8) / 16777216;
}

/** How {@linkcode sampleToken} picks a token. */
export interface SamplingOptions {
  /** Divides the logits; 0 picks the most likely token (greedy). Default 1. */
  temperature?: number;
  /** Keep only the k most likely tokens (ties with the k-th kept); null or ≥ V keeps all. */
  topK?: number | null;
}

/** Check sampling options; throws RangeError for a negative temperature or a top-k < 1. */
export function checkSampling(options: SamplingOptions): void {
  const t = options.temperature ?? 1;
  if (!(Number.isFinite(t) && t >= 0)) {
    throw new RangeError(`The temperature must be a finite number ≥ 0, got ${t}`);
  }
  const k = options.topK;
  if (k !== undefined && k !== null && !(Number.isInteger(k) && k >= 1)) {
    throw new RangeError(`top-k must be a positive integer, got ${k}`);
  }
}

/** The message for a non-finite logit (the GPU sampler reports the same). */
export function nonFiniteLogitMessage(value: number, index: number): string {
  return `The model produced a non-finite logit (${value}) for token ${index}`;
}

/**
 * Pick the next token from one row of logits: greedy at temperature 0,
 * otherwise a draw from softmax(logits / temperature) restricted to the top
 * k (nanoGPT's rule: logits below the k-th largest are dropped): the first
 * token whose cumulative weight, in index order, exceeds `random() · total`.
 *
 * @throws {RangeError} for logits that are not finite
 * @example
 * ```ts
 * import { sampleToken, seededRandom } from "./sample_token_reference.ts";
 * if (sampleToken([0, 3, 1], { temperature: 0 }, seededRandom(1)) !== 1) throw new Error("greedy");
 * if (sampleToken([0, 3, 1], { topK: 1 }, seededRandom(1)) !== 1) throw new Error("top-1");
 * ```
 */
export function sampleToken(
  logits: ArrayLike<number>,
  options: SamplingOptions,
  random: Random,
): number {
  checkSampling(options);
  const V = logits.length;
  if (V === 0) throw new RangeError("sampleToken: no logits");
  let best = 0;
  for (let i = 0; i < V; i++) {
    if (!Number.isFinite(logits[i])) throw new RangeError(nonFiniteLogitMessage(logits[i], i));
    if (logits[i] > logits[best]) best = i;
  }
  const temperature = options.temperature ?? 1;
  if (temperature === 0) return best;
  const k = options.topK ?? V;
  let threshold = -Infinity;
  if (k < V) threshold = Array.from(logits).sort((a, b) => b - a)[k - 1];
  const p = new Float64Array(V);
  let total = 0;
  for (let i = 0; i < V; i++) {
    if (logits[i] >= threshold) {
      p[i] = Math.exp((logits[i] - logits[best]) / temperature);
      total += p[i];
    }
  }
  let u = random() * total;
  for (let i = 0; i < V; i++) {
    if (p[i] === 0) continue;
    u -= p[i];
    if (u < 0) return i;
  }
  return best; // u landed on the rounding error at the very end
}
