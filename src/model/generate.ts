/**
 * Text generation with the language models: sampling (temperature, top-k,
 * a seeded generator) and the generation loop over a decoder
 * (`language/decode.ts`).
 *
 * @module
 */

import type { Gpu } from "../gpu/runtime.ts";
import type { ParamStore } from "./params.ts";
import { IncrementalDecoder, RecomputeDecoder } from "./language/decode.ts";
import type { Decoder } from "./language/decode.ts";

/** A seeded pseudo-random generator of uniform numbers in [0, 1). */
export type Random = () => number;

/**
 * A deterministic generator for a 32-bit seed (SplitMix32 steps: a Weyl
 * sequence through an integer hash), uniform in [0, 1).
 *
 * @throws {RangeError} unless the seed is an integer in [0, 2³²)
 * @example
 * ```ts
 * import { seededRandom } from "./generate.ts";
 * const a = seededRandom(7), b = seededRandom(7);
 * if (a() !== b() || a() === a()) throw new Error("seeded");
 * ```
 */
export function seededRandom(seed: number): Random {
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new RangeError(`The seed must be an integer in [0, 2^32), got ${seed}`);
  }
  let state = seed >>> 0;
  return () => {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    z ^= z >>> 16;
    return (z >>> 0) / 4294967296;
  };
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

/**
 * Pick the next token from one row of logits: greedy at temperature 0,
 * otherwise a draw from softmax(logits / temperature) restricted to the top
 * k (nanoGPT's rule: logits below the k-th largest are dropped).
 *
 * @throws {RangeError} for logits that are not finite
 * @example
 * ```ts
 * import { sampleToken, seededRandom } from "./generate.ts";
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
    if (!Number.isFinite(logits[i])) {
      throw new RangeError(`The model produced a non-finite logit (${logits[i]}) for token ${i}`);
    }
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

/** What happens when the context reaches `block_size`. */
export type AtBlockSize = "stop" | "slide";

/** Options of {@linkcode generate}. */
export interface GenerateOptions extends SamplingOptions {
  /** New tokens to generate, at most. */
  tokens: number;
  /** Seed of the sampling generator (default 1337). */
  seed?: number;
  /** "incremental" (default): statistics / KV cache; "recompute": the whole window every token. */
  mode?: "incremental" | "recompute";
  /**
   * At `block_size` tokens of context: "stop" (default) ends generation;
   * "slide" continues on the last `block_size` tokens, recomputing that
   * window for every further token (as nanoGPT does).
   */
  atBlockSize?: AtBlockSize;
  /**
   * Sample only ids below this (a vocabulary shorter than `vocab_size`, as
   * when nanoGPT pads it): the logits of the other ids are ignored.
   */
  vocabLimit?: number;
  /** Called with every new token as soon as it is sampled (for streaming). */
  onToken?: (id: number, index: number) => void | Promise<void>;
}

/** What {@linkcode generate} produced. */
export interface GenerateResult {
  /** The new tokens. */
  ids: number[];
  /** Why it ended: the token budget, or the context reached `block_size` (stop mode). */
  stopped: "tokens" | "block_size";
  /** Prompt tokens actually used (the last block_size of them when sliding). */
  promptTokens: number;
  /** New tokens sampled with the incremental decoder (the rest recomputed the window). */
  incrementalTokens: number;
  /** Seconds spent on the prompt (first logits). */
  promptSeconds: number;
  /** Seconds spent after the first logits, for the remaining tokens. */
  decodeSeconds: number;
}

/**
 * Generate up to `options.tokens` new tokens after `prompt` (one sequence).
 * Deterministic for a seed. With `atBlockSize: "stop"` at most
 * `block_size + 1 − prompt length` tokens come out (the last one is
 * predicted at position `block_size − 1`); a longer prompt is a RangeError.
 * With "slide", a prompt longer than `block_size` is cropped to its end.
 *
 * @example
 * ```ts ignore
 * const { ids } = await generate(gpu, store, encodeChars("ROMEO:", vocab), {
 *   tokens: 100, temperature: 0.8, topK: 200, seed: 1337,
 * });
 * ```
 */
export async function generate(
  gpu: Gpu,
  store: ParamStore,
  prompt: ArrayLike<number>,
  options: GenerateOptions,
): Promise<GenerateResult> {
  checkSampling(options);
  const N = options.tokens;
  if (!Number.isInteger(N) || N < 0) {
    throw new RangeError(`The number of tokens must be an integer ≥ 0, got ${N}`);
  }
  const cfg = store.config;
  if (cfg.family !== "language") throw new TypeError("generate: not a language model");
  const bs = cfg.block_size;
  const V = cfg.vocab_size;
  const limit = options.vocabLimit ?? V;
  if (!Number.isInteger(limit) || limit < 1 || limit > V) {
    throw new RangeError(`vocabLimit must be an integer in [1, ${V}], got ${limit}`);
  }
  const slide = (options.atBlockSize ?? "stop") === "slide";
  let context = Array.from(prompt, Number);
  if (context.length === 0) throw new RangeError("The prompt must have at least one token");
  if (context.length > bs) {
    if (!slide) {
      throw new RangeError(
        `The prompt has ${context.length} tokens, more than the model's block_size ${bs} ` +
          `(slide the window to use its last ${bs})`,
      );
    }
    context = context.slice(context.length - bs);
  }
  const result: GenerateResult = {
    ids: [],
    stopped: "tokens",
    promptTokens: context.length,
    incrementalTokens: 0,
    promptSeconds: 0,
    decodeSeconds: 0,
  };
  if (N === 0) return result;
  const random = seededRandom(options.seed ?? 1337);
  let decoder: Decoder = options.mode === "recompute"
    ? new RecomputeDecoder(gpu, store)
    : new IncrementalDecoder(gpu, store);
  try {
    const t0 = performance.now();
    let logits = await decoder.feed(context);
    const t1 = performance.now();
    result.promptSeconds = (t1 - t0) / 1000;
    for (let i = 0; i < N; i++) {
      const id = sampleToken(limit < V ? logits.subarray(0, limit) : logits, options, random);
      result.ids.push(id);
      context.push(id);
      if (decoder instanceof IncrementalDecoder) result.incrementalTokens++;
      await options.onToken?.(id, i);
      if (i === N - 1) break;
      if (context.length > bs) {
        if (!slide) {
          result.stopped = "block_size";
          break;
        }
        context = context.slice(context.length - bs);
        if (decoder instanceof IncrementalDecoder) {
          // A faithful slide recomputes the window: statistics cannot forget a token.
          decoder.destroy();
          decoder = new RecomputeDecoder(gpu, store, 1, [context.slice(0, -1)]);
        }
      }
      logits = await decoder.feed([id]);
    }
    result.decodeSeconds = (performance.now() - t1) / 1000;
    return result;
  } finally {
    decoder.destroy();
  }
}
