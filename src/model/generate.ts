/**
 * Text generation with the language models: decoders that turn token ids
 * into next-token logits, sampling (temperature, top-k, a seeded generator)
 * and the generation loop.
 *
 * Two decoders, one interface ({@linkcode Decoder}):
 *
 * - {@linkcode IncrementalDecoder} feeds only the new tokens through the
 *   model. Causal ToST carries, per layer, the running statistics of causal
 *   TSSA (`Σ w²`, `Σ Pi·w²`, `Σ Pi`: O(C) numbers per sequence, see
 *   `ops/causal_tssa_step.ts`), so a new token costs the same whatever the
 *   context length; GPT carries a key/value cache (`ops/kv_cache_attention.ts`),
 *   so a new token costs one pass over the cache. Both stop at `block_size`
 *   tokens: the learned positions (`wpe`, and ToST's `denom_bias`) end there.
 * - {@linkcode RecomputeDecoder} runs the whole forward on the last
 *   `block_size` tokens for every new token, as nanoGPT's `generate` does
 *   (its `idx[:, -block_size:]` crop): the reference, and the only faithful
 *   way past `block_size` — sliding the window changes every position, and
 *   ToST's statistics cannot drop their oldest token, so the window must be
 *   recomputed.
 *
 * Every `feed` records the whole step in one submission and reads back only
 * the logits of the last token of each sequence.
 *
 * Shapes: B sequences, T new tokens, C = n_embd, V = vocab_size.
 *
 * @module
 */

import type { Gpu, Tensor } from "../gpu/runtime.ts";
import { residual } from "../ops/elementwise.ts";
import { gelu } from "../ops/gelu.ts";
import { layerNorm } from "../ops/layer_norm.ts";
import { linear } from "../ops/linear.ts";
import { copyRows } from "../ops/copy_rows.ts";
import {
  causalTssaStep,
  createCausalTssaState,
  destroyCausalTssaState,
  resetCausalTssaState,
} from "../ops/causal_tssa_step.ts";
import type { CausalTssaState } from "../ops/causal_tssa_step.ts";
import { createKvCache, destroyKvCache, kvCacheAttention } from "../ops/kv_cache_attention.ts";
import type { KvCache } from "../ops/kv_cache_attention.ts";
import { embedTokens, encodeLanguage, encodeLanguageHead, uploadTokenIds } from "./language.ts";
import type { LanguageBlockParams, LanguageParams } from "./language.ts";
import { Scratch } from "./_params.ts";

/** Options of {@linkcode Decoder.feed}. */
export interface FeedOptions {
  /** Return the logits of every fed token, `[B, T, V]`, not only the last `[B, V]`. */
  all?: boolean;
}

/** Turns token ids into next-token logits, keeping whatever state it needs between calls. */
export interface Decoder {
  /** Sequences B. */
  readonly batches: number;
  /** Tokens consumed so far per sequence (the context length). */
  readonly position: number;
  /** Largest context the decoder can take another token at (Infinity: it slides). */
  readonly capacity: number;
  /**
   * Consume `ids` (`[B, T]`, T ≥ 1 new tokens per sequence) and return the
   * logits after the last one, `[B, V]` (or after each, with `all`).
   */
  feed(ids: ArrayLike<number>, options?: FeedOptions): Promise<Float32Array>;
  /** Forget every token. */
  reset(): void;
  /** Free the decoder's GPU state (not the model). */
  destroy(): void;
}

/** Per-layer decoding state: causal TSSA statistics or a KV cache. */
type LayerState = { kind: "tssa"; state: CausalTssaState } | { kind: "softmax"; cache: KvCache };

function tokensPerSequence(ids: ArrayLike<number>, B: number): number {
  const T = ids.length / B;
  if (!Number.isInteger(T) || T < 1) {
    throw new TypeError(
      `Got ${ids.length} token ids for ${B} sequence(s): need T ≥ 1 per sequence`,
    );
  }
  return T;
}

/**
 * Decoding that feeds only the new tokens: O(1) work per token and layer for
 * causal ToST (running statistics), one pass over a KV cache for GPT.
 * Stops at `block_size` (a RangeError past it).
 *
 * @example
 * ```ts ignore
 * const dec = new IncrementalDecoder(gpu, params);
 * let logits = await dec.feed(promptIds); // [V]
 * logits = await dec.feed([nextId]);       // one new token: O(1) for ToST
 * dec.destroy();
 * ```
 */
export class IncrementalDecoder implements Decoder {
  readonly #gpu: Gpu;
  readonly #params: LanguageParams;
  readonly #layers: LayerState[] = [];
  #position = 0;
  readonly batches: number;

  constructor(gpu: Gpu, params: LanguageParams, batches = 1) {
    if (!Number.isInteger(batches) || batches < 1) {
      throw new RangeError(
        `IncrementalDecoder: batches must be a positive integer, got ${batches}`,
      );
    }
    this.#gpu = gpu;
    this.#params = params;
    this.batches = batches;
    const cfg = params.config;
    const NH = cfg.n_head;
    const HS = cfg.n_embd / NH;
    try {
      for (const block of params.blocks) {
        this.#layers.push(
          block.attn.kind === "tssa"
            ? { kind: "tssa", state: createCausalTssaState(gpu, batches, NH, HS) }
            : { kind: "softmax", cache: createKvCache(gpu, batches, NH, HS, cfg.block_size) },
        );
      }
    } catch (err) {
      this.destroy();
      throw err;
    }
  }

  get position(): number {
    return this.#position;
  }

  get capacity(): number {
    return this.#params.config.block_size;
  }

  async feed(ids: ArrayLike<number>, options: FeedOptions = {}): Promise<Float32Array> {
    const gpu = this.#gpu;
    const params = this.#params;
    const cfg = params.config;
    const B = this.batches;
    const T = tokensPerSequence(ids, B);
    if (this.#position + T > cfg.block_size) {
      throw new RangeError(
        `Cannot feed ${T} more token(s) after ${this.#position}: the model's block_size is ` +
          `${cfg.block_size} (its learned positions end there)`,
      );
    }
    const idx = uploadTokenIds(gpu, params, ids, B, T);
    const s = new Scratch();
    s.keep(idx);
    try {
      const x = s.keep(await embedTokens(gpu, params, idx, this.#position)); // [B, T, C]
      for (let i = 0; i < params.blocks.length; i++) {
        await this.#block(params.blocks[i], this.#layers[i], x, s);
      }
      let last = x;
      if (T > 1 && !options.all) {
        last = s.keep(gpu.empty([B, 1, cfg.n_embd], "f32", "decode.last")); // [B, 1, C]
        await copyRows(gpu, x, last, {
          batches: B,
          rows: 1,
          cols: cfg.n_embd,
          srcBatchRows: T,
          srcRow0: T - 1,
          dstBatchRows: 1,
        });
      }
      const logits = s.keep(await encodeLanguageHead(gpu, params, last, s)); // [B, 1 or T, V]
      this.#position += T;
      return (await gpu.read(logits)) as Float32Array;
    } catch (err) {
      // The layers' states may have taken part of the tokens: start over.
      this.reset();
      throw err;
    } finally {
      s.release();
    }
  }

  /** One block on the new tokens `x` `[B, T, C]`, in place (as `encodeLanguageBlock`). */
  async #block(p: LanguageBlockParams, layer: LayerState, x: Tensor, s: Scratch): Promise<void> {
    const gpu = this.#gpu;
    const eps = this.#params.config.norm_eps;
    const h = s.keep(await layerNorm(gpu, x, p.ln1.weight, p.ln1.bias, eps));
    const w = s.keep(await linear(gpu, h, p.attn.cAttn.weight, p.attn.cAttn.bias));
    let y: Tensor;
    if (p.attn.kind === "tssa" && layer.kind === "tssa") {
      y = s.keep(await causalTssaStep(gpu, w, p.attn.temp, p.attn.denomBias, layer.state));
    } else if (p.attn.kind === "softmax" && layer.kind === "softmax") {
      y = s.keep(await kvCacheAttention(gpu, w, layer.cache));
    } else {
      throw new TypeError("IncrementalDecoder: a layer's state does not match its attention");
    }
    const a = s.keep(await linear(gpu, y, p.attn.cProj.weight, p.attn.cProj.bias));
    await residual(gpu, x, a, p.gamma1);
    const h2 = s.keep(await layerNorm(gpu, x, p.ln2.weight, p.ln2.bias, eps));
    const f = s.keep(await linear(gpu, h2, p.cFc.weight, p.cFc.bias));
    const g = s.keep(await gelu(gpu, f));
    const m = s.keep(await linear(gpu, g, p.mlpProj.weight, p.mlpProj.bias));
    await residual(gpu, x, m, p.gamma2);
  }

  reset(): void {
    for (const layer of this.#layers) {
      if (layer.kind === "tssa") resetCausalTssaState(this.#gpu, layer.state);
      else layer.cache.position = 0; // stale keys are overwritten before they are read
    }
    this.#position = 0;
  }

  destroy(): void {
    for (const layer of this.#layers) {
      if (layer.kind === "tssa") destroyCausalTssaState(layer.state);
      else destroyKvCache(layer.cache);
    }
    this.#layers.length = 0;
  }
}

/**
 * Decoding by recomputation: keeps the token ids on the host and runs the
 * whole forward on the last `block_size` of them for every call (nanoGPT's
 * crop), reading back only the logits of the last position. Never full: past
 * `block_size` the window slides.
 *
 * @example
 * ```ts ignore
 * const dec = new RecomputeDecoder(gpu, params);
 * const logits = await dec.feed(promptIds);
 * ```
 */
export class RecomputeDecoder implements Decoder {
  readonly #gpu: Gpu;
  readonly #params: LanguageParams;
  #history: number[][];
  readonly batches: number;
  readonly capacity = Infinity;

  /** `history`: tokens already in the context, one array per sequence. */
  constructor(gpu: Gpu, params: LanguageParams, batches = 1, history?: readonly number[][]) {
    if (!Number.isInteger(batches) || batches < 1) {
      throw new RangeError(`RecomputeDecoder: batches must be a positive integer, got ${batches}`);
    }
    if (
      history && (history.length !== batches || history.some((h) => h.length !== history[0].length))
    ) {
      throw new TypeError(`RecomputeDecoder: history must hold ${batches} sequences of one length`);
    }
    this.#gpu = gpu;
    this.#params = params;
    this.batches = batches;
    this.#history = history
      ? history.map((h) => [...h])
      : Array.from({ length: batches }, () => []);
  }

  get position(): number {
    return this.#history[0].length;
  }

  async feed(ids: ArrayLike<number>, options: FeedOptions = {}): Promise<Float32Array> {
    const gpu = this.#gpu;
    const params = this.#params;
    const cfg = params.config;
    const B = this.batches;
    const T = tokensPerSequence(ids, B);
    const added = this.#history.map((
      h,
      b,
    ) => [...h, ...Array.from({ length: T }, (_, t) => ids[b * T + t])]);
    const L = added[0].length;
    const W = Math.min(L, cfg.block_size); // the window
    if (options.all && T > W) {
      throw new RangeError(
        `RecomputeDecoder: all logits of ${T} tokens need T ≤ block_size ${cfg.block_size}`,
      );
    }
    const windowIds = added.flatMap((h) => h.slice(L - W));
    const idx = uploadTokenIds(gpu, params, windowIds, B, W);
    const s = new Scratch();
    s.keep(idx);
    try {
      const logits = s.keep(await encodeLanguage(gpu, params, idx)); // [B, W, V]
      const R = options.all ? T : 1;
      const V = cfg.vocab_size;
      const out = s.keep(gpu.empty([B, R, V], "f32", "decode.logits"));
      await copyRows(gpu, logits, out, {
        batches: B,
        rows: R,
        cols: V,
        srcBatchRows: W,
        srcRow0: W - R,
        dstBatchRows: R,
      });
      const result = (await gpu.read(out)) as Float32Array;
      this.#history = added;
      return result;
    } finally {
      s.release();
    }
  }

  /** The context so far, one array of ids per sequence. */
  get history(): readonly (readonly number[])[] {
    return this.#history;
  }

  reset(): void {
    this.#history = this.#history.map(() => []);
  }

  destroy(): void {}
}

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
 * const { ids } = await generate(gpu, params, encodeChars("ROMEO:", vocab), {
 *   tokens: 100, temperature: 0.8, topK: 200, seed: 1337,
 * });
 * ```
 */
export async function generate(
  gpu: Gpu,
  params: LanguageParams,
  prompt: ArrayLike<number>,
  options: GenerateOptions,
): Promise<GenerateResult> {
  checkSampling(options);
  const N = options.tokens;
  if (!Number.isInteger(N) || N < 0) {
    throw new RangeError(`The number of tokens must be an integer ≥ 0, got ${N}`);
  }
  const bs = params.config.block_size;
  const V = params.config.vocab_size;
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
    ? new RecomputeDecoder(gpu, params)
    : new IncrementalDecoder(gpu, params);
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
          decoder = new RecomputeDecoder(gpu, params, 1, [context.slice(0, -1)]);
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
